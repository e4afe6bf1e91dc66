"""The engine against the golden model (``sim``): the comparison (``compare``) and the runners,
Amaranth's simulator (``amaranth_sim``), cocotb on Verilator or Icarus (``cosim`` with the
testbench ``cocotb_engine``, on the toolchain and Verilog of ``simulators``), Verilator with a
C++ driver (``batch_sim``, the driver's source from ``batch_driver``) and the whole board design
behind a simulated serial port (``link_sim``); and the fuzz's random cases (``random_cases``)."""
