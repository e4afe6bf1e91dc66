"""``python -m accel.build --board ulx3s``: a compressed model to a verified bitstream and a report.

Steps (each prints what it does):

1. the model: ``--model ARTIFACT``, or with none the built-in default job: train, prune, share,
   fine-tune and quantize the digits MLP (``python -m compress``'s defaults) into
   ``OUT/compress/model.dcz``;
2. the engine plan (``accel.planning.plan``) and, before any tool runs, the fit check against the board
   (``accel.gateware.resources``): a model that cannot fit gets an error with the numbers;
3. verification of the first ``--verify-samples`` test images in simulation (Amaranth's own by
   default: nothing outside PyPI), every hidden activation and logit against ``sim``; the
   cycles it measures give ``cycles_per_inference``. It runs in a process of its own,
   alongside step 4 (each takes one core); a mismatch fails the build when both are done;
4. synthesis, place and route and bitstream with the open toolchain (``boards.synthesis``) at
   ``--clock-mhz`` or the highest clock attainable;
5. ``OUT/report.json``, ``OUT/utilization.png`` and a printed table.

``--board list`` prints the supported boards.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

# The default engine, one PE (DEFAULT_PES) with default_banks(1) = 2 banks, is defined in
# accel.planning.plan: the default of EnginePlan.from_model, accel.verify.verify, build() and of every
# command (accel.build, accel.verify, accel.run), so that they all mean the same engine.
# accel.run must be given the build's engine options. The engine's options live in accel.cli,
# shared by the three commands; they are re-exported here, where they were first defined.
from accel.cli import add_engine_arguments, check_engine_arguments, engine_options, make_plan
from accel.planning.plan import DEFAULT_PES, default_banks

__all__ = ["DEFAULT_PES", "add_engine_arguments", "build", "build_parser",
           "check_build_arguments", "check_engine_arguments", "default_banks", "engine_options",
           "format_table", "main", "make_plan", "write_chart"]


def build_parser() -> argparse.ArgumentParser:
    from core.datasets import DATASETS

    parser = argparse.ArgumentParser(
        prog="python -m accel.build",
        description="Generate the accelerator for a compressed model, verify it in simulation, "
                    "synthesize it for an open FPGA board (yosys, nextpnr) and report resources, "
                    "clock and throughput.")
    parser.add_argument("--board", default="ulx3s",
                        help="board name, or 'list' to print the supported boards "
                             "(default: ulx3s, the ULX3S-85F)")
    parser.add_argument("--model", type=Path,
                        help="artifact with integer data (python -m compress writes "
                             "OUT/model.dcz); default: compress the built-in digits model first")
    parser.add_argument("--dataset", default=None,
                        help=f"{', '.join(DATASETS)} or an .npz (default: the artifact's)")
    parser.add_argument("--data-dir", default=None, help="MNIST folder (see python -m compress)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the default job's training and of the digits split "
                             "(default 0)")
    parser.add_argument("--out", type=Path, default=Path("out/build"),
                        help="output folder (default: out/build)")
    parser.add_argument("--clock-mhz", type=float, default=None,
                        help="engine clock; the build fails when timing is not met at it "
                             "(default: the highest attainable, searched)")
    add_engine_arguments(parser)
    parser.add_argument("--baud", type=int, default=1_000_000,
                        help="host link bit rate (default 1000000)")
    parser.add_argument("--verify-samples", type=int, default=8,
                        help="test images verified in simulation, alongside synthesis (default 8)")
    parser.add_argument("--simulator", choices=["amaranth", "verilator", "icarus"],
                        default="amaranth",
                        help="simulator of the verification: Amaranth's (default), or cocotb on "
                             "Verilator or Icarus Verilog")
    parser.add_argument("--nextpnr-seed", type=int, default=1,
                        help="placement seed (default 1; same seed, same bitstream)")
    parser.add_argument("--router", choices=["auto", "router1", "router2"], default="auto",
                        help="nextpnr-ecp5's router (default auto: router1 for a design of at "
                             "most a quarter of the device's LUTs, router2 for a fuller one)")
    parser.add_argument("--nextpnr-options", default="", metavar="OPTIONS",
                        help="more nextpnr options, after the project's own, e.g. "
                             "--nextpnr-options=--detailed-timing-report (recorded in the "
                             "report)")
    parser.add_argument("--no-synthesis", action="store_true",
                        help="stop after the fit check and verification")
    parser.add_argument("--quiet", action="store_true", help="less progress output")
    return parser


def check_build_arguments(parser, args, board) -> None:
    """``parser.error`` on any option of ``accel.build`` that cannot work on ``board``, before
    the first step: engine options, ``--clock-mhz`` against the board's PLL, ``--baud`` against
    the board's clock, ``--verify-samples``, ``--nextpnr-seed``, ``--seed``, ``--out``."""
    from accel.gateware.uart import baud_divisor
    from boards.synthesis import clock_range_mhz
    from core.options import check_output_path, check_range
    from core.datasets import MAX_SEED

    check_engine_arguments(parser, args)
    if args.clock_mhz is not None:
        low, high = clock_range_mhz(board)
        if not low <= args.clock_mhz <= high:
            parser.error(f"--clock-mhz must be {low:g}..{high:g} MHz on {board.name} (its PLL's "
                         f"range), not {args.clock_mhz:g}; leave it out for the highest clock "
                         f"the design meets")
    check_range(parser, "--baud", args.baud, 1)
    try:
        baud_divisor(round(board.platform().default_clk_frequency), args.baud)
    except ValueError as error:
        parser.error(f"--baud {args.baud:,} does not work from the {board.name}'s clock: {error}")
    check_range(parser, "--verify-samples", args.verify_samples, 1)
    check_range(parser, "--nextpnr-seed", args.nextpnr_seed, 0)
    check_range(parser, "--seed", args.seed, 0, MAX_SEED)
    check_output_path(parser, "--out", args.out, folder=True)
    if args.model is not None and not args.model.is_file():
        parser.error(f"--model {args.model} is not an artifact file (python -m compress writes "
                     "OUT/model.dcz)")


