"""The accelerator: an EIE-style codebook-decoding sparse MAC engine, sized from the model.

Rooms, imported in one direction (the wire protocol and planning at the bottom, then gateware,
then verification and the host side, then the command lines at the top):

- :mod:`accel.planning`: what the engine is for a model. ``pack`` (each PE's memory images,
  interleaved CSC), ``cycles`` (the cycle model), ``plan``
  (:class:`~accel.planning.plan.EnginePlan`: every size, width and memory, the write port's
  address map).
- :mod:`accel.gateware`: the Amaranth 0.5 components, one module each: ``primitives``
  (memories, FIFOs, skid buffers, the registered multiplier), ``layouts`` (stream payloads),
  ``loader``, ``broadcaster`` (three stages), ``pe`` (the processing element: six stages),
  ``collector``, ``engine`` (the top level :class:`~accel.gateware.engine.Engine`), ``uart``
  and ``framing``, ``link`` (the UART bridge: three stages under its frame FSM), ``top`` (clock generator, bridge and engine on a board), ``verilog``
  (:func:`engine_verilog`: the engine's portable Verilog), ``resources`` (the fit check, from
  the elaborated engine's memories).
- :mod:`accel.verification`: the engine against ``sim``. ``compare`` (one comparison of every
  output), ``amaranth_sim`` (Amaranth's simulator), ``simulators`` (Icarus Verilog and
  Verilator found and set up, the engine's Verilog), ``cosim`` and ``cocotb_engine`` (cocotb on
  Verilator or Icarus Verilog), ``batch_sim`` and ``batch_driver`` (Verilator with a generated
  C++ driver, for volume), ``link_sim`` (the whole board design behind a simulated serial port),
  ``random_cases`` (the fuzz's random models, engines and inputs).
- :mod:`accel.protocol`: the UART link's wire format, shared by the bridge and the host.
- The host side: :mod:`accel.host` (the link's client) and ``python -m accel.run``.
- Command lines: ``python -m accel.build``, ``accel.verify``, ``accel.run``, ``accel.fuzz``,
  and :mod:`accel.cli` (the engine options they share).

See ``docs/accelerator.md``.
"""

from accel.gateware.verilog import engine_verilog

__all__ = ["engine_verilog"]
