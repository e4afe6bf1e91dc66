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
        [--finetune-epochs 8] [--seed 0] [--repeats 1] [--json PATH]
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.datasets import DEFAULT_MNIST_DIR, load_dataset  # noqa: E402
from compress.models import BUILTIN_MODELS, linear_chain, load_model  # noqa: E402
from compress.pipeline import CompressConfig, compress_model  # noqa: E402
from compress.train import (TRAINING_THREADS, accuracy, canonical_sequential,  # noqa: E402
                            torch_threads, train)

MODELS = {"mnist": "lenet-300-100", "digits": "digits-mlp"}
METHODS = {                     # name: (weight quantizer, activation quantizer below 8 bits)
    "uniform": ("uniform", "uniform"),
    "lq": ("lq", "lq"),
    "lq-weights": ("lq", "uniform"),    # the two halves of lq, apart (not run by default)
    "lq-activations": ("uniform", "lq"),
    "kmeans": ("kmeans-linear", "uniform"),
    "dp": ("dp", "uniform"),
}


def float_model(name: str, dataset, seed: int) -> tuple[Path, float]:
    """Train the built-in ``name`` by its recipe (as ``python -m compress`` does), keep it
    (named by the recipe's epochs, so a changed recipe trains a new one)."""
    path = CACHE / f"{name}-float-seed{seed}-e{BUILTIN_MODELS[name].recipe.epochs}.pt"
    if path.exists():
        net = torch.load(path, weights_only=False)
    else:
        module, _ = load_model(name, seed=seed)
        chain = linear_chain(module, dataset.shape or None)
        for spec in chain:
            if spec.geometry is not None:           # canonical_sequential reads it (A12-A13)
                spec.linear.geometry = spec.geometry
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
    return {"method": method, "weight_bits": weight_bits, "seed": seed,
            "activation_bits": activation_bits, "accuracy_int": result.accuracy_int,
            "accuracy_float_quantized": result.accuracy_compressed,
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(MODELS), default="mnist")
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DIR", DEFAULT_MNIST_DIR))
    parser.add_argument("--pairs", default="2/2,3/3,4/4,2/8",
                        help="W/A bit pairs, comma-separated (W 1..4; A 1..4, or 8: none)")
    parser.add_argument("--methods", default="uniform,lq,kmeans,dp",
                        help=f"comma-separated, among {', '.join(METHODS)}")
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the float model, the data split and the first fine-tuning")
    parser.add_argument("--repeats", type=int, default=1,
                        help="fine-tunings per cell, seeds SEED.. SEED+N-1 (the table gives "
                             "their mean; the difference to uniform is paired by seed)")
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
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, not {args.repeats}")
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods must be among {', '.join(METHODS)}, not {', '.join(unknown)}")
    name = MODELS[args.dataset]
    data = load_dataset(args.dataset, data_dir=args.data_dir, seed=args.seed)
    path, float_accuracy = float_model(name, data, args.seed)
    print(f"{name} on {args.dataset}: float accuracy {float_accuracy:.2%} ({path})", flush=True)
    rows = []
    source = args.dataset
    if args.dataset != "mnist":
        # The digits split depends on the seed: the fine-tunings of every seed get the split of
        # --seed (the float model's), fixed in a file.
        source = str(CACHE / f"{args.dataset}-split-seed{args.seed}.npz")
        np.savez(source, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
                 y_test=data.y_test)
    seeds = range(args.seed, args.seed + args.repeats)
    for w, a in pairs:
        for method in methods:
            for seed in seeds:
                row = run(path, source, args.data_dir, method, w, a,
                          args.finetune_epochs, seed)
                rows.append(row)
                print(f"  W/A {w}/{a if a < 8 else 8}  {method:<8} seed {seed}  integer "
                      f"accuracy {row['accuracy_int']:.2%} ({row['seconds']:.0f} s)", flush=True)

    print(f"\n{name}, integer-model test accuracy (float {float_accuracy:.2%}), no pruning, "
          f"{args.finetune_epochs} fine-tuning epochs, mean of {args.repeats} fine-tuning "
          f"seed{'s' if args.repeats > 1 else ''}:")
    print(f"{'W/A':>5} " + " ".join(f"{m:>9}" for m in methods) + "   lq - float  lq - uniform"
          + ("  (min, max over seeds)" if args.repeats > 1 else ""))
    verdicts = []
    for w, a in pairs:
        cell = {m: np.array([r["accuracy_int"] for r in rows if r["method"] == m and
                             (r["weight_bits"], r["activation_bits"]) == (w, min(a, 8))])
                for m in methods}
        got = {m: float(v.mean()) for m, v in cell.items()}
        line = f"{w}/{a:<3} " + " ".join(f"{got[m]:>9.2%}" for m in methods)
        if "lq" in got:
            line += f"   {100 * (got['lq'] - float_accuracy):>+9.2f}"
            if "uniform" in got:
                paired = 100 * (cell["lq"] - cell["uniform"])
                line += f"   {paired.mean():>+11.2f}"
                if args.repeats > 1:
                    line += f"  ({paired.min():+.2f}, {paired.max():+.2f})"
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
                                         "repeats": args.repeats,
                                         "aims": dict(verdicts)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