def _default_model(out: Path, seed: int, quiet: bool) -> Path:
    """The built-in default job of ``python -m compress`` into ``out/compress``."""
    from compress.__main__ import main as compress_main

    folder = out / "compress"
    print(f"[1/5] no --model: compressing the built-in digits model into {folder}", flush=True)
    argv = ["--out", str(folder), "--seed", str(seed), "--no-plots"] + (["--quiet"] if quiet
                                                                         else [])
    if compress_main(argv) != 0:
        raise RuntimeError("the default compression job failed")
    return folder / "model.dcz"


def weight_bytes(plan) -> dict:
    """On-chip bytes of the model image, per kind of memory and in total."""
    kinds = {}
    for region in plan.regions:
        kinds[region.name] = kinds.get(region.name, 0) + region.depth * region.width
    by_kind = {name: bits / 8 for name, bits in sorted(kinds.items())}
    return {"total": sum(by_kind.values()), "by_kind": by_kind}


def build(model, data, board, *, out: Path, clock_mhz=None, pes=DEFAULT_PES, lanes=2,
          input_lanes=4, banks=None, queue_depth=None, zero_run_bits=4, balance=True,
          baud=1_000_000, verify_samples=8, simulator="amaranth", nextpnr_seed=1,
          router="auto", nextpnr_options="", synthesis=True, progress=True,
          model_path=None) -> dict:
    """Plan, fit check, verification and (unless ``synthesis`` is false) the board build.

    Returns the report (also written to ``out/report.json``). Raises :class:`FitError` before
    anything is simulated or synthesized when the engine does not fit, ``RuntimeError`` on a
    verification mismatch, and :class:`boards.synthesis.TimingError` after writing the report
    when timing is not met.
    """
    import sim
    from accel.gateware.resources import check_fit, dense_warning, estimate_resources
    from accel.verify import verify

    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not isinstance(verify_samples, int) or verify_samples < 1:
        raise ValueError(f"verify_samples must be >= 1, not {verify_samples!r}")
    from boards.synthesis import ROUTERS, choose_router
    if router not in ROUTERS:
        raise ValueError(f"router must be one of {', '.join(ROUTERS)}, not {router!r}")
    if not isinstance(nextpnr_options, str):
        raise TypeError(f"nextpnr_options must be a string, not {nextpnr_options!r}")
    if banks is None:
        banks = default_banks(pes)
    engine_options = dict(n_pes=pes, lanes=lanes, input_lanes=input_lanes, banks=banks,
                          queue_depth=queue_depth, zero_run_bits=zero_run_bits)
    plan, calibration = make_plan(model, data, engine_options, balance=balance)

    estimate = estimate_resources(plan, board)
    print(f"[2/5] {plan.n_pes}-PE engine for {board.name} ({board.device}): estimated "
          f"{estimate.luts:,} LUTs, {estimate.brams} block RAMs, {estimate.multipliers} "
          f"multipliers (available {board.capacity.luts:,}, {board.capacity.brams}, "
          f"{board.capacity.multipliers})", flush=True)
    check_fit(plan, board, estimate)
    warning = dense_warning(estimate, board)
    if warning and synthesis:
        print(f"      warning: {warning}", flush=True)
    if router == "auto":
        router = choose_router(estimate.luts, board.capacity.luts)

    x_all = sim.quantize_input(model, data.x_test).astype(np.int64)
    x = x_all[:verify_samples]
    verify_options = dict(model=model, x=x, calibration=calibration, simulator=simulator,
                          build_dir=out / "verify", **engine_options)
    if synthesis:
        # Simulation and synthesis are independent and each takes one core: the verification
        # runs in a process of its own while synthesis runs here (see _Verification).
        print(f"[3/5] verifying {len(x)} {data.name} test images in {simulator} simulation, "
              "alongside synthesis ...", flush=True)
        verification = _Verification(verify_options)
        try:
            synthesized, timing_error = _synthesize(board, plan, out, clock_mhz=clock_mhz,
                                                    baud=baud, nextpnr_seed=nextpnr_seed,
                                                    router=router, progress=progress,
                                                    nextpnr_options=nextpnr_options)
            verified = verification.result()
        finally:
            verification.cancel()
    else:
        print(f"[3/5] verifying {len(x)} {data.name} test images in {simulator} simulation ...",
              flush=True)
        verified = _checked(verify(**verify_options), len(x))
        synthesized = timing_error = None
    report = _report(model, data, board, plan, estimate, x_all, verified, synthesized,
                     clock_mhz=clock_mhz, engine_options=engine_options, balance=balance,
                     baud=baud, simulator=simulator, nextpnr_seed=nextpnr_seed, router=router,
                     nextpnr_options=nextpnr_options, model_path=model_path, started=started,
                     out=out)
    if timing_error is not None:
        raise timing_error
    return report


