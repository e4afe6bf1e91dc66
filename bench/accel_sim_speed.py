"""Benchmark: simulated clocks per second of the 16-PE LeNet-300-100 engine, Verilator vs Icarus.

Both run the same cocotb testbench (``accel/verification/cocotb_engine.py``, through
``accel.verification.cosim.simulate``) on the same engine, images streamed back to back. Each simulator is built
first (timed apart: the build is cached, so the timed run only simulates), then runs its images;
clocks per second are the engine's measured clock cycles over the wall time of that run. Verilator
builds with ``accel.verification.cosim``'s options (no tracing, C++ at ``-O0``). The ratio quoted is of these
two: the same testbench, only the simulator differs.

A third row, in the same run, is the volume path: ``accel.verification.batch_sim`` (the same Verilog in
Verilator, driven by generated C++ instead of cocotb's Python, ``-O3``) on ``--batch-images``
images, each output compared with ``sim.trace``.

    python bench/accel_sim_speed.py [--model ARTIFACT] [--data-dir D] [--icarus-images 20]
                                    [--verilator-images 200] [--batch-images 2000] [--json PATH]

The artifact is ``out/bench/lenet-300-100-seed0.dcz`` (``python bench/compress_lenet.py`` makes
it, in a few minutes); skipped (exit 0) when MNIST is absent.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, lenet_arguments, lenet_missing  # noqa: E402

import compress  # noqa: E402
import sim  # noqa: E402
from accel.verification import batch_sim, cosim  # noqa: E402
from accel.verification.compare import compare_run  # noqa: E402
from accel.planning.plan import EnginePlan  # noqa: E402


def _measure(name, model, plan, x, build_dir: Path) -> dict:
    shutil.rmtree(build_dir, ignore_errors=True)
    # Build: one image, timed whole (conversion to Verilog, compilation and that short run).
    start = time.perf_counter()
    cosim.simulate(model, plan, x[:1], build_dir=build_dir, idle=0.0, backpressure=0.0,
                   simulator=name)
    build = time.perf_counter() - start
    start = time.perf_counter()
    one = cosim.simulate(model, plan, x[:1], build_dir=build_dir, idle=0.0, backpressure=0.0,
                         simulator=name)
    overhead = time.perf_counter() - start          # start-up and one image, already built
    start = time.perf_counter()
    result = cosim.simulate(model, plan, x, build_dir=build_dir, idle=0.0, backpressure=0.0,
                            simulator=name)
    seconds = time.perf_counter() - start
    if not result.ok:
        raise RuntimeError(f"{name}: {result.summary()}")
    report = {"images": len(x), "cycles": result.cycles, "seconds": round(seconds, 2),
              "clocks_per_second": result.cycles / seconds,
              "build_seconds": round(build - overhead, 1),
              "one_image_run_seconds": round(overhead, 2)}
    print(f"  {name}: {len(x)} images, {result.cycles} clocks in {seconds:.1f} s: "
          f"{report['clocks_per_second']:,.0f} clocks/s; build {report['build_seconds']:.1f} s",
          flush=True)
    return report


def _measure_batch(model, plan, x, build_dir: Path) -> dict:
    shutil.rmtree(build_dir, ignore_errors=True)
    start = time.perf_counter()
    batch_sim.build(plan, build_dir)
    build = time.perf_counter() - start
    start = time.perf_counter()
    run = batch_sim.run_engine(plan, x, build_dir=build_dir)
    seconds = time.perf_counter() - start
    comparison = compare_run(run, sim.trace(model, x))
    if comparison.mismatches:
        raise RuntimeError(f"batch_sim: {comparison.mismatches} images differ from sim, first "
                           f"{comparison.first}")
    report = {"images": len(x), "cycles": int(run.cycles), "seconds": round(seconds, 2),
              "clocks_per_second": run.cycles / seconds, "build_seconds": round(build, 1)}
    print(f"  batch_sim (Verilator, C++ driver): {len(x)} images, {run.cycles} clocks in "
          f"{seconds:.1f} s: {report['clocks_per_second']:,.0f} clocks/s; build "
          f"{build:.1f} s; every output equal to sim", flush=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    lenet_arguments(parser)
    parser.add_argument("--pes", type=int, default=16)
    parser.add_argument("--icarus-images", type=int, default=20)
    parser.add_argument("--verilator-images", type=int, default=200)
    parser.add_argument("--batch-images", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    missing = lenet_missing(args)
    if missing is not None:
        return missing
    model = compress.load(args.model)
    data = compress.load_dataset("mnist", data_dir=args.data_dir)
    calibration = sim.quantize_input(model, data.x_train[:1000]).astype(np.int64)
    plan = EnginePlan.from_model(model, n_pes=args.pes, calibration=calibration)
    images = max(args.icarus_images, args.verilator_images, args.batch_images)
    x = sim.quantize_input(model, data.x_test[:images]).astype(np.int64)
    print(f"LeNet-300-100, {args.pes} PEs, same cocotb testbench on both simulators", flush=True)
    reports = {}
    for name, count in (("verilator", args.verilator_images), ("icarus", args.icarus_images)):
        reports[name] = _measure(name, model, plan, x[:count], CACHE / f"sim-speed-{name}")
    reports["batch_sim"] = _measure_batch(model, plan, x[:args.batch_images],
                                          CACHE / "sim-speed-batch")
    ratio = reports["verilator"]["clocks_per_second"] / reports["icarus"]["clocks_per_second"]
    reports["verilator_over_icarus"] = ratio
    reports["batch_sim_over_icarus"] = (reports["batch_sim"]["clocks_per_second"]
                                        / reports["icarus"]["clocks_per_second"])
    print(f"Verilator {reports['verilator']['clocks_per_second']:,.0f} clocks/s, Icarus "
          f"{reports['icarus']['clocks_per_second']:,.0f} clocks/s: {ratio:.1f}x; builds "
          f"{reports['verilator']['build_seconds']:.0f} s and "
          f"{reports['icarus']['build_seconds']:.0f} s")
    print(f"batch_sim {reports['batch_sim']['clocks_per_second']:,.0f} clocks/s: "
          f"{reports['batch_sim_over_icarus']:.0f}x Icarus", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(reports, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
