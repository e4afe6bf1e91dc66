"""The PE's tap walk: a convolution's activation in, one column (a tap with entries here and
an output position) per clock out (T0 .. T3); other layers' activations pass one per clock."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from accel.gateware.layouts import layouts
from accel.gateware.pe.stages import pe_widths
from accel.gateware.primitives import (_at_most_one, _check_plan, _lowest_set, _memory,
                                       _or_all, _read_port)
from accel.planning.plan import EnginePlan, _bits

__all__ = ["TapWalk", "walk_input_layout", "walk_output_layout"]


def walk_input_layout(plan: EnginePlan) -> data.StructLayout:
    """An activation (its layer's input column: packed ``(c, y, x)`` for a convolution) or a
    fence (its context in ``layer`` and ``bank``)."""
    w = pe_widths(plan)
    return data.StructLayout({"column": unsigned(plan.column_bits), "value": w.value_shape,
                              "layer": unsigned(plan.layer_bits),
                              "bank": unsigned(plan.bank_bits), "fence": 1})


def walk_output_layout(plan: EnginePlan) -> data.StructLayout:
    """A column to look up: the matrix column (``c kh kw + t`` for a convolution's tap ``t``)
    and the output position its products go to (0 outside convolutions)."""
    w = pe_widths(plan)
    return data.StructLayout({"column": unsigned(plan.column_bits), "value": w.value_shape,
                              "layer": unsigned(plan.layer_bits),
                              "bank": unsigned(plan.bank_bits), "fence": 1,
                              "position": unsigned(w.position_bits)})


def _rom(m, name, values, width):
    """A constant table read combinationally (LUTs)."""
    mem = Memory(shape=unsigned(max(1, width)), depth=max(1, len(values)),
                 init=[int(v) for v in values] or [0])
    m.submodules[name] = mem
    return mem.read_port(domain="comb")


class TapWalk(wiring.Component):
    """For each activation of a convolution, every tap that has entries in this PE and lands
    on an output position (A12; ``accel.planning.conv``: :meth:`ConvLayout.walk`).

    Parameters
    ----------
    plan : EnginePlan
        With at least one convolution (``plan.has_conv``).
    pe : int
        The PE whose tap masks this stage holds.

    Attributes
    ----------
    i : In(stream.Signature(walk_input_layout(plan)))
        Activations and fences.
    o : Out(stream.Signature(walk_output_layout(plan)))
        Columns and fences, in order: a convolution's activation gives its taps in the mask
        ``tap_mask[c] & rows(y) x columns(x)``, lowest tap first, each with position
        ``row_base(y) + column_base(x) - offset(t)``; an activation with no such tap gives
        nothing; any other activation or fence passes as it is (position 0).
    write : In(bus)
        The PE's copy of the write bus (tap masks).

    Latency and throughput: 4 clocks from ``i`` to ``o`` (T0: taken; T1: tap mask and tables
    read; T2: the walk's mask, one tap a clock; T3: the tap's column and position registered).
    One column per clock; an activation of a convolution takes ``max(1, taps)`` clocks of T2.
    ``i.ready`` is a register: an item offered while T0 is stalled waits in a skid buffer
    (one item) and goes to T0 before the next.
    """

    def __init__(self, plan: EnginePlan, pe: int):
        _check_plan(self, plan)
        if not plan.has_conv:
            self._MustUse__used = True
            raise ValueError("plan must have a convolution: a plan of Linear layers has no "
                             "tap walk")
        self._plan, self._pe = plan, pe
        super().__init__({
            "i": In(stream.Signature(walk_input_layout(plan))),
            "o": Out(stream.Signature(walk_output_layout(plan))),
            "write": In(layouts(plan).bus),
        })

    def elaborate(self, platform):
        plan, p, w = self._plan, self._pe, pe_widths(self._plan)
        convs = [(i, layer.conv) for i, layer in enumerate(plan.layers) if layer.conv is not None]
        max_taps = max(conv.geometry.taps for _, conv in convs)
        # Widths of the tables' bases: ``row_base(y) + column_base(x)`` may pass the last
        # position (for taps that do not exist) before a tap's offset comes off it.
        base_bits = max(_bits(1 + max(conv.row_taps(y)[1] for y in range(conv.geometry.in_height))
                              + max(conv.column_taps(x)[1]
                                    for x in range(conv.geometry.in_width)))
                        for _, conv in convs) + 1
        m = Module()
        item = walk_input_layout(plan)

        # Stage registers, each with its valid; a stage takes a new item when it is empty or
        # its item moves on in the same clock.
        t0, t1 = Signal(item), Signal(item)
        t0_valid, t1_valid, t2_valid, t3_valid = Signal(), Signal(), Signal(), Signal()
        t2 = Signal(item)
        t3 = Signal(walk_output_layout(plan))
        t2_conv = Signal()                          # T2 holds a convolution's activation
        remaining = Signal(max_taps)                # its taps not walked yet
        t2_base = Signal(base_bits)                 # row_base + column_base
        t2_channel = Signal(plan.column_bits)       # c kh kw

        t3_take = ~t3_valid | self.o.ready
        # The lowest tap of ``remaining``, kept in a register beside it: T3's selects then
        # start from flip-flops (timing: the priority chain, the tap's offset and the
        # subtraction in one clock were the 8-PE LeNet-5 build's critical path at 87.6 MHz).
        lowest = Signal(max_taps)
        # Whether ``remaining`` is empty, or has at most one tap, kept in registers beside it:
        # they gate the stage's ``ready``, which reaches back through the issue to the group
        # queue's read, and computed from ``remaining`` they were a priority chain on that path
        # (timing: 65 MHz).
        none_left = Signal(init=1)
        one_left = Signal(init=1)                   # at most one

        # T2 is done with its item in this clock: a convolution's after its last tap (or at
        # once, with none), any other item when it moves to T3.
        t2_last = Mux(t2_conv, one_left, 1)
        t2_emit = t2_valid & t3_take & Mux(t2_conv, ~none_left, 1)
        t2_free = ~t2_valid | Mux(t2_conv, none_left | t2_emit & t2_last, t2_emit)
        t1_take = ~t1_valid | t2_free
        t0_take = ~t0_valid | t1_take

        # -- Skid: ``ready`` is a register (an empty skid buffer), so that the walk's stall
        # (from ``one_left`` through T2 .. T0's takes) ends here rather than at the issue and
        # the group queue's read (timing: 11.0 ns on 8-PE LeNet-5, 8.8 ns of it routing). An
        # item offered while T0 cannot take it waits in the skid buffer; T0 takes it first.
        skid, skid_valid = Signal(item), Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)
        with m.If(t0_take):
            m.d.sync += skid_valid.eq(0)
        with m.Elif(self.i.valid & ~skid_valid):
            m.d.sync += [skid_valid.eq(1), skid.eq(self.i.payload)]

        # -- T0: the item registered; the tap mask of its channel and the tables of its row and
        # column read (registered into T1) -----------------------------------------------------
        with m.If(t0_take):
            m.d.sync += [t0_valid.eq(skid_valid | self.i.valid),
                         t0.eq(Mux(skid_valid, skid, self.i.payload))]
        is_conv = {i: (t0.layer == i) & ~t0.fence for i, _ in convs}
        masks, rows, cols, bases = [], [], [], []
        for i, conv in convs:
            g, fields = conv.geometry, conv.inputs
            x = t0.column[:fields.x_bits]
            y = t0.column[fields.x_bits:fields.x_bits + fields.y_bits]
            c = t0.column[fields.x_bits + fields.y_bits:fields.bits]
            port = _read_port(m, _memory(m, f"tap_masks{i}", plan, None, "tap_masks", i, p,
                                         unsigned(g.taps), platform,
                                         strobe_from=self.write), f"tap_masks{i}")
            m.d.comb += [port.addr.eq(c), port.en.eq(t1_take)]
            # Rows and columns past the map (holes of the packed fields) never arrive.
            row_table = [conv.row_taps(min(v, g.in_height - 1))
                         for v in range(1 << fields.y_bits)]
            col_table = [conv.column_taps(min(v, g.in_width - 1))
                         for v in range(1 << fields.x_bits)]
            row_rom = _rom(m, f"row_taps{i}", [mask | base << g.kernel_height
                                                for mask, base in row_table],
                           g.kernel_height + base_bits)
            col_rom = _rom(m, f"column_taps{i}", [mask | base << g.kernel_width
                                                   for mask, base in col_table],
                           g.kernel_width + base_bits)
            base_rom = _rom(m, f"channel_base{i}", [min(v, g.in_channels - 1) * g.taps
                                                     for v in range(1 << fields.c_bits)],
                            plan.column_bits)
            m.d.comb += [row_rom.addr.eq(y), col_rom.addr.eq(x), base_rom.addr.eq(c)]
            row_word, col_word, base = (Signal(len(r.data), name=f"{n}{i}") for r, n in
                                        [(row_rom, "row_word"), (col_rom, "column_word"),
                                         (base_rom, "channel_base")])
            with m.If(t1_take):
                m.d.sync += [row_word.eq(row_rom.data), col_word.eq(col_rom.data),
                             base.eq(base_rom.data)]
            masks.append(port.data)
            rows.append((g, row_word, col_word))
            bases.append(base)

        # -- T1: the walk's mask: the taps with entries here whose output position exists
        # (their row's bit and their column's), and the position of tap (0, 0) -----------------
        with m.If(t1_take):
            m.d.sync += [t1_valid.eq(t0_valid), t1.eq(t0)]
        t1_conv = Signal()
        m.d.sync += t1_conv.eq(Mux(t1_take, Cat(*is_conv.values()).any() & t0_valid, t1_conv))
        walk_mask = Signal(max_taps)
        walk_base = Signal.like(t2_base)
        walk_channel = Signal.like(t2_channel)
        for (i, conv), mask, (g, row_word, col_word), base in zip(convs, masks, rows, bases):
            kh, kw = g.kernel_height, g.kernel_width
            valid = Cat(row_word[dy] & col_word[dx] for dy in range(kh) for dx in range(kw))
            with m.If(t1.layer == i):
                m.d.comb += [walk_mask.eq(mask & valid),
                             walk_base.eq(row_word[kh:] + col_word[kw:]),
                             walk_channel.eq(base)]

        # -- T2: one tap a clock, lowest first --------------------------------------------------
        rest = remaining & ~lowest
        with m.If(t2_free):
            m.d.sync += [t2_valid.eq(t1_valid), t2.eq(t1), t2_conv.eq(t1_conv & t1_valid),
                         remaining.eq(walk_mask), lowest.eq(_lowest_set(walk_mask)),
                         t2_base.eq(walk_base), t2_channel.eq(walk_channel),
                         none_left.eq(walk_mask == 0),
                         one_left.eq(_at_most_one(walk_mask))]
        with m.Elif(t2_emit & t2_conv):
            m.d.sync += [remaining.eq(rest), lowest.eq(_lowest_set(rest)),
                         none_left.eq(one_left), one_left.eq(_at_most_one(rest))]

        # -- T3: the tap's column and position: ``lowest`` is one-hot, so each is an OR of
        # its taps' constants (a few LUTs deep, not a priority chain), then one add each -------
        tap = Signal(range(max_taps))
        offset = Signal(base_bits)
        m.d.comb += tap.eq(_or_all([Mux(lowest[t], t, 0) for t in range(max_taps)]))
        m.d.comb += offset.eq(_or_all([Mux(lowest[t] & (t2.layer == i), value, 0)
                                       for i, conv in convs
                                       for t, value in enumerate(conv.tap_offsets())]))
        with m.If(t3_take):
            m.d.sync += t3_valid.eq(t2_emit)
        with m.If(t3_take & t2_emit):
            m.d.sync += [
                t3.value.eq(t2.value), t3.layer.eq(t2.layer), t3.bank.eq(t2.bank),
                t3.fence.eq(t2.fence),
                t3.column.eq(Mux(t2_conv, t2_channel + tap, t2.column)),
                t3.position.eq(Mux(t2_conv, t2_base - offset, 0)),
            ]
        m.d.comb += [self.o.valid.eq(t3_valid), self.o.payload.eq(t3)]
        return m
