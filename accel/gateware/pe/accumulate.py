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
from accel.gateware.primitives import (_NO_COLLISION, SMALL_MEMORY_DEPTH, _block_ram_attrs,
                                       _check_plan, _read_port, _RegisteredProduct,
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
        is cleared for the next image (in the next clock; a block RAM's in the one after).
    row, row_next : Out(address_bits)
        The drain's accumulator address (a local row; a convolution's
        ``(position << row_bits) | row``) and its value in the next clock (the read address
        is registered from it, timing).
    sum_context : Out(context)
        Whose memory ``sum`` shows.
    sum : In(signed(acc_bits))
        The row ``row`` of two clocks ago, from ``sum_context``'s memory, out of a register
        (timing).
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
        before the fence is in its memory at the end of that clock.
    drain : In(ReadClearSignature(plan))
        The drain's read-and-clear port.

    Latency and throughput: E2: operands registered; E3: multiply and the row read; E4:
    product registered, a LUT RAM's row chosen; E5: a block RAM's row chosen, add and write
    (a block RAM's write registered, in E6). One entry per clock, with no stall: the sums of
    the writes a read misses (the same row 1 or 2 entries ahead, or 3 for a block RAM) are
    forwarded, from E5's adder and E6 into E4, from E6, E7 and E8 into E5.
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

        # -- E4: the product registered, the row read; E5: accumulate (A5) and write it back ---
        # A LUT RAM's row (or a flip-flop memory's) is read in E3 and chosen in E4, so that E5
        # holds only the adder (timing); a block RAM's read data goes into a register first
        # (slow: ``_memories``) and is chosen in E5. Either read misses the writes of the
        # entries ahead of it: E4 takes E5's new sum or E6's, E5 takes E6's or E7's (a block
        # RAM's row), each hit compared a clock ahead and registered, so that the forward
        # muxes' selects come from flip-flops too. One adder serves every (layer, bank) memory
        # (area).
        e5 = Signal(stage)
        e5_product = Signal.like(product)
        m.d.sync += [e5.eq(e4), e5_product.eq(product)]
        total = Signal(signed(w.acc_bits + 1))
        block = [i for i, layer in enumerate(plan.layers) if _in_block_ram(layer)]
        rows = self._memories(m, platform, e2, e4, total)
        contexts = range(1 << (plan.layer_bits + plan.bank_bits))

        def row_of(selector, name, layers=range(plan.n_layers)):
            """The row of context ``selector`` (``Cat(bank, layer)``) among ``layers``'."""
            choices = []
            for i in contexts:
                layer, bank = i >> plan.bank_bits, i & ((1 << plan.bank_bits) - 1)
                choices.append(rows.get((layer, bank), 0) if layer in layers else 0)
            return _switch(m, selector, choices, signed(w.acc_bits), name)

        e6 = Signal(stage)                          # the entry E5 accumulated a clock ago
        written6 = Signal(signed(w.acc_bits))       # the sums written 1 and 2 clocks ago
        written7 = Signal(signed(w.acc_bits))
        m.d.sync += [e6.eq(e5), written6.eq(total), written7.eq(written6)]

        def same_row(earlier, later):
            same = (earlier.valid & ~earlier.fence & (earlier.row == later.row)
                    & (earlier.layer == later.layer) & (earlier.bank == later.bank))
            return same & (earlier.position == later.position) if plan.has_conv else same

        fast = [i for i in range(plan.n_layers) if i not in block]
        accumulated = Signal(signed(w.acc_bits))    # E4's row, the sums it missed forwarded
        hit5, hit6 = Signal(), Signal()
        m.d.sync += [hit5.eq(same_row(e4, e3)), hit6.eq(same_row(e5, e3))]
        e4_read = row_of(Cat(e4.bank, e4.layer), "e4_read", fast)
        m.d.sync += accumulated.eq(Mux(hit5, total, Mux(hit6, written6, e4_read)))
        operand = accumulated
        if block:
            # A block RAM is written in E6 (``_memories``): its read misses the sums of the
            # entries 1, 2 and 3 ahead, forwarded from E6, E7 and E8.
            e7 = Signal(stage)
            written8 = Signal(signed(w.acc_bits))
            m.d.sync += [e7.eq(e6), written8.eq(written7)]
            e5_read = row_of(Cat(e5.bank, e5.layer), "e5_read", block)
            hit6_block, hit7_block, hit8_block, e5_block = Signal(), Signal(), Signal(), Signal()
            m.d.sync += [hit6_block.eq(same_row(e5, e4)), hit7_block.eq(same_row(e6, e4)),
                         hit8_block.eq(same_row(e7, e4)),
                         e5_block.eq(Cat(e4.layer == i for i in block).any())]
            operand = Mux(e5_block,
                          Mux(hit6_block, written6,
                              Mux(hit7_block, written7, Mux(hit8_block, written8, e5_read))),
                          accumulated)
        m.d.comb += total.eq(operand + e5_product)
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
        each memory's read data, from flip-flops (E4's for LUT RAM, E5's for block RAM; the
        drain's two clocks after the issue)."""
        plan, w, drain = self._plan, pe_widths(self._plan), self.drain
        rows = {}
        for i, layer in enumerate(plan.layers):
            for b in range(plan.banks):
                # LUT RAM, or flip-flops when a row or two (``REGISTER_DEPTH``: area): a fast
                # read. A convolution's memory (word ``(position << row_bits) | row``, whole
                # output maps) deeper than ``SMALL_MEMORY_DEPTH`` goes to block RAM, whose read
                # data (5.8 ns clock-to-out on the ECP5) goes into a register of its own before
                # it crosses the chip to the adder (timing). Both read E3's row (from E2). No
                # read is transparent to the write (that would put the adder on the read path:
                # timing); the MAC forwards the sums its reads miss.
                block = _in_block_ram(layer)
                wport, rport = _accumulator_memory(m, f"acc{i}_{b}", platform, layer)
                # Each memory's read address, registered from its next value: the memory's
                # address pins then come straight from flip-flops of their own (timing): the
                # drain's row for the memory being drained, else the MAC's.
                draining = Signal(name=f"draining{i}_{b}")
                draining_next = Mux(drain.start, (drain.context.layer == i)
                                    & (drain.context.bank == b), draining & ~drain.done)
                # The drain's row: the block RAM reads it in the clock it is issued (from
                # ``row_next``), LUT RAM a clock later (from ``row``, as the row is cleared:
                # the read is not transparent, it sees the sum), so that both reach the drain
                # from flip-flops two clocks after the issue.
                read_address = Signal(w.address_bits, name=f"read_address{i}_{b}")
                if block:
                    read_next = Mux(draining_next, drain.row_next, self._address(layer, e2))
                else:
                    read_next = Mux(draining, drain.row, self._address(layer, e2))
                m.d.sync += [draining.eq(draining_next), read_address.eq(read_next)]
                if block:
                    held = Signal(signed(layer.accumulator_bits), name=f"read{i}_{b}")
                    m.d.sync += held.eq(rport.data)
                    rows[i, b] = held
                else:
                    rows[i, b] = rport.data
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
                write_en, write_address, write_data = clearing | mac, write_row, \
                    Mux(clearing, 0, total)
                if block:
                    # A block RAM's write registered once more, in E6 (timing: E5's sum went
                    # straight across the chip to the block RAM's write data, 12.7 ns on the
                    # 12-PE LeNet-5 build, 9.9 ns of it routing); E5 forwards one more sum.
                    registered = [Signal(name=f"write_en{i}_{b}"),
                                  Signal(len(wport.addr), name=f"write_address{i}_{b}"),
                                  Signal(len(wport.data), name=f"write_data{i}_{b}")]
                    m.d.sync += [reg.eq(value) for reg, value in
                                 zip(registered, (write_en, write_address, write_data))]
                    write_en, write_address, write_data = registered
                m.d.comb += [
                    rport.addr.eq(read_address[:len(rport.addr)]),
                    wport.addr.eq(write_address[:len(wport.addr)]),
                    wport.data.eq(write_data),
                    wport.en.eq(write_en),
                ]
        return rows


def _accumulator_memory(m, name, platform, layer):
    """One (layer, bank) accumulator memory; returns its write port and read port."""
    depth, shape = _accumulator_depth(layer), signed(layer.accumulator_bits)
    if not _in_block_ram(layer):
        mem = Memory(shape=shape, depth=depth, init=[], attrs=_shallow_attrs(platform, depth))
        m.submodules[name] = mem
        wport, rport = mem.write_port(), mem.read_port()    # (their signals' names)
        return wport, rport
    # Read through ``_read_port``, without collision logic (``_NO_COLLISION``): Yosys's "old
    # data" copy, compare and mux would sit between the block RAM and its register (timing:
    # 3 LUTs after the block RAM's 5.8 ns clock-to-out, the 8-PE LeNet-5 build's critical
    # path at 89.13 MHz). The MAC does read a row in the clock the entry three ahead of it
    # writes it (E3's read, E6's write), but what the read gives then is never used: E5 takes
    # that entry's sum from ``written8``. The drain clears a row two clocks after it reads it.
    mem = Memory(shape=shape, depth=depth, init=[],
                 attrs={**_block_ram_attrs(platform), **_NO_COLLISION})
    m.submodules[name] = mem
    return mem.write_port(), _read_port(m, mem, f"{name}_read")


def _accumulator_depth(layer) -> int:
    """Words of one (layer, bank) accumulator memory: a Linear layer's rows, a convolution's
    ``(position << row_bits) | row``."""
    if layer.conv is None:
        return layer.image.rows_per_pe
    return layer.conv.positions << layer.image.row_bits


def _in_block_ram(layer) -> bool:
    """Whether the layer's accumulators are block RAM (slow read data): a convolution's deeper
    than ``SMALL_MEMORY_DEPTH``."""
    return layer.conv is not None and _accumulator_depth(layer) > SMALL_MEMORY_DEPTH