def _checked(verified: dict, samples: int) -> dict:
    """``verified``, after raising on a mismatch and printing the figures."""
    if verified["mismatches"]:
        m = verified["first_mismatch"]
        raise RuntimeError(
            f"the engine differs from sim on {verified['mismatches']} of {samples} images "
            f"(first: sample {m['sample']}, layer {m['layer']}, neuron {m['neuron']}: expected "
            f"{m['expected']}, got {m['got']}); waveform: {verified['waveform']}")
    print(f"      verified: 0 mismatches; {verified['cycles_per_inference']:.1f} cycles per "
          f"inference measured ({verified['predicted_cycles']:.1f} predicted)", flush=True)
    return verified


def _verify_in_child(send, options: dict) -> None:
    from accel.verify import verify

    try:
        send.send(("done", verify(**options)))
    except BaseException as error:          # reported by the parent, which may not unpickle it
        import traceback
        send.send(("error", f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))


class _Verification:
    """:func:`accel.verify.verify` in a process of its own, started now.

    Spawned, not forked: the parent may have trained with PyTorch, whose thread pool does not
    survive a fork. A thread waits for the answer and prints it as soon as it comes (a mismatch
    is raised by :meth:`result`, after synthesis).
    """

    def __init__(self, options: dict):
        import multiprocessing
        import threading

        self._samples = len(options["x"])
        context = multiprocessing.get_context("spawn")
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=_verify_in_child, args=(send, options),
                                        name="verification", daemon=True)
        self._process.start()
        send.close()
        self._answer = None
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        try:
            kind, value = self._receive.recv()
        except EOFError:
            self._process.join()
            kind, value = "error", f"the verification process died (exit code " \
                                   f"{self._process.exitcode})"
        if kind == "done" and not value["mismatches"]:
            try:
                _checked(value, self._samples)
            except Exception as error:      # printing must not lose the answer
                kind, value = "error", repr(error)
        self._answer = kind, value

    def result(self) -> dict:
        """The verification's result; ``RuntimeError`` if it failed or found a mismatch."""
        self._waiter.join()
        self._process.join()
        kind, value = self._answer
        if kind == "error":
            raise RuntimeError(f"verification failed: {value}")
        if value["mismatches"]:
            _checked(value, self._samples)      # raises
        return value

    def cancel(self) -> None:
        """Stop the process if it is still running (synthesis failed)."""
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()


def _synthesize(board, plan, out, *, clock_mhz, baud, nextpnr_seed, router, progress,
                nextpnr_options):
    """The board's bitstream: the synthesis result and the :class:`TimingError`, if any."""
    from accel.gateware.top import BoardTop
    from boards.synthesis import TimingError, synthesize

    print(f"[4/5] synthesis, place and route, bitstream for {board.name} "
          f"({'clock ' + format(clock_mhz, 'g') + ' MHz' if clock_mhz else 'highest clock'})",
          flush=True)
    try:
        # BoardTop's only clock-dependent part is the PLL (the UART runs from the board's
        # clock), so the highest clock takes one place and route on an ECP5.
        return synthesize(board, lambda pll: BoardTop(plan, board, pll, baud=baud),
                          out / "gateware", clock_mhz=clock_mhz, seed=nextpnr_seed,
                          retunable=True, progress=progress, router=router,
                          nextpnr_options=nextpnr_options), None
    except TimingError as error:
        return error.result, error


