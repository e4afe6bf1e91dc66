"""The engine's hardware, as Amaranth 0.5 components, one module each: building blocks
(``primitives``), stream payloads (``layouts``), the ``loader``, ``broadcaster``, processing
element (``pe``) and ``collector``, the engine's top level (``engine``), the UART (``uart``),
the response framing (``framing``), the host link's bridge (``link``), a board's top level
(``top``), the engine's portable Verilog (``verilog``) and the fit check from its elaborated
memories (``resources``)."""
