"""Command-line pieces shared by ``accel.build``, ``accel.verify`` and ``accel.run``: the engine's
options, their checks, and the plan they describe.

The three commands import this module; it imports none of them.
"""

from __future__ import annotations

import numpy as np

from accel.planning.plan import DEFAULT_PES, default_banks

__all__ = ["add_engine_arguments", "check_engine_arguments", "engine_options", "make_plan"]


def add_engine_arguments(parser, *, default_pes: int = DEFAULT_PES) -> None:
    """The engine's options, shared by ``accel.build``, ``accel.run`` (which must agree with the
    build) and ``accel.verify``."""
    note = ": a quick build; 16 for throughput" if default_pes == DEFAULT_PES else ""
    parser.add_argument("--pes", type=int, default=default_pes,
                        help=f"processing elements (default {default_pes}{note})")
    parser.add_argument("--lanes", type=int, default=2,
                        help="activations broadcast per clock (default 2)")
    parser.add_argument("--input-lanes", type=int, default=4,
                        help="activations per input beat (default 4)")
    parser.add_argument("--banks", type=int, default=None,
                        help="images in flight at once (default 2 with one PE, 3 with more)")
    parser.add_argument("--queue-depth", type=int, default=None,
                        help="PE activation queue depth (default 64; 513 for a model with "
                             "convolutions)")
    parser.add_argument("--zero-run-bits", type=int, default=4,
                        help="b_z of the engine's format (default 4)")
    parser.add_argument("--no-balance", action="store_true",
                        help="assign row r to PE r mod N instead of balancing expected work on "
                             "1,000 training images")


def check_engine_arguments(parser, args) -> None:
    """``parser.error`` on an engine option (:func:`add_engine_arguments`) outside its range,
    naming the flag and the allowed values, before any work. The ranges are those
    ``EnginePlan.from_model`` checks."""
    from accel.planning.pack import MAX_PES, MAX_ZERO_RUN_BITS
    from accel.planning.plan import MIN_QUEUE_DEPTH
    from core.options import check_range

    limits = {"pes": (1, MAX_PES), "lanes": (1, 4), "input_lanes": (1, 16), "banks": (1, 8),
              "queue_depth": (MIN_QUEUE_DEPTH, 4096), "zero_run_bits": (1, MAX_ZERO_RUN_BITS)}
    for name, (low, high) in limits.items():
        check_range(parser, "--" + name.replace("_", "-"), getattr(args, name), low, high)


def engine_options(args) -> dict:
    """``EnginePlan.from_model`` keywords from :func:`add_engine_arguments`'s options."""
    if args.pes < 1:
        raise ValueError(f"--pes must be >= 1, not {args.pes}")
    banks = default_banks(args.pes) if args.banks is None else args.banks
    return dict(n_pes=args.pes, lanes=args.lanes, input_lanes=args.input_lanes, banks=banks,
                queue_depth=args.queue_depth, zero_run_bits=args.zero_run_bits)


def make_plan(model, data, options: dict, *, balance: bool = True):
    """The engine plan, with rows balanced on the first 1,000 training images unless told not."""
    import sim
    from accel.planning.plan import EnginePlan

    calibration = sim.quantize_input(model, data.x_train[:1000]).astype(np.int64) \
        if balance else None
    return EnginePlan.from_model(model, calibration=calibration, **options), calibration
