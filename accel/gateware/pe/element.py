"""The processing element: its stages composed (``docs/accelerator.md``)."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out, connect

from accel.gateware.layouts import layouts
from accel.gateware.pe.accumulate import Accumulate
from accel.gateware.pe.drain import DrainSequencer
from accel.gateware.pe.entry import EntryStage
from accel.gateware.pe.lists import ResultLists
from accel.gateware.pe.pool import AveragePool
from accel.gateware.pe.pointer import PointerStage
from accel.gateware.pe.requantizer import Requantizer
from accel.gateware.primitives import _check_plan
from accel.planning.plan import EnginePlan

__all__ = ["ProcessingElement"]


class ProcessingElement(wiring.Component):
    """One PE: interleaved-CSC weights of its rows of every layer, a MAC pipeline and a drain.

    Parameters
    ----------
    plan : EnginePlan
    pe : int
        This PE's index ``p``; it owns output rows ``k * N + p`` of every (reordered) layer.

    Attributes
    ----------
    i : In(stream.Signature(group))
        Groups of activations for this PE, and fences (:class:`PointerStage`).
    drain : In(stream.Signature(context))
        Commands: drain accumulator bank ``bank`` of layer ``layer`` (its context is complete;
        :class:`DrainSequencer`).
    retire : Out(retire)
        Strobe with a context: this PE's fence of the context has retired, every product of the
        context before it is in the accumulators (:class:`Accumulate`).
    o : Out(stream.Signature(source))
        The PE's list: nonzero hidden outputs ``(row, value)`` tagged with the next layer and the
        bank, then an end mark per drained context (:class:`ResultLists`).
    logits : Out(stream.Signature(logit))
        The last layer's outputs of this PE's rows, in local row order.
    trace : Out(trace)
        Every entry appended to ``o`` (for verification).
    write : In(bus)
        The write port (entries, pointers, codebooks, biases, row ids, requantization constants).

    The stages, in order (``docs/accelerator.md`` gives their clocks): :class:`PointerStage`
    (group queue, lane issue, pointer read: groups to columns), :class:`EntryStage` (one entry
    per clock: row decode, codebook read), :class:`Accumulate` (multiply, accumulator
    memories), and the drain: :class:`DrainSequencer` (reads and clears a context's rows),
    :class:`Requantizer` (fixed latency) and :class:`ResultLists` (appends nonzero rows).
    Throughput: one entry per clock in the MAC pipeline, one row per clock in the drain.
    """

    def __init__(self, plan: EnginePlan, pe: int):
        _check_plan(self, plan)
        if isinstance(pe, bool) or not isinstance(pe, int) or not 0 <= pe < plan.n_pes:
            self._MustUse__used = True
            raise ValueError(f"pe must be 0..{plan.n_pes - 1}, not {pe!r}")
        self._plan = plan
        self._pe = pe
        lay = layouts(plan)
        super().__init__({
            "i": In(stream.Signature(lay.group)),
            "drain": In(stream.Signature(lay.context)),
            "retire": Out(lay.retire),
            "o": Out(stream.Signature(lay.source)),
            "logits": Out(stream.Signature(lay.logit)),
            "trace": Out(lay.trace),
            "write": In(lay.bus),
        })

    def elaborate(self, platform):
        plan, p = self._plan, self._pe
        m = Module()
        m.submodules.pointer = pointer = PointerStage(plan, p)
        m.submodules.entry = entry = EntryStage(plan, p)
        m.submodules.accumulate = accumulate = Accumulate(plan)
        m.submodules.sequencer = sequencer = DrainSequencer(plan, p)
        m.submodules.requantizer = requantizer = Requantizer(plan, p)
        m.submodules.lists = lists = ResultLists(plan)

        # A local copy of the write bus: it takes every word as it arrives from the top level,
        # far away, with an enable that includes its own register, so that the copies of
        # different PEs differ and synthesis cannot merge them back into one register that
        # drives every PE. Each memory's and register's write enable is decoded from it and
        # registered beside the memory (``strobe_from``).
        arriving = Signal(layouts(plan).bus)
        with m.If(self.write.en | arriving.en):
            m.d.sync += arriving.eq(self.write)
        for stage in (pointer, entry, sequencer, requantizer):
            m.d.comb += stage.write.eq(arriving)

        connect(m, wiring.flipped(self.i), pointer.i)
        connect(m, pointer.o, entry.i)
        m.d.comb += accumulate.i.eq(entry.o)
        connect(m, accumulate.drain, sequencer.acc)
        connect(m, wiring.flipped(self.drain), sequencer.i)
        m.d.comb += [
            self.retire.eq(accumulate.retire),
            requantizer.i.eq(sequencer.o),
            self.trace.eq(lists.trace),
        ]
        if plan.has_conv:
            m.submodules.pool = pool = AveragePool(plan)
            m.d.comb += [pool.i.eq(requantizer.o), lists.i.eq(pool.o)]
        else:
            m.d.comb += lists.i.eq(requantizer.o)
        connect(m, lists.freed, sequencer.freed)
        connect(m, lists.o, wiring.flipped(self.o))
        connect(m, lists.logits, wiring.flipped(self.logits))
        return m