def _dense_macs(model, plan) -> int:
    """Multiply-accumulates of the uncompressed network: before a low-rank factorization
    (``compress --low-rank``) when there was one, else every weight of the plan's layers."""
    rows = model.metadata.get("low_rank")
    if rows:
        return int(sum(row["macs_before"] for row in rows))
    # A convolution's weights are each used at every position of its map (A12).
    return int(sum(layer.index.size * (1 if layer.geometry is None else
                                       layer.geometry.conv_height * layer.geometry.conv_width)
                   for layer in model.layers))


def _report(model, data, board, plan, estimate, x_all, verified, result, *, out, clock_mhz,
            engine_options, balance, baud, simulator, nextpnr_seed, router, nextpnr_options,
            model_path, started) -> dict:
    """The report of the verification ``verified`` and the synthesis ``result`` (``None``
    without synthesis), written to ``out``."""
    import sim

    expected = sim.trace(model, x_all)
    steady = plan.predict([x_all] + expected[:-1])

    report = {
        "board": board.name,
        "device": board.device,
        "model": str(model_path) if model_path else None,
        "dataset": data.name,
        "engine": {**engine_options, "balanced": balance,
                   "layers": [[layer.out_features, layer.in_features] for layer in plan.layers]},
        "estimate": estimate.as_dict(),
        "verification": {"simulator": simulator, "samples": verified["samples"],
                         "mismatches": verified["mismatches"],
                         "cycles_per_inference": verified["cycles_per_inference"],
                         "predicted_cycles_per_inference": verified["predicted_cycles"],
                         "pe_utilization": verified["pe_utilization"]},
        "cycles_per_inference": verified["cycles_per_inference"],
        "cycles_per_inference_test_set_model": steady["cycles_per_inference"],
        "weight_bytes_on_chip": weight_bytes(plan)["total"],
        "weight_bytes_by_memory": weight_bytes(plan)["by_kind"],
        "dense_macs_per_inference": _dense_macs(model, plan),
        "useful_macs_per_inference": verified["useful_macs_per_inference"],
    }
    if result is None:
        report["seconds"] = round(time.perf_counter() - started, 1)
        _write(report, out)
        return report

    clock_hz = result.clock_mhz * 1e6
    per_second = clock_hz / report["cycles_per_inference"]
    ceiling = board.capacity.multipliers * clock_hz
    dense_rate = report["dense_macs_per_inference"] * per_second
    report.update({
        "utilization": result.utilization,
        "fmax_mhz": result.fmax_mhz,
        "clock_mhz": result.clock_mhz,
        "requested_clock_mhz": clock_mhz,
        "timing_met": result.timing_met,
        "pll": {"input_mhz": result.pll.input_mhz, "vco_mhz": result.pll.vco_mhz,
                **result.pll.dividers},
        "clock_passes": result.passes,
        "inferences_per_second": per_second,
        "dense_equivalent_macs_per_second": dense_rate,
        "multiplier_ceiling_macs_per_second": ceiling,
        "dense_equivalent_over_multiplier_ceiling": dense_rate / ceiling,
        "host_link": {"baud": baud, "protocol": "docs/host-link.md"},
        "bitstream": str(result.bitstream),
        "bitstream_sha256": result.bitstream_sha256,
        "nextpnr_seed": nextpnr_seed,
        "nextpnr_router": router if board.family == "ecp5" else None,
        "nextpnr_options": nextpnr_options,
        "nextpnr_utilization": result.nextpnr_utilization,
        "tools": result.tools,
        "tool_seconds": result.tool_seconds,
    })
    report["seconds"] = round(time.perf_counter() - started, 1)
    _write(report, out)
    return report


def _write(report: dict, out: Path) -> None:
    chart = write_chart(report, out / "utilization.png") if "utilization" in report else None
    if chart is not None:
        report["chart"] = str(chart)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


RESOURCE_LABELS = {"luts": "LUT4s", "flip_flops": "flip-flops", "block_rams": "block RAMs",
                   "multipliers": "multipliers", "lutram_write_ports": "LUT RAM write ports",
                   "io": "I/O", "plls": "PLLs", "single_port_rams": "SPRAMs"}


