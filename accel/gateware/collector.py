"""The collector: the last layer's logits out in neuron order (``docs/accelerator.md``)."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from accel.gateware.layouts import layouts
from accel.gateware.primitives import _SkidBuffer, _check_plan
from accel.planning.plan import EnginePlan

__all__ = ["Collector"]


class Collector(wiring.Component):
    """Streams the last layer's logits out in neuron order.

    Parameters
    ----------
    plan : EnginePlan

    Attributes
    ----------
    i : In(stream.Signature(logit)).array(n_pes)
        Each PE's logits of its rows (row ``k * N + p`` is PE ``p``'s ``k``-th).
    o : Out(stream.Signature(logit))
        ``out_features`` logits per image, neuron 0 first.
    finished : Out(1)
        Strobe: an image's last logit was accepted.

    Latency and throughput: one clock (a skid buffer: the PEs' lists are spread over the chip,
    and ``o`` and the lists' ``ready`` then come from flip-flops, timing); one logit per clock.
    """

    def __init__(self, plan: EnginePlan):
        _check_plan(self, plan)
        self._plan = plan
        lay = layouts(plan)
        super().__init__({
            "i": In(stream.Signature(lay.logit)).array(plan.n_pes),
            "o": Out(stream.Signature(lay.logit)),
            "finished": Out(1),
        })

    def elaborate(self, platform):
        plan = self._plan
        m = Module()
        width = len(self.o.payload)
        m.submodules.skid = skid = _SkidBuffer(width + 1)        # the logit and "last"
        # Each PE's logits enter through a skid buffer of their own: the PEs are spread over
        # the chip, and the selection below then reads local flip-flops (timing).
        inputs = []
        for p, i in enumerate(self.i):
            m.submodules[f"input{p}"] = head = _SkidBuffer(width)
            m.d.comb += [head.i_valid.eq(i.valid), head.i_data.eq(i.payload),
                         i.ready.eq(head.i_ready)]
            inputs.append(head)
        pe = Signal(range(plan.n_pes))
        neuron = Signal(range(plan.out_features))
        last = neuron == plan.out_features - 1
        with m.Switch(pe):
            for p, head in enumerate(inputs):
                with m.Case(p):
                    m.d.comb += [skid.i_valid.eq(head.o_valid),
                                 skid.i_data.eq(Cat(head.o_data, last)),
                                 head.o_ready.eq(skid.i_ready)]
        m.d.comb += [
            self.o.valid.eq(skid.o_valid), self.o.payload.eq(skid.o_data[:width]),
            skid.o_ready.eq(self.o.ready),
            self.finished.eq(self.o.valid & self.o.ready & skid.o_data[width]),
        ]
        do_transfer = skid.i_valid & skid.i_ready
        with m.If(do_transfer):
            with m.If(last):
                m.d.sync += [neuron.eq(0), pe.eq(0)]
            with m.Else():
                m.d.sync += [neuron.eq(neuron + 1),
                             pe.eq(Mux(pe == plan.n_pes - 1, 0, pe + 1))]
        return m
