"""Benchmark: TRP (trained rank pruning) on LeNet-300-100 (MNIST), against post-training SVD with
fine-tuning at the same ranks and the uncompressed network, in one run.

From one trained float model (``bench/lq_accuracy.py``'s cache):

- ``dense``: no low rank;
- ``trp``: TRP training (``--energy``, ``--nuclear``, ``--trp-period``, ``--epochs``), then each
  layer factorized at its trained rank where that saves multiply-accumulates;
- ``svd``: truncated SVD of the float model at **TRP's ranks** (equal total rank), then
  ``--epochs`` of fine-tuning.

These three keep every weight (no pruning) and share each layer's weights in a ``--bits`` DP
codebook (nearly lossless at 6 bits), so the error is the low-rank method's; every error is the
**integer model's** (``sim``). Aim (issue 23): at most 1.6% error with at least 3x fewer
multiply-accumulates than the dense network, and TRP no worse than SVD at equal rank.

With ``--compress DENSITIES``: the whole pipeline after TRP (pruning of the factors at those
densities, one per layer of the decomposed chain or one per original layer, in the recipe's
rounds, DP sharing at ``--compress-bits``, Huffman coding, ``--zero-run-bits auto``), next to
Deep Compression's path (``dp``, the LeNet-300-100 recipe) with the same coding, in the same run:
compression ratio (against the original network's 32-bit weights and biases) at an integer error
of at most 1.6%.

    python bench/trp_lenet.py [--data-dir DIR] [--epochs 2] [--energy 0.99] [--nuclear 3e-4]
        [--trp-period 1] [--bits 6] [--compress 0.3,0.3,...] [--compress-bits 4]
        [--compress-quantizer dp|lq] [--no-peer] [--seed 0] [--json PATH]
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
from lq_accuracy import float_model  # noqa: E402

from core.datasets import DEFAULT_MNIST_DIR, load_dataset  # noqa: E402
from compress.models import BUILTIN_MODELS  # noqa: E402
from compress.pipeline import CompressConfig, compress_model  # noqa: E402

ERROR_LIMIT = 1.6
#: LeNet-300-100's float32 weights and biases.
ORIGINAL_BYTES = 4 * sum(i * o + o for i, o in ((784, 300), (300, 100), (100, 10)))
MAC_AIM = 3.0


def run(name: str, path: Path, args, out: Path, **settings) -> dict:
    recipe = BUILTIN_MODELS["lenet-300-100"].recipe
    # The LeNet-300-100 recipe's settings (a loaded model would get the generic recipe's).
    config = dict(model=str(path), dataset="mnist", data_dir=args.data_dir, seed=args.seed,
                  lr=recipe.lr, batch_size=recipe.batch_size, weight_decay=recipe.weight_decay,
                  density=recipe.density, prune_rounds=recipe.prune_rounds,
                  retrain_epochs=recipe.retrain_epochs, finetune_epochs=recipe.finetune_epochs,
                  finetune_lr=recipe.finetune_lr, bits=recipe.bits, progress=False)
    config.update(settings)
    start = time.perf_counter()
    result = compress_model(CompressConfig(**config),
                            log=lambda line: print(f"    {line}", flush=True))
    artifact = result.model.save(out / f"{name}-{args.tag}.dcz")
    sizes = result.model.sizes()
    layers = result.model.layers
    dense_macs = sum(row.macs_before for row in result.low_rank) if result.low_rank else \
        sum(layer.index.size for layer in layers)
    return {"config": name, "error_int": 100 * (1 - result.accuracy_int),
            "error_float": 100 * (1 - result.accuracy_float),
            "error_low_rank": None if result.accuracy_low_rank is None
            else 100 * (1 - result.accuracy_low_rank),
            "ranks": [row.rank for row in result.low_rank] if result.low_rank else None,
            "energy_kept": [row.energy_kept for row in result.low_rank] if result.low_rank
            else None,
            "dense_macs": dense_macs, "macs": sum(layer.index.size for layer in layers),
            "nonzero_macs": sum(layer.nonzero for layer in layers),
            # Against the original network's 32-bit weights and biases (a factorized chain's
            # own dense size is smaller).
            "ratio": ORIGINAL_BYTES / sum(s.compressed_bytes for s in sizes),
            "compressed_bytes": sum(s.compressed_bytes for s in sizes),
            "artifact": str(artifact), "seconds": round(time.perf_counter() - start, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DIR", DEFAULT_MNIST_DIR))
    parser.add_argument("--epochs", type=int, default=2,
                        help="TRP training epochs, and the SVD baseline's fine-tuning epochs")
    parser.add_argument("--energy", type=float, default=0.99)
    parser.add_argument("--nuclear", type=float, default=3e-4)
    parser.add_argument("--trp-period", type=int, default=1)
    parser.add_argument("--bits", type=int, default=6,
                        help="DP codebook bits of the unpruned comparison (default 6)")
    parser.add_argument("--compress", help="densities of the pruned TRP model, comma-separated")
    parser.add_argument("--compress-bits", type=int, default=4,
                        help="codebook bits of the pruned TRP model's layers (default 4)")
    parser.add_argument("--compress-quantizer", default="dp",
                        help="the pruned TRP model's quantizer (default dp; lq: LQ-Nets, "
                             "--compress-bits the basis bits)")
    parser.add_argument("--no-peer", action="store_true",
                        help="with --compress, skip Deep Compression's path (a run that "
                             "already has it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    # The artifacts' names carry the settings that change them.
    args.tag = (f"e{args.epochs}-energy{args.energy:g}-n{args.nuclear:g}-m{args.trp_period}"
                + (f"-{args.compress_quantizer}{args.compress_bits}-d{args.compress}"
                   if args.compress else ""))
    if mnist_missing(args.data_dir):
        return 0
    data = load_dataset("mnist", data_dir=args.data_dir, seed=args.seed)
    path, float_accuracy = float_model("lenet-300-100", data, args.seed)
    print(f"lenet-300-100 float accuracy {float_accuracy:.2%} ({path})", flush=True)
    out = CACHE / "trp-lenet"
    out.mkdir(parents=True, exist_ok=True)
    whole = dict(density=(1.0,), prune_rounds=1, retrain_epochs=0, finetune_epochs=0,
                 bits=(args.bits,), zero_run_bits="auto")
    low_rank = dict(energy=args.energy, low_rank_epochs=args.epochs)
    rows = []
    print("  dense", flush=True)
    rows.append(run("dense", path, args, out, **whole))
    print("  trp", flush=True)
    rows.append(run("trp", path, args, out, low_rank="trp", nuclear=args.nuclear,
                    trp_period=args.trp_period, **low_rank, **whole))
    print(f"  svd at TRP's ranks {rows[-1]['ranks']}", flush=True)
    rows.append(run("svd", path, args, out, low_rank="svd", ranks=tuple(rows[-1]["ranks"]),
                    **low_rank, **whole))
    if args.compress:
        densities = tuple(float(d) for d in args.compress.split(","))
        print(f"  trp, pruned to {densities}, DP, Huffman", flush=True)
        rows.append(run("trp+dc", path, args, out, low_rank="trp", nuclear=args.nuclear,
                        trp_period=args.trp_period, density=densities,
                        bits=(args.compress_bits,), quantizer=args.compress_quantizer,
                        zero_run_bits="auto", **low_rank,
                        **({} if args.compress_quantizer == "dp" else
                           dict(finetune_epochs=16, finetune_lr=None))))
        print("  dp: Deep Compression's path (the recipe)", flush=True)
        if not args.no_peer:
            rows.append(run("dp", path, args, out, zero_run_bits="auto"))

    dense = rows[0]
    print(f"\n{'config':<7} {'ranks':>12} {'MACs':>8} {'fewer':>6} {'nonzero':>8} "
          f"{'err low-rank':>12} {'err int':>8} {'ratio':>7} {'bytes':>8}")
    for r in rows:
        ranks = "/".join(map(str, r["ranks"])) if r["ranks"] else "-"
        low = f"{r['error_low_rank']:.2f}%" if r["error_low_rank"] is not None else "-"
        print(f"{r['config']:<7} {ranks:>12} {r['macs']:>8,} "
              f"{dense['macs'] / r['macs']:>5.2f}x {r['nonzero_macs']:>8,} {low:>12} "
              f"{r['error_int']:>7.2f}% {r['ratio']:>6.1f}x {r['compressed_bytes']:>8,}")
    trp, svd = rows[1], rows[2]
    aims = {
        f"trp: error <= {ERROR_LIMIT}% with >= {MAC_AIM:.0f}x fewer MACs":
            trp["error_int"] <= ERROR_LIMIT and dense["macs"] / trp["macs"] >= MAC_AIM,
        "trp no worse than svd at equal rank": trp["error_int"] <= svd["error_int"],
    }
    if args.compress:
        aims[f"trp+dc within {ERROR_LIMIT}% error"] = rows[3]["error_int"] <= ERROR_LIMIT
    for what, ok in aims.items():
        print(f"aim: {what}: {'yes' if ok else 'no'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "float_accuracy": float_accuracy,
                                         "settings": vars(args) | {"json": str(args.json)},
                                         "aims": aims}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
