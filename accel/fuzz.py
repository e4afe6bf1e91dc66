"""Random-shape fuzzing of the engine against the golden model (``sim``).

Every case (:func:`accel.verification.random_cases.random_case`, which lists the dimensions
fuzzed) is a random quantized model, legal by the artifact's own validation, random engine
options, a stream of random and extreme inputs, and a second model of the same shapes that fits
the same engine (a mid-stream reload through the write port). :func:`run_case` streams the
inputs through a runner (the Verilator batch simulator
:func:`accel.verification.batch_sim.run_engine`, or Amaranth's simulator
:func:`accel.verification.amaranth_sim.run_engine`) with random idle input cycles and output
backpressure and compares every logit and every hidden activation with :func:`sim.trace`, then
streams them once more without stalls and compares the measured cycles with
:meth:`EnginePlan.predict`.

Command line::

    python -m accel.fuzz --models 20 --inputs 200 --seed 0      # seeds 0 .. 19
    python -m accel.fuzz --seed 17                              # replay one model
    python -m accel.fuzz --runner amaranth --max-width 12 --inputs 8
    python -m accel.fuzz --conv always --models 4 --inputs 100  # convolutional cases only

One line per model; exit status 1 on any mismatch, after printing the first mismatching
sample, layer and neuron.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from accel.verification.compare import compare_run
from accel.verification.random_cases import (CONV, MAX_LAYERS, MAX_WIDTH, FuzzCase,
                                             random_case, shape_string)

__all__ = ["describe", "run_case", "run_fuzz", "runner_function", "main"]


#: ``--conv``: :func:`random_case`'s ``conv``.
_CONV_CHOICES = {"drawn": None, "always": True, "never": False}


# -- description ------------------------------------------------------------------------------

def describe(case: FuzzCase) -> dict:
    """The case's dimensions, as JSON-able values."""
    model, o = case.model, case.options
    return {
        "seed": case.seed,
        "shape": shape_string(model),
        "activation_bits": model.layers[0].integer.activation_bits,
        "weight_bits": [layer.integer.weight_bits for layer in model.layers],
        "index_bits": [layer.index_bits for layer in model.layers],
        "accumulator_bits": [layer.integer.accumulator_bits for layer in model.layers],
        "density": [round(layer.density, 3) for layer in model.layers],
        "requant": [(layer.integer.multiplier, layer.integer.shift)
                    for layer in model.layers[:-1]],
        "per_row": [layer.integer.per_row for layer in model.layers],
        "code_bits": [layer.integer.code_bits for layer in model.layers],
        "latent": [layer.latents is not None for layer in model.layers],
        **o,
        "balanced": case.calibration is not None,
        "inputs": len(case.x),
        "reload_at": case.reload_at,
        "idle": case.idle,
        "backpressure": case.backpressure,
    }


def _learned_string(d: dict) -> str:
    """`` lq pr1/0 K-/2`` when a layer has a per-row codebook (A9) or a threshold activation
    (A10), else nothing (lines of other cases read as before)."""
    if not any(d["per_row"]) and not any(d["code_bits"]):
        return ""
    return (f" lq pr{'/'.join(str(int(v)) for v in d['per_row'])} "
            f"K{'/'.join('-' if v is None else str(v) for v in d['code_bits'])}")


def _options_string(d: dict) -> str:
    return (f"A{d['activation_bits']} B{'/'.join(map(str, d['weight_bits']))} "
            f"ib{'/'.join(map(str, d['index_bits']))} "
            f"acc{'/'.join(map(str, d['accumulator_bits']))} "
            f"dens{'/'.join(f'{v:.2f}' for v in d['density'])} "
            f"pe{d['n_pes']} l{d['lanes']} il{d['input_lanes']} bk{d['banks']} "
            f"q{d['queue_depth']} zr{d['zero_run_bits']} {'bal' if d['balanced'] else 'rr'}"
            f"{_learned_string(d)}"
            + (f" epr{'/'.join(str(int(v)) for v in d['latent'])}" if any(d["latent"]) else ""))


# -- running ------------------------------------------------------------------------------------

