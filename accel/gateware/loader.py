"""The loader: input beats to lists of nonzero input activations (``docs/accelerator.md``)."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from accel.gateware.layouts import layouts
from accel.gateware.primitives import _check_plan
from accel.planning.plan import EnginePlan

__all__ = ["Loader"]


class Loader(wiring.Component):
    """Input beats to per-lane lists of nonzero first-layer activations.

    Parameters
    ----------
    plan : EnginePlan

    Attributes
    ----------
    i : In(stream.Signature(unsigned(input_lanes * input_bits)))
        Input beats: ``beats_per_image`` per image, lane ``l`` in bits ``l * A ..`` (two's
        complement when the network input is signed, A1).
    o : Out(stream.Signature(source)).array(input_lanes)
        Per lane, the image's nonzero activations in column order, then an end mark (on the
        entry of the image's last beat, which carries that beat's activation if nonzero).
    started : Out(1)
        Strobe: the first beat of an image was accepted.

    Latency and throughput: one beat per clock while every lane's list has room; an entry is in
    its list the clock after its beat. Images alternate accumulator banks 0, 1, 0, ...
    """

    def __init__(self, plan: EnginePlan):
        _check_plan(self, plan)
        self._plan = plan
        self._layouts = layouts(plan)
        super().__init__({
            "i": In(stream.Signature(unsigned(plan.input_lanes * plan.input_bits))),
            "o": Out(stream.Signature(self._layouts.source)).array(plan.input_lanes),
            "started": Out(1),
        })

    def elaborate(self, platform):
        plan = self._plan
        m = Module()
        beat = Signal(range(plan.beats_per_image), name="beat")
        bank = Signal(range(plan.banks), name="bank")
        last = beat == plan.beats_per_image - 1
        room = Cat(o.ready for o in self.o).all()
        do_beat = self.i.valid & room
        bits = plan.input_bits
        for lane, o in enumerate(self.o):
            raw = self.i.payload[lane * bits:(lane + 1) * bits]
            value = raw.as_signed() if plan.input_signed else raw.as_unsigned()
            column = beat * plan.input_lanes + lane
            present = (value != 0) & (column < plan.input_columns)
            m.d.comb += [
                o.valid.eq(self.i.valid & room & (present | last)),
                o.payload.present.eq(present),
                o.payload.end.eq(last),
                o.payload.item.column.eq(column),
                o.payload.item.value.eq(value),
                o.payload.item.layer.eq(0),
                o.payload.item.bank.eq(bank),
            ]
        m.d.comb += [
            self.i.ready.eq(room),
            self.started.eq(do_beat & (beat == 0)),
        ]
        with m.If(do_beat):
            with m.If(last):
                m.d.sync += [beat.eq(0),
                             bank.eq(Mux(bank == plan.banks - 1, 0, bank + 1))]
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
        return m
