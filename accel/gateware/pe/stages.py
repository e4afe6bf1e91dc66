"""The payloads that pass between the processing element's stages (``docs/accelerator.md``)."""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from accel.planning.plan import EnginePlan, _bits

__all__ = ["column_layout", "drained_layout", "entry_layout", "pe_widths", "requant_input_layout",
           "requant_output_layout"]


class _Widths:
    """Widths shared by the stages of one plan's PEs: the widest layer's."""

    def __init__(self, plan: EnginePlan):
        layers = plan.layers
        self.pointer_bits = max(layer.image.pointer_bits for layer in layers)
        #: A local row, or the drain's row counter (one more bit: it counts to the row count).
        self.row_bits = max(layer.image.row_bits for layer in layers) + 1
        self.weight_bits = max(layer.weight_bits for layer in layers)
        self.acc_bits = max(layer.accumulator_bits for layer in layers)
        self.word_bits = max(layer.image.entry_bits for layer in layers)
        self.value_shape = signed(plan.value_bits)
        convs = [layer.conv for layer in layers if layer.conv is not None]
        #: A convolution's output position ``Y W_c + X`` (none in a plan of Linear layers).
        self.position_bits = max((_bits(conv.positions) for conv in convs), default=0)
        #: An accumulator address: ``(position << row_bits) | row``, or the drain's row counter.
        self.address_bits = max([self.row_bits] + [layer.address_bits for layer in layers])
        #: Whether the drain's rows carry pooling-window flags (plans with convolutions).
        self.window_bits = 1 if convs else 0


def pe_widths(plan: EnginePlan) -> _Widths:
    """``pointer_bits``, ``row_bits``, ``weight_bits``, ``acc_bits``, ``word_bits`` and
    ``value_shape`` of ``plan``'s PEs."""
    return _Widths(plan)


def _conv_fields(plan: EnginePlan) -> dict:
    """A convolution's output position, carried with columns and entries; no field at all in
    a plan of Linear layers (not even one of no bits, whose name would change the netlist
    that place and route sees)."""
    return {"position": unsigned(pe_widths(plan).position_bits)} if plan.has_conv else {}


def column_layout(plan: EnginePlan) -> data.StructLayout:
    """A queued column: its first entry and the offset of its last but one, or a fence.

    ``single``: the column has one entry (or is a fence); ``penultimate``: the offset of its
    last entry but one. The entry stage then knows a clock ahead whether its next entry is the
    column's last, and pops with one LUT from flip-flops (timing). A PE gets only columns where
    it has at least one entry.
    """
    w = pe_widths(plan)
    return data.StructLayout({
        "start": unsigned(w.pointer_bits), "penultimate": unsigned(w.pointer_bits),
        "single": 1, "value": w.value_shape, "layer": unsigned(plan.layer_bits),
        "bank": unsigned(plan.bank_bits), "fence": 1, **_conv_fields(plan),
    })


def entry_layout(plan: EnginePlan) -> data.StructLayout:
    """One entry in the MAC pipeline: its context, activation and decoded local row.

    ``first``: the column's first entry (its row counts from -1); a fence carries its context
    and nothing else. ``position``: a convolution's output position (its accumulator is
    word ``(position << row_bits) | row``).
    """
    w = pe_widths(plan)
    return data.StructLayout({"valid": 1, "fence": 1, "first": 1,
                              "layer": unsigned(plan.layer_bits),
                              "bank": unsigned(plan.bank_bits),
                              "value": w.value_shape, "row": unsigned(w.row_bits),
                              **_conv_fields(plan)})


def drained_layout(plan: EnginePlan) -> data.StructLayout:
    """One drained row (or a context's end mark) on its way through the requantizer.

    With convolutions, ``last``: the row's value is an output (a pooling window's last sum,
    or a sum that is not pooled), ``first``: it opens a window, ``average``: the window is
    average-pooled (:class:`~accel.gateware.pe.pool.AveragePool` sums its four requantized
    values); none of them in a plan of Linear layers.
    """
    w = pe_widths(plan)
    window = {"first": 1, "last": 1, "average": 1} if plan.has_conv else {}
    return data.StructLayout({"valid": 1, "end": 1, "layer": unsigned(plan.layer_bits),
                              "bank": unsigned(plan.bank_bits), "row": unsigned(w.row_bits),
                              **window})


def requant_input_layout(plan: EnginePlan) -> data.StructLayout:
    """A drained row as it enters the requantizer: the row's sum, its bias and its column in
    the next layer (its row id)."""
    w = pe_widths(plan)
    return data.StructLayout({"stage": drained_layout(plan), "sum": signed(w.acc_bits),
                              "bias": signed(w.acc_bits), "column": unsigned(plan.column_bits)})


def requant_output_layout(plan: EnginePlan) -> data.StructLayout:
    """A drained row as it leaves the requantizer: the next layer's activation (a hidden
    layer) or the logit (the last layer), and its column."""
    return data.StructLayout({"stage": drained_layout(plan), "value": pe_widths(plan).value_shape,
                              "logit": signed(plan.logit_bits),
                              "column": unsigned(plan.column_bits)})
