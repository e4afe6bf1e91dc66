"""Benchmark: DP-Net's robust models: LeNet-300-100 (MNIST) trained and compressed with adversarial
training, next to the same pipeline without it, in one run.

Both runs are Deep Compression's path with the LeNet-300-100 recipe (train, prune 5% / 5% / 25%
in 4 rounds, DP sharing, fine-tuning, Huffman, ``--zero-run-bits auto``); the robust one trains
every step adversarially (``--adversarial``, ``--epsilon``; ``compress/adversarial.py``). Each
gives clean and robust accuracy (the same attack) before compression (float) and after it (the
compressed float weights, and the integer model on the attacked examples rounded to its input
grid). DP-Net's claim: a robust model compresses "with negligible accuracy loss".

    python bench/robust_lenet.py [--data-dir DIR] [--adversarial fgsm|pgd] [--epsilon 0.1]
        [--epochs 30] [--seed 0] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import mnist_missing  # noqa: E402
from lq_accuracy import float_model  # noqa: E402

import torch  # noqa: E402

from compress.adversarial import compressed_robustness, robust_accuracy  # noqa: E402
from core.datasets import DEFAULT_MNIST_DIR, load_dataset  # noqa: E402
from compress.models import BUILTIN_MODELS  # noqa: E402
from compress.pipeline import CompressConfig, compress_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DIR", DEFAULT_MNIST_DIR))
    parser.add_argument("--adversarial", choices=["fgsm", "pgd"], default="fgsm")
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=30, help="dense training epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if mnist_missing(args.data_dir):
        return 0
    data = load_dataset("mnist", data_dir=args.data_dir, seed=args.seed)
    # The plain run starts from the recipe's float model (bench/lq_accuracy.py's cache, the
    # network the pipeline itself trains from the same seed), measured here under attack.
    path, _ = float_model("lenet-300-100", data, args.seed)
    recipe = BUILTIN_MODELS["lenet-300-100"].recipe
    attack = dict(method=args.adversarial, epsilon=args.epsilon, seed=args.seed)
    bounds = dict(low=float(data.x_train.min()), high=float(data.x_train.max()))
    rows = []
    for adversarial in ("none", args.adversarial):
        print(f"  adversarial training: {adversarial}", flush=True)
        start = time.perf_counter()
        plain = adversarial == "none"
        settings = dict(model=str(path), lr=recipe.lr, batch_size=recipe.batch_size,
                        weight_decay=recipe.weight_decay, density=recipe.density,
                        prune_rounds=recipe.prune_rounds, retrain_epochs=recipe.retrain_epochs,
                        finetune_epochs=recipe.finetune_epochs, finetune_lr=recipe.finetune_lr,
                        bits=recipe.bits) if plain else dict(model="lenet-300-100",
                                                             epochs=args.epochs)
        result = compress_model(CompressConfig(
            dataset="mnist", data_dir=args.data_dir, seed=args.seed, adversarial=adversarial,
            epsilon=args.epsilon, zero_run_bits="auto", progress=False, **settings),
            log=lambda line: print(f"    {line}", flush=True))
        if plain:
            robust = {"float": robust_accuracy(torch.load(path, weights_only=False),
                                               data.x_test, data.y_test, **attack, **bounds),
                      **compressed_robustness(result.model, data, **attack)}
        else:
            robust = result.robust
        sizes = result.model.sizes()
        rows.append({"adversarial": adversarial, "clean_float": result.accuracy_float,
                     "clean_compressed": result.accuracy_compressed,
                     "clean_int": result.accuracy_int, "robust": robust,
                     "ratio": sum(s.dense_bytes for s in sizes)
                     / sum(s.compressed_bytes for s in sizes),
                     "seconds": round(time.perf_counter() - start, 1)})

    def pct(value):
        return "-" if value is None else f"{value:.2%}"

    print(f"\nLeNet-300-100, {args.adversarial} at epsilon {args.epsilon:g}: clean / robust "
          "accuracy")
    print(f"{'':<10} {'float':>17} {'compressed float':>17} {'integer':>17} "
          f"{'compressed float':>19} {'':>7}")
    print(f"{'training':<10} {'clean':>8} {'robust':>8} {'clean':>8} {'robust':>8} "
          f"{'clean':>8} {'robust':>8} {'robust, on grid':>19} {'ratio':>7}")
    for r in rows:
        rb = r["robust"]
        print(f"{r['adversarial']:<10} {pct(r['clean_float']):>8} {pct(rb['float']):>8} "
              f"{pct(r['clean_compressed']):>8} {pct(rb['compressed']):>8} "
              f"{pct(r['clean_int']):>8} {pct(rb['int']):>8} "
              f"{pct(rb['compressed_on_grid']):>19} {r['ratio']:>6.1f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        # (default=str: the settings hold paths)
        args.json.write_text(json.dumps({"rows": rows, "settings": vars(args) | {
            "json": str(args.json)}}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
