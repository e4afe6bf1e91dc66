"""Amaranth HDL generator of the EIE-style codebook-decoding sparse MAC engine.

- :mod:`accel.pack`: the processing elements' memory images (interleaved CSC) of a quantized
  artifact;
- :mod:`accel.plan`: :class:`~accel.plan.EnginePlan`, every size, width and memory of the engine
  derived from the model, the write port's address map and the cycle model;
- :mod:`accel.engine`: the Amaranth 0.5 components (loader, broadcaster, PEs, collector) and the
  top level :class:`~accel.engine.Engine`;
- :mod:`accel.amaranth_sim` and :mod:`accel.cosim`: the engine in Amaranth's simulator and in
  cocotb on Verilator or Icarus Verilog, compared output for output with ``sim``;
- ``python -m accel.verify``: that comparison on a test set, with cycle and utilization figures;
- :func:`engine_verilog` (:mod:`accel.emit`): the engine's Verilog text, portable to any
  simulator (Icarus Verilog with ``-g2012`` and Verilator included).

See ``docs/accelerator.md``.
"""

from accel.emit import engine_verilog

__all__ = ["engine_verilog"]
