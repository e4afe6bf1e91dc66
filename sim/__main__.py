"""``python -m sim``: run a compressed model's integer reference on a test set.

Reports ``accuracy_int`` (integer logits), ``accuracy_compressed`` (the float shared-weight
model), ``agreement`` (fraction of samples where both predict the same class) and timings.
"""

from __future__ import annotations

import argparse
import json
import sys

from core.options import fail

from .evaluate import add_model_arguments, check_model_arguments, evaluate, load_model_and_data
from .reference import saturation_warning


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sim",
        description="Run the bit-exact integer reference (docs/arithmetic.md) of a compressed "
                    "model on a test set and compare it with the float shared-weight model.")
    add_model_arguments(parser)
    return parser


def _layer_rows(model) -> list[dict]:
    rows = []
    for i, layer in enumerate(model.layers):
        integer = layer.integer
        g = layer.geometry
        rows.append({
            "name": f"{layer.kind}{i + 1}",
            "shape": layer.shape,
            **({} if g is None else {"geometry": g.as_dict(), "maps": [
                layer.out_features, g.out_height, g.out_width]}),
            "input": f"{'int' if integer.input_signed else 'uint'}{integer.activation_bits}",
            "weight_bits": integer.weight_bits,
            "codebook": integer.codebook.tolist(),
            "codebook_kind": "per row (A9)" if integer.per_row else "per layer (A2)",
            "accumulator_bits": integer.accumulator_bits,
            "multiplier": integer.multiplier,
            "shift": integer.shift,
            "output": "logits" if integer.logits else (
                f"{'uint' if layer.relu else 'int'}{integer.activation_bits}"),
            "drain": "logits (A8)" if integer.logits else (
                "requantize (A6-A7)" if integer.levels is None else
                f"{len(integer.levels)} levels (A10)")
            + (f", {g.pool} pool (A13)" if g is not None and g.pool else ""),
        })
        if integer.levels is not None:
            rows[-1].update(thresholds=integer.thresholds.tolist(), levels=integer.levels.tolist())
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_model_arguments(parser, args)
    try:
        model, data = load_model_and_data(args.model, dataset=args.dataset,
                                          data_dir=args.data_dir, seed=args.seed)
    except ValueError as error:
        fail(parser, error)
    figures = evaluate(model, data.x_test, data.y_test)
    report = {"model": str(args.model), "dataset": data.name, **figures,
              "layers": _layer_rows(model)}
    print(f"{'layer':<6} {'shape':>11} {'codebook':>14} {'input':>6} {'acc bits':>8} "
          f"{'multiplier':>10} {'shift':>5} {'output':>7}  drain")
    for row in report["layers"]:
        shape = "x".join(map(str, row["shape"]))
        print(f"{row['name']:<6} {shape:>11} {row['codebook_kind']:>14} {row['input']:>6} "
              f"{row['accumulator_bits']:>8} {row['multiplier']:>10} {row['shift']:>5} "
              f"{row['output']:>7}  {row['drain']}")
    print(f"{data.name}: {figures['samples']} test samples; integer accuracy "
          f"{figures['accuracy_int']:.4f}, float compressed {figures['accuracy_compressed']:.4f}, "
          f"agreement {figures['agreement']:.4f}; integer run "
          f"{figures['timings']['run_int_s']:.3f} s "
          f"({figures['samples_per_second_int']:,.0f} samples/s)")
    warning = saturation_warning(figures["input_saturation"])
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
