"""The broadcaster: nonzero activations to the PEs' queues, and the fences between contexts
(``docs/accelerator.md``)."""

from __future__ import annotations

from collections import namedtuple

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accel.gateware.layouts import layouts
from accel.gateware.primitives import (_RegisteredFIFO, _SkidBuffer, _check_plan, _fewer_than,
                                       _lowest_set, _memory, _or_all, _read_port, _registered,
                                       _switch)
from accel.planning.plan import EnginePlan, _bits

__all__ = ["Broadcaster"]


class Broadcaster(wiring.Component):
    """Hands nonzero activations to the PEs that hold weights in their columns (EIE's broadcast).

    Parameters
    ----------
    plan : EnginePlan

    Attributes
    ----------
    inputs : In(stream.Signature(source)).array(input_lanes)
        The loader's lists (first layer; images tagged with their bank).
    lists : In(stream.Signature(source)).array(n_pes)
        The PEs' output lists (later layers).
    o : Out(stream.Signature(group)).array(n_pes)
        One group per clock to each PE that has work in it: up to ``lanes`` activations (the
        ``valid`` bits are already masked by the PE's column mask bits) or a fence. A group is
        committed to all its PEs in the same clock, when all of them are ready.
    release : In(1), release_bank : In(bank_bits)
        Strobe: the image in ``release_bank`` has left the engine; its bank may take the next
        image's inputs.
    write : In(bus)
        The write port (column masks).

    Behaviour: an entry of a list is taken only if its context is open: a first-layer entry of
    bank ``b`` after that bank's last image left; a later-layer entry at once. Once every input
    lane has delivered its end mark of bank ``b``, or every PE list its end mark of a later
    (layer, bank), a fence for that context is sent to all PEs before any later group.

    Latency and throughput: ``lanes`` entries per clock (each of the ``2 * lanes`` clusters of
    lists moves one per clock); an entry reaches the PEs about nine clocks after it leaves its
    list (the list's skid buffer, the cluster's, the group register, column masks read and
    registered, through a 7-deep group queue that keeps the PEs' ready off the lists' timing
    paths, out of a register). A list's ``ready`` is a flip-flop. The PEs' ``ready`` is
    registered here before the commit tests it; a group committed reaches its PEs, ``valid``,
    in the next clock.
    """

    def __init__(self, plan: EnginePlan):
        _check_plan(self, plan)
        self._plan = plan
        self._layouts = lay = layouts(plan)
        super().__init__({
            "inputs": In(stream.Signature(lay.source)).array(plan.input_lanes),
            "lists": In(stream.Signature(lay.source)).array(plan.n_pes),
            "o": Out(stream.Signature(lay.group)).array(plan.n_pes),
            "release": In(1),
            "release_bank": In(plan.bank_bits),
            "write": In(lay.bus),
        })

    def elaborate(self, platform):
        plan, lay = self._plan, self._layouts
        m = Module()
        n_in, n_pe, lanes = plan.input_lanes, plan.n_pes, plan.lanes
        banks = plan.banks
        n_sources = n_pe + n_in
        # The PEs' lists, then the input lists. Each enters through a skid buffer here: the
        # lists are spread over the chip (one per PE), and the picks below then read their
        # heads from local flip-flops and pop them locally, while a list sees a registered
        # ready (timing).
        # A first-layer entry of bank b waits outside while its lane has delivered its end
        # mark of b and the bank has not been released (the image before it in that bank is
        # still in).
        lane_closed = [Signal(banks, name=f"lane_closed{lane}") for lane in range(n_in)]
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
            sources.append(_Head(skid.o_valid, lay.source(skid.o_data), skid.o_ready))
        eligible = Cat(src.valid for src in sources)

        # Two levels of picking, so that no clock's logic spans every list (timing): each of
        # `n_clusters` clusters (lists s with s mod n_clusters == c, the input lanes spread
        # over them) moves one entry per clock, its lowest eligible list's head, tagged with
        # the list's index, into a skid buffer; the second level takes up to `lanes` entries
        # per clock from the clusters' heads. Each list's entries stay in order.
        n_clusters = min(n_sources, 2 * lanes)
        source_bits = _bits(n_sources)
        tagged = data.StructLayout({"source": unsigned(source_bits), "entry": lay.source})
        heads = []
        for c in range(n_clusters):
            members = list(range(c, n_sources, n_clusters))
            skid = _SkidBuffer(tagged.size)
            m.submodules[f"cluster{c}"] = skid
            ready = Signal(len(members), name=f"cluster_eligible{c}")
            first = Signal(len(members), name=f"cluster_pick{c}")
            m.d.comb += [ready.eq(Cat(eligible[s] for s in members)),
                         first.eq(_lowest_set(ready))]
            picked = _or_all([Mux(first[j], Cat(Const(s, source_bits), sources[s].payload), 0)
                              for j, s in enumerate(members)])
            m.d.comb += [skid.i_valid.eq(ready.any()), skid.i_data.eq(picked)]
            for j, s in enumerate(members):
                m.d.comb += sources[s].ready.eq(skid.i_ready & first[j])
            heads.append(_Head(skid.o_valid, tagged(skid.o_data), skid.o_ready))
        with m.If(self.release):
            for closed in lane_closed:
                m.d.sync += closed.bit_select(self.release_bank, 1).eq(0)

        # Context bookkeeping: which lists have closed which context.
        input_done = [Signal(n_in, name=f"input_done{b}") for b in range(banks)]
        fence0_sent = [Signal(name=f"fence0_sent{b}") for b in range(banks)]
        end_seen = {(layer, b): Signal(n_pe, name=f"end_seen{layer}_{b}")
                    for layer in range(1, plan.n_layers) for b in range(banks)}

        # Stage 1 issues a group into S; from S's registered columns the column masks are read
        # into T, where each memory's word is registered as it leaves the memory (block RAM
        # read data is slow); U pushes the group, with the masks of the PEs it targets (its
        # layer's words) and the PEs it goes to, into a small queue;
        # stage 2 commits the queue's head to its PEs. Registers between the lists, the mask
        # reads and the commit keep each clock's logic short (timing); in particular the queue
        # keeps the PEs' ready (an AND over every PE) off the paths that pop the lists.
        s_valid, t_valid, u_valid = Signal(), Signal(), Signal()
        s_group, t_group, u_group = Signal(lay.group), Signal(lay.group), Signal(lay.group)
        # The end marks S holds, and the lists they came from: recorded a clock later.
        s_end = Signal(lanes)
        s_source = [Signal(source_bits, name=f"s_source{k}") for k in range(lanes)]
        group_width = lay.group.size
        queue_depth = 7
        m.submodules.groups = groups = _RegisteredFIFO(
            width=group_width + lanes * n_pe + n_pe, depth=queue_depth - 2)
        m.d.sync += [t_valid.eq(s_valid), t_group.eq(s_group),
                     u_valid.eq(t_valid), u_group.eq(t_group)]

        # Column masks: one memory per layer, one read port per lane; block RAM, whose address
        # register ends the path from S (LUT RAM would add its read mux to a wide fan-out).
        mask_ports = []
        for layer in range(plan.n_layers):
            mem = _memory(m, f"col_mask{layer}", plan, self.write, "col_mask", layer, None,
                          unsigned(n_pe), platform, small_in_lutram=False, block=True)
            ports = [_read_port(m, mem, f"col_mask{layer}_{k}") for k in range(lanes)]
            for k, port in enumerate(ports):
                m.d.comb += port.addr.eq(s_group.items[k].column)
            mask_ports.append(ports)
        mask_words = [_registered(m, [ports[k] for ports in mask_ports], f"mask_word{k}_")
                      for k in range(lanes)]
        masks = [_switch(m, u_group.items[k].layer, mask_words[k], unsigned(n_pe), f"mask{k}")
                 for k in range(lanes)]
        # A lane's mask is zero when the lane carries nothing (or the group is a fence).
        lane_masks = [Mux(u_group.valid[k], masks[k], 0) for k in range(lanes)]
        u_target = Mux(u_group.fence, (1 << n_pe) - 1, _or_all(lane_masks))
        m.d.comb += [
            groups.w_data.eq(Cat(u_group, *lane_masks, u_target)),
            groups.w_en.eq(u_valid),
        ]

        # Stage 2: the queue's head (flip-flops), committed when every PE it targets is ready.
        # The PEs' ready is registered here (they are spread over the chip: timing); a PE's
        # ready allows for that (see ProcessingElement).
        head = lay.group(groups.r_data[:group_width])
        head_masks = [groups.r_data[group_width + k * n_pe:group_width + (k + 1) * n_pe]
                      for k in range(lanes)]
        target = groups.r_data[group_width + lanes * n_pe:]
        ready = Signal(n_pe)
        m.d.sync += ready.eq(Cat(o.ready for o in self.o))
        commit = groups.r_rdy & ((ready | ~target) == (1 << n_pe) - 1)
        m.d.comb += groups.r_en.eq(commit)
        # The committed group goes out from registers: the PEs are spread over the chip, and
        # their ready coming in and the group going out are then in different clocks (timing).
        out_valid = Signal(n_pe)
        out_group = Signal(lay.group)
        out_lane_valid = [Signal(lanes, name=f"out_lane_valid{p}") for p in range(n_pe)]
        # The group and lane flags load every clock, not only at a commit: a PE reads them
        # only in the clock after one (``out_valid``), and the commit, an AND over every PE,
        # then reaches no register's enable but ``out_valid``'s (timing: it fanned out to the
        # whole group's enables, 5.8 ns of routing).
        m.d.sync += [out_valid.eq(Mux(commit, target, 0)), out_group.eq(head)]
        m.d.sync += [out_lane_valid[p].eq(Cat(mask[p] for mask in head_masks))
                     for p in range(n_pe)]
        for p, o in enumerate(self.o):
            m.d.comb += [
                o.valid.eq(out_valid[p]),
                o.payload.items.eq(out_group.items),
                o.payload.fence.eq(out_group.fence),
                o.payload.fence_layer.eq(out_group.fence_layer),
                o.payload.fence_bank.eq(out_group.fence_bank),
                o.payload.valid.eq(out_lane_valid[p]),
            ]
        # Stage 1 may issue while the queue has room for it and for the groups in S and T. The
        # test is registered (timing): at most one group enters S per clock, so room for one
        # more than now is room in the next clock.
        advance = Signal()
        m.d.sync += advance.eq(groups.level + s_valid + t_valid + u_valid + 1 < groups.depth)

        # Stage 1: a pending fence, or up to `lanes` entries from the clusters' heads.
        fences = []                                     # (condition, layer, bank)
        for b in range(banks):
            fences.append((input_done[b].all() & ~fence0_sent[b], 0, b))
        for (layer, b), seen in end_seen.items():
            fences.append((seen.all(), layer, b))
        # A fence is pending from the clock after its condition holds (registered: the pick
        # below then starts from flip-flops, timing); a clock after a fence is sent, the next
        # one waits a clock. Entries taken in between belong to other contexts (a list's end
        # mark of a context follows all its entries of it), so no entry of a context follows
        # its fence.
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
                     send_fence.eq(advance & fence_pending & fence_any)]
        m.d.sync += fence_pending.eq(fence_any & ~send_fence)

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
        do_take = advance & ~fence_pending
        for c, h in enumerate(heads):
            m.d.comb += h.ready.eq(do_take & take_any[c])
        entries = []
        for k in range(lanes):
            entry = Signal(tagged, name=f"entry{k}")
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
        # The end marks taken in the clock before, recorded from S's registers (timing). A
        # context's fence condition then holds a clock later; its entries are all before it.
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


#: The head of a list as the broadcaster's pick sees it (a skid buffer's output).
_Head = namedtuple("_Head", "valid payload ready")
