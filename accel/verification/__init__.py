"""The engine against the golden model (``sim``): the comparison (``compare``) and the runners,
Amaranth's simulator (``amaranth_sim``), cocotb on Verilator or Icarus (``cosim`` with the
testbench ``cocotb_engine``), Verilator with a C++ driver (``batch_sim``) and the whole board
design behind a simulated serial port (``link_sim``)."""
