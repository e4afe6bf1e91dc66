"""Benchmark: compressed LeNet-5s on the sparse engine (Verilator), next to PyTorch, same run.

Issue 25's hardware targets: every logit and hidden feature map equal to ``sim`` on at least
1,000 MNIST test images, cycles per inference measured against the analytic model, and the
inference rate next to PyTorch's batch-1 CPU inference of the same float network, timed in
the same run (aim: 10x).

For each ``--model`` (default: the Deep Compression recipe's and EPR's LeNet-5 artifacts that
``bench/lenet5.py`` keeps) this plans the engine as ``python -m accel.build`` does (``--pes``
PEs, ``--banks``, output channels and neurons dealt to PEs on 1,000 training images), builds
it with Verilator and streams ``--samples`` test images back to back through it
(``accel.verification.batch_sim``: the engine's Verilog, a C++ driver that rebuilds every hidden
layer from the trace bus), compares every layer with ``sim.trace``, and prints the measured
clocks per image beside ``EnginePlan.predict``'s. Then PyTorch's batch-1 float inference of
each model (``compress.to_torch``), one thread, best of ``--repeats``. The rate on the
board is the measured clocks at ``--clock-mhz`` (default: the clock of ``--report``, a
``python -m accel.build`` report of the same engine, else 100 MHz).

    python bench/lenet5_engine.py [--model A.dcz --model B.dcz] [--pes 16] [--banks 1]
        [--samples 1000] [--report out/build/report.json] [--data-dir DIR] [--json PATH]
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
from accel_build import torch_batch1  # noqa: E402  (one thread, best of repeats)

import numpy as np  # noqa: E402

import compress  # noqa: E402
import sim  # noqa: E402
from accel.build import _dense_macs  # noqa: E402
from accel.planning.plan import EnginePlan  # noqa: E402
from accel.verification import batch_sim  # noqa: E402
from core.datasets import DEFAULT_MNIST_DIR, load_dataset  # noqa: E402

#: The ULX3S-85F's hard multipliers (the dense ceiling is this many MACs per clock).
MULTIPLIERS = 156


def run_model(path: Path, data, args) -> dict:
    model = compress.load(path)
    calibration = sim.quantize_input(model, data.x_train[:1000]).astype(np.int64)
    plan = EnginePlan.from_model(model, n_pes=args.pes, banks=args.banks,
                                 queue_depth=args.queue_depth, calibration=calibration)
    x = sim.quantize_input(model, data.x_test[:args.samples]).astype(np.int64)
    want = sim.trace(model, x)
    predicted = plan.predict([x] + want[:-1])
    print(f"{path.name}: {args.pes} PEs, {args.banks} bank(s); Verilator build and "
          f"{len(x)} images ...", flush=True)
    start = time.perf_counter()
    run = batch_sim.run_engine(plan, x, build_dir=args.build_dir / f"{path.stem}-{args.pes}")
    seconds = time.perf_counter() - start
    got = run.hidden + [run.logits]
    mismatching = np.zeros(len(x), dtype=bool)
    for g, w in zip(got, want):
        mismatching |= (g != w).any(axis=1)
    useful = predicted["useful_macs"].mean()
    return {
        "model": str(path), "samples": len(x), "simulated_seconds": seconds,
        "mismatches": int(mismatching.sum()),
        "cycles_per_inference": run.cycles / len(x),
        "predicted_cycles_per_inference": predicted["cycles_per_inference"],
        "useful_macs_per_inference": float(useful),
        "dense_macs_per_inference": _dense_macs(model, plan),
        "accuracy_int": float((sim.run(model, x).argmax(axis=1)
                               == data.y_test[:len(x)]).mean()),
        "torch_batch1": torch_batch1(model, data.x_test[:2000].astype(np.float32),
                                     args.repeats, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append",
                        help="artifact (repeatable; default: the DC and EPR LeNet-5s of "
                             "bench/lenet5.py)")
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DIR", DEFAULT_MNIST_DIR))
    parser.add_argument("--pes", type=int, default=16)
    parser.add_argument("--banks", type=int, default=1)
    parser.add_argument("--queue-depth", type=int, default=None,
                        help="each PE's group queue (default: the engine's, 513 with "
                             "convolutions)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--report", type=Path,
                        help="a python -m accel.build report.json of this engine: its clock")
    parser.add_argument("--clock-mhz", type=float)
    parser.add_argument("--build-dir", type=Path, default=CACHE / "lenet5-engine")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if mnist_missing(args.data_dir):
        return 0
    models = args.model or [CACHE / "lenet-5-seed0.dcz", CACHE / "lenet-5-epr0.3-seed0.dcz"]
    for path in models:
        if not path.exists():
            print(f"{path} not found: run bench/lenet5.py first (or pass --model)")
            return 2
    clock_mhz, source = args.clock_mhz, "--clock-mhz"
    report = None
    if clock_mhz is None and args.report is not None:
        report = json.loads(args.report.read_text())
        engine = report["engine"]
        if (engine["n_pes"], engine["banks"]) != (args.pes, args.banks):
            print(f"{args.report} is a build of {engine['n_pes']} PEs and {engine['banks']} "
                  f"bank(s), not --pes {args.pes} --banks {args.banks}: its clock is another "
                  "engine's")
            return 2
        clock_mhz, source = float(report["clock_mhz"]), f"the build report {args.report}"
    if clock_mhz is None:
        clock_mhz, source = 100.0, "nominal"
    data = load_dataset("mnist", data_dir=args.data_dir)
    rows = [run_model(path, data, args) for path in models]
    print(f"\nclock {clock_mhz:.3f} MHz ({source}); PyTorch batch 1, one thread, same run\n")
    head = (f"{'model':<28} {'images':>6} {'mismatch':>8} {'cycles':>9} {'model':>9} "
            f"{'inf/s':>9} {'PyTorch':>8} {'ratio':>6} {'dense/ceiling':>13}")
    print(head)
    print("-" * len(head))
    for row in rows:
        rate = clock_mhz * 1e6 / row["cycles_per_inference"]
        row["clock_mhz"] = clock_mhz
        row["inferences_per_second"] = rate
        row["over_torch"] = rate / row["torch_batch1"]
        row["dense_over_ceiling"] = (row["dense_macs_per_inference"] * rate
                                     / (MULTIPLIERS * clock_mhz * 1e6))
        print(f"{Path(row['model']).name:<28} {row['samples']:>6} {row['mismatches']:>8} "
              f"{row['cycles_per_inference']:>9,.1f} {row['predicted_cycles_per_inference']:>9,.1f} "
              f"{rate:>9,.0f} {row['torch_batch1']:>8,.0f} {row['over_torch']:>5.1f}x "
              f"{row['dense_over_ceiling']:>12.2f}x")
    if report is not None:
        used = report["utilization"]
        print(f"\nthe build ({args.report}): {used['luts']['used']:,} LUT4, "
              f"{used['block_rams']['used']} block RAMs, {used['multipliers']['used']} "
              f"multipliers")
    if args.json:
        args.json.write_text(json.dumps({"clock_mhz": clock_mhz, "clock_source": source,
                                         "models": rows}, indent=2))
    return 0 if all(row["mismatches"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
