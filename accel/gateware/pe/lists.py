"""The PE's output lists: requantized rows appended (D6, D7), popped by the collector."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from accel.gateware.layouts import layouts
from accel.gateware.pe.stages import requant_output_layout
from accel.gateware.primitives import _RegisteredFIFO, _check_plan
from accel.planning.plan import EnginePlan

__all__ = ["CONV_LIST_DEPTH", "CreditSignature", "ResultLists", "list_depths"]


#: The shallowest hidden list of a plan with convolutions (:func:`list_depths`): more than the
#: clocks from a drain's issue to its output's credit coming back.
CONV_LIST_DEPTH = 32


def list_depths(plan: EnginePlan) -> tuple[int, int]:
    """Depths of a PE's list of hidden outputs and of its list of logits: a context's rows and
    its end mark (hidden), a context's rows (logits), and room for one more.

    With convolutions the hidden list is :data:`CONV_LIST_DEPTH` deep at least: a drain of a
    whole map issues an output a clock only while it has a credit, and a credit comes back
    (its output appended and taken, or dropped as zero) a pipeline's length later (a 3-PE
    case with 2 rows a PE drained at a quarter of a row a clock)."""
    layers = plan.layers
    hidden = max(2, max(layer.image.rows_per_pe for layer in layers) + 2)
    if plan.has_conv:
        hidden = max(hidden, CONV_LIST_DEPTH)
    return hidden, max(2, layers[-1].image.rows_per_pe + 1)


class CreditSignature(wiring.Signature):
    """Places freed in the lists, as the lists send them (strobes, each one place).

    Members
    -------
    popped : Out(1)
        An entry of the hidden list was taken (a clock ago).
    dropped : Out(1)
        A drained row was zero: it is not appended, and the place reserved for it is free.
    popped_logit : Out(1)
        A logit was taken (a clock ago).
    """

    def __init__(self):
        super().__init__({"popped": Out(1), "dropped": Out(1), "popped_logit": Out(1)})


class ResultLists(wiring.Component):
    """Append each requantized row to the PE's hidden list (nonzero ones) or logit list.

    The drain reserves a place for every row it issues (credits, :class:`CreditSignature`), so
    the lists never overflow and an append never waits.

    Parameters
    ----------
    plan : EnginePlan

    Attributes
    ----------
    i : In(requant_output_layout(plan))
        Rows from the requantizer, one per clock at most.
    o : Out(stream.Signature(source))
        Nonzero hidden outputs ``(row id, value)`` tagged with the next layer and the bank, and
        each context's end mark, 4 clocks after they arrive in an empty list (D6: registered;
        D7: appended; the list's read register and its head in flip-flops).
    logits : Out(stream.Signature(logit))
        The last layer's outputs, in local row order, 4 clocks after they arrive.
    trace : Out(trace)
        Every entry appended to ``o``, in the clock it is appended (for verification).
    freed : Out(CreditSignature())
        Places freed: an entry popped (a clock after the pop), a zero row dropped.
    """

    def __init__(self, plan: EnginePlan):
        _check_plan(self, plan)
        self._plan = plan
        lay = layouts(plan)
        super().__init__({
            "i": In(requant_output_layout(plan)),
            "o": Out(stream.Signature(lay.source)),
            "logits": Out(stream.Signature(lay.logit)),
            "trace": Out(lay.trace),
            "freed": Out(CreditSignature()),
        })

    def elaborate(self, platform):
        plan, lay = self._plan, layouts(self._plan)
        m = Module()
        list_depth, logit_depth = list_depths(plan)
        m.submodules.list = out_list = _RegisteredFIFO(width=lay.source.size, depth=list_depth)
        m.submodules.logit_list = logit_list = _RegisteredFIFO(width=lay.logit.width,
                                                                depth=logit_depth)
        d6 = self.i.stage

        # -- D6: the entry to append, registered; D7: append it (the lists' write logic, their
        # levels' carry chains, then starts from flip-flops: timing) ---------------------------
        last_layer = d6.layer == plan.n_layers - 1
        entry = Signal(lay.source)
        m.d.comb += [
            entry.present.eq(~d6.end), entry.end.eq(d6.end),
            entry.item.column.eq(Mux(d6.end, 0, self.i.column)),
            entry.item.value.eq(Mux(d6.end, 0, self.i.value)),
            entry.item.layer.eq(d6.layer + 1), entry.item.bank.eq(d6.bank),
        ]
        push = Signal()
        push_logit = Signal()
        appended = Signal(lay.source)
        appended_logit = Signal(lay.logit)
        m.d.sync += [
            push.eq(d6.valid & ~last_layer & (d6.end | (self.i.value != 0))),
            self.freed.dropped.eq(d6.valid & ~last_layer & ~d6.end & (self.i.value == 0)),
            push_logit.eq(d6.valid & last_layer),
            appended.eq(entry), appended_logit.eq(self.i.logit),
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
        # A pop frees its place a clock later: ``ready`` comes from far away, and then only
        # reaches a register here rather than the credit's adder (timing).
        m.d.sync += [self.freed.popped.eq(self.o.valid & self.o.ready),
                     self.freed.popped_logit.eq(self.logits.valid & self.logits.ready)]
        m.d.comb += [
            self.o.valid.eq(out_list.r_rdy), self.o.payload.eq(out_list.r_data),
            out_list.r_en.eq(self.o.ready),
            self.logits.valid.eq(logit_list.r_rdy), self.logits.payload.eq(logit_list.r_data),
            logit_list.r_en.eq(self.logits.ready),
        ]
        return m
