"""``python -m accel.verify``: prove the generated engine equals the integer reference.

Generates the engine for a quantized artifact, runs test-set images through it in simulation
(cocotb on Verilator by default, cocotb on Icarus Verilog, or Amaranth's own simulator),
compares every logit and every hidden activation with ``sim.trace``, and reports:

- ``samples``, ``mismatches`` (must be 0) and the first differing sample, layer and neuron;
- ``cycles_per_inference`` measured in simulation (images streamed back to back, no idle input
  and no output backpressure unless asked), next to ``predicted_cycles`` from the analytic model
  (:meth:`accel.planning.plan.EnginePlan.predict`) and their ratio;
- ``pe_utilization``: useful multiply-accumulates (nonzero weight x nonzero activation) /
  (PEs x measured cycles), and the busiest-PE work bound, so load imbalance is visible.

- ``input_saturation``: the test-set input values clamped to the calibrated range (A1,
  :func:`sim.quantize_input`); above :data:`sim.SATURATION_WARNING_FRACTION` (1%) a warning
  says the data is scaled differently from the calibration set.

Exits 1 on any mismatch, 2 on bad arguments (checked before any work).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["build_parser", "main", "verify"]


def build_parser() -> argparse.ArgumentParser:
    import sim
    from accel.cli import add_engine_arguments

    parser = argparse.ArgumentParser(
        prog="python -m accel.verify",
        description="Generate the accelerator for a quantized artifact, simulate it on test-set "
                    "images and compare every output with the integer reference (sim).")
    sim.add_model_arguments(parser)
    parser.add_argument("--samples", type=int, default=None,
                        help="test images to run (default: the whole test set)")
    add_engine_arguments(parser)
    parser.add_argument("--simulator", choices=["verilator", "icarus", "amaranth"],
                        default="verilator",
                        help="cocotb on Verilator (default; falls back to Icarus Verilog, with a "
                             "warning, without a C++ compiler), cocotb on Icarus Verilog, or "
                             "Amaranth's simulator")
    parser.add_argument("--idle", type=float, default=0.0,
                        help="probability of an idle input cycle (default 0: cycle counts are "
                             "the engine's own)")
    parser.add_argument("--backpressure", type=float, default=0.0,
                        help="probability the output refuses a logit in a cycle (default 0)")
    parser.add_argument("--build-dir", type=Path, default=Path("out/verify"),
                        help="where the Verilog, simulator build and waveforms go")
    parser.add_argument("--waves", action="store_true", help="always write a waveform")
    return parser


def verify(model, x, *, calibration=None, n_pes: int = 1, lanes: int = 2, input_lanes: int = 4,
           banks: int | None = None, queue_depth: int | None = None, zero_run_bits: int = 4,
           simulator: str = "verilator", idle: float = 0.0, backpressure: float = 0.0,
           build_dir: Path = Path("out/verify"), waves: bool = False, seed: int = 0) -> dict:
    """Simulate the engine for ``model`` on integer inputs ``x`` and report (see module doc).

    The engine defaults are ``accel.build``'s (:data:`accel.planning.plan.DEFAULT_PES`, one PE, and
    :func:`accel.planning.plan.default_banks`: 2 banks with one PE, 3 with more).
    """
    import sim
    from accel.planning.plan import EnginePlan, default_banks

    if banks is None:
        banks = default_banks(n_pes)

    plan = EnginePlan.from_model(model, n_pes=n_pes, zero_run_bits=zero_run_bits, lanes=lanes,
                                 input_lanes=input_lanes, queue_depth=queue_depth, banks=banks,
                                 calibration=calibration)
    expected = sim.trace(model, x)
    start = time.perf_counter()
    if simulator in ("verilator", "icarus"):
        from accel.verification.cosim import simulate
        result = simulate(model, plan, x, build_dir=build_dir, seed=seed, idle=idle,
                          backpressure=backpressure, waves=waves, simulator=simulator)
        cycles, latency = result.cycles, list(result.latency)
        mismatches, first, waveform = result.mismatches, result.first_mismatch, result.waveform
    elif simulator == "amaranth":
        from accel.verification.amaranth_sim import run_engine
        from accel.verification.compare import compare_run
        build_dir.mkdir(parents=True, exist_ok=True)
        vcd = str(build_dir / "engine.vcd") if waves else None
        run = run_engine(plan, x, idle=idle, backpressure=backpressure, seed=seed, vcd=vcd)
        cycles, latency, waveform = run.cycles, run.latency, vcd
        comparison = compare_run(run, expected)
        mismatches, first = comparison.mismatches, comparison.first
        if mismatches and not waves:                # keep a waveform of a failing run
            waveform = str(build_dir / "engine.vcd")
            run_engine(plan, x, idle=idle, backpressure=backpressure, seed=seed, vcd=waveform)
    else:
        raise ValueError(f"simulator must be 'verilator', 'icarus' or 'amaranth', not "
                         f"{simulator!r}")
    elapsed = time.perf_counter() - start

    n = len(x)
    prediction = plan.predict([x] + expected[:-1])
    useful = int(prediction["useful_macs"].sum())
    per_inference = cycles / n if n else 0.0
    return {
        "samples": n,
        "mismatches": int(mismatches),
        "first_mismatch": first,
        "cycles": int(cycles),
        "cycles_per_inference": per_inference,
        "predicted_cycles": prediction["cycles_per_inference"],
        "measured_over_predicted": (cycles / prediction["cycles"]) if prediction["cycles"]
        else None,
        "pe_utilization": useful / (plan.n_pes * cycles) if cycles else 0.0,
        "prediction_in_range": prediction["in_range"],
        "layer_by_layer_cycles": prediction["layer_by_layer"],
        "stream_bound_cycles": prediction["stream_bound"],
        "useful_macs_per_inference": useful / n if n else 0.0,
        "latency_cycles": {"min": int(min(latency)), "mean": float(np.mean(latency)),
                           "max": int(max(latency))} if latency else None,
        "simulator": simulator,
        "simulation_seconds": round(elapsed, 2),
        "waveform": waveform,
        "engine": {"n_pes": plan.n_pes, "lanes": plan.lanes, "input_lanes": plan.input_lanes,
                   "banks": plan.banks, "queue_depth": plan.queue_depth,
                   "balanced": calibration is not None,
                   "layers": [{"shape": [layer.out_features, layer.in_features],
                               "entry_depth": layer.image.depth,
                               "rows_per_pe": layer.image.rows_per_pe,
                               "padding_entries": layer.image.padding,
                               "accumulator_bits": layer.accumulator_bits}
                              for layer in plan.layers]},
    }


def main(argv: list[str] | None = None) -> int:
    import sim
    from accel.cli import check_engine_arguments, engine_options
    from core.options import check_output_path, check_range, fail

    parser = build_parser()
    args = parser.parse_args(argv)
    # Every option is checked before any work.
    sim.check_model_arguments(parser, args)
    check_range(parser, "--samples", args.samples, 1)
    check_engine_arguments(parser, args)
    for flag, value in (("--idle", args.idle), ("--backpressure", args.backpressure)):
        check_range(parser, flag, value, 0.0, 1.0, high_open=True)
    check_output_path(parser, "--build-dir", args.build_dir, folder=True)
    try:
        model, data = sim.load_model_and_data(args.model, dataset=args.dataset,
                                              data_dir=args.data_dir, seed=args.seed)
        x_test = data.x_test if args.samples is None else data.x_test[:args.samples]
        x, saturation = sim.quantize_input(model, x_test, return_saturation=True)
        x = x.astype(np.int64)
        warning = sim.saturation_warning(saturation)
        if warning is not None:
            print(warning, file=sys.stderr, flush=True)
        calibration = None if args.no_balance else \
            sim.quantize_input(model, data.x_train[:1000]).astype(np.int64)
        print(f"verify: {data.name}, {len(x)} test samples, {args.pes} PEs, "
              f"{args.simulator} simulation ...", flush=True)
        options = engine_options(args)
        report = verify(model, x, calibration=calibration, n_pes=options["n_pes"],
                        lanes=options["lanes"], input_lanes=options["input_lanes"],
                        banks=options["banks"], queue_depth=options["queue_depth"],
                        zero_run_bits=options["zero_run_bits"],
                        simulator=args.simulator, idle=args.idle,
                        backpressure=args.backpressure, build_dir=args.build_dir,
                        waves=args.waves)
    except (ValueError, RuntimeError) as error:
        fail(parser, error)
    report = {"model": str(args.model), "dataset": data.name, **report,
              "input_saturation": saturation}
    print(f"samples {report['samples']}, mismatches {report['mismatches']}")
    print(f"cycles per inference {report['cycles_per_inference']:.1f} measured, "
          f"{report['predicted_cycles']:.1f} predicted "
          f"(ratio {report['measured_over_predicted']:.3f}); layers not overlapped "
          f"{report['layer_by_layer_cycles']:.1f}, busiest-PE bound over the stream "
          f"{report['stream_bound_cycles']:.1f}")
    if not report["prediction_in_range"]:
        print("  (this stream is outside the cycle model's range of validity: the images in "
              "flight gain more than accel.planning.cycles.MODEL_OVERLAP_LIMIT, and the model is "
              "optimistic there; docs/accelerator.md)")
    print(f"PE utilization {report['pe_utilization']:.1%} "
          f"({report['useful_macs_per_inference']:.0f} useful MACs per inference on "
          f"{args.pes} PEs); simulated in {report['simulation_seconds']:.1f} s")
    if report["first_mismatch"] is not None:
        m = report["first_mismatch"]
        print(f"FIRST MISMATCH: sample {m['sample']}, layer {m['layer']}, neuron {m['neuron']}: "
              f"expected {m['expected']}, got {m['got']}")
    if report["waveform"]:
        print(f"waveform: {report['waveform']}")
    if warning is not None:                     # again at the end, where it is seen
        print(warning, file=sys.stderr, flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
