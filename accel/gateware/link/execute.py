"""The bridge's executor: a checked request's beats or words fed to the engine, its logits
collected and its busy clocks counted."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accel.gateware.layouts import CYCLE_COUNTER_BITS
from accel.planning.plan import EnginePlan

__all__ = ["RequestExecutor"]


class RequestExecutor(wiring.Component):
    """Run INFER (feed an image ``repeat`` times, collect every run's logits) or WRITE (feed the
    words) on the engine's ports.

    Parameters
    ----------
    plan : EnginePlan
    max_write_words : int
    word : StructLayout
        A WRITE word (``addr``, ``data``).

    Attributes
    ----------
    load : In(1)
        Strobe: the engine is idle and a checked request is about to run: take ``repeat`` and
        ``records`` (for INFO, nothing runs after it).
    infer, write_kind : In(1)
        Run INFER (``infer``, from the clock of ``load``) or WRITE (``write_kind``), in the
        clock after ``load``.
    repeat : In(16)
        INFER: runs.
    records : In(unsigned)
        WRITE: words in the word buffer.
    feed_addr : Out(range)
        The beat and word buffers' read address (a synchronous read, enabled by ``feed_en``).
    feed_en : Out(1)
    i : Out(stream.Signature(beat))
        To the engine's ``i`` (``payload``: the beat buffer's read data, connected outside).
    write : Out(stream.Signature(word))
        To the engine's ``write`` (``payload``: the word buffer's read data).
    o : In(stream.Signature(signed(logit_bits)))
        From the engine's ``o``; always ready. Each logit is written to the logit buffer
        (``logit_write``).
    logit_write : Out(StructLayout({"addr", "en"}))
    busy : In(1)
        The engine's ``busy``.
    done : Out(1)
        Strobe: the last logit of the last run was taken (INFER) or the last word (WRITE).
    elapsed : Out(CYCLE_COUNTER_BITS)
        INFER: the engine's busy clocks from the first beat taken to the last logit (its
        ``cycles`` counter's increments), set with ``done``.
    write_count : Out(16)
        The words of the request (``records`` at ``load``).

    Throughput: one beat or word per clock while the engine takes them.
    """

    def __init__(self, plan: EnginePlan, *, max_write_words: int, word: data.StructLayout):
        self._plan = plan
        self._records = max(plan.beats_per_image, max_write_words)
        super().__init__({
            "load": In(1), "infer": In(1), "write_kind": In(1),
            "repeat": In(16), "records": In(unsigned(self._records.bit_length())),
            "feed_addr": Out(range(self._records)), "feed_en": Out(1),
            "i": Out(stream.Signature(unsigned(plan.input_lanes * plan.input_bits))),
            "write": Out(stream.Signature(word)),
            "o": In(stream.Signature(signed(plan.logit_bits))),
            "logit_write": Out(data.StructLayout({"addr": range(max(plan.out_features, 1)),
                                                  "en": 1})),
            "busy": In(1),
            "done": Out(1),
            "elapsed": Out(CYCLE_COUNTER_BITS),
            "write_count": Out(16),
        })

    def elaborate(self, platform):
        plan = self._plan
        beats, out_features = plan.beats_per_image, plan.out_features
        m = Module()
        feed_valid = Signal()
        feed_next = Signal(range(self._records))
        runs_to_feed = Signal(16)
        # ``runs_to_feed != 0`` and ``feed_next == beats - 1``, kept in registers beside their
        # counters: the feeders then advance with one LUT after the engine's ``ready`` (timing).
        more_to_feed = Signal()
        feed_at_last = Signal()
        runs_to_collect = Signal(16)
        last_run = Signal()                     # runs_to_collect == 1, registered (timing)
        collect_neuron = Signal(range(max(out_features, 1)))
        first_beat = Signal()
        busy_clocks = Signal(CYCLE_COUNTER_BITS)    # busy clocks since the first beat

        # Engine feeders: present buffer entry `feed_next` one clock after claiming it.
        feed_advance = ~feed_valid | Mux(self.infer, self.i.ready, self.write.ready)
        m.d.comb += [self.feed_addr.eq(feed_next), self.feed_en.eq(feed_advance),
                     self.o.ready.eq(1), self.logit_write.addr.eq(collect_neuron)]
        with m.If(self.busy):
            m.d.sync += busy_clocks.eq(busy_clocks + 1)
        with m.If(self.load):
            m.d.sync += [feed_valid.eq(0), feed_next.eq(0), feed_at_last.eq(beats == 1),
                         runs_to_feed.eq(self.repeat), more_to_feed.eq(self.repeat != 0),
                         runs_to_collect.eq(self.repeat), last_run.eq(self.repeat == 1),
                         collect_neuron.eq(0), first_beat.eq(1),
                         self.write_count.eq(self.records)]
            with m.If(self.write_kind):
                m.d.sync += [runs_to_feed.eq(self.records), more_to_feed.eq(self.records != 0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.load & self.infer):
                    m.next = "INFER"
                with m.Elif(self.load & self.write_kind):
                    m.next = "WRITE"
            with m.State("INFER"):
                m.d.comb += self.i.valid.eq(feed_valid)
                with m.If(feed_advance):
                    with m.If(more_to_feed):
                        m.d.sync += [feed_valid.eq(1),
                                     feed_next.eq(Mux(feed_at_last, 0, feed_next + 1)),
                                     feed_at_last.eq(Mux(feed_at_last, beats == 1,
                                                         feed_next + 1 == beats - 1))]
                        with m.If(feed_at_last):
                            m.d.sync += [runs_to_feed.eq(runs_to_feed - 1),
                                         more_to_feed.eq(runs_to_feed != 1)]
                    with m.Else():
                        m.d.sync += feed_valid.eq(0)
                with m.If(self.i.valid & self.i.ready & first_beat):
                    # Count the engine's busy clocks from this one (its `cycles` counter's
                    # increments, without a 48-bit subtraction at the end: timing).
                    m.d.sync += [busy_clocks.eq(self.busy), first_beat.eq(0)]
                with m.If(self.o.valid):
                    m.d.comb += self.logit_write.en.eq(1)
                    with m.If(collect_neuron == out_features - 1):
                        m.d.sync += [collect_neuron.eq(0),
                                     runs_to_collect.eq(runs_to_collect - 1),
                                     last_run.eq(runs_to_collect == 2)]
                        with m.If(last_run):
                            m.d.sync += [self.elapsed.eq(busy_clocks), feed_valid.eq(0)]
                            m.d.comb += self.done.eq(1)
                            m.next = "IDLE"
                    with m.Else():
                        m.d.sync += collect_neuron.eq(collect_neuron + 1)
            with m.State("WRITE"):
                # runs_to_feed counts words here.
                m.d.comb += self.write.valid.eq(feed_valid)
                with m.If(feed_advance):
                    with m.If(more_to_feed):
                        m.d.sync += [feed_valid.eq(1), feed_next.eq(feed_next + 1),
                                     runs_to_feed.eq(runs_to_feed - 1),
                                     more_to_feed.eq(runs_to_feed != 1)]
                    with m.Else():
                        m.d.sync += feed_valid.eq(0)
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
        return m
