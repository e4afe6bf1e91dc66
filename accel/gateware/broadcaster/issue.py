"""The broadcaster's issue: up to ``lanes`` entries, or a fence, into a group per clock, and the
bookkeeping of which lists have closed which context."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accel.gateware.broadcaster.intake import cluster_count, tagged_layout
from accel.gateware.layouts import layouts
from accel.gateware.primitives import _check_plan, _fewer_than, _lowest_set, _or_all
from accel.planning.plan import EnginePlan, _bits

__all__ = ["GroupIssue", "issued_layout"]


def issued_layout(plan: EnginePlan) -> data.StructLayout:
    """A group as it leaves the issue (``valid``: there is one)."""
    return data.StructLayout({"valid": 1, "group": layouts(plan).group})


class GroupIssue(wiring.Component):
    """Form one group per clock from the clusters' heads, or send a fence.

    Parameters
    ----------
    plan : EnginePlan

    Attributes
    ----------
    i : In(stream.Signature(tagged_layout(plan))).array(cluster_count(plan))
        The clusters' entries (:class:`~accel.gateware.broadcaster.intake.ListIntake`).
    room : In(1)
        The commit has room for a group in the next clock (registered there).
    o : Out(issued_layout(plan))
        A group (registered): up to ``lanes`` present entries, or a fence of a context; end
        marks are taken but not sent.
    release : In(1), release_bank : In(bank_bits)
        Strobe: the image in ``release_bank`` has left the engine (its first-layer context may
        open again).

    Behaviour: once every input lane has delivered its end mark of bank ``b``, or every PE list
    its end mark of a later (layer, bank), a fence for that context is sent before any later
    group. Lane 0 takes the lowest cluster with an entry, lane 1 the highest other one, further
    lanes the lowest of the rest.

    Latency and throughput: a group is in ``o`` a clock after its entries are taken; up to
    ``lanes`` entries per clock while ``room``. A fence is pending (nothing is taken) 4 clocks
    after the end mark that completes its context is taken, and in ``o`` a clock later; the
    clock 2 after its send takes nothing either (its registered condition still holds there:
    another pending fence is sent in it). Measured by ``tests/test_accel_broadcaster_stages.py``.
    """

    def __init__(self, plan: EnginePlan):
        _check_plan(self, plan)
        self._plan = plan
        super().__init__({
            "i": In(stream.Signature(tagged_layout(plan))).array(cluster_count(plan)),
            "room": In(1),
            "o": Out(issued_layout(plan)),
            "release": In(1),
            "release_bank": In(plan.bank_bits),
        })

    def elaborate(self, platform):
        plan = self._plan
        m = Module()
        n_in, n_pe, lanes, banks = plan.input_lanes, plan.n_pes, plan.lanes, plan.banks
        source_bits = _bits(n_pe + n_in)
        heads = list(self.i)
        s_valid, s_group = self.o.valid, self.o.group
        advance = self.room

        # Context bookkeeping: which lists have closed which context.
        input_done = [Signal(n_in, name=f"input_done{b}") for b in range(banks)]
        fence0_sent = [Signal(name=f"fence0_sent{b}") for b in range(banks)]
        end_seen = {(layer, b): Signal(n_pe, name=f"end_seen{layer}_{b}")
                    for layer in range(1, plan.n_layers) for b in range(banks)}
        # The end marks the group holds, and the lists they came from: recorded a clock later.
        s_end = Signal(lanes)
        s_source = [Signal(source_bits, name=f"s_source{k}") for k in range(lanes)]

        fences, first_fence, fence_pending, send_fence = self._fences(
            m, input_done, fence0_sent, end_seen)
        available, chosen, take_any = self._picks(m, heads)
        do_take = advance & ~fence_pending
        for c, h in enumerate(heads):
            m.d.comb += h.ready.eq(do_take & take_any[c])
        entries = []
        for k in range(lanes):
            entry = Signal(tagged_layout(plan), name=f"entry{k}")
            m.d.comb += entry.eq(_or_all([Mux(chosen[k][c], h.payload, 0)
                                          for c, h in enumerate(heads)]))
            entries.append(entry)

        m.d.sync += [s_valid.eq(0), s_end.eq(0)]
        with m.If(advance):
            with m.If(send_fence):
                m.d.sync += [s_valid.eq(1), s_group.valid.eq(0), s_group.fence.eq(1)]
                for j, (_, layer, b) in enumerate(fences):
                    with m.If(first_fence[j]):
                        m.d.sync += [s_group.fence_layer.eq(layer), s_group.fence_bank.eq(b)]
                        if layer == 0:
                            m.d.sync += fence0_sent[b].eq(1)
                        else:
                            m.d.sync += end_seen[layer, b].eq(0)
            with m.Elif(~fence_pending & available.any()):
                m.d.sync += s_group.fence.eq(0)
                any_present = []
                for k in range(lanes):
                    taken = chosen[k].any()
                    present = taken & entries[k].entry.present
                    any_present.append(present)
                    m.d.sync += [s_group.valid[k].eq(present),
                                 s_group.items[k].eq(entries[k].entry.item),
                                 s_end[k].eq(taken & entries[k].entry.end),
                                 s_source[k].eq(entries[k].source)]
                m.d.sync += s_valid.eq(Cat(any_present).any())
        # The end marks taken in the clock before, recorded from the group's registers
        # (timing). A context's fence condition then holds a clock later; its entries are all
        # before it.
        for k in range(lanes):
            item = s_group.items[k]
            with m.If(s_end[k]):
                for lane in range(n_in):
                    with m.If(s_source[k] == n_pe + lane):
                        for b in range(banks):
                            with m.If(item.bank == b):
                                m.d.sync += input_done[b][lane].eq(1)
                for p in range(n_pe):
                    with m.If(s_source[k] == p):
                        for (layer, b), seen in end_seen.items():
                            with m.If((item.layer == layer) & (item.bank == b)):
                                m.d.sync += seen[p].eq(1)
        with m.If(self.release):
            for b in range(banks):
                with m.If(self.release_bank == b):
                    m.d.sync += [input_done[b].eq(0), fence0_sent[b].eq(0)]
        return m

    def _fences(self, m, input_done, fence0_sent, end_seen):
        """The fences and when one is sent; returns ``(fences, first_fence, fence_pending,
        send_fence)``, ``fences`` a list of ``(condition, layer, bank)``."""
        fences = []
        for b in range(self._plan.banks):
            fences.append((input_done[b].all() & ~fence0_sent[b], 0, b))
        for (layer, b), seen in end_seen.items():
            fences.append((seen.all(), layer, b))
        # A fence is pending from the clock after its condition holds (registered: the pick
        # then starts from flip-flops, timing); a clock after a fence is sent, the next one
        # waits a clock. Entries taken in between belong to other contexts (a list's end mark
        # of a context follows all its entries of it), so no entry of a context follows its
        # fence.
        # The conditions themselves are registered too (each is an AND over every list): one
        # stays set for a clock after its fence is sent and its bits cleared, the clock in
        # which no fence is sent.
        # The fence a send takes (the first pending one) is picked from the same conditions
        # and registered beside them, one-hot: a send then clears its fence's bits without a
        # priority chain after the registers (timing).
        conditions = Cat(c for c, _, _ in fences)
        ready_fences = Signal(len(fences))
        first_fence = Signal(len(fences))
        m.d.sync += [ready_fences.eq(conditions), first_fence.eq(_lowest_set(conditions))]
        fence_any = Signal()
        fence_pending = Signal()
        send_fence = Signal()
        m.d.comb += [fence_any.eq(ready_fences.any()),
                     send_fence.eq(self.room & fence_pending & fence_any)]
        m.d.sync += fence_pending.eq(fence_any & ~send_fence)
        return fences, first_fence, fence_pending, send_fence

    def _picks(self, m, heads):
        """Which cluster each lane takes; returns ``(available, chosen, take_any)``: the
        clusters with an entry, each lane's one-hot pick, and the clusters taken."""
        lanes, n_clusters = self._plan.lanes, len(heads)
        # Lane 0 takes the lowest cluster with an entry, lane 1 the highest other one: two
        # priority encoders side by side rather than one after the other (timing). Further
        # lanes take the lowest of what is left.
        available = Signal(n_clusters)
        m.d.comb += available.eq(Cat(h.valid for h in heads))
        chosen = [Signal(n_clusters, name="pick0")]
        m.d.comb += chosen[0].eq(_lowest_set(available))
        remaining = Signal(n_clusters, name="rest0")
        m.d.comb += remaining.eq(available & ~chosen[0])
        if lanes > 1:
            mirrored = Signal(n_clusters, name="available_mirrored")
            highest_mirrored = Signal(n_clusters, name="highest_mirrored")
            m.d.comb += [mirrored.eq(available[::-1]),
                         highest_mirrored.eq(_lowest_set(mirrored))]
            chosen.append(Signal(n_clusters, name="pick1"))
            m.d.comb += chosen[1].eq(highest_mirrored[::-1] & ~chosen[0])
            rest = Signal(n_clusters, name="rest1")
            m.d.comb += rest.eq(remaining & ~chosen[1])
            remaining = rest
        for k in range(2, lanes):
            pick = Signal(n_clusters, name=f"pick{k}")
            m.d.comb += pick.eq(_lowest_set(remaining))
            chosen.append(pick)
            rest = Signal(n_clusters, name=f"rest{k}")
            m.d.comb += rest.eq(remaining & ~pick)
            remaining = rest
        # The clusters taken, straight from ``available`` rather than through the picks
        # (timing: the picks are a chain of priority encoders, and the clusters' pops load
        # wide registers): the `lanes - 1` lowest available and the highest one.
        take_any = Signal(n_clusters)
        for c in range(n_clusters):
            if lanes == 1:
                picked = _fewer_than(available[:c], 1)
            elif c == n_clusters - 1:
                picked = Const(1)
            else:
                picked = _fewer_than(available[:c], lanes - 1) | ~available[c + 1:].any()
            m.d.comb += take_any[c].eq(available[c] & picked)
        return available, chosen, take_any
