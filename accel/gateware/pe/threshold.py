"""The PE's threshold activation: a drained row's sum compared with its layer's thresholds, and
the level of the code it reaches (``docs/arithmetic.md`` A10), at a fixed latency."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from accel.gateware.layouts import layouts
from accel.gateware.pe.stages import pe_widths
from accel.gateware.primitives import _check_plan, _register, _switch
from accel.planning.plan import EnginePlan

__all__ = ["LATENCY", "ThresholdActivation", "threshold_layers"]

#: Clocks from ``i`` to ``o``.
LATENCY = 3


def threshold_layers(plan: EnginePlan) -> list[int]:
    """The layers of ``plan`` with a threshold activation (A10)."""
    return [i for i, layer in enumerate(plan.layers) if layer.levels is not None]


class ThresholdActivation(wiring.Component):
    """``value = levels[layer][#{j : sum >= thresholds[layer][j]}]`` (A10), per layer.

    Parameters
    ----------
    plan : EnginePlan
        With at least one layer that has a threshold activation (:func:`threshold_layers`).
    pe : int
        The PE whose copy of the thresholds and levels this stage holds.

    Attributes
    ----------
    i : In(StructLayout)
        ``layer`` and ``sum`` (the accumulator with its bias, A5) of a drained row; taken every
        clock (no handshake: the requantizer's rows ride beside it).
    o : Out(unsigned)
        ``LATENCY`` (3) clocks later: the row's level, when ``layer`` has a threshold
        activation (otherwise a value to ignore).
    write : In(bus)
        The PE's copy of the write bus (each layer's thresholds and levels, registers).

    Latency and throughput: fixed, ``LATENCY`` clocks; one row per clock. T1: every threshold
    layer's comparisons (one carry chain each, in parallel), registered; T2: the row's layer's
    comparisons counted (they form a thermometer code: the thresholds ascend), registered; T3:
    the level of that code, registered.
    """

    def __init__(self, plan: EnginePlan, pe: int):
        _check_plan(self, plan)
        if not threshold_layers(plan):
            raise ValueError("plan must have a layer with a threshold activation (A10)")
        self._plan, self._pe = plan, pe
        w = pe_widths(plan)
        super().__init__({
            "i": In(data.StructLayout({"layer": unsigned(plan.layer_bits),
                                       "sum": signed(w.acc_bits + 1)})),
            "o": Out(w.value_shape),
            "write": In(layouts(plan).bus),
        })

    def elaborate(self, platform):
        plan, layers = self._plan, self._plan.layers
        chosen = threshold_layers(plan)
        codes = max(len(layers[i].levels) for i in chosen)
        m = Module()
        # The constants are written as the requantizer's are: from a registered copy of the bus,
        # enables decoded a clock earlier.
        bus = Signal(layouts(plan).bus)
        m.d.sync += [bus.addr.eq(self.write.addr), bus.data.eq(self.write.data)]
        own = dict(strobe_from=self.write)
        thresholds = {i: [_register(m, plan, bus, "thresholds", i, j,
                                    signed(layers[i].threshold_bits), int(t), **own)
                          for j, t in enumerate(layers[i].thresholds.tolist())]
                      for i in chosen}
        levels = {i: [_register(m, plan, bus, "levels", i, j, unsigned(layers[i].output_bits),
                                int(v), **own)
                      for j, v in enumerate(layers[i].levels.tolist())]
                  for i in chosen}

        # -- T1: each threshold layer's comparisons, registered ------------------------------
        passed = {i: Signal(len(thresholds[i]), name=f"passed{i}") for i in chosen}
        t2_layer = Signal.like(self.i.layer)
        m.d.sync += t2_layer.eq(self.i.layer)
        for i in chosen:
            m.d.sync += passed[i].eq(Cat(self.i.sum >= t for t in thresholds[i]))

        # -- T2: the row's layer's count of thresholds passed, registered --------------------
        code_bits = (codes - 1).bit_length()
        thermometer = _switch(m, t2_layer, [Cat(passed.get(i, Const(0, 1)))
                                            for i in range(len(layers))],
                              unsigned(codes - 1), "thermometer")
        code = Signal(code_bits)
        t3_layer = Signal.like(t2_layer)
        m.d.sync += [code.eq(sum(thermometer[j] for j in range(codes - 1))),
                     t3_layer.eq(t2_layer)]

        # -- T3: the code's level, registered -------------------------------------------------
        level_of = [_switch(m, code, levels[i], self.o.shape(), f"level{i}") if i in levels
                    else Const(0, self.o.shape()) for i in range(len(layers))]
        m.d.sync += self.o.eq(_switch(m, t3_layer, level_of, self.o.shape(), "level"))
        return m
