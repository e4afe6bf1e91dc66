"""Benchmark: integer reference accuracy against the float compressed model.

Targets (issue 3): the integer model (docs/arithmetic.md, 8-bit activations, 8-bit codebooks)
within 0.3 percentage points of the float shared-weight model on digits and on MNIST
(LeNet-300-100), within 1 point on a signed-feature tabular data set (breast-cancer).

    python bench/sim_accuracy.py [--digits-seeds 0-4] [--cancer-seeds 0-9]
                                 [--lenet ARTIFACT] [--data-dir D] [--json PATH]

LeNet-300-100 reuses ``out/bench/lenet-300-100-seed0.dcz`` (written by
``bench/compress_lenet.py``) when present, else compresses it (about 150 s); it is skipped when
MNIST is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE  # noqa: E402

import compress  # noqa: E402
import sim  # noqa: E402
from core.datasets import DEFAULT_MNIST_DIR  # noqa: E402
from compress.pipeline import CompressConfig, compress_model  # noqa: E402

TARGET_POINTS = {"digits": 0.3, "mnist": 0.3, "breast-cancer": 1.0}


def _seeds(text: str) -> list[int]:
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(part) for part in text.split(",")]


def _row(name: str, seed: int, model, data) -> dict:
    figures = sim.evaluate(model, data.x_test, data.y_test)
    return {"dataset": name, "seed": seed, "samples": figures["samples"],
            "accuracy_compressed": figures["accuracy_compressed"],
            "accuracy_int": figures["accuracy_int"],
            "difference_points": 100 * (figures["accuracy_int"] - figures["accuracy_compressed"]),
            "agreement": figures["agreement"],
            "accumulator_bits": [layer.integer.accumulator_bits for layer in model.layers]}


def _compressed(model_name: str, seed: int, **extra):
    start = time.perf_counter()
    result = compress_model(CompressConfig(model=model_name, seed=seed, progress=False, **extra),
                            log=lambda _: None)
    print(f"  {model_name} seed {seed}: compressed in {time.perf_counter() - start:.1f} s",
          flush=True)
    return result.model, result.dataset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits-seeds", type=_seeds, default=_seeds("0-4"))
    parser.add_argument("--cancer-seeds", type=_seeds, default=_seeds("0-9"))
    parser.add_argument("--lenet", type=Path, default=CACHE / "lenet-300-100-seed0.dcz")
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DIR", DEFAULT_MNIST_DIR))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    rows = []
    for seed in args.digits_seeds:
        model, data = _compressed("digits-mlp", seed)
        rows.append(_row("digits", seed, model, data))
    for seed in args.cancer_seeds:
        model, data = _compressed("cancer-mlp", seed)
        rows.append(_row("breast-cancer", seed, model, data))
    if (Path(args.data_dir) / "t10k-images-idx3-ubyte.gz").exists():
        if args.lenet.exists():
            model = compress.load(args.lenet)
            print(f"  lenet-300-100: reusing {args.lenet}")
            data = compress.load_dataset("mnist", data_dir=args.data_dir)
        else:
            model, data = _compressed("lenet-300-100", 0, dataset="mnist",
                                      data_dir=str(args.data_dir))
            model.save(args.lenet)
        rows.append(_row("mnist", int(model.metadata["settings"]["seed"]), model, data))
    else:
        print(f"MNIST not found in {args.data_dir}: LeNet-300-100 skipped")

    print(f"\n{'dataset':<14} {'seed':>4} {'samples':>7} {'float':>8} {'integer':>8} "
          f"{'diff pt':>8} {'agree':>7}  accumulator bits")
    for r in rows:
        print(f"{r['dataset']:<14} {r['seed']:>4} {r['samples']:>7} "
              f"{r['accuracy_compressed']:>8.2%} {r['accuracy_int']:>8.2%} "
              f"{r['difference_points']:>+8.2f} {r['agreement']:>7.2%}  "
              f"{r['accumulator_bits']}")
    summary = {}
    met = True
    print()
    for name, target in TARGET_POINTS.items():
        chosen = [r for r in rows if r["dataset"] == name]
        if not chosen:
            continue
        worst = max(abs(r["difference_points"]) for r in chosen)
        mean = sum(r["difference_points"] for r in chosen) / len(chosen)
        ok = worst <= target
        met &= ok
        summary[name] = {"runs": len(chosen), "mean_difference_points": mean,
                         "max_abs_difference_points": worst, "target_points": target,
                         "met": ok}
        print(f"{name}: {len(chosen)} run(s), integer - float mean {mean:+.2f} pt, "
              f"largest |difference| {worst:.2f} pt (target <= {target}): "
              f"{'met' if ok else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
