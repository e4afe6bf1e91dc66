"""The engine's hardware, as Amaranth 0.5 components, one module each: building blocks
(``primitives``), stream payloads (``layouts``), the ``loader``, the ``broadcaster`` package
(list intake, group issue, commit), the processing element's package ``pe`` (pointer stage,
entry stage, accumulate, drain sequencer, requantizer, result lists) and the ``collector``,
the engine's top level (``engine``), the UART (``uart``), the response framing (``framing``),
the host link's bridge package ``link`` (request decoder, executor, response sequencer), a
board's top level (``top``), the engine's portable Verilog (``verilog``) and the fit check
from its elaborated memories (``resources``)."""
