"""The PE's multiply-accumulate stage and its accumulator memories (E2 .. E6), with the drain's
read-and-clear port."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from accel.gateware.layouts import layouts
from accel.gateware.pe.entry import weighted_entry_layout
from accel.gateware.pe.stages import entry_layout, pe_widths
from accel.gateware.primitives import (SMALL_MEMORY_DEPTH, _RegisteredProduct, _check_plan,
                                       _shallow_attrs, _switch)
from accel.planning.plan import EnginePlan

__all__ = ["Accumulate", "ReadClearSignature"]


class ReadClearSignature(wiring.Signature):
    """The drain's port to the accumulator memories, as the drain sees it.

    Members
    -------
    start : Out(1)
        Strobe: the drain takes context ``context`` (its memory is read from the next clock).
    context : Out(context)
    done : Out(1)
        Strobe: the context's last clock (the memory goes back to the MAC after it).
    clear : Out(1)
        Strobe: row ``row`` is issued: its sum is read (``sum``, two clocks later) and the row
        is cleared for the next image.
    row, row_next : Out(address_bits)
        The drain's accumulator address (a local row; a convolution's
        ``(position << row_bits) | row``) and its value in the next clock (the read address
        is registered from it, timing).
    sum_context : Out(context)
        Whose memory ``sum`` shows.
    sum : In(signed(acc_bits))
        The row read a clock ago from ``sum_context``'s memory (row ``row`` of two clocks ago).
    """

    def __init__(self, plan: EnginePlan):
        lay, w = layouts(plan), pe_widths(plan)
        super().__init__({
            "start": Out(1), "context": Out(lay.context), "done": Out(1), "clear": Out(1),
            "row": Out(unsigned(w.address_bits)), "row_next": Out(unsigned(w.address_bits)),
            "sum_context": Out(lay.context), "sum": In(signed(w.acc_bits)),
        })


class Accumulate(wiring.Component):
    """Multiply each entry's weight by its activation and add it to its row (A4, A5).

    One memory per (layer, bank) holds the sums of a context: the MAC adds to it while the
    context's columns arrive, and the drain reads and clears it (never both on one context at
    once: the fence retires first).

    Parameters
    ----------
    plan : EnginePlan

    Attributes
    ----------
    i : In(weighted_entry_layout(plan))
        Entries from :class:`~accel.gateware.pe.entry.EntryStage`, one per clock at most;
        a fence retires its context.
    retire : Out(retire)
        Strobe with a context, 3 clocks after its fence arrives: every product of the context
        before the fence is in its memory.
    drain : In(ReadClearSignature(plan))
        The drain's read-and-clear port.

    Latency and throughput: E2: operands registered; E3: multiply; E4: product registered and
    the row read; E5: add and write. One entry per clock, with no stall: E4 takes the sums of
    the two writes its read misses (same row back to back) from E5's adder and from E6.
    """

    def __init__(self, plan: EnginePlan):
        _check_plan(self, plan)
        self._plan = plan
        super().__init__({
            "i": In(weighted_entry_layout(plan)),
            "retire": Out(layouts(plan).retire),
            "drain": In(ReadClearSignature(plan)),
        })

    def elaborate(self, platform):
        plan, w = self._plan, pe_widths(self._plan)
        m = Module()
        stage = entry_layout(plan)
        e2 = self.i.entry
        drain = self.drain

        # -- E2: the weight and the activation, registered as the multiplier's operands; E3:
        # multiply (the product registered in E4) -----------------------------------------------
        m.submodules.mac = mac = _RegisteredProduct(signed(w.weight_bits), w.value_shape)
        m.d.comb += [mac.a.eq(self.i.weight), mac.b.eq(e2.value)]
        e3, e4 = Signal(stage), Signal(stage)
        m.d.sync += [e3.eq(e2), e4.eq(e3)]
        product = Signal(signed(w.weight_bits + plan.value_bits))
        m.d.comb += product.eq(mac.p)

        # -- E4: the accumulator's row, registered; E5: accumulate (A5) and write it back -------
        # Reading in one clock and adding in the next keeps the LUT RAM's read (and its mux
        # tree) and the adder in separate clocks (timing). The row E5 writes in the clock E4
        # registers the same row was read before that write: E4 takes E5's new sum instead; and
        # the read misses the write of the clock before it too (it is not transparent): E4 then
        # takes that sum, registered (E6). One register and one adder serve every (layer,
        # bank) memory (area).
        e5 = Signal(stage)
        e5_product = Signal.like(product)
        m.d.sync += [e5.eq(e4), e5_product.eq(product)]
        accumulated = Signal(signed(w.acc_bits))
        total = Signal(signed(w.acc_bits + 1))
        m.d.comb += total.eq(accumulated + e5_product)
        read_rows = self._memories(m, platform, e2, e4, total)
        contexts = range(1 << (plan.layer_bits + plan.bank_bits))

        def row_of(selector, name):
            choices = [read_rows.get((i >> plan.bank_bits, i & ((1 << plan.bank_bits) - 1)), 0)
                       for i in contexts]
            return _switch(m, selector, choices, signed(w.acc_bits), name)

        e4_read = row_of(Cat(e4.bank, e4.layer), "e4_read")
        e6 = Signal(stage)                          # the entry E5 accumulated a clock ago
        written = Signal(signed(w.acc_bits))        # and the sum it wrote
        m.d.sync += [e6.eq(e5), written.eq(total)]

        def same_row(earlier, later):
            same = (earlier.valid & ~earlier.fence & (earlier.row == later.row)
                    & (earlier.layer == later.layer) & (earlier.bank == later.bank))
            return same & (earlier.position == later.position) if plan.has_conv else same

        # Whether E5's and E6's entries hit E4's row, compared a clock ahead (E4 against E3,
        # E5 against E3) and registered: the forward mux's selects come from flip-flops
        # (timing).
        hit5, hit6 = Signal(), Signal()
        m.d.sync += [hit5.eq(same_row(e4, e3)), hit6.eq(same_row(e5, e3))]
        m.d.sync += accumulated.eq(Mux(hit5, total, Mux(hit6, written, e4_read)))
        m.d.comb += [
            self.retire.valid.eq(e5.valid & e5.fence),
            self.retire.layer.eq(e5.layer),
            self.retire.bank.eq(e5.bank),
            drain.sum.eq(row_of(Cat(drain.sum_context.bank, drain.sum_context.layer),
                                "drained_row")),
        ]
        return m

    @staticmethod
    def _address(layer, entry):
        """An entry's accumulator address in ``layer``'s memory."""
        if layer.conv is None:
            return entry.row
        return Cat(entry.row[:layer.image.row_bits], entry.position)

    def _memories(self, m, platform, e2, e4, total):
        """The (layer, bank) memories, their ports shared by the MAC and the drain; returns
        each memory's read data."""
        plan, w, drain = self._plan, pe_widths(self._plan), self.drain
        read_rows = {}
        for i, layer in enumerate(plan.layers):
            for b in range(plan.banks):
                # LUT RAM, even when deep: the read-add-write loop has one clock, which block
                # RAM's slow read data would not leave enough of (timing); flip-flops when a
                # row or two (``REGISTER_DEPTH``: area). The read is not
                # transparent to the write (a transparent read would put the write data, after
                # the adder, on the read path: timing); the MAC forwards the sums its read
                # misses instead (E4).
                # A convolution's: word ``(position << row_bits) | row``, whole output maps,
                # in block RAM (its registered read is this loop's read: the same clocks).
                depth = layer.image.rows_per_pe if layer.conv is None \
                    else layer.conv.positions << layer.image.row_bits
                attrs = _shallow_attrs(platform, depth) if layer.conv is None \
                    or depth <= SMALL_MEMORY_DEPTH else {}
                mem = Memory(shape=signed(layer.accumulator_bits), depth=depth, init=[],
                             attrs=attrs)
                m.submodules[f"acc{i}_{b}"] = mem
                wport, rport = mem.write_port(), mem.read_port()
                # Each memory's read address, registered from its next value: the LUT RAM's
                # address pins then come straight from flip-flops of their own (timing): the
                # drain's row for the memory being drained, else E2's row (E3's in the next
                # clock).
                draining = Signal(name=f"draining{i}_{b}")
                draining_next = Mux(drain.start, (drain.context.layer == i)
                                    & (drain.context.bank == b), draining & ~drain.done)
                read_address = Signal(w.address_bits, name=f"read_address{i}_{b}")
                m.d.sync += [draining.eq(draining_next),
                             read_address.eq(Mux(draining_next, drain.row_next,
                                                 self._address(layer, e2)))]
                # The write's enable and address, registered a clock ahead: they fan out to
                # every LUT RAM cell of the memory (timing). The drain clears the row it
                # issues, E5 writes E4's.
                clearing = Signal(name=f"clearing{i}_{b}")
                mac = Signal(name=f"mac{i}_{b}")
                write_row = Signal(w.address_bits, name=f"write_row{i}_{b}")
                clear_next = drain.clear & draining
                m.d.sync += [
                    clearing.eq(clear_next),
                    mac.eq(e4.valid & ~e4.fence & (e4.layer == i) & (e4.bank == b)),
                    write_row.eq(Mux(clear_next, drain.row, self._address(layer, e4))),
                ]
                read_rows[i, b] = rport.data
                m.d.comb += [
                    rport.addr.eq(read_address[:len(rport.addr)]),
                    wport.addr.eq(write_row[:len(wport.addr)]),
                    wport.data.eq(Mux(clearing, 0, total)),
                    wport.en.eq(clearing | mac),
                ]
        return read_rows
