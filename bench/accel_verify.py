"""Benchmark: the generated engine against the integer reference, and its PE utilization.

Targets (issue 4): 0 mismatches on the whole digits test set and on 1,000 MNIST test images
(LeNet-300-100); PE utilization >= 85% on LeNet-300-100 with 16 PEs; measured cycles within 5%
of the analytic model. Cocotb on Icarus Verilog, images streamed back to back.

    python bench/accel_verify.py [--mnist-samples 1000] [--model ARTIFACT] [--data-dir D]
                                 [--simulator icarus|amaranth] [--json PATH]

The digits model is compressed once (seed 0, about 20 s) and kept in ``out/bench``; LeNet-300-100
reuses ``out/bench/lenet-300-100-seed0.dcz`` (``bench/compress_lenet.py``) and is skipped when
MNIST is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, lenet_arguments, lenet_missing, run  # noqa: E402

import compress  # noqa: E402
import sim  # noqa: E402
from accel.verify import verify  # noqa: E402
from compress.pipeline import CompressConfig  # noqa: E402

TARGET_UTILIZATION = 0.85
TARGET_MODEL_ERROR = 0.05


def _case(name, model, data, samples, args):
    x = sim.quantize_input(model, data.x_test[:samples]).astype(np.int64)
    calibration = sim.quantize_input(model, data.x_train[:1000]).astype(np.int64)
    print(f"{name}: {len(x)} test images, {args.pes} PEs, {args.simulator} ...", flush=True)
    report = verify(model, x, calibration=calibration, n_pes=args.pes, simulator=args.simulator,
                    build_dir=CACHE / f"verify-{name}")
    print(f"  mismatches {report['mismatches']} of {report['samples']}; cycles per inference "
          f"{report['cycles_per_inference']:.1f} measured, {report['predicted_cycles']:.1f} "
          f"predicted (ratio {report['measured_over_predicted']:.3f}); PE utilization "
          f"{report['pe_utilization']:.1%}; latency {report['latency_cycles']['mean']:.0f} "
          f"cycles mean; simulated in {report['simulation_seconds']:.0f} s", flush=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    lenet_arguments(parser)
    parser.add_argument("--mnist-samples", type=int, default=1000)
    parser.add_argument("--pes", type=int, default=16)
    parser.add_argument("--simulator", choices=["icarus", "amaranth"], default="icarus")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    reports = {}
    digits_path = CACHE / "digits-mlp-seed0.dcz"
    if not digits_path.exists():
        print("compressing digits-mlp (seed 0) ...", flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        run(CompressConfig(), save=digits_path)
    digits_model = compress.load(digits_path)
    digits = compress.load_dataset("digits", seed=0)
    reports["digits"] = _case("digits", digits_model, digits, None, args)

    if lenet_missing(args) is None:
        lenet = compress.load(args.model)
        mnist = compress.load_dataset("mnist", data_dir=args.data_dir)
        reports["mnist"] = _case("mnist", lenet, mnist, args.mnist_samples, args)

    ok = all(r["mismatches"] == 0 for r in reports.values())
    print("\ntargets:")
    counts = ", ".join(f"{k} {r['mismatches']}/{r['samples']}" for k, r in reports.items())
    print(f"  0 mismatches: {'met' if ok else 'NOT MET'} ({counts})")
    if "mnist" in reports:
        r = reports["mnist"]
        util_ok = r["pe_utilization"] >= TARGET_UTILIZATION
        model_ok = abs(r["measured_over_predicted"] - 1) <= TARGET_MODEL_ERROR
        print(f"  PE utilization >= {TARGET_UTILIZATION:.0%} (LeNet-300-100, {args.pes} PEs): "
              f"{r['pe_utilization']:.1%} {'met' if util_ok else 'NOT MET'}")
        print(f"  measured within {TARGET_MODEL_ERROR:.0%} of the model: ratio "
              f"{r['measured_over_predicted']:.3f} {'met' if model_ok else 'NOT MET'}")
        ok = ok and util_ok and model_ok
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(reports, indent=2, default=str) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
