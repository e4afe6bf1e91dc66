"""Benchmark: LQ-Nets against uniform quantization, k-means and DP sharing at the same bits.

For W/A bit pairs (weights/activations; default 2/2, 3/3, 4/4 and 2/8), one float model is
trained once and then, in the same run, quantized and fine-tuned by each method with no
pruning; every figure is the **integer model's** test accuracy (``sim``, what the hardware
computes):

- ``uniform``: a fixed per-row basis ``c * 2^i`` (evenly spaced levels) and, below 8 bits,
  fixed uniform activation levels (``--quantizer uniform --activation-quantizer uniform``);
- ``lq``: LQ-Nets, learned per-row bases and learned activation levels (``lq``/``lq``);
- ``kmeans``: Deep Compression's k-means sharing (linear initialisation) with uniform
  activation levels;
- ``dp``: the exactly optimal DP sharing with uniform activation levels.

At 8 activation bits there is no activation quantizer: the uniform 8-bit integer activations
of ``docs/arithmetic.md`` A6-A7. A K-bit per-row quantizer has ``2^K`` levels per row; a K-bit
codebook (``--bits K``) ``2^K - 1`` values per layer (its index 0 is reserved for a pruned
weight). Aims (issue 22): LeNet-300-100 2/2 within 0.5 points of float, 3/3 within 0.2; LQ ahead
of uniform at every width of 3 bits or fewer.

    python bench/lq_accuracy.py [--dataset mnist|digits] [--data-dir DIR] [--pairs 2/2,3/3]
        [--finetune-epochs 8] [--seed 0] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, mnist_missing  # noqa: E402

import torch  # noqa: E402

from compress.data import DEFAULT_MNIST_DIR, load_dataset  # noqa: E402
from compress.models import BUILTIN_MODELS, linear_chain, load_model  # noqa: E402
from compress.pipeline import CompressConfig, compress_model  # noqa: E402
from compress.train import (TRAINING_THREADS, accuracy, canonical_sequential,  # noqa: E402
                            torch_threads, train)

MODELS = {"mnist": "lenet-300-100", "digits": "digits-mlp"}
METHODS = {                     # name: (weight quantizer, activation quantizer below 8 bits)
    "uniform": ("uniform", "uniform"),
    "lq": ("lq", "lq"),
    "kmeans": ("kmeans-linear", "uniform"),
    "dp": ("dp", "uniform"),
}


def float_model(name: str, dataset, seed: int) -> tuple[Path, float]:
    """Train the built-in ``name`` by its recipe (as ``python -m compress`` does), keep it."""
    path = CACHE / f"{name}-float-seed{seed}.pt"
    if path.exists():
        net = torch.load(path, weights_only=False)
    else:
        module, _ = load_model(name, seed=seed)
        chain = linear_chain(module)
        net = canonical_sequential([s.linear for s in chain], [s.relu for s in chain])
        recipe = BUILTIN_MODELS[name].recipe
        with torch_threads(TRAINING_THREADS):
            train(net, dataset.x_train, dataset.y_train, epochs=recipe.epochs, lr=recipe.lr,
                  batch_size=recipe.batch_size, weight_decay=recipe.weight_decay, seed=seed,
                  desc=f"train {name}", progress=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net, path)
    return path, accuracy(net, dataset.x_test, dataset.y_test)


def run(path: Path, dataset_name: str, data_dir, method: str, weight_bits: int,
        activation_bits: int, epochs: int, seed: int) -> dict:
    weight, activation = METHODS[method]
    if activation_bits >= 8:
        activation, activation_bits = "none", 8
    config = CompressConfig(model=str(path), dataset=dataset_name, data_dir=data_dir, seed=seed,
                            density=(1.0,), prune_rounds=1, retrain_epochs=0,
                            finetune_epochs=epochs, bits=(weight_bits,), quantizer=weight,
                            activation_quantizer=activation, activation_bits=activation_bits,
                            progress=False)
    start = time.perf_counter()
    result = compress_model(config, log=lambda _: None)
    return {"method": method, "weight_bits": weight_bits,
            "activation_bits": activation_bits, "accuracy_int": result.accuracy_int,
            "accuracy_float_quantized": result.accuracy_compressed,
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(MODELS), default="mnist")
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DIR", DEFAULT_MNIST_DIR))
    parser.add_argument("--pairs", default="2/2,3/3,4/4,2/8",
                        help="W/A bit pairs, comma-separated (W 1..4; A 1..4, or 8: none)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.dataset == "mnist" and mnist_missing(args.data_dir):
        return 0
    try:
        pairs = [tuple(int(b) for b in pair.split("/")) for pair in args.pairs.split(",")]
    except ValueError:
        parser.error(f"--pairs must be W/A pairs like 2/2,3/3, not {args.pairs!r}")
    for w, a in pairs:
        if not (1 <= w <= 4 and (1 <= a <= 4 or a == 8)):
            parser.error(f"--pairs: W must be 1..4 and A 1..4 or 8, not {w}/{a}")
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods must be among {', '.join(METHODS)}, not {', '.join(unknown)}")
    name = MODELS[args.dataset]
    data = load_dataset(args.dataset, data_dir=args.data_dir, seed=args.seed)
    path, float_accuracy = float_model(name, data, args.seed)
    print(f"{name} on {args.dataset}: float accuracy {float_accuracy:.2%} ({path})", flush=True)
    rows = []
    for w, a in pairs:
        for method in methods:
            row = run(path, args.dataset, args.data_dir, method, w, a, args.finetune_epochs,
                      args.seed)
            rows.append(row)
            print(f"  W/A {w}/{a if a < 8 else 8}  {method:<8} integer accuracy "
                  f"{row['accuracy_int']:.2%} ({row['seconds']:.0f} s)", flush=True)

    print(f"\n{name}, integer-model test accuracy (float {float_accuracy:.2%}), no pruning, "
          f"{args.finetune_epochs} fine-tuning epochs:")
    print(f"{'W/A':>5} " + " ".join(f"{m:>9}" for m in methods) + "   lq - float  lq - uniform")
    verdicts = []
    for w, a in pairs:
        got = {r["method"]: r["accuracy_int"] for r in rows
               if (r["weight_bits"], r["activation_bits"]) == (w, min(a, 8))}
        line = f"{w}/{a:<3} " + " ".join(f"{got[m]:>9.2%}" for m in methods)
        if "lq" in got:
            line += f"   {100 * (got['lq'] - float_accuracy):>+9.2f}"
            if "uniform" in got:
                line += f"   {100 * (got['lq'] - got['uniform']):>+11.2f}"
        print(line)
        if "lq" in got and (w, a) in ((2, 2), (3, 3)):
            limit = 0.5 if (w, a) == (2, 2) else 0.2
            verdicts.append((f"{w}/{a} within {limit} points of float",
                             100 * (float_accuracy - got["lq"]) <= limit))
        if "lq" in got and "uniform" in got and max(w, a if a < 8 else 0) <= 3:
            verdicts.append((f"{w}/{a} lq ahead of uniform", got["lq"] > got["uniform"]))
    for what, ok in verdicts:
        print(f"aim: {what}: {'yes' if ok else 'no'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": name, "dataset": args.dataset,
                                         "float_accuracy": float_accuracy, "rows": rows,
                                         "finetune_epochs": args.finetune_epochs,
                                         "aims": dict(verdicts)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
