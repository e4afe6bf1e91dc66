"""A minimal cocotb testbench of the emitted engine Verilog, as a user would write one.

Run by ``tests/test_accel_cocotb.py::test_plain_cocotb_flow_*`` through ``cocotb_tools.runner``
with the runner's default options (Icarus Verilog: ``-g2012``). The environment variable
``PLAIN_ENGINE_DATA`` names a JSON file with the input beats of one image and where to write what
was seen: the outputs (but the logit payload) that were X after reset, cycle by cycle, and the raw
payloads of the accepted logits.
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

MAX_CYCLES = 2000


@cocotb.test()
async def one_image_gives_its_logits(dut):
    with open(os.environ["PLAIN_ENGINE_DATA"]) as f:
        data = json.load(f)
    seen = {"x": [], "payloads": []}

    def resolved(name, handle, cycle):
        value = handle.value
        if not value.is_resolvable:
            seen["x"].append(f"cycle {cycle}: {name} is {value}")
            return None
        return int(value)

    Clock(dut.clk, 2, unit="step").start()      # no timescale: the runner's defaults
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.i__payload.value = 0
    dut.o__ready.value = 1
    dut.write__valid.value = 0
    dut.write__payload.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)

    beats = list(data["beats"])
    cycle = 0
    while cycle < MAX_CYCLES and len(seen["payloads"]) < data["logits"]:
        if beats:
            dut.i__valid.value = 1
            dut.i__payload.value = beats[0]
        else:
            dut.i__valid.value = 0
        await ReadOnly()
        ready = resolved("i.ready", dut.i__ready, cycle)
        valid = resolved("o.valid", dut.o__valid, cycle)
        for name in ("write__ready", "busy", "done", "cycles", "trace"):
            resolved(name, getattr(dut, name), cycle)
        if beats and ready:
            beats.pop(0)
        if valid:
            seen["payloads"].append(dut.o__payload.value.to_unsigned())
        await RisingEdge(dut.clk)
        cycle += 1
    seen["cycles"] = cycle
    with open(data["results"], "w") as f:
        json.dump(seen, f)
    assert not seen["x"], seen["x"][0]
    assert len(seen["payloads"]) == data["logits"], f"only {len(seen['payloads'])} logits"
