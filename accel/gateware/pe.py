"""The processing element: pointer stage, MAC pipeline with its accumulators, and the drain
(``docs/accelerator.md``)."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from accel.gateware.layouts import layouts
from accel.gateware.primitives import (_RegisteredFIFO, _RegisteredProduct, _check_plan,
                                       _lowest_set, _lutram_attrs, _memory, _read_port, _register,
                                       _registered, _switch)
from accel.planning.plan import GROUP_QUEUE_SLACK, SHIFT_BITS, EnginePlan, _bits
from compress.integer import MULTIPLIER_BITS, activation_range

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
        Groups of activations for this PE, and fences (registered as they arrive, then queued,
        ``queue_depth`` deep). ``ready`` is registered (for the clock rate) and the broadcaster
        registers it again: it promises room for every group that arrives (``valid``) up to
        three clocks later, which is always taken.
    drain : In(stream.Signature(context))
        Commands: drain accumulator bank ``bank`` of layer ``layer`` (its context is complete).
        ``ready`` is registered and the sequencer registers it again: it promises room for
        commands that arrive (``valid``) up to three clocks later, which are always taken
        (registered as they arrive, then queued).
    retire : Out(retire)
        Strobe with a context: this PE's fence of the context has retired, every product of the
        context before it is in the accumulators.
    o : Out(stream.Signature(source))
        The PE's list: nonzero hidden outputs ``(row, value)`` tagged with the next layer and the
        bank, then an end mark per drained context.
    logits : Out(stream.Signature(logit))
        The last layer's outputs of this PE's rows, in local row order.
    trace : Out(trace)
        Every entry appended to ``o`` (for verification).
    write : In(bus)
        The write port (entries, pointers, codebooks, biases, row ids, requantization constants).

    Pipeline: an activation is registered as it arrives and queued, its pointer pair read,
    registered as it leaves the memory and again as the layer's pair, its last entry's offset
    computed (4 clocks) and put in an 8-deep column queue whose head is in flip-flops; the
    entry stage then issues one entry per clock, with no bubble
    between columns, into the MAC pipeline: entry read, each layer's word registered, the
    layer's word registered, row decode and codebook read, weight register, multiply and
    accumulator read, accumulator row register (one for every accumulator memory), add and
    write (7 clocks). The accumulator row register takes the sums the read misses (the two
    clocks' writes before it), so back-to-back updates of one row need no stall. Throughput:
    one entry per clock.
    The drain reads one row per clock: accumulator, bias and row id, each layer's bias and row
    id registered, the context's registered, bias added, requantization multiply (four stages:
    the operands copied beside the hard multipliers, the partial products, their copies, the
    product), rounding term, shift (two stages), ReLU and clamp, entry register, append (13
    clocks, one multiplier, carry chain or three-level shifter per stage for the clock rate),
    and clears the row for the next image.
    """

    def __init__(self, plan: EnginePlan, pe: int):
        _check_plan(self, plan)
        if isinstance(pe, bool) or not isinstance(pe, int) or not 0 <= pe < plan.n_pes:
            self._MustUse__used = True
            raise ValueError(f"pe must be 0..{plan.n_pes - 1}, not {pe!r}")
        self._plan = plan
        self._pe = pe
        self._layouts = lay = layouts(plan)
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
        plan, lay, p = self._plan, self._layouts, self._pe
        m = Module()
        layers = plan.layers
        n_layers = plan.n_layers
        pointer_bits = max(layer.image.pointer_bits for layer in layers)
        row_bits = max(layer.image.row_bits for layer in layers) + 1
        weight_bits = max(layer.weight_bits for layer in layers)
        acc_bits = max(layer.accumulator_bits for layer in layers)
        value_shape = signed(plan.value_bits)

        # -- memories ------------------------------------------------------------------------
        entries, pointers, codebooks, biases, row_ids = [], [], [], [], []
        # A local copy of the write bus, in two registers (timing): the first takes every word
        # as it arrives from the top level, far away, with an enable that includes its own
        # register, so that the copies of different PEs differ and synthesis cannot merge them
        # back into one register that drives every PE; the second fans out to every memory of
        # the PE. Each memory's and register's write enable is decoded from the first and
        # registered beside the second (``strobe_from``).
        arriving = Signal(lay.bus)
        with m.If(self.write.en | arriving.en):
            m.d.sync += arriving.eq(self.write)
        bus = Signal(lay.bus)
        # Only the address and data: the enables are the strobes (``bus.en`` stays 0).
        m.d.sync += [bus.addr.eq(arriving.addr), bus.data.eq(arriving.data)]
        own = dict(strobe_from=arriving)
        for i, layer in enumerate(layers):
            image = layer.image
            entries.append(_read_port(m, _memory(m, f"entries{i}", plan, bus, "entries", i, p,
                                                 unsigned(image.entry_bits), platform, **own),
                                      f"entries{i}"))
            # Block RAM, however small: the pointer address comes from the queue head's lane
            # choice, and a block RAM's address register ends that path where LUT RAM's read
            # and its mux tree would lengthen it (timing: on 16-PE LeNet-300-100 a 100-deep
            # pointer memory in LUT RAM was the critical path).
            pointers.append(_read_port(m, _memory(m, f"pointers{i}", plan, bus, "pointers", i, p,
                                                  unsigned(image.pointer_word_bits), platform,
                                                  block=True, **own), f"pointers{i}"))
            codebooks.append(_read_port(m, _memory(m, f"codebook{i}", plan, bus, "codebook", i,
                                                   None, signed(layer.weight_bits), platform,
                                                   **own), f"codebook{i}"))
            biases.append(_read_port(m, _memory(m, f"bias{i}", plan, bus, "bias", i, p,
                                                signed(layer.accumulator_bits), platform, **own),
                                     f"bias{i}"))
            if not layer.logits:
                row_ids.append(_read_port(m, _memory(m, f"row_ids{i}", plan, bus, "row_ids", i,
                                                     p, unsigned(_bits(image.out_features)),
                                                     platform, **own), f"row_ids{i}"))
            else:
                row_ids.append(None)
        multipliers = [_register(m, plan, bus, "requant", i, 0, unsigned(MULTIPLIER_BITS),
                                 layer.multiplier, **own) for i, layer in enumerate(layers)]
        shifts = [_register(m, plan, bus, "requant", i, 1, unsigned(SHIFT_BITS),
                            layer.shift, **own) for i, layer in enumerate(layers)]
        # Accumulators: one memory per (layer, bank), shared by the MAC and the drain (never on
        # the same context at once). The read is not transparent to the write (a transparent
        # read would put the write data, after the adder, on the read path: timing); the MAC
        # forwards the sums its read misses instead (E4).
        acc_mems = {}
        for i, layer in enumerate(layers):
            for b in range(plan.banks):
                # LUT RAM, even when deep: the read-add-write loop has one clock, which block
                # RAM's slow read data would not leave enough of (timing).
                mem = Memory(shape=signed(layer.accumulator_bits), depth=layer.image.rows_per_pe,
                             init=[], attrs=_lutram_attrs(platform))
                m.submodules[f"acc{i}_{b}"] = mem
                wport = mem.write_port()
                rport = mem.read_port()
                acc_mems[i, b] = (rport, wport)

        # -- activation queue and pointer stage ----------------------------------------------
        # In block RAM however shallow: a 64-deep queue in LUT RAM had a read mux tree as deep
        # as its paths to the skid buffer (timing).
        m.submodules.queue = queue = _RegisteredFIFO(width=lay.group.size,
                                                      depth=plan.queue_depth, block=True)
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
        room = Signal()
        m.d.sync += room.eq(queue.w_level + GROUP_QUEUE_SLACK <= queue.w_depth)
        m.d.comb += [
            queue.w_data.eq(arrived_group),
            queue.w_en.eq(arrived),
            self.i.ready.eq(room),
        ]
        head = lay.group(queue.r_data)
        # A queued column: its first entry and the offset of its last (a PE gets only columns
        # where it has at least one entry), or a fence.
        # ``single``: the column has one entry (or is a fence); ``penultimate``: the offset of
        # its last entry but one. The entry stage then knows a clock ahead whether its next
        # entry is the column's last, and pops with one LUT from flip-flops (timing).
        column_layout = data.StructLayout({
            "start": unsigned(pointer_bits), "penultimate": unsigned(pointer_bits),
            "single": 1, "value": value_shape, "layer": unsigned(plan.layer_bits),
            "bank": unsigned(plan.bank_bits), "fence": 1,
        })
        # Its head comes from flip-flops: the entry stage compares and adds with it, and pops
        # it, in one clock (timing).
        m.submodules.columns = columns = _RegisteredFIFO(width=column_layout.size, depth=7)

        taken = Signal(plan.lanes)
        remaining = Signal(plan.lanes)
        lowest = Signal(plan.lanes)
        m.d.comb += [remaining.eq(head.valid & ~taken), lowest.eq(_lowest_set(remaining))]
        p0_valid = Signal()
        p1_valid = Signal()
        p1r_valid = Signal()
        p2_valid = Signal()
        p3_valid = Signal()
        # Room in the column queue for this issue and those in P0 .. P3, registered (timing): at
        # most one issue per clock, so room for one more than now is room in the next clock.
        # ``occupancy`` is the queue's level plus the issues in P0 .. P3, counted as they are
        # issued and popped rather than summed (timing).
        room = Signal()
        occupancy = Signal(range(columns.depth + 1))
        m.d.sync += room.eq(occupancy + 1 < columns.depth)
        can_issue = queue.r_rdy & room
        issue_item = can_issue & remaining.any()
        issue_fence = can_issue & ~remaining.any() & head.fence
        pop_group = can_issue & ((remaining & ~lowest) == 0)
        item = Signal(lay.item)
        for k in range(plan.lanes):
            with m.If(lowest[k]):
                m.d.comb += item.eq(head.items[k])
        m.d.comb += queue.r_en.eq(pop_group)
        m.d.sync += occupancy.eq(occupancy + (issue_item | issue_fence)
                                 - (columns.r_rdy & columns.r_en))
        with m.If(pop_group):
            m.d.sync += taken.eq(0)
        with m.Elif(issue_item):
            m.d.sync += taken.eq(taken | lowest)

        # P0: the issue registered, its column the pointer memories' address (timing: the lane
        # choice is several LUTs deep, and each pointer memory's block RAMs sit apart).
        p0 = Signal(data.StructLayout({"value": value_shape, "layer": unsigned(plan.layer_bits),
                                       "bank": unsigned(plan.bank_bits), "fence": 1}))
        p0_column = Signal.like(item.column)
        m.d.sync += [p0_valid.eq(issue_item | issue_fence), p0_column.eq(item.column)]
        with m.If(issue_fence):
            m.d.sync += [p0.fence.eq(1), p0.layer.eq(head.fence_layer),
                         p0.bank.eq(head.fence_bank), p0.value.eq(0)]
        with m.Else():
            m.d.sync += [p0.fence.eq(0), p0.layer.eq(item.layer), p0.bank.eq(item.bank),
                         p0.value.eq(item.value)]
        for port in pointers:
            m.d.comb += port.addr.eq(p0_column[:len(port.addr)])

        p1 = Signal(p0.shape())
        m.d.sync += [p1_valid.eq(p0_valid), p1.eq(p0)]
        # P1R: each layer's pointer word registered as it leaves its block RAM; P2: the pair of
        # the column's layer (block RAM read data is slow: timing).
        p1r = Signal(p1.shape())
        pointer_words = _registered(m, pointers, "pointer_word")
        m.d.sync += [p1r_valid.eq(p1_valid), p1r.eq(p1)]
        p2 = Signal(p1.shape())
        p2_start = Signal(pointer_bits)
        p2_count = Signal(pointer_bits)
        starts = [word[:layer.image.pointer_bits] for word, layer in zip(pointer_words, layers)]
        counts = [(word[layer.image.pointer_bits:] - word[:layer.image.pointer_bits])
                  [:pointer_bits] for word, layer in zip(pointer_words, layers)]
        m.d.sync += [
            p2_valid.eq(p1r_valid), p2.eq(p1r),
            p2_start.eq(_switch(m, p1r.layer, starts, unsigned(pointer_bits), "start")),
            p2_count.eq(_switch(m, p1r.layer, counts, unsigned(pointer_bits), "count")),
        ]
        # P3: the column's ``single`` and ``penultimate`` (see ``column_layout``), so that the
        # entry stage compares with registers instead of adding (timing).
        column = Signal(column_layout)
        m.d.sync += [
            p3_valid.eq(p2_valid),
            column.start.eq(Mux(p2.fence, 0, p2_start)),
            column.penultimate.eq(p2_count - 2),
            column.single.eq(p2.fence | (p2_count == 1)),
            column.value.eq(p2.value), column.layer.eq(p2.layer), column.bank.eq(p2.bank),
            column.fence.eq(p2.fence),
        ]
        m.d.comb += [
            columns.w_data.eq(column),
            columns.w_en.eq(p3_valid),
        ]

        # -- entry stage (E0): one entry per clock from the head column -----------------------
        # ``fresh``: the head column's first entry is next (``offset`` is 0); ``at_last``: the
        # entry after the current one is the column's last, registered a clock ahead.
        current = column_layout(columns.r_data)
        offset = Signal(pointer_bits)
        fresh = Signal(init=1)
        at_last = Signal()
        last_entry = current.fence | Mux(fresh, current.single, at_last)
        m.d.comb += columns.r_en.eq(last_entry)
        with m.If(columns.r_rdy):
            m.d.sync += [offset.eq(Mux(last_entry, 0, offset + 1)), fresh.eq(last_entry),
                         at_last.eq(offset == current.penultimate)]
        # E0: the entry's address registered, the entry memories' only load (timing: each
        # layer's memory is several block RAMs, apart on the chip, behind an address decode).
        address = Signal(pointer_bits)
        m.d.sync += address.eq(current.start + offset)
        for port in entries:
            m.d.comb += port.addr.eq(address[:len(port.addr)])

        stage = data.StructLayout({"valid": 1, "fence": 1, "first": 1,
                                   "layer": unsigned(plan.layer_bits), "bank": unsigned(plan.bank_bits),
                                   "value": value_shape, "row": unsigned(row_bits)})
        e0, e1, e2, e3 = Signal(stage), Signal(stage), Signal(stage), Signal(stage)
        m.d.sync += [
            e0.valid.eq(columns.r_rdy), e0.fence.eq(current.fence), e0.first.eq(fresh),
            e0.layer.eq(current.layer), e0.bank.eq(current.bank), e0.value.eq(current.value),
            e1.eq(e0),
        ]

        # -- E1: each layer's entry word registered as it leaves its block RAM; E1R: the word
        # of the entry's layer (block RAM read data is slow: timing) --------------------------
        word_bits = max(layer.image.entry_bits for layer in layers)
        e1r, e1w = Signal(stage), Signal(stage)
        words = _registered(m, entries, "entry_word")
        word = Signal(word_bits)
        m.d.sync += [e1r.eq(e1), e1w.eq(e1r),
                     word.eq(_switch(m, e1r.layer, words, unsigned(word_bits), "entry_word"))]

        # -- E1W: decode the relative row, read the codebook -----------------------------------
        bz = layers[0].image.zero_run_bits
        v = _switch(m, e1w.layer, [word[:layer.image.index_bits] for layer in layers],
                    unsigned(max(layer.image.index_bits for layer in layers)), "v")
        z = _switch(m, e1w.layer, [word[layer.image.index_bits:layer.image.index_bits + bz]
                                   for layer in layers], unsigned(bz), "z")
        row = Signal(row_bits)
        row_next = Signal(row_bits)
        m.d.comb += row_next.eq(Mux(e1w.first, 0, row + 1) + z)    # row = row + z + 1 from -1
        with m.If(e1w.valid & ~e1w.fence):
            m.d.sync += row.eq(row_next)
        for port in codebooks:
            m.d.comb += port.addr.eq(v[:len(port.addr)])
        m.d.sync += [e2.eq(e1w), e2.row.eq(row_next)]

        # -- E2: the weight (A3) and the activation, registered as the multiplier's operands;
        # E3: multiply, read the accumulator (the product registered in E4) -------------------
        m.submodules.mac = mac = _RegisteredProduct(signed(weight_bits), value_shape)
        m.d.comb += [mac.a.eq(_switch(m, e2.layer, [port.data for port in codebooks],
                                      signed(weight_bits), "codebook_value")),
                     mac.b.eq(e2.value)]
        m.d.sync += e3.eq(e2)
        e4 = Signal(stage)
        product = Signal(signed(weight_bits + plan.value_bits))
        m.d.comb += product.eq(mac.p)
        m.d.sync += e4.eq(e3)

        # -- drain commands --------------------------------------------------------------------
        m.submodules.commands = commands = SyncFIFO(width=lay.context.size,
                                                    depth=2 * n_layers + 5)
        # A command is registered as it arrives (the sequencer is far away: timing). Each
        # register's enable includes this PE's own ``valid`` register, so the PEs' copies
        # differ and synthesis cannot merge them.
        command_arrived = Signal()
        command_arrived_context = Signal(lay.context)
        with m.If(self.drain.valid | command_arrived):
            m.d.sync += [command_arrived.eq(self.drain.valid),
                         command_arrived_context.eq(self.drain.payload)]
        # ``ready`` is registered; the sequencer registers it again, and its command, which
        # is registered here before it is queued: room for the writes of the five clocks from
        # the one whose level this is.
        drain_room = Signal()
        m.d.sync += drain_room.eq(commands.level + 5 <= commands.depth)
        m.d.comb += [
            commands.w_data.eq(command_arrived_context),
            commands.w_en.eq(command_arrived),
            self.drain.ready.eq(drain_room),
        ]
        # The command being drained, registered off the queue (timing): one clock to load it.
        command = lay.context(commands.r_data)
        current = Signal(lay.context)
        current_valid = Signal()
        current_rows = Signal(row_bits)
        current_last = Signal()
        k = Signal(row_bits)
        # k has reached the context's row count: registered with k, so that the drain's issue
        # starts from flip-flops (timing).
        k_at_end = Signal()
        # Which (layer, bank) memory the drain reads, decoded as the command is loaded: it
        # selects the memory's read address (timing).
        draining_of = {key: Signal(name=f"draining{key[0]}_{key[1]}") for key in acc_mems}
        load = commands.r_rdy & ~current_valid
        m.d.comb += commands.r_en.eq(load)
        with m.If(load):
            m.d.sync += [
                current.eq(command), current_valid.eq(1),
                current_rows.eq(_switch(m, command.layer, [layer.image.rows(p) for layer in layers],
                                        unsigned(row_bits), "rows_here")),
                current_last.eq(command.layer == n_layers - 1),
                k_at_end.eq(_switch(m, command.layer,
                                    [int(layer.image.rows(p) == 0) for layer in layers], 1,
                                    "no_rows_here")),
            ]
        issue_row = Signal()            # D0 issues row k (below)
        d_layout = data.StructLayout({"valid": 1, "end": 1, "layer": unsigned(plan.layer_bits),
                                      "bank": unsigned(plan.bank_bits), "row": unsigned(row_bits)})
        d1 = Signal(d_layout)

        # -- E4: the accumulator's row, registered; E5: accumulate (A5) and write it back -------
        # Reading in one clock and adding in the next keeps the LUT RAM's read (and its mux
        # tree) and the adder in separate clocks (timing). The row E5 writes in the clock E4
        # registers the same row was read before that write: E4 takes E5's new sum instead; and
        # the read misses the write of the clock before it too (it is not transparent): E4 then
        # takes that sum, registered (E6). One register and one adder serve every (layer,
        # bank) memory (area). The drain shares the memories' ports
        # (never on the same context as the MAC at once) and registers its own row (D1).
        e5 = Signal(stage)
        e5_product = Signal.like(product)
        m.d.sync += [e5.eq(e4), e5_product.eq(product)]
        accumulated = Signal(signed(acc_bits))
        total = Signal(signed(acc_bits + 1))
        m.d.comb += total.eq(accumulated + e5_product)
        read_rows = {}
        # Each memory's read address, registered from its next value: the LUT RAM's address
        # pins then come straight from flip-flops of their own (timing): D0's row k for the
        # memory being drained, else E2's row (E3's in the next clock).
        drain_done = Signal()           # the drained context's last clock (below)
        k_next = Mux(drain_done, 0, Mux(issue_row, k + 1, k))
        for (i, b), (rport, wport) in acc_mems.items():
            draining = draining_of[i, b]
            draining_next = Mux(load, (command.layer == i) & (command.bank == b),
                                draining & ~drain_done)
            read_address = Signal(row_bits, name=f"read_address{i}_{b}")
            m.d.sync += [draining.eq(draining_next),
                         read_address.eq(Mux(draining_next, k_next, e2.row))]
            # The write's enable and address, registered a clock ahead: they fan out to every
            # LUT RAM cell of the memory (timing). D1 clears the row D0 issues, E5 writes E4's.
            clearing = Signal(name=f"clearing{i}_{b}")
            mac = Signal(name=f"mac{i}_{b}")
            write_row = Signal(row_bits, name=f"write_row{i}_{b}")
            clear_next = issue_row & draining
            m.d.sync += [
                clearing.eq(clear_next),
                mac.eq(e4.valid & ~e4.fence & (e4.layer == i) & (e4.bank == b)),
                write_row.eq(Mux(clear_next, k, e4.row)),
            ]
            read_rows[i, b] = rport.data
            m.d.comb += [
                rport.addr.eq(read_address[:len(rport.addr)]),
                wport.addr.eq(write_row[:len(wport.addr)]),
                wport.data.eq(Mux(clearing, 0, total)),
                wport.en.eq(clearing | mac),
            ]
        e4_read = _switch(m, Cat(e4.bank, e4.layer),
                          [read_rows.get((i >> plan.bank_bits, i & ((1 << plan.bank_bits) - 1)), 0)
                           for i in range(1 << (plan.layer_bits + plan.bank_bits))],
                          signed(acc_bits), "e4_read")
        e6 = Signal(stage)                      # the entry E5 accumulated a clock ago
        written = Signal(signed(acc_bits))      # and the sum it wrote
        m.d.sync += [e6.eq(e5), written.eq(total)]

        def same_row(earlier, later):
            return (earlier.valid & ~earlier.fence & (earlier.row == later.row)
                    & (earlier.layer == later.layer) & (earlier.bank == later.bank))

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
        ]

        # -- drain (D0): issue one row per clock while the destination list has room ----------
        list_depth = max(2, max(layer.image.rows_per_pe for layer in layers) + 2)
        logit_depth = max(2, layers[-1].image.rows_per_pe + 1)
        m.submodules.list = out_list = _RegisteredFIFO(width=lay.source.size, depth=list_depth)
        m.submodules.logit_list = logit_list = _RegisteredFIFO(width=lay.logit.width,
                                                                depth=logit_depth)
        credit = Signal(range(list_depth + 1), init=list_depth)
        logit_credit = Signal(range(logit_depth + 1), init=logit_depth)
        is_last = current_last
        more_rows = current_valid & ~k_at_end
        at_end = current_valid & k_at_end
        # Whether a credit is left, registered with the credit (timing: the issue decides the
        # drain's next row and memory, on the way to the memories' read addresses).
        has_credit = Signal(init=list_depth != 0)
        has_logit_credit = Signal(init=logit_depth != 0)
        m.d.comb += issue_row.eq(more_rows & Mux(is_last, has_logit_credit, has_credit))
        issue_end = at_end & ~is_last & has_credit
        finish_last = at_end & is_last
        m.d.comb += drain_done.eq(issue_end | finish_last)
        with m.If(drain_done):
            m.d.sync += [k.eq(0), current_valid.eq(0)]
        with m.Elif(issue_row):
            m.d.sync += [k.eq(k + 1), k_at_end.eq(k + 1 == current_rows)]
        # Each layer's bias and row id memories read row k from an address register of their
        # own, a copy of k counted only while the layer is drained (timing: k itself reached
        # every LUT RAM cell of every layer's two memories, and the PE's other logic).
        for i, ports in enumerate(zip(biases, row_ids)):
            address = Signal(row_bits, name=f"drain_address{i}")
            with m.If(drain_done):
                m.d.sync += address.eq(0)
            with m.Elif(issue_row & (current.layer == i)):
                m.d.sync += address.eq(address + 1)
            for port in ports:
                if port is not None:
                    m.d.comb += port.addr.eq(address[:len(port.addr)])
        m.d.sync += [
            d1.valid.eq(issue_row | issue_end), d1.end.eq(issue_end), d1.layer.eq(current.layer),
            d1.bank.eq(current.bank), d1.row.eq(k),
        ]

        # -- D1: each layer's bias and row id registered as they leave their memories (block
        # RAM read data is slow: timing); the row's sum, from the context's accumulator memory
        # (no MAC runs on a context being drained), registered ---------------------------------
        bias_words = _registered(m, biases, "bias_word")
        row_id_words = _registered(m, row_ids, "row_id_word")
        d1b = Signal(d_layout)
        d1b_acc = Signal(signed(acc_bits))
        m.d.sync += [d1b.eq(d1), d1b_acc.eq(_switch(
            m, Cat(d1.bank, d1.layer),
            [read_rows.get((i >> plan.bank_bits, i & ((1 << plan.bank_bits) - 1)), 0)
             for i in range(1 << (plan.layer_bits + plan.bank_bits))],
            signed(acc_bits), "drained_row"))]

        # -- D1B: the layer's bias, row id and sum, registered -----------------------------------
        bias = _switch(m, d1b.layer, bias_words, signed(acc_bits), "bias")
        row_id = _switch(m, d1b.layer, [0 if word is None else word for word in row_id_words],
                         unsigned(plan.column_bits), "row_id")
        d1r = Signal(d_layout)
        d1r_bias = Signal(signed(acc_bits))
        d1r_column = Signal(plan.column_bits)
        d1r_acc = Signal(signed(acc_bits))
        m.d.sync += [d1r.eq(d1b), d1r_bias.eq(bias), d1r_column.eq(row_id),
                     d1r_acc.eq(d1b_acc)]

        # -- D1R: bias (A4, A5) ----------------------------------------------------------------
        d2 = Signal(d_layout)
        d2_sum = Signal(signed(acc_bits + 1))
        d2_column = Signal(plan.column_bits)
        # The layer's requantization constants, registered for D2 (the multiplier's operands
        # come straight from flip-flops: timing).
        multiplier = Signal(unsigned(MULTIPLIER_BITS))
        shift = Signal(unsigned(SHIFT_BITS))
        m.d.sync += [d2.eq(d1r), d2_sum.eq(d1r_acc + d1r_bias), d2_column.eq(d1r_column),
                     multiplier.eq(_switch(m, d1r.layer, multipliers, unsigned(MULTIPLIER_BITS),
                                           "layer_multiplier")),
                     shift.eq(_switch(m, d1r.layer, shifts, unsigned(SHIFT_BITS), "layer_shift"))]

        # -- D2: the multipliers' operands registered again, in registers that drive nothing
        # else: on an ECP5 the hard multipliers' own input registers (_RegisteredProduct;
        # timing: the routing from shared registers to a hard multiplier took 3 ns) -----------
        product_bits = acc_bits + 1 + MULTIPLIER_BITS + 1
        low_bits = 17
        # The sum sign-extended to at least low_bits + 1 bits, so that the high part always
        # carries the sign: a sum of low_bits bits or fewer split as if it were wider would
        # take a negative sum's low part as unsigned (issue 20).
        wide_sum = d2_sum.as_signed() if acc_bits + 1 > low_bits else \
            Cat(d2_sum, d2_sum[-1].replicate(low_bits + 1 - (acc_bits + 1))).as_signed()
        high_part_bits = len(wide_sum) - low_bits
        d2m = Signal(d_layout)
        d2m_sum = Signal(signed(acc_bits + 1))
        d2m_column = Signal(plan.column_bits)
        d2m_shift = Signal(unsigned(SHIFT_BITS))
        high_part = wide_sum[low_bits:].as_signed()
        # The operands' registers are the multipliers' own where the device has them.
        m.submodules.requant_low = low = _RegisteredProduct(unsigned(low_bits),
                                                            unsigned(MULTIPLIER_BITS))
        m.submodules.requant_high = high = _RegisteredProduct(signed(high_part_bits),
                                                              unsigned(MULTIPLIER_BITS))
        m.d.comb += [low.a.eq(wide_sum[:low_bits].as_unsigned()), low.b.eq(multiplier),
                     high.a.eq(high_part), high.b.eq(multiplier)]
        m.d.sync += [d2m.eq(d2), d2m_sum.eq(d2_sum), d2m_column.eq(d2_column),
                     d2m_shift.eq(shift)]

        # -- D2M: requantization multiply (A6), as two partial products, each one hard
        # multiplier (the sum's low 17 bits unsigned, its high bits signed), combined in D2T: a
        # multiplier and a carry chain in one clock would not meet the clock rate. Each
        # product is registered twice (D2S, D2T), the first register driving nothing else (on
        # an ECP5 the hard multiplier's own output register; timing: 4.9 ns of routing from a
        # hard multiplier to a shared adder). The rounding term is made in D2T from the registered shift, so
        # that D3 .. D5 each hold one carry chain or one shifter ------------------------------
        d2s = Signal(d_layout)
        d2s_low = Signal(unsigned(low_bits + MULTIPLIER_BITS))
        d2s_high = Signal(signed(high_part_bits + MULTIPLIER_BITS + 1))
        d2s_sum = Signal(signed(acc_bits + 1))
        d2s_column = Signal(plan.column_bits)
        d2s_shift = Signal(unsigned(SHIFT_BITS))
        m.d.comb += [d2s_low.eq(low.p), d2s_high.eq(high.p)]
        m.d.sync += [d2s.eq(d2m), d2s_sum.eq(d2m_sum), d2s_column.eq(d2m_column),
                     d2s_shift.eq(d2m_shift)]
        d2t = Signal(d_layout)
        d2t_low = Signal.like(d2s_low)
        d2t_high = Signal.like(d2s_high)
        d2t_sum = Signal(signed(acc_bits + 1))
        d2t_column = Signal(plan.column_bits)
        d2t_shift = Signal(unsigned(SHIFT_BITS))
        m.d.sync += [d2t.eq(d2s), d2t_low.eq(d2s_low), d2t_high.eq(d2s_high),
                     d2t_sum.eq(d2s_sum), d2t_column.eq(d2s_column), d2t_shift.eq(d2s_shift)]

        # -- D2T: the product (A6) ----------------------------------------------------------
        d3 = Signal(d_layout)
        d3_product = Signal(signed(product_bits))
        d3_sum = Signal(signed(acc_bits + 1))
        d3_column = Signal(plan.column_bits)
        d3_shift = Signal(unsigned(SHIFT_BITS))
        # 2**(shift-1) (0 for shift 0) on product_bits + 1 bits; exact for shift <= product_bits,
        # and a larger shift gives 0 whatever the product (|product| < 2**(product_bits-1)).
        d3_rounding = Signal(unsigned(product_bits + 1))
        d3_beyond = Signal()
        m.d.sync += [d3.eq(d2t), d3_product.eq((d2t_high << low_bits) + d2t_low),
                     d3_sum.eq(d2t_sum), d3_column.eq(d2t_column), d3_shift.eq(d2t_shift),
                     d3_rounding.eq((Const(1, product_bits + 2) << d2t_shift)[1:]),
                     d3_beyond.eq(d2t_shift > product_bits)]

        # -- D3: add the rounding term (A6) ----------------------------------------------------
        d4 = Signal(d_layout)
        d4_rounded = Signal(signed(product_bits + 1))
        d4_sum = Signal(signed(acc_bits + 1))
        d4_column = Signal(plan.column_bits)
        d4_shift = Signal(unsigned(SHIFT_BITS))
        d4_beyond = Signal()
        m.d.sync += [d4.eq(d3), d4_rounded.eq(d3_product + d3_rounding), d4_sum.eq(d3_sum),
                     d4_column.eq(d3_column), d4_shift.eq(d3_shift), d4_beyond.eq(d3_beyond)]

        # -- D4, D4S: the arithmetic right shift (A6), by the shift's low three bits, then by
        # its high bits (eight at a time): one shifter of three levels per clock (timing) ---
        d4s = Signal(d_layout)
        d4s_partial = Signal(signed(product_bits + 1))
        d4s_high = Signal(SHIFT_BITS - 3)
        d4s_beyond = Signal()
        d4s_sum = Signal(signed(acc_bits + 1))
        d4s_column = Signal(plan.column_bits)
        m.d.sync += [d4s.eq(d4), d4s_partial.eq(d4_rounded >> d4_shift[:3]),
                     d4s_high.eq(d4_shift[3:]), d4s_beyond.eq(d4_beyond),
                     d4s_sum.eq(d4_sum), d4s_column.eq(d4_column)]
        d5 = Signal(d_layout)
        d5_shifted = Signal(signed(product_bits + 1))
        d5_sum = Signal(signed(acc_bits + 1))
        d5_column = Signal(plan.column_bits)
        m.d.sync += [d5.eq(d4s),
                     d5_shifted.eq(Mux(d4s_beyond, 0, d4s_partial >> Cat(Const(0, 3), d4s_high))),
                     d5_sum.eq(d4s_sum), d5_column.eq(d4s_column)]

        # -- D5: ReLU and clamp (A7), or the logit (A8) ----------------------------------------
        hidden = Signal(value_shape)
        logit = Signal(lay.logit)
        with m.Switch(d5.layer):
            for i, layer in enumerate(layers):
                with m.Case(i):
                    if layer.logits:
                        m.d.comb += logit.eq(Mux(d5_sum < 0, 0, d5_sum) if layer.relu
                                             else d5_sum)
                    else:
                        lo, hi = activation_range(layer.output_bits, layer.output_signed)
                        t = Mux(d5_shifted < 0, 0, d5_shifted) if layer.relu else d5_shifted
                        m.d.comb += hidden.eq(Mux(t < lo, lo, Mux(t > hi, hi, t)))
        d6 = Signal(d_layout)
        d6_value = Signal(value_shape)
        d6_logit = Signal(lay.logit)
        d6_column = Signal(plan.column_bits)
        m.d.sync += [d6.eq(d5), d6_value.eq(hidden), d6_logit.eq(logit),
                     d6_column.eq(d5_column)]

        # -- D6: the entry to append, registered; D7: append it (the lists' write logic, their
        # levels' carry chains, then starts from flip-flops: timing) ---------------------------
        last_layer = d6.layer == n_layers - 1
        entry = Signal(lay.source)
        m.d.comb += [
            entry.present.eq(~d6.end), entry.end.eq(d6.end),
            entry.item.column.eq(Mux(d6.end, 0, d6_column)),
            entry.item.value.eq(Mux(d6.end, 0, d6_value)),
            entry.item.layer.eq(d6.layer + 1), entry.item.bank.eq(d6.bank),
        ]
        push = Signal()
        push_logit = Signal()
        dropped = Signal()
        appended = Signal(lay.source)
        appended_logit = Signal(lay.logit)
        m.d.sync += [
            push.eq(d6.valid & ~last_layer & (d6.end | (d6_value != 0))),
            dropped.eq(d6.valid & ~last_layer & ~d6.end & (d6_value == 0)),
            push_logit.eq(d6.valid & last_layer),
            appended.eq(entry), appended_logit.eq(d6_logit),
        ]
        m.d.comb += [
            out_list.w_data.eq(appended), out_list.w_en.eq(push),
            logit_list.w_data.eq(appended_logit), logit_list.w_en.eq(push_logit),
        ]
        with m.If(push):                    # all zero otherwise: no stale (or X) fields
            m.d.comb += [
                self.trace.valid.eq(1), self.trace.end.eq(appended.end),
                self.trace.layer.eq(appended.item.layer - 1),       # the layer that made it
                self.trace.bank.eq(appended.item.bank),
                self.trace.column.eq(appended.item.column),
                self.trace.value.eq(appended.item.value),
            ]
        # A pop frees its credit a clock later: ``ready`` comes from far away, and then only
        # reaches a register here rather than the credit's adder (timing).
        popped = Signal()
        popped_logit = Signal()
        m.d.sync += [popped.eq(self.o.valid & self.o.ready),
                     popped_logit.eq(self.logits.valid & self.logits.ready)]
        credit_next = Signal.like(credit)
        logit_credit_next = Signal.like(logit_credit)
        m.d.comb += [
            credit_next.eq(credit - (issue_row & ~is_last | issue_end) + popped + dropped),
            logit_credit_next.eq(logit_credit - (issue_row & is_last) + popped_logit),
        ]
        m.d.sync += [credit.eq(credit_next), has_credit.eq(credit_next != 0),
                     logit_credit.eq(logit_credit_next),
                     has_logit_credit.eq(logit_credit_next != 0)]
        m.d.comb += [
            self.o.valid.eq(out_list.r_rdy), self.o.payload.eq(out_list.r_data),
            out_list.r_en.eq(self.o.ready),
            self.logits.valid.eq(logit_list.r_rdy), self.logits.payload.eq(logit_list.r_data),
            logit_list.r_en.eq(self.logits.ready),
        ]
        return m
