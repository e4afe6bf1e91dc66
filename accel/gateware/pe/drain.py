"""The PE's drain sequencer: commands in, one accumulator row per clock read, cleared and sent
to the requantizer with its bias and row id (D0 .. D1C), within the lists' credits."""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from accel.gateware.layouts import layouts
from accel.gateware.pe.accumulate import ReadClearSignature
from accel.gateware.pe.lists import CreditSignature, list_depths
from accel.gateware.pe.stages import drained_layout, pe_widths, requant_input_layout
from accel.gateware.primitives import (_check_plan, _memory, _read_port, _registered,
                                       _switch)
from accel.planning.plan import EnginePlan

__all__ = ["DrainSequencer"]


class DrainSequencer(wiring.Component):
    """Drain a complete context: each of this PE's rows of the layer, then an end mark.

    Parameters
    ----------
    plan : EnginePlan
    pe : int
        The PE whose rows (their count per layer, biases and row ids) this stage drains.

    Attributes
    ----------
    i : In(stream.Signature(context))
        Commands: drain accumulator bank ``bank`` of layer ``layer``. ``ready`` is registered
        and the sequencer registers it again: it promises room for commands that arrive
        (``valid``) up to three clocks later, which are always taken (registered as they arrive,
        then queued, ``2 * n_layers + 5`` deep).
    acc : Out(ReadClearSignature(plan))
        The accumulator memories' read-and-clear port.
    o : Out(requant_input_layout(plan))
        Each row (``o.stage.valid``): its sum, bias and row id; then the context's end mark (a
        hidden layer's only: the last layer's logits need none).
    freed : In(CreditSignature())
        Places freed in the PE's lists.
    write : In(bus)
        The PE's copy of the write bus (bias and row id memories).

    Latency and throughput: a command is loaded 2 clocks after it arrives (registered, then
    queued), its first row issued in the next clock (D0) and in ``o`` 4 clocks after its issue
    (D1: memories read; D1B: each layer's words and the row's sum out of their memories'
    registers; D1C: the layer's words and the sum chosen, registered; D1R: the row
    registered): 7 clocks from a command to its
    first row in an idle sequencer. One
    row per clock while the destination list has a place for it (a credit), then the end mark
    in the clock after the last row; a context with no rows here is its end mark alone.
    """

    def __init__(self, plan: EnginePlan, pe: int):
        _check_plan(self, plan)
        self._plan, self._pe = plan, pe
        lay = layouts(plan)
        super().__init__({
            "i": In(stream.Signature(lay.context)),
            "acc": Out(ReadClearSignature(plan)),
            "o": Out(requant_input_layout(plan)),
            "freed": In(CreditSignature()),
            "write": In(lay.bus),
        })

    def elaborate(self, platform):
        plan, lay, p = self._plan, layouts(self._plan), self._pe
        layers, w = plan.layers, pe_widths(self._plan)
        m = Module()
        biases = [_read_port(m, _memory(m, f"bias{i}", plan, None, "bias", i, p,
                                        signed(layer.accumulator_bits), platform,
                                        strobe_from=self.write), f"bias{i}")
                  for i, layer in enumerate(layers)]
        row_ids = [None if layer.logits else
                   _read_port(m, _memory(m, f"row_ids{i}", plan, None, "row_ids", i, p,
                                         unsigned(layer.row_id_bits), platform,
                                         strobe_from=self.write), f"row_ids{i}")
                   for i, layer in enumerate(layers)]

        # -- commands --------------------------------------------------------------------------
        m.submodules.commands = commands = SyncFIFO(width=lay.context.size,
                                                    depth=2 * plan.n_layers + 5)
        # A command is registered as it arrives (the sequencer is far away: timing). Each
        # register's enable includes this PE's own ``valid`` register, so the PEs' copies
        # differ and synthesis cannot merge them.
        arrived = Signal()
        arrived_context = Signal(lay.context)
        with m.If(self.i.valid | arrived):
            m.d.sync += [arrived.eq(self.i.valid), arrived_context.eq(self.i.payload)]
        # ``ready`` is registered; the sequencer registers it again, and its command, which
        # is registered here before it is queued: room for the writes of the five clocks from
        # the one whose level this is.
        room = Signal()
        m.d.sync += room.eq(commands.level + 5 <= commands.depth)
        m.d.comb += [
            commands.w_data.eq(arrived_context), commands.w_en.eq(arrived),
            self.i.ready.eq(room),
        ]
        # The command being drained, registered off the queue (timing): one clock to load it.
        command = lay.context(commands.r_data)
        current = Signal(lay.context)
        current_valid = Signal()
        current_rows = Signal(w.row_bits)
        is_last = Signal()
        k = Signal(w.row_bits)
        # k has reached the context's row count: registered with k, so that the drain's issue
        # starts from flip-flops (timing).
        k_at_end = Signal()
        load = commands.r_rdy & ~current_valid
        m.d.comb += commands.r_en.eq(load)
        with m.If(load):
            m.d.sync += [
                current.eq(command), current_valid.eq(1),
                current_rows.eq(_switch(m, command.layer, [layer.image.rows(p) for layer in layers],
                                        unsigned(w.row_bits), "rows_here")),
                is_last.eq(command.layer == plan.n_layers - 1),
                k_at_end.eq(_switch(m, command.layer,
                                    [int(layer.image.rows(p) == 0) for layer in layers], 1,
                                    "no_rows_here")),
            ]

        # -- D0: issue one row per clock while the destination list has room ------------------
        window = self._window(m, current) if plan.has_conv else None
        issue_row, issue_end = self._credits(m, current_valid, k_at_end, is_last,
                                             None if window is None else window.first)
        drain_done = Signal()
        m.d.comb += drain_done.eq(issue_end | current_valid & k_at_end & is_last)
        # ``row_done``: the issue of a local row's last accumulator.
        row_done = issue_row if window is None else issue_row & window.row_last
        with m.If(drain_done):
            m.d.sync += [k.eq(0), current_valid.eq(0)]
        with m.Elif(row_done):
            m.d.sync += [k.eq(k + 1), k_at_end.eq(k + 1 == current_rows)]
        if window is None:
            m.d.comb += [self.acc.row.eq(k),
                         self.acc.row_next.eq(Mux(drain_done, 0, Mux(issue_row, k + 1, k)))]
        else:
            self._walk(m, window, current, k, issue_row, drain_done)
        m.d.comb += [
            self.acc.start.eq(load), self.acc.context.eq(command), self.acc.done.eq(drain_done),
            self.acc.clear.eq(issue_row),
        ]
        # Each layer's bias and row id memories read row k from an address register of their
        # own, a copy of k counted only while the layer is drained (timing: k itself reached
        # every LUT RAM cell of every layer's two memories, and the PE's other logic).
        for i, ports in enumerate(zip(biases, row_ids)):
            address = Signal(w.row_bits, name=f"drain_address{i}")
            with m.If(drain_done):
                m.d.sync += address.eq(0)
            with m.Elif(row_done & (current.layer == i)):
                m.d.sync += address.eq(address + 1)
            for port in ports:
                if port is not None:
                    m.d.comb += port.addr.eq(address[:len(port.addr)])
        d_layout = drained_layout(plan)
        d1 = Signal(d_layout)
        m.d.sync += [
            d1.valid.eq(issue_row | issue_end), d1.end.eq(issue_end), d1.layer.eq(current.layer),
            d1.bank.eq(current.bank), d1.row.eq(k),
        ]
        if window is not None:                  # the window's flags and the output's place
            d1_low = Signal.like(window.low)
            m.d.sync += [d1.first.eq(window.first), d1.last.eq(window.last),
                         d1.average.eq(window.average), d1_low.eq(window.low)]

        # -- D1: each layer's bias and row id registered as they leave their memories (block
        # RAM read data is slow: timing); the row's accumulator read (no MAC runs on a context
        # being drained) --------------------------------------------------------------------------
        bias_words = _registered(m, biases, "bias_word")
        row_id_words = _registered(m, row_ids, "row_id_word")
        d1b = Signal(d_layout)
        m.d.sync += d1b.eq(d1)

        # -- D1B: the layer's bias and row id chosen; the row's sum, from flip-flops (it leaves
        # the accumulator memory through a register of its own: timing); all registered -------
        d1c = Signal(d_layout)
        d1c_sum = Signal(signed(w.acc_bits))
        d1c_bias = Signal(signed(w.acc_bits))
        d1c_row_id = Signal(unsigned(plan.column_bits))
        m.d.comb += [self.acc.sum_context.layer.eq(d1b.layer),
                     self.acc.sum_context.bank.eq(d1b.bank)]
        m.d.sync += [
            d1c.eq(d1b), d1c_sum.eq(self.acc.sum),
            d1c_bias.eq(_switch(m, d1b.layer, bias_words, signed(w.acc_bits), "bias")),
            d1c_row_id.eq(_switch(m, d1b.layer,
                                  [0 if word is None else word for word in row_id_words],
                                  unsigned(plan.column_bits), "row_id")),
        ]
        if window is not None:
            d1b_low, d1c_low = Signal.like(d1_low), Signal.like(d1_low)
            m.d.sync += [d1b_low.eq(d1_low), d1c_low.eq(d1b_low)]

        # -- D1C: the row, registered (D1R) ---------------------------------------------------
        if window is None:
            m.d.sync += [self.o.stage.eq(d1c), self.o.bias.eq(d1c_bias),
                         self.o.column.eq(d1c_row_id), self.o.sum.eq(d1c_sum)]
            return m
        # A max-pooled window's sums: their running maximum; its last goes on, as the
        # window's maximum (A13: the bias and the requantization after it keep the order). An
        # average-pooled window's four go on to be requantized each (``AveragePool``).
        running = Signal(signed(w.acc_bits))
        pooled = Mux(d1c.first | d1c.average, d1c_sum,
                     Mux(d1c_sum > running, d1c_sum, running))
        with m.If(d1c.valid & ~d1c.end):
            m.d.sync += running.eq(pooled)
        m.d.sync += [
            self.o.stage.eq(d1c),
            self.o.stage.valid.eq(d1c.valid & (d1c.end | d1c.last | d1c.average)),
            self.o.bias.eq(d1c_bias), self.o.column.eq(d1c_row_id | d1c_low),
            self.o.sum.eq(pooled),
        ]
        return m

    def _window(self, m, current):
        """The drain's walk over a convolution's output map: the per-layer constants of the
        layer being drained, and the walk's state (a Linear layer's map is one position)."""
        plan, w = self._plan, pe_widths(self._plan)
        constants = []
        for layer in plan.layers:
            conv = layer.conv
            if conv is None:
                constants.append(dict(window_last=0, x_last=0, y_last=0, step_x=0, step_y=0,
                                      offsets=[0, 0, 0, 0], average=0))
                continue
            g = conv.geometry
            pooled = g.pool is not None
            wc = g.conv_width
            constants.append(dict(
                window_last=3 if pooled else 0, x_last=g.out_width - 1, y_last=g.out_height - 1,
                step_x=2 if pooled else 1, step_y=(2 if pooled else 1) * wc,
                # from each window position to the next: (0, 0) (0, 1) (1, 0) (1, 1)
                offsets=[1, wc - 1, 1, 0] if pooled else [0, 0, 0, 0],
                average=int(g.pool == "avg")))
        y_width = max([1] + [layer.conv.outputs.y_bits for layer in plan.layers
                             if layer.conv is not None])
        x_width = max([1] + [layer.conv.outputs.x_bits for layer in plan.layers
                             if layer.conv is not None])

        def const(key, shape):
            return _switch(m, current.layer, [c[key] for c in constants], shape, f"drain_{key}")

        pos = unsigned(max(1, w.position_bits))
        state = SimpleNamespace()
        state.index = Signal(2)
        state.x, state.y = Signal(x_width), Signal(y_width)
        state.position = Signal(pos)            # the accumulator being issued
        state.base = Signal(pos)                # its window's first
        state.row_start = Signal(pos)           # its output row's first window's first
        state.window_last = const("window_last", unsigned(2))
        state.x_last = const("x_last", unsigned(x_width))
        state.y_last = const("y_last", unsigned(y_width))
        state.step_x = const("step_x", pos)
        state.step_y = const("step_y", pos)
        state.average = const("average", 1)
        state.first = Signal()
        state.last = Signal()
        state.row_last = Signal()
        offsets = [_switch(m, current.layer, [c["offsets"][j] for c in constants], pos,
                           f"drain_offset{j}") for j in range(4)]
        state.offset = _switch(m, state.index, offsets, pos, "drain_offset")
        m.d.comb += [
            state.first.eq(state.index == 0),
            state.last.eq(state.index == state.window_last),
            state.row_last.eq(state.last & (state.x == state.x_last)
                              & (state.y == state.y_last)),
        ]
        # The output's packed column below its channel: ``(Y << x_bits) | X``.
        low = [0 if layer.conv is None else
               Cat(state.x[:layer.conv.outputs.x_bits], state.y[:layer.conv.outputs.y_bits])
               for layer in plan.layers]
        state.low = Signal(plan.column_bits)
        m.d.comb += state.low.eq(_switch(m, current.layer, low, unsigned(plan.column_bits),
                                         "drain_low"))
        return state

    def _walk(self, m, window, current, k, issue_row, drain_done):
        """Step the map walk at each issue; drive the accumulator address and its next value
        (``(position << row_bits) | k`` for a convolution, ``k`` for a Linear layer)."""
        plan = self._plan
        position_next = Signal.like(window.position)
        base_next = Signal.like(window.base)
        row_start_next = Signal.like(window.row_start)
        k_next = Signal.like(k)
        index_next = Signal.like(window.index)
        x_next, y_next = Signal.like(window.x), Signal.like(window.y)
        m.d.comb += [position_next.eq(window.position), base_next.eq(window.base),
                     row_start_next.eq(window.row_start), k_next.eq(k),
                     index_next.eq(window.index), x_next.eq(window.x), y_next.eq(window.y)]
        with m.If(drain_done):
            m.d.comb += [position_next.eq(0), base_next.eq(0), row_start_next.eq(0),
                         k_next.eq(0), index_next.eq(0), x_next.eq(0), y_next.eq(0)]
        with m.Elif(issue_row):
            with m.If(~window.last):
                m.d.comb += [index_next.eq(window.index + 1),
                             position_next.eq(window.position + window.offset)]
            with m.Elif(window.x != window.x_last):
                m.d.comb += [index_next.eq(0), x_next.eq(window.x + 1),
                             base_next.eq(window.base + window.step_x),
                             position_next.eq(window.base + window.step_x)]
            with m.Elif(window.y != window.y_last):
                m.d.comb += [index_next.eq(0), x_next.eq(0), y_next.eq(window.y + 1),
                             row_start_next.eq(window.row_start + window.step_y),
                             base_next.eq(window.row_start + window.step_y),
                             position_next.eq(window.row_start + window.step_y)]
            with m.Else():
                m.d.comb += [index_next.eq(0), x_next.eq(0), y_next.eq(0), k_next.eq(k + 1),
                             row_start_next.eq(0), base_next.eq(0), position_next.eq(0)]
        m.d.sync += [window.position.eq(position_next), window.base.eq(base_next),
                     window.row_start.eq(row_start_next), window.index.eq(index_next),
                     window.x.eq(x_next), window.y.eq(y_next)]

        def address(position, row):
            choices = [row if layer.conv is None else
                       Cat(row[:layer.image.row_bits], position) for layer in plan.layers]
            return _switch(m, current.layer, choices, unsigned(len(self.acc.row)), "drain_addr")

        m.d.comb += [self.acc.row.eq(address(window.position, k)),
                     self.acc.row_next.eq(address(position_next, k_next))]

    def _credits(self, m, current_valid, k_at_end, is_last, needs_credit=None):
        """The places left in the destination lists; returns the strobes ``issue_row`` (D0
        issues row k) and ``issue_end`` (the context's end mark). ``needs_credit``: the
        issue opens an output (a pooling window's first; every issue when ``None``)."""
        list_depth, logit_depth = list_depths(self._plan)
        credit = Signal(range(list_depth + 1), init=list_depth)
        logit_credit = Signal(range(logit_depth + 1), init=logit_depth)
        # Whether a credit is left, registered with the credit (timing: the issue decides the
        # drain's next row and memory, on the way to the memories' read addresses).
        has_credit = Signal(init=list_depth != 0)
        has_logit_credit = Signal(init=logit_depth != 0)
        issue_row = Signal()
        issue_end = Signal()
        credited = Mux(is_last, has_logit_credit, has_credit)
        spends = issue_row
        if needs_credit is not None:
            credited = ~needs_credit | credited
            spends = issue_row & needs_credit
        m.d.comb += [
            issue_row.eq(current_valid & ~k_at_end & credited),
            issue_end.eq(current_valid & k_at_end & ~is_last & has_credit),
        ]
        freed = self.freed
        credit_next = Signal.like(credit)
        logit_credit_next = Signal.like(logit_credit)
        m.d.comb += [
            credit_next.eq(credit - (spends & ~is_last | issue_end) + freed.popped
                           + freed.dropped),
            logit_credit_next.eq(logit_credit - (spends & is_last) + freed.popped_logit),
        ]
        m.d.sync += [credit.eq(credit_next), has_credit.eq(credit_next != 0),
                     logit_credit.eq(logit_credit_next),
                     has_logit_credit.eq(logit_credit_next != 0)]
        return issue_row, issue_end