def runner_function(runner):
    """``"verilator"`` (:func:`accel.verification.batch_sim.run_engine`), ``"amaranth"``
    (:func:`accel.verification.amaranth_sim.run_engine`) or a callable with their signature."""
    if callable(runner):
        return runner
    if runner == "verilator":
        from accel.verification.batch_sim import run_engine
        return run_engine
    if runner == "amaranth":
        from accel.verification.amaranth_sim import run_engine
        return run_engine
    raise ValueError(f"runner must be 'verilator', 'amaranth' or a callable, not {runner!r}")


def default_runner() -> str:
    """``"verilator"`` when :mod:`accel.verification.batch_sim` and Verilator are there, else
    ``"amaranth"``."""
    try:
        from accel.verification.batch_sim import available
    except ImportError:
        return "amaranth"
    return "verilator" if available() is None else "amaranth"


def run_case(case: FuzzCase, runner="verilator", *, idle: float | None = None,
             backpressure: float | None = None, reload: bool = True, timing: bool = True,
             build_dir=None) -> dict:
    """Check ``case`` on ``runner``; return :func:`describe`'s fields and the results.

    Two streams: (1) with random idle input cycles and output backpressure (``idle``,
    ``backpressure``, default the case's) and, with ``reload``, the reload model written
    through the write port before image ``case.reload_at``; (2) with ``timing``, the same inputs
    on the first model with no stalls, whose cycles are compared with
    :meth:`EnginePlan.predict`. Every logit and hidden activation of both is compared with
    :func:`sim.trace`.

    Returns
    -------
    dict
        ``mismatches`` (samples that differ, both streams), ``first_mismatch`` (``stream``,
        ``sample``, ``layer`` (hidden layers first, the logits last), ``neuron``, ``model``
        (``"first"`` or ``"reload"``), ``expected``, ``got``), ``cycles``,
        ``cycles_per_inference``, ``predicted_cycles_per_inference``,
        ``measured_over_predicted``, ``model_in_range`` (the stream is in the cycle model's
        range of validity, :data:`accel.planning.cycles.MODEL_OVERLAP_LIMIT`), ``seconds``.
    """
    import sim

    run_engine = runner_function(runner)
    idle = case.idle if idle is None else idle
    backpressure = case.backpressure if backpressure is None else backpressure
    extra = {} if build_dir is None else {"build_dir": build_dir}
    plan, x = case.plan, case.x
    start = time.perf_counter()
    result = describe(case)
    result.update(idle=idle, backpressure=backpressure, mismatches=0, first_mismatch=None)

    first_trace = sim.trace(case.model, x)
    expected = first_trace
    reloads = {}
    k = case.reload_at if reload and case.reload_model is not None else None
    if k is not None:
        reloads = {k: plan.write_image(case.reload_model)}
        second = sim.trace(case.reload_model, x[k:])
        expected = [np.concatenate([a[:k], b]) for a, b in zip(first_trace, second)]
    else:
        result["reload_at"] = None
    run = run_engine(plan, x, idle=idle, backpressure=backpressure, seed=case.seed,
                     reloads=reloads, **extra)
    comparison = compare_run(run, expected)
    mismatches, first = comparison.mismatches, comparison.first
    if first is not None:
        first.update(stream="stalls+reload" if reloads else "stalls",
                     model="reload" if k is not None and first["sample"] >= k else "first")
        result["first_mismatch"] = first
    result["mismatches"] += mismatches

    if timing:
        clean = run_engine(plan, x, idle=0.0, backpressure=0.0, seed=case.seed, **extra)
        comparison = compare_run(clean, first_trace)
        mismatches, first = comparison.mismatches, comparison.first
        if first is not None and result["first_mismatch"] is None:
            first.update(stream="clean", model="first")
            result["first_mismatch"] = first
        result["mismatches"] += mismatches
        prediction = plan.predict([x] + first_trace[:-1])
        n = len(x)
        result.update(
            cycles=int(clean.cycles),
            cycles_per_inference=clean.cycles / n,
            predicted_cycles_per_inference=float(prediction["cycles_per_inference"]),
            measured_over_predicted=(clean.cycles / prediction["cycles"])
            if prediction["cycles"] else None,
            model_in_range=prediction["in_range"])
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def format_result(r: dict) -> str:
    """One line: seed, shape, widths, density, options, inputs, mismatches, cycles, time."""
    cycles = ""
    if r.get("cycles_per_inference") is not None:
        ratio = r["measured_over_predicted"]
        where = "" if r.get("model_in_range", True) else ", out of model range"
        cycles = (f" cyc {r['cycles_per_inference']:.1f}/{r['predicted_cycles_per_inference']:.1f}"
                  f" ({ratio:.2f}{where})" if ratio is not None else "")
    reload = f" reload@{r['reload_at']}" if r.get("reload_at") is not None else ""
    return (f"seed {r['seed']} {r['shape']} {_options_string(r)} in{r['inputs']}{reload} "
            f"idle{r['idle']} bp{r['backpressure']} mism {r['mismatches']}{cycles} "
            f"{r['seconds']:.1f}s")


