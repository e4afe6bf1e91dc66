"""The PE's entry stage: columns in, one decoded entry and its weight per clock out (E0 .. E2)."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accel.gateware.layouts import layouts
from accel.gateware.pe.stages import column_layout, entry_layout, pe_widths
from accel.gateware.primitives import (_check_plan, _memory, _read_port, _registered,
                                       _switch)
from accel.planning.plan import EnginePlan

__all__ = ["EntryStage", "weighted_entry_layout"]


def weighted_entry_layout(plan: EnginePlan) -> data.StructLayout:
    """An entry (:func:`~accel.gateware.pe.stages.entry_layout`) and its weight (A3)."""
    return data.StructLayout({"entry": entry_layout(plan),
                              "weight": signed(pe_widths(plan).weight_bits)})


class EntryStage(wiring.Component):
    """Walk each column's entries: read, decode the row (zero runs), look up the weight.

    Parameters
    ----------
    plan : EnginePlan
    pe : int
        The PE whose entry memories this stage holds.

    Attributes
    ----------
    i : In(stream.Signature(column_layout(plan)))
        Columns and fences. ``ready`` is high in the clock the stage takes the head column's
        last entry (a fence: at once); it does not wait for ``valid``.
    o : Out(weighted_entry_layout(plan))
        One entry per clock (``o.entry.valid``): the column's activation, layer and bank, the
        entry's local row (``row = previous row + zero run + 1``, from -1 at a column's
        first entry) and its weight ``codebook[layer][index]`` (A3), or
        ``codebook[layer][row][index]`` for a layer with per-row codebooks (A9: the PE holds
        its own rows' codebooks, addressed by local row and index); a fence passes as an
        entry with ``fence`` set and no row.
    write : In(bus)
        The PE's copy of the write bus (entry and codebook memories).

    Latency and throughput: an entry leaves 5 clocks after the clock the stage takes it from
    the head column (E0: address registered; E1: entry memory read; E1R: each layer's word
    registered; E1W: the layer's word, row decode, codebook read; E2: weight registered).
    One entry per clock, with no bubble between columns; a column of ``n`` entries takes
    ``n`` clocks, a fence one.
    """

    def __init__(self, plan: EnginePlan, pe: int):
        _check_plan(self, plan)
        self._plan, self._pe = plan, pe
        super().__init__({
            "i": In(stream.Signature(column_layout(plan))),
            "o": Out(weighted_entry_layout(plan)),
            "write": In(layouts(plan).bus),
        })

    def elaborate(self, platform):
        plan, p = self._plan, self._pe
        layers, w = plan.layers, pe_widths(plan)
        m = Module()
        entries = [_read_port(m, _memory(m, f"entries{i}", plan, None, "entries", i, p,
                                         unsigned(layer.image.entry_bits), platform,
                                         strobe_from=self.write), f"entries{i}")
                   for i, layer in enumerate(layers)]
        # A per-layer codebook is the same in every PE; a per-row one (A9) holds this PE's rows.
        codebooks = [_read_port(m, _memory(m, f"codebook{i}", plan, None, "codebook", i,
                                           p if layer.per_row else None,
                                           signed(layer.weight_bits), platform,
                                           strobe_from=self.write), f"codebook{i}")
                     for i, layer in enumerate(layers)]

        # -- E0: one entry per clock from the head column -------------------------------------
        # ``fresh``: the head column's first entry is next (``offset`` is 0); ``at_last``: the
        # entry after the current one is the column's last, registered a clock ahead.
        current = self.i.payload
        offset = Signal(w.pointer_bits)
        fresh = Signal(init=1)
        at_last = Signal()
        last_entry = current.fence | Mux(fresh, current.single, at_last)
        m.d.comb += self.i.ready.eq(last_entry)
        with m.If(self.i.valid):
            m.d.sync += [offset.eq(Mux(last_entry, 0, offset + 1)), fresh.eq(last_entry),
                         at_last.eq(offset == current.penultimate)]
        # The entry's address registered, the entry memories' only load (timing: each layer's
        # memory is several block RAMs, apart on the chip, behind an address decode).
        address = Signal(w.pointer_bits)
        m.d.sync += address.eq(current.start + offset)
        for port in entries:
            m.d.comb += port.addr.eq(address[:len(port.addr)])
        stage = entry_layout(plan)
        e0, e1 = Signal(stage), Signal(stage)
        m.d.sync += [
            e0.valid.eq(self.i.valid), e0.fence.eq(current.fence), e0.first.eq(fresh),
            e0.layer.eq(current.layer), e0.bank.eq(current.bank), e0.value.eq(current.value),
            e1.eq(e0),
        ]
        if plan.has_conv:
            m.d.sync += e0.position.eq(current.position)

        # -- E1: each layer's entry word registered as it leaves its block RAM; E1R: the word
        # of the entry's layer (block RAM read data is slow: timing) --------------------------
        e1r, e1w = Signal(stage), Signal(stage)
        words = _registered(m, entries, "entry_word")
        word = Signal(w.word_bits)
        m.d.sync += [e1r.eq(e1), e1w.eq(e1r),
                     word.eq(_switch(m, e1r.layer, words, unsigned(w.word_bits), "entry_word"))]

        # -- E1W: decode the relative row, read the codebook ----------------------------------
        bz = layers[0].image.zero_run_bits
        v = _switch(m, e1w.layer, [word[:layer.image.index_bits] for layer in layers],
                    unsigned(max(layer.image.index_bits for layer in layers)), "v")
        z = _switch(m, e1w.layer, [word[layer.image.index_bits:layer.image.index_bits + bz]
                                   for layer in layers], unsigned(bz), "z")
        row = Signal(w.row_bits)
        row_next = Signal(w.row_bits)
        m.d.comb += row_next.eq(Mux(e1w.first, 0, row + 1) + z)    # row = row + z + 1 from -1
        with m.If(e1w.valid & ~e1w.fence):
            m.d.sync += row.eq(row_next)
        for layer, port in zip(layers, codebooks):
            # A9: row ``k``'s codebook is words ``k << index_bits ..`` of the PE's memory.
            address = Cat(v[:layer.image.index_bits], row_next) if layer.per_row else v
            m.d.comb += port.addr.eq(address[:len(port.addr)])
        e2 = Signal(stage)
        m.d.sync += [e2.eq(e1w), e2.row.eq(row_next)]
        m.d.comb += [
            self.o.entry.eq(e2),
            self.o.weight.eq(_switch(m, e2.layer, [port.data for port in codebooks],
                                     signed(w.weight_bits), "codebook_value")),
        ]
        return m
