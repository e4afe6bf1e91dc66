"""``python -m sim``: run a compressed model's integer reference on a test set.

Reports ``accuracy_int`` (integer logits), ``accuracy_compressed`` (the float shared-weight
model), ``agreement`` (fraction of samples where both predict the same class) and timings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import compress
from compress.data import DATASETS

from .evaluate import evaluate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sim",
        description="Run the bit-exact integer reference (docs/arithmetic.md) of a compressed "
                    "model on a test set and compare it with the float shared-weight model.")
    parser.add_argument("--model", required=True, type=Path,
                        help="artifact with integer data (python -m compress writes "
                             "OUT/model.dcz)")
    parser.add_argument("--dataset", default=None,
                        help=f"{', '.join(DATASETS)} or path to an .npz (default: the data set "
                             "the artifact was compressed on)")
    parser.add_argument("--data-dir", default=None, help="MNIST folder (see python -m compress)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the digits split (default: the artifact's)")
    parser.add_argument("--json", type=Path, help="also write the figures to this path")
    return parser


def _layer_rows(model) -> list[dict]:
    rows = []
    for i, layer in enumerate(model.layers):
        integer = layer.integer
        rows.append({
            "name": f"fc{i + 1}",
            "shape": [layer.out_features, layer.in_features],
            "input": f"{'int' if integer.input_signed else 'uint'}{integer.activation_bits}",
            "weight_bits": integer.weight_bits,
            "codebook": integer.codebook.tolist(),
            "accumulator_bits": integer.accumulator_bits,
            "multiplier": integer.multiplier,
            "shift": integer.shift,
            "output": "logits" if integer.logits else (
                f"{'uint' if layer.relu else 'int'}{integer.activation_bits}"),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        model = compress.load(args.model)
        if not model.has_integer:
            raise ValueError(f"{args.model} has no integer data (written by an older version "
                             "or without it): rerun python -m compress")
        settings = model.metadata.get("settings", {})
        dataset = args.dataset or model.metadata.get("dataset") or "digits"
        seed = args.seed if args.seed is not None else int(settings.get("seed", 0))
        data = compress.load_dataset(dataset, data_dir=args.data_dir, seed=seed)
        if data.n_features != model.in_features:
            raise ValueError(f"data set {data.name!r} has {data.n_features} features, the model "
                             f"takes {model.in_features}")
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    figures = evaluate(model, data.x_test, data.y_test)
    report = {"model": str(args.model), "dataset": data.name, **figures,
              "layers": _layer_rows(model)}
    print(f"{'layer':<6} {'shape':>9} {'input':>6} {'acc bits':>8} {'multiplier':>10} "
          f"{'shift':>5} {'output':>7}")
    for row in report["layers"]:
        shape = "x".join(map(str, row["shape"]))
        print(f"{row['name']:<6} {shape:>9} {row['input']:>6} {row['accumulator_bits']:>8} "
              f"{row['multiplier']:>10} {row['shift']:>5} {row['output']:>7}")
    print(f"{data.name}: {figures['samples']} test samples; integer accuracy "
          f"{figures['accuracy_int']:.4f}, float compressed {figures['accuracy_compressed']:.4f}, "
          f"agreement {figures['agreement']:.4f}; integer run "
          f"{figures['timings']['run_int_s']:.3f} s "
          f"({figures['samples_per_second_int']:,.0f} samples/s)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
