"""The PE's activation queue and pointer stage: groups in, columns out (P0 .. P3)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accel.gateware.layouts import layouts
from accel.gateware.pe.stages import _conv_fields, column_layout, pe_widths
from accel.gateware.pe.taps import TapWalk
from accel.gateware.primitives import (_RegisteredFIFO, _check_plan, _lowest_set, _memory,
                                       _read_port, _registered, _switch)
from accel.planning.plan import GROUP_QUEUE_SLACK, EnginePlan

__all__ = ["PointerStage"]

#: Depth of the column queue (its head in flip-flops; room for 2 more in the skid buffer).
COLUMN_QUEUE_DEPTH = 7
#: The same with convolutions, whose tap columns mostly have one entry in a PE: deep enough
#: that the issue's room, counted with every column on its way, never stops a stream of them
#: (at ``COLUMN_QUEUE_DEPTH`` it passes 9 columns every 11 clocks).
CONV_COLUMN_QUEUE_DEPTH = 15


class PointerStage(wiring.Component):
    """Queue a PE's groups of activations; for each activation, look up its column.

    Parameters
    ----------
    plan : EnginePlan
    pe : int
        The PE whose pointer memories this stage holds.

    Attributes
    ----------
    i : In(stream.Signature(group))
        Groups of activations (and fences), registered as they arrive, then queued
        (``plan.queue_depth`` deep, in block RAM). ``ready`` is registered (for the clock rate)
        and the broadcaster registers it again: it promises room for every group that arrives
        (``valid``) up to three clocks later, which is always taken (``GROUP_QUEUE_SLACK``).
    o : Out(stream.Signature(column_layout(plan)))
        Columns (:func:`~accel.gateware.pe.stages.column_layout`) and fences, in the order
        of the groups and, within a group, of its lanes; ``payload`` comes from flip-flops.
    write : In(bus)
        The PE's copy of the write bus (a pointer memory's word is written from it, decoded and
        registered here).

    Latency and throughput: a group that arrives at an idle stage is the queue's head 5 clocks
    later (registered; written to block RAM; read; its read data registered; the skid
    buffer), its first activation (lowest lane first) or its fence is issued in that clock,
    and is a column in ``o`` 8 clocks after its issue (P0: issue registered; P1: pointer memory
    read; P1R: read data registered; P2: the layer's pair; P3: ``single`` and ``penultimate``;
    then 3 clocks through the column queue): 13 clocks in all. One activation per clock while
    the column queue has room for it and for every issue on its way there; so with a consumer
    that takes a column every clock (columns of one entry), ``COLUMN_QUEUE_DEPTH + 2`` (9)
    columns every 11 clocks.
    """

    def __init__(self, plan: EnginePlan, pe: int):
        _check_plan(self, plan)
        self._plan, self._pe = plan, pe
        self._layouts = lay = layouts(plan)
        self._column = column_layout(plan)
        super().__init__({
            "i": In(stream.Signature(lay.group)),
            "o": Out(stream.Signature(self._column)),
            "write": In(lay.bus),
        })

    def elaborate(self, platform):
        plan, lay, p = self._plan, self._layouts, self._pe
        layers, w = plan.layers, pe_widths(plan)
        m = Module()

        # Block RAM unless one LUT RAM cell deep: the pointer address comes from the queue
        # head's lane choice, and a block RAM's address register ends that path where LUT
        # RAM's read and its mux tree would lengthen it (timing: on 16-PE LeNet-300-100 a
        # 100-deep pointer memory in LUT RAM was the critical path).
        pointers = [_read_port(m, _memory(m, f"pointers{i}", plan, None, "pointers", i, p,
                                          unsigned(layer.image.pointer_word_bits), platform,
                                          block=True, strobe_from=self.write), f"pointers{i}")
                    for i, layer in enumerate(layers)]
        # In block RAM however shallow: a 64-deep queue in LUT RAM had a read mux tree as deep
        # as its paths to the skid buffer (timing).
        m.submodules.queue = queue = _RegisteredFIFO(width=lay.group.size,
                                                      depth=plan.queue_depth, block=True)
        # Its head comes from flip-flops: the entry stage compares and adds with it, and pops
        # it, in one clock (timing).
        m.submodules.columns = columns = _RegisteredFIFO(width=self._column.size,
                                                          depth=CONV_COLUMN_QUEUE_DEPTH
                                                          if plan.has_conv
                                                          else COLUMN_QUEUE_DEPTH)

        # A group is registered as it arrives, then queued: the broadcaster is far away
        # (timing). The register loads only when this PE's ``valid`` is high, so the PEs'
        # copies differ and synthesis cannot merge them into one that drives every PE.
        arrived = Signal()
        arrived_group = Signal(lay.group)
        m.d.sync += arrived.eq(self.i.valid)
        with m.If(self.i.valid):
            m.d.sync += arrived_group.eq(self.i.payload)
        # ``ready`` (registered) reaches the broadcaster's commit a clock later, and a group it
        # commits is queued three clocks after that: room for the writes of the five clocks
        # from the one whose level this is, counted in the deep part, which takes every write
        # (GROUP_QUEUE_SLACK; the plan refuses a queue shallower than that).
        group_room = Signal()
        m.d.sync += group_room.eq(queue.w_level + GROUP_QUEUE_SLACK <= queue.w_depth)
        m.d.comb += [
            queue.w_data.eq(arrived_group),
            queue.w_en.eq(arrived),
            self.i.ready.eq(group_room),
        ]

        # -- issue: the head group's activations, lowest lane first, then its fence ---------
        head = lay.group(queue.r_data)
        taken = Signal(plan.lanes)
        remaining = Signal(plan.lanes)
        lowest = Signal(plan.lanes)
        m.d.comb += [remaining.eq(head.valid & ~taken), lowest.eq(_lowest_set(remaining))]
        # Room in the column queue for this issue and those in P0 .. P3, registered (timing): at
        # most one issue per clock, so room for one more than now is room in the next clock.
        # ``occupancy`` is the queue's level plus the issues in P0 .. P3, counted as they are
        # issued and popped rather than summed (timing).
        room = Signal()
        occupancy = Signal(range(columns.depth + 1))
        m.d.sync += room.eq(occupancy + 1 < columns.depth)
        if plan.has_conv:
            # A convolution's activation becomes its taps' columns in the tap walk, which
            # takes an issue when it has room and gives P0 a column when the queue has.
            m.submodules.taps = walk = TapWalk(plan, p)
            m.d.comb += walk.write.eq(self.write)
            can_issue = queue.r_rdy & walk.i.ready
        else:
            can_issue = queue.r_rdy & room
        issue_item = can_issue & remaining.any()
        issue_fence = can_issue & ~remaining.any() & head.fence
        pop_group = can_issue & ((remaining & ~lowest) == 0)
        item = Signal(lay.item)
        for k in range(plan.lanes):
            with m.If(lowest[k]):
                m.d.comb += item.eq(head.items[k])
        m.d.comb += queue.r_en.eq(pop_group)
        to_p0 = issue_item | issue_fence
        if plan.has_conv:
            to_p0 = walk.o.valid & room
            m.d.comb += [
                walk.i.valid.eq(issue_item | issue_fence),
                walk.i.payload.column.eq(item.column),
                walk.i.payload.value.eq(Mux(issue_fence, 0, item.value)),
                walk.i.payload.layer.eq(Mux(issue_fence, head.fence_layer, item.layer)),
                walk.i.payload.bank.eq(Mux(issue_fence, head.fence_bank, item.bank)),
                walk.i.payload.fence.eq(issue_fence),
                walk.o.ready.eq(room),
            ]
        m.d.sync += occupancy.eq(occupancy + to_p0 - (columns.r_rdy & columns.r_en))
        with m.If(pop_group):
            m.d.sync += taken.eq(0)
        with m.Elif(issue_item):
            m.d.sync += taken.eq(taken | lowest)

        # P0: the issue registered, its column the pointer memories' address (timing: the lane
        # choice is several LUTs deep, and each pointer memory's block RAMs sit apart).
        context = data.StructLayout({"value": w.value_shape, "layer": unsigned(plan.layer_bits),
                                     "bank": unsigned(plan.bank_bits), "fence": 1,
                                     **_conv_fields(plan)})
        p0, p0_valid = Signal(context), Signal()
        p0_column = Signal.like(item.column)
        m.d.sync += p0_valid.eq(to_p0)
        if plan.has_conv:
            taken_column = walk.o.payload
            m.d.sync += [p0_column.eq(taken_column.column), p0.fence.eq(taken_column.fence),
                         p0.layer.eq(taken_column.layer), p0.bank.eq(taken_column.bank),
                         p0.value.eq(taken_column.value), p0.position.eq(taken_column.position)]
        else:
            m.d.sync += p0_column.eq(item.column)
            with m.If(issue_fence):
                m.d.sync += [p0.fence.eq(1), p0.layer.eq(head.fence_layer),
                             p0.bank.eq(head.fence_bank), p0.value.eq(0)]
            with m.Else():
                m.d.sync += [p0.fence.eq(0), p0.layer.eq(item.layer), p0.bank.eq(item.bank),
                             p0.value.eq(item.value)]
        for port in pointers:
            m.d.comb += port.addr.eq(p0_column[:len(port.addr)])

        # P1: the pointer memories read; P1R: each layer's pointer word registered as it
        # leaves its block RAM; P2: the pair of the column's layer (block RAM read data is
        # slow: timing).
        p1, p1_valid = Signal(context), Signal()
        p1r, p1r_valid = Signal(context), Signal()
        m.d.sync += [p1_valid.eq(p0_valid), p1.eq(p0), p1r_valid.eq(p1_valid), p1r.eq(p1)]
        pointer_words = _registered(m, pointers, "pointer_word")
        starts = [word[:layer.image.pointer_bits] for word, layer in zip(pointer_words, layers)]
        counts = [(word[layer.image.pointer_bits:] - word[:layer.image.pointer_bits])
                  [:w.pointer_bits] for word, layer in zip(pointer_words, layers)]
        p2, p2_valid = Signal(context), Signal()
        p2_start = Signal(w.pointer_bits)
        p2_count = Signal(w.pointer_bits)
        m.d.sync += [
            p2_valid.eq(p1r_valid), p2.eq(p1r),
            p2_start.eq(_switch(m, p1r.layer, starts, unsigned(w.pointer_bits), "start")),
            p2_count.eq(_switch(m, p1r.layer, counts, unsigned(w.pointer_bits), "count")),
        ]
        # P3: the column's ``single`` and ``penultimate``, so that the entry stage compares
        # with registers instead of adding (timing).
        column, p3_valid = Signal(self._column), Signal()
        m.d.sync += [
            p3_valid.eq(p2_valid),
            column.start.eq(Mux(p2.fence, 0, p2_start)),
            column.penultimate.eq(p2_count - 2),
            column.single.eq(p2.fence | (p2_count == 1)),
            column.value.eq(p2.value), column.layer.eq(p2.layer), column.bank.eq(p2.bank),
            column.fence.eq(p2.fence),
        ]
        if plan.has_conv:
            m.d.sync += column.position.eq(p2.position)
        m.d.comb += [
            columns.w_data.eq(column), columns.w_en.eq(p3_valid),
            self.o.valid.eq(columns.r_rdy), self.o.payload.eq(columns.r_data),
            columns.r_en.eq(self.o.ready),
        ]
        return m
