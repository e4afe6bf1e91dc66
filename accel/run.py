"""``python -m accel.run --board ulx3s --port /dev/ttyUSB0 --model ARTIFACT --dataset digits``.

Streams a test set to an engine on a board over the UART host link (``docs/host-link.md``) and
compares every answer with ``sim.run``, the bit-exact reference. The engine options (``--pes``
...) must be the ones the bitstream was built with (``accel.build``'s defaults are assumed);
the link's INFO exchange checks the board's engine shape against them. ``--reload`` first writes
the model's weights into the engine through the link, so one bitstream serves every model of
the same shape.

``--port sim`` runs the same host code against the whole design (UART bridge and engine) in
Amaranth's simulator instead of a board: bytes in through the UART's receive line, logits out
through its transmit line.

Prints, and with ``--json`` writes: samples, mismatches, accuracy against the labels, the
board's cycles per inference (engine clocks, from the link's cycle counts), the link's
retransmissions, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

__all__ = ["build_parser", "main", "run_on_board"]


def build_parser() -> argparse.ArgumentParser:
    from accel.cli import add_engine_arguments
    from sim.evaluate import add_model_arguments

    parser = argparse.ArgumentParser(
        prog="python -m accel.run",
        description="Run a test set on the accelerator over the UART host link and compare every "
                    "answer with the bit-exact reference (sim.run).")
    parser.add_argument("--board", default="ulx3s", help="board the bitstream was built for")
    parser.add_argument("--port", required=True,
                        help="serial port (/dev/ttyUSB0, COM3), or 'sim' for the design in "
                             "Amaranth's simulator")
    parser.add_argument("--baud", type=int, default=1_000_000,
                        help="host link bit rate the bitstream was built with (default 1000000)")
    parser.add_argument("--clock-mhz", type=float, default=None,
                        help="with --port sim: the simulated engine clock (default: 8 x baud, "
                             "the slowest clock the link allows, so simulation is quick)")
    add_model_arguments(parser)
    parser.add_argument("--samples", type=int, default=None,
                        help="test images to run (default: the whole test set; 20 with "
                             "--port sim)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each image back to back on the board; cycles then measure "
                             "the engine's throughput (default 1)")
    parser.add_argument("--reload", action="store_true",
                        help="write the model's weights into the engine first")
    parser.add_argument("--timeout", type=float, default=1.0,
                        help="seconds to wait for a reply before resending (default 1)")
    add_engine_arguments(parser)
    return parser


def run_on_board(link, model, x, *, repeat=1, progress=True) -> dict:
    """Every image of ``x`` through ``link``; logits compared with ``sim.run``."""
    import sim

    expected = sim.run(model, x)
    got = np.zeros_like(expected)
    cycles = []
    start = time.perf_counter()
    for i, row in enumerate(x):
        logits, count = link.infer(row, repeat=repeat)
        got[i] = logits
        cycles.append(count)
        if progress and (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(x)} images", flush=True)
    elapsed = time.perf_counter() - start
    bad = np.flatnonzero((got != expected).any(axis=1))
    first = None
    if len(bad):
        s = int(bad[0])
        neuron = int(np.flatnonzero(got[s] != expected[s])[0])
        first = {"sample": s, "neuron": neuron, "expected": int(expected[s, neuron]),
                 "got": int(got[s, neuron])}
    return {"samples": len(x), "mismatches": int(len(bad)), "first_mismatch": first,
            "logits": got, "cycles": cycles,
            "cycles_per_inference": float(np.mean(cycles)) / repeat if cycles else None,
            "seconds": round(elapsed, 2)}


def main(argv: list[str] | None = None) -> int:
    import sim
    from accel.cli import check_engine_arguments, engine_options, make_plan
    from accel.host import HostLink, LinkError, open_serial
    from boards import get_board
    from core.options import check_range, fail

    parser = build_parser()
    args = parser.parse_args(argv)
    # Every option is checked before any work.
    try:
        board = get_board(args.board)
    except ValueError as error:
        fail(parser, error)
    sim.check_model_arguments(parser, args)
    check_engine_arguments(parser, args)
    check_range(parser, "--repeat", args.repeat, 1, 65535)
    check_range(parser, "--samples", args.samples, 1)
    check_range(parser, "--timeout", args.timeout, 0.0, low_open=True, unit="s")
    check_range(parser, "--baud", args.baud, 1)
    check_range(parser, "--clock-mhz", args.clock_mhz, 0.0, low_open=True, unit="MHz")
    if args.clock_mhz is not None and args.port != "sim":
        parser.error("--clock-mhz applies to --port sim only (a board runs at the clock it was "
                     "built for)")
    try:
        options = engine_options(args)
        model, data = sim.load_model_and_data(args.model, dataset=args.dataset,
                                              data_dir=args.data_dir, seed=args.seed)
        plan, _ = make_plan(model, data, options, balance=not args.no_balance)
        samples = args.samples if args.samples is not None else \
            (20 if args.port == "sim" else len(data.x_test))
        x, saturation = sim.quantize_input(model, data.x_test[:samples], return_saturation=True)
        x = x.astype(np.int64)
        warning = sim.saturation_warning(saturation)
        if warning is not None:
            print(warning, file=sys.stderr, flush=True)
        y = np.asarray(data.y_test[:samples])
        if args.port == "sim":
            from accel.verification.link_sim import SimulatedBoard
            clock_hz = round(args.clock_mhz * 1e6) if args.clock_mhz else 8 * args.baud
            transport = SimulatedBoard(plan, clock_hz=clock_hz, baud=args.baud)
            where = f"the simulated {board.name} design ({clock_hz / 1e6:g} MHz)"
        else:
            transport = open_serial(args.port, args.baud, args.timeout)
            where = f"{board.name} on {args.port}"
        link = HostLink(transport, plan, timeout_s=args.timeout)
        info = link.info()
        print(f"link up: {where}, engine clock {info.clock_hz / 1e6:g} MHz", flush=True)
        if args.reload:
            words = plan.write_image(model)
            link.reload(model)
            print(f"reloaded the weights: {len(words):,} words", flush=True)
        print(f"running {len(x)} {data.name} test images ...", flush=True)
        result = run_on_board(link, model, x, repeat=args.repeat)
    except (ValueError, LinkError, OSError) as error:
        fail(parser, error, 2 if isinstance(error, ValueError) else 1)
    finally:
        if "transport" in locals():
            transport.close()
    predictions = result["logits"].argmax(axis=1)
    report = {
        "board": board.name, "port": args.port, "model": str(args.model), "dataset": data.name,
        "samples": result["samples"], "mismatches": result["mismatches"],
        "first_mismatch": result["first_mismatch"],
        "accuracy": float((predictions == y).mean()),
        "cycles_per_inference": result["cycles_per_inference"], "repeat": args.repeat,
        "engine_clock_hz": info.clock_hz,
        "retransmissions": link.retransmissions, "naks": link.naks,
        "stale_replies": link.stale_replies, "seconds": result["seconds"],
        "input_saturation": saturation,
    }
    print(f"samples {report['samples']}, mismatches with sim.run {report['mismatches']}, "
          f"accuracy {report['accuracy']:.2%}")
    print(f"engine cycles per inference {report['cycles_per_inference']:.1f} "
          f"(repeat {args.repeat}); link retransmissions {link.retransmissions}, "
          f"NAKs {link.naks}; {report['seconds']:.1f} s")
    if result["first_mismatch"]:
        m = result["first_mismatch"]
        print(f"FIRST MISMATCH: sample {m['sample']}, logit {m['neuron']}: expected "
              f"{m['expected']}, got {m['got']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