def format_mismatch(r: dict) -> str:
    m = r["first_mismatch"]
    layer = "logits" if m["layer"] == len(r["weight_bits"]) - 1 else f"hidden layer {m['layer']}"
    return (f"FIRST MISMATCH seed {r['seed']}: {m.get('stream')} stream, sample {m['sample']} "
            f"({m.get('model')} model), {layer} (layer {m['layer']}), neuron {m['neuron']}: "
            f"expected {m['expected']}, got {m['got']}")


def run_fuzz(n_models: int = 20, inputs: int = 200, seed: int = 0, runner="verilator",
             progress=print, *, max_width: int = MAX_WIDTH, max_layers: int = MAX_LAYERS,
             max_pes: int | None = None, reload: bool = True, timing: bool = True,
             build_dir=None, conv: bool | None = None) -> list[dict]:
    """Fuzz seeds ``seed .. seed + n_models - 1``; one :func:`run_case` dict per model.

    ``conv``: :func:`random_case`'s (None: each seed draws whether its case is convolutional;
    True or False: every case is, or none).

    ``progress`` (None for silence) gets one line per model (:func:`format_result`), and the
    first mismatch of a failing model. An exception while building or running a case is
    reported as a failing model (``error``), not raised.
    """
    results = []
    for s in range(seed, seed + n_models):
        start = time.perf_counter()
        try:
            case = random_case(s, inputs=inputs, max_width=max_width, max_layers=max_layers,
                               max_pes=max_pes, conv=conv)
            sub = None if build_dir is None else Path(build_dir) / f"seed{s}"
            r = run_case(case, runner, reload=reload, timing=timing, build_dir=sub)
            r["seconds"] = round(time.perf_counter() - start, 2)
        except Exception as error:                    # noqa: BLE001: report, go on fuzzing
            r = {"seed": s, "error": f"{type(error).__name__}: {error}", "mismatches": None,
                 "seconds": round(time.perf_counter() - start, 2)}
            if progress:
                progress(f"seed {s} ERROR {r['error']}")
            results.append(r)
            continue
        if progress:
            progress(format_result(r))
            if r["first_mismatch"] is not None:
                progress(format_mismatch(r))
        results.append(r)
    return results


def _worst(ratios):
    """The ratio farthest from 1, either way."""
    return max(ratios, key=lambda v: abs(np.log(v)), default=None)


