"""The registered product (``accel.gateware.primitives._RegisteredProduct``): the ECP5 hard multiplier's wiring.

In simulation the engine multiplies with flip-flops and ``*`` (every other test covers that);
on an ECP5 the same product comes from a MULT18X18D instance with its input and output
registers. Here that instance's Verilog, with a model of the primitive in its registered,
signed mode (operands registered, product registered: the Lattice sysDSP user guide's
MULT18X18D), runs in Icarus and must give the fabric version's values on the same clocks.
"""

import shutil
import subprocess

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import signed, unsigned
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from accel.gateware.verilog import _yosys
from accel.gateware.primitives import _RegisteredProduct

pytestmark = pytest.mark.skipif(
    shutil.which("iverilog") is None or shutil.which("vvp") is None,
    reason="Icarus Verilog (iverilog) not installed: apt-get install -y iverilog")

# MULT18X18D with REG_INPUTA/B_CLK and REG_OUTPUT_CLK on CLK0 (CE0 1, RST0 0), SIGNEDA/B 1.
_MULT18X18D_MODEL = """
module MULT18X18D(
  input A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15, A16, A17,
  input B0, B1, B2, B3, B4, B5, B6, B7, B8, B9, B10, B11, B12, B13, B14, B15, B16, B17,
  input C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13, C14, C15, C16, C17,
  input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB, CLK0, CE0, RST0,
  output P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11, P12, P13, P14, P15, P16, P17,
  output P18, P19, P20, P21, P22, P23, P24, P25, P26, P27, P28, P29, P30, P31, P32, P33, P34, P35);
  parameter REG_INPUTA_CLK = "NONE";
  parameter REG_INPUTB_CLK = "NONE";
  parameter REG_OUTPUT_CLK = "NONE";
  parameter REG_PIPELINE_CLK = "NONE";
  reg signed [17:0] a, b;
  reg signed [35:0] p;
  wire [17:0] ai = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
  wire [17:0] bi = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
  initial if (REG_INPUTA_CLK != "CLK0" || REG_INPUTB_CLK != "CLK0" || REG_OUTPUT_CLK != "CLK0"
              || REG_PIPELINE_CLK != "NONE") begin
    $display("UNMODELLED"); $finish;
  end
  always @(posedge CLK0) if (CE0) begin
    if (!SIGNEDA || !SIGNEDB || SOURCEA || SOURCEB) begin $display("UNMODELLED"); $finish; end
    a <= ai; b <= bi; p <= a * b;
  end
  assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18,
          P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = p;
endmodule
"""


@pytest.mark.parametrize("a_shape, b_shape", [
    (unsigned(17), unsigned(15)),         # the requantization's low part
    (signed(8), unsigned(15)),            # its high part
    (signed(4), signed(8)),               # the MAC: weight x activation
    (signed(18), signed(18)),
])
def test_ecp5_multiplier_matches_fabric(tmp_path, a_shape, b_shape):
    dut = _RegisteredProduct(a_shape, b_shape)
    platform = ULX3S_85F_Platform()
    with _yosys():
        text = verilog.convert(dut, name="product", platform=platform,
                               ports=[dut.a, dut.b, dut.p])
        plain = _RegisteredProduct(a_shape, b_shape)
        fabric = verilog.convert(plain, name="product", ports=[plain.a, plain.b, plain.p])
    assert "MULT18X18D" in text
    assert "MULT18X18D" not in fabric
    rng = np.random.default_rng(0)

    def draw(shape, n):
        low = -(1 << (shape.width - 1)) if shape.signed else 0
        high = (1 << (shape.width - 1)) if shape.signed else (1 << shape.width)
        edge = [low, high - 1, 0, 1 if high > 1 else 0, -1 if shape.signed else 0]
        return np.concatenate([edge, rng.integers(low, high, n - len(edge))])

    n = 200
    a, b = draw(a_shape, n), draw(b_shape, n)
    stimulus = "\n".join(f"    a = {int(x)}; b = {int(y)}; #10;" for x, y in zip(a, b))
    p_width = len(dut.p)
    a_decl = f"{'signed ' if a_shape.signed else ''}[{a_shape.width - 1}:0]"
    b_decl = f"{'signed ' if b_shape.signed else ''}[{b_shape.width - 1}:0]"
    # Operands change 1 ns after an edge; both versions are sampled just before each edge.
    testbench = f"""
`timescale 1ns/1ps
module tb;
  reg clk = 0; always #5 clk = ~clk;
  reg {a_decl} a = 0; reg {b_decl} b = 0;
  wire signed [{p_width - 1}:0] p, q;
  product dut(.clk(clk), .rst(1'b0), .a(a), .b(b), .p(p));
  fabric plain(.clk(clk), .rst(1'b0), .a(a), .b(b), .p(q));
  always @(negedge clk) $display("%0d %0d", p, q);
  initial begin
    #6;
{stimulus}
    #30 $finish;
  end
endmodule
"""
    (tmp_path / "product.v").write_text(text)
    (tmp_path / "fabric.v").write_text(fabric.replace("module product", "module fabric"))
    (tmp_path / "model.v").write_text(_MULT18X18D_MODEL)
    (tmp_path / "tb.v").write_text(testbench)
    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "sim"), "tb.v", "product.v",
                    "fabric.v", "model.v"], cwd=tmp_path, check=True, capture_output=True,
                   text=True)
    out = subprocess.run(["vvp", "-n", str(tmp_path / "sim")], cwd=tmp_path, check=True,
                         capture_output=True, text=True).stdout
    assert "UNMODELLED" not in out
    # One row per clock from the first falling edge; the model's registers start unknown
    # (``x``) where the fabric's are reset, until the first operands have gone through.
    rows = [line.split() for line in out.splitlines() if line.strip()]
    hard = [int(r[0]) for r in rows[2:]]
    fabric_values = [int(r[1]) for r in rows[2:]]
    assert hard == fabric_values          # the same values on the same clocks
    # Pair k, set after rising edge k, is registered at edge k + 1 and its product at edge
    # k + 2: row k + 2.
    expected = [int(x) * int(y) for x, y in zip(a, b)]
    assert hard[:n] == expected
