"""The PE's average pooling: a window's four requantized values summed and rounded (A13),
after the requantizer (D7)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from accel.gateware.pe.stages import pe_widths, requant_output_layout
from accel.gateware.primitives import _check_plan
from accel.planning.plan import EnginePlan

__all__ = ["AveragePool"]


class AveragePool(wiring.Component):
    """``(a + b + c + d + 2) >> 2`` of an average-pooled window's four values (A13).

    Parameters
    ----------
    plan : EnginePlan
        With a convolution (the drain's rows carry their window flags).

    Attributes
    ----------
    i : In(requant_output_layout(plan))
        Requantized rows: an average-pooled window's four (``stage.average``, the first with
        ``stage.first``, the last with ``stage.last``), and every other row or end mark.
    o : Out(requant_output_layout(plan))
        A clock later: a window's average in place of its last value (its first three are
        not valid here); every other row or end mark as it came.

    Latency and throughput: 1 clock; one row per clock.
    """

    def __init__(self, plan: EnginePlan):
        _check_plan(self, plan)
        if not plan.has_conv:
            self._MustUse__used = True
            raise ValueError("plan must have a convolution: a plan of Linear layers pools "
                             "nothing")
        self._plan = plan
        layout = requant_output_layout(plan)
        super().__init__({"i": In(layout), "o": Out(layout)})

    def elaborate(self, platform):
        w = pe_widths(self._plan)
        m = Module()
        stage = self.i.stage
        averaged = stage.valid & ~stage.end & stage.average
        # The window's values so far (the requantized values are at most value_bits wide).
        partial = Signal(signed(len(self.i.value) + 2))
        total = Signal.like(partial)
        m.d.comb += total.eq(Mux(stage.first, 0, partial) + self.i.value)
        with m.If(averaged):
            m.d.sync += partial.eq(total)
        m.d.sync += [
            self.o.eq(self.i),
            self.o.stage.valid.eq(stage.valid & (~averaged | stage.last)),
        ]
        with m.If(averaged):
            m.d.sync += self.o.value.eq((total + 2) >> 2)
        assert len(self.i.value) == w.value_shape.width
        return m