def summary(results: list[dict]) -> dict:
    ok = [r for r in results if "error" not in r]
    timed = [r for r in ok if r.get("measured_over_predicted")]
    ratios = [r["measured_over_predicted"] for r in timed]
    inside = [r["measured_over_predicted"] for r in timed if r.get("model_in_range")]
    return {
        "models": len(results),
        "errors": len(results) - len(ok),
        "failing_models": sum(1 for r in ok if r["mismatches"]) + len(results) - len(ok),
        "mismatching_samples": sum(r["mismatches"] for r in ok),
        "inputs": sum(r["inputs"] for r in ok),
        "seconds": round(sum(r["seconds"] for r in results), 1),
        "ratio_min": min(ratios, default=None),
        "ratio_max": max(ratios, default=None),
        "ratio_worst": _worst(ratios),
        "models_in_model_range": len(inside),
        "ratio_worst_in_model_range": _worst(inside),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m accel.fuzz",
        description="Random models, engine options and inputs through the engine, every logit "
                    "and hidden activation compared with sim (with idle cycles, backpressure "
                    "and a mid-stream weight reload), and measured cycles against "
                    "EnginePlan.predict.")
    parser.add_argument("--seed", type=int, default=0,
                        help="first model's seed (a model's own seed replays it; default 0)")
    parser.add_argument("--models", type=int, default=1,
                        help="models: seeds SEED .. SEED+MODELS-1 (default 1)")
    parser.add_argument("--inputs", type=int, default=200, help="images per model (default 200)")
    parser.add_argument("--runner", choices=["verilator", "amaranth"], default=None,
                        help="Verilator batch simulator (default when available) or Amaranth's "
                             "simulator (pure Python, slow: use --max-width and few --inputs)")
    parser.add_argument("--max-width", type=int, default=MAX_WIDTH,
                        help=f"cap on layer widths (default {MAX_WIDTH}; a case depends on it)")
    parser.add_argument("--max-layers", type=int, default=MAX_LAYERS,
                        help=f"cap on drawn layers (default {MAX_LAYERS}; a case depends on it; "
                             "a factorized one, a rank layer before it, counts once)")
    parser.add_argument("--max-pes", type=int, default=None,
                        help="cap on the engine's PEs (default none; a case depends on it)")
    parser.add_argument("--conv", choices=list(_CONV_CHOICES), default="drawn",
                        help="convolutional cases: drawn per seed (default; about "
                             f"{round(100 * CONV)}%%), always or never (a case whose draw "
                             "agrees is the same either way)")
    parser.add_argument("--no-reload", action="store_true", help="skip the mid-stream reload")
    parser.add_argument("--no-timing", action="store_true",
                        help="skip the stall-free stream that measures cycles")
    parser.add_argument("--build-dir", type=Path, default=None,
                        help="where the Verilator runner builds (one folder per seed)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser


def main(argv: list[str] | None = None) -> int:
    import json

    args = build_parser().parse_args(argv)
    if min(args.models, args.inputs, args.max_width, args.max_layers,
           1 if args.max_pes is None else args.max_pes) < 1:
        print("python -m accel.fuzz: --models, --inputs, --max-width, --max-layers and "
              "--max-pes must be >= 1", file=sys.stderr)
        return 2
    runner = args.runner or default_runner()
    print(f"fuzz: seeds {args.seed}..{args.seed + args.models - 1}, {args.inputs} inputs each, "
          f"{runner} runner, widths <= {args.max_width}, layers <= {args.max_layers}",
          flush=True)
    results = run_fuzz(args.models, args.inputs, args.seed, runner,
                       progress=lambda line: print(line, flush=True), max_width=args.max_width,
                       max_layers=args.max_layers, max_pes=args.max_pes,
                       reload=not args.no_reload,
                       timing=not args.no_timing, build_dir=args.build_dir,
                       conv=_CONV_CHOICES[args.conv])
    s = summary(results)
    ratio = "" if s["ratio_worst"] is None else (
        f"; measured/predicted cycles {s['ratio_min']:.2f}..{s['ratio_max']:.2f} "
        f"(worst {s['ratio_worst']:.2f}; in the model's range, {s['models_in_model_range']} "
        f"models: worst {s['ratio_worst_in_model_range'] or float('nan'):.2f})")
    print(f"fuzz: {s['models']} models, {s['inputs']} inputs, {s['failing_models']} failing "
          f"({s['mismatching_samples']} mismatching samples, {s['errors']} errors), "
          f"{s['seconds']:.0f} s{ratio}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": s, "models": results}, indent=1,
                                        default=str) + "\n")
    return 1 if s["failing_models"] else 0


if __name__ == "__main__":
    sys.exit(main())