def write_chart(report: dict, path: Path) -> Path:
    """A bar chart of utilization (used / available) per resource."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in RESOURCE_LABELS if n in report["utilization"]]
    used = [report["utilization"][n]["used"] for n in names]
    available = [report["utilization"][n]["available"] for n in names]
    share = [100.0 * u / a if a else 0.0 for u, a in zip(used, available)]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(names)), dpi=100)
    bars = ax.barh([RESOURCE_LABELS[n] for n in names], share, color="#3b75af")
    for bar, u, a in zip(bars, used, available):
        ax.text(min(bar.get_width() + 1, 80), bar.get_y() + bar.get_height() / 2,
                f"{u:,} / {a:,}", va="center", fontsize=8)
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.set_xlabel("utilization (%)")
    ax.set_title(f"{report['board']} ({report['device']}), clock {report['clock_mhz']:.1f} MHz",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


def format_table(report: dict) -> str:
    """The report as a readable table."""
    rows = [("board", f"{report['board']} ({report['device']})")]
    for name, label in RESOURCE_LABELS.items():
        if name in report.get("utilization", {}):
            u = report["utilization"][name]
            share = u["used"] / u["available"] if u["available"] else 0.0
            rows.append((label, f"{u['used']:,} / {u['available']:,} ({share:.1%})"))
    if "fmax_mhz" in report:
        rows += [
            ("clock", f"{report['clock_mhz']:.3f} MHz (post-route fmax {report['fmax_mhz']:.2f} "
                      f"MHz, timing {'met' if report['timing_met'] else 'NOT MET'})"),
        ]
    rows += [
        ("cycles per inference", f"{report['cycles_per_inference']:.1f} (measured in "
                                 f"{report['verification']['simulator']} simulation, "
                                 f"{report['verification']['samples']} images)"),
    ]
    if "inferences_per_second" in report:
        rows += [
            ("inferences per second", f"{report['inferences_per_second']:,.0f}"),
            ("dense-equivalent MAC/s",
             f"{report['dense_equivalent_macs_per_second'] / 1e9:.2f} G = "
             f"{report['dense_equivalent_over_multiplier_ceiling']:.2f} x the ceiling of "
             f"{report['multiplier_ceiling_macs_per_second'] / 1e9:.2f} G (every multiplier, "
             f"one MAC per clock)"),
        ]
    rows += [("weights on chip", f"{report['weight_bytes_on_chip']:,.0f} bytes")]
    if "bitstream" in report:
        rows += [("bitstream", report["bitstream"]),
                 ("bitstream sha256", report["bitstream_sha256"])]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    import sim
    from accel.gateware.resources import FitError
    from boards import board_table, get_board
    from boards.synthesis import TimingError
    from boards.toolchain import ToolchainError, ToolError
    from core.options import fail

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.board.strip().lower() == "list":
        print(board_table())
        return 0
    try:
        board = get_board(args.board)
    except ValueError as error:
        fail(parser, error)
    check_build_arguments(parser, args, board)
    try:
        options = engine_options(args)
        model_path = args.model if args.model is not None else \
            _default_model(args.out, args.seed, args.quiet)
        if args.model is not None:
            print(f"[1/5] model {model_path}", flush=True)
        model, data = sim.load_model_and_data(model_path, dataset=args.dataset,
                                              data_dir=args.data_dir,
                                              seed=None if args.model else args.seed)
        report = build(model, data, board, out=args.out, clock_mhz=args.clock_mhz,
                       pes=options["n_pes"], lanes=options["lanes"],
                       input_lanes=options["input_lanes"], banks=options["banks"],
                       queue_depth=options["queue_depth"],
                       zero_run_bits=options["zero_run_bits"], balance=not args.no_balance,
                       baud=args.baud, verify_samples=args.verify_samples,
                       simulator=args.simulator, nextpnr_seed=args.nextpnr_seed,
                       router=args.router, nextpnr_options=args.nextpnr_options,
                       synthesis=not args.no_synthesis, progress=not args.quiet,
                       model_path=model_path)
    except TimingError as error:
        print(f"\n{format_table(json.loads((args.out / 'report.json').read_text()))}\n")
        parser.exit(1, f"{parser.prog}: error: {error}\nreport: {args.out / 'report.json'}\n")
    except (FitError, ToolchainError, ToolError, ValueError, RuntimeError) as error:
        usage = isinstance(error, ValueError) and not isinstance(error, FitError)
        fail(parser, error, 2 if usage else 1)
    print(f"[5/5] report: {args.out / 'report.json'}" +
          (f", chart: {report['chart']}" if "chart" in report else ""))
    print()
    print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
