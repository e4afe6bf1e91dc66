"""The engine's hardware, as Amaranth 0.5 components: the engine (``engine``), the UART bridge
(``link``), a board's top level (``top``), the engine's portable Verilog (``verilog``) and the
fit check from its elaborated memories (``resources``)."""
