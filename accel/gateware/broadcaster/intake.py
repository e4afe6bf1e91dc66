"""The broadcaster's intake: the lists' heads into local buffers, then one entry per clock from
each cluster of lists."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accel.gateware.layouts import layouts
from accel.gateware.primitives import _SkidBuffer, _check_plan, _lowest_set, _or_all
from accel.planning.plan import EnginePlan, _bits

__all__ = ["ListIntake", "cluster_count", "tagged_layout"]


def cluster_count(plan: EnginePlan) -> int:
    """Clusters of lists: ``2 * lanes``, or one per list when there are fewer lists."""
    return min(plan.n_pes + plan.input_lanes, 2 * plan.lanes)


def tagged_layout(plan: EnginePlan) -> data.StructLayout:
    """A list's entry tagged with its list: PE ``p``'s list is ``p``, input lane ``l``'s is
    ``n_pes + l``."""
    return data.StructLayout({"source": unsigned(_bits(plan.n_pes + plan.input_lanes)),
                              "entry": layouts(plan).source})


class ListIntake(wiring.Component):
    """Take the heads of every list into skid buffers, and from each cluster of lists (lists
    ``s`` with ``s mod clusters == c``, the input lanes after the PEs) move one entry per clock,
    its lowest list with an entry first, tagged with its list.

    Parameters
    ----------
    plan : EnginePlan

    Attributes
    ----------
    lists : In(stream.Signature(source)).array(n_pes)
        The PEs' output lists (later layers).
    inputs : In(stream.Signature(source)).array(input_lanes)
        The loader's lists (first layer). An entry of bank ``b`` waits outside while its lane
        has delivered its end mark of ``b`` and the bank has not been released.
    release : In(1), release_bank : In(bank_bits)
        Strobe: the image in ``release_bank`` has left the engine; its lanes take entries of
        that bank again.
    o : Out(stream.Signature(tagged_layout(plan))).array(cluster_count(plan))
        Each cluster's entries, each list's in order.

    Latency and throughput: an entry is in its cluster's ``o`` 2 clocks after it leaves its
    list (the list's skid buffer, the cluster's); each cluster moves one entry per clock. A PE
    list's ``ready`` and every ``valid`` of ``o`` are flip-flops; an input lane's ``ready`` is
    its skid buffer's (a flip-flop) and the lane's closed bit of the offered entry's bank.
    """

    def __init__(self, plan: EnginePlan):
        _check_plan(self, plan)
        self._plan = plan
        lay = layouts(plan)
        super().__init__({
            "lists": In(stream.Signature(lay.source)).array(plan.n_pes),
            "inputs": In(stream.Signature(lay.source)).array(plan.input_lanes),
            "release": In(1),
            "release_bank": In(plan.bank_bits),
            "o": Out(stream.Signature(tagged_layout(plan))).array(cluster_count(plan)),
        })

    def elaborate(self, platform):
        plan, lay = self._plan, layouts(self._plan)
        m = Module()
        n_in, n_pe = plan.input_lanes, plan.n_pes
        n_sources = n_pe + n_in
        # The PEs' lists, then the input lists. Each enters through a skid buffer here: the
        # lists are spread over the chip (one per PE), and the picks below then read their
        # heads from local flip-flops and pop them locally, while a list sees a registered
        # ready (timing).
        lane_closed = [Signal(plan.banks, name=f"lane_closed{lane}") for lane in range(n_in)]
        sources = []
        for s, src in enumerate(list(self.lists) + list(self.inputs)):
            skid = _SkidBuffer(lay.source.size)
            m.submodules[f"source{s}"] = skid
            if s >= n_pe:
                closed = lane_closed[s - n_pe].bit_select(src.payload.item.bank, 1)
                enter = src.valid & ~closed
                m.d.comb += [skid.i_valid.eq(enter), src.ready.eq(skid.i_ready & ~closed)]
                with m.If(enter & skid.i_ready & src.payload.end):
                    m.d.sync += closed.eq(1)
            else:
                m.d.comb += [skid.i_valid.eq(src.valid), src.ready.eq(skid.i_ready)]
            m.d.comb += skid.i_data.eq(src.payload)
            sources.append(skid)
        with m.If(self.release):
            for closed in lane_closed:
                m.d.sync += closed.bit_select(self.release_bank, 1).eq(0)
        eligible = Cat(src.o_valid for src in sources)

        # Two levels of picking, so that no clock's logic spans every list (timing): this is
        # the first; the issue takes up to ``lanes`` entries per clock from the clusters.
        n_clusters = cluster_count(plan)
        source_bits = _bits(n_sources)
        for c, o in enumerate(self.o):
            members = list(range(c, n_sources, n_clusters))
            skid = _SkidBuffer(tagged_layout(plan).size)
            m.submodules[f"cluster{c}"] = skid
            ready = Signal(len(members), name=f"cluster_eligible{c}")
            first = Signal(len(members), name=f"cluster_pick{c}")
            m.d.comb += [ready.eq(Cat(eligible[s] for s in members)),
                         first.eq(_lowest_set(ready))]
            picked = _or_all([Mux(first[j], Cat(Const(s, source_bits), sources[s].o_data), 0)
                              for j, s in enumerate(members)])
            m.d.comb += [skid.i_valid.eq(ready.any()), skid.i_data.eq(picked)]
            for j, s in enumerate(members):
                m.d.comb += sources[s].o_ready.eq(skid.i_ready & first[j])
            m.d.comb += [o.valid.eq(skid.o_valid), o.payload.eq(skid.o_data),
                         skid.o_ready.eq(o.ready)]
        return m
