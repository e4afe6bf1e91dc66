"""The broadcaster's commit: each group's PEs found from the column masks, then the group
handed to all of them in one clock."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from accel.gateware.broadcaster.issue import issued_layout
from accel.gateware.layouts import layouts
from accel.gateware.primitives import (_RegisteredFIFO, _check_plan, _memory, _or_all,
                                       _read_port, _registered, _switch)
from accel.planning.plan import EnginePlan

__all__ = ["GroupCommit"]

#: Groups between the mask read and the commit: the queue and its skid buffer.
GROUP_QUEUE_DEPTH = 7


class GroupCommit(wiring.Component):
    """Read each group's column masks and commit it to the PEs it targets, all at once.

    Parameters
    ----------
    plan : EnginePlan

    Attributes
    ----------
    i : In(issued_layout(plan))
        Groups from :class:`~accel.gateware.broadcaster.issue.GroupIssue`, at most one per
        clock, and only in a clock after ``room`` was high.
    room : Out(1)
        Registered: a group may arrive in the next clock (the queue has room for it and for
        the groups on their way to it).
    o : Out(stream.Signature(group)).array(n_pes)
        One group per clock to each PE that has work in it: the ``valid`` bits masked by the
        PE's column mask bits, or a fence (to every PE). A group is committed to all its PEs in
        the same clock, when all of them are ready.
    write : In(bus)
        The write port (column masks).

    Latency and throughput: a group reaches idle PEs 6 clocks after it arrives (T:
    masks read; U: each word registered, then queued; the queue's head in flip-flops; the
    commit registered). With its PEs always ready, ``room`` admits 7 groups every 9 clocks
    (the queue is one place short of one per clock: a group on its way holds a place). The PEs' ``ready`` is
    registered here before the commit tests it: a PE's ready allows for that (see
    :class:`~accel.gateware.pe.pointer.PointerStage`).
    """

    def __init__(self, plan: EnginePlan):
        _check_plan(self, plan)
        self._plan = plan
        lay = layouts(plan)
        super().__init__({
            "i": In(issued_layout(plan)),
            "room": Out(1),
            "o": Out(stream.Signature(lay.group)).array(plan.n_pes),
            "write": In(lay.bus),
        })

    def elaborate(self, platform):
        plan, lay = self._plan, layouts(self._plan)
        m = Module()
        n_pe, lanes = plan.n_pes, plan.lanes
        s_valid, s_group = self.i.valid, self.i.group
        # From S's registered columns the column masks are read into T, where each memory's
        # word is registered as it leaves the memory (block RAM read data is slow); U pushes
        # the group, with the masks of the PEs it targets (its layer's words) and the PEs it
        # goes to, into a small queue; the queue's head is committed to its PEs. The queue
        # keeps the PEs' ready (an AND over every PE) off the paths that pop the lists.
        t_valid, u_valid = Signal(), Signal()
        t_group, u_group = Signal(lay.group), Signal(lay.group)
        group_width = lay.group.size
        m.submodules.groups = groups = _RegisteredFIFO(
            width=group_width + lanes * n_pe + n_pe, depth=GROUP_QUEUE_DEPTH - 2)
        m.d.sync += [t_valid.eq(s_valid), t_group.eq(s_group),
                     u_valid.eq(t_valid), u_group.eq(t_group)]

        # Column masks: one memory per layer, one read port per lane; block RAM, whose address
        # register ends the path from S (LUT RAM would add its read mux to a wide fan-out).
        mask_ports = []
        for layer in range(plan.n_layers):
            mem = _memory(m, f"col_mask{layer}", plan, self.write, "col_mask", layer, None,
                          unsigned(n_pe), platform, small_in_lutram=False, block=True)
            ports = [_read_port(m, mem, f"col_mask{layer}_{k}") for k in range(lanes)]
            # A convolution's mask is its input channel's: the packed column's top field.
            fields = plan.layers[layer].fields if plan.layers[layer].conv is not None else None
            shift = 0 if fields is None else fields.y_bits + fields.x_bits
            for k, port in enumerate(ports):
                m.d.comb += port.addr.eq(s_group.items[k].column[shift:])
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

        # The queue's head (flip-flops), committed when every PE it targets is ready. The PEs'
        # ready is registered here (they are spread over the chip: timing).
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
        # A group may arrive while the queue has room for it and for the groups in S, T and U.
        # The test is registered (timing): at most one group arrives per clock, so room for
        # one more than now is room in the next clock.
        m.d.sync += self.room.eq(groups.level + s_valid + t_valid + u_valid + 1 < groups.depth)
        return m
