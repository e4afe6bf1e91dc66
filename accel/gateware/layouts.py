"""The engine's shared stream payloads (:func:`layouts`) and the width of its cycle counter."""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from accel.planning.plan import EnginePlan

__all__ = ["CYCLE_COUNTER_BITS", "layouts"]


#: Width of the ``cycles`` status counter.
CYCLE_COUNTER_BITS = 48


class _Layouts:
    """The struct layouts of one plan's buses."""

    def __init__(self, plan: EnginePlan):
        self.item = data.StructLayout({
            "column": unsigned(plan.column_bits),
            "value": signed(plan.value_bits),
            "layer": unsigned(plan.layer_bits),       # the layer that consumes the value
            "bank": unsigned(plan.bank_bits),
        })
        self.source = data.StructLayout({"present": 1, "end": 1, "item": self.item})
        self.group = data.StructLayout({
            "valid": unsigned(plan.lanes),
            "items": data.ArrayLayout(self.item, plan.lanes),
            "fence": 1,
            "fence_layer": unsigned(plan.layer_bits),
            "fence_bank": unsigned(plan.bank_bits),
        })
        bank = unsigned(plan.bank_bits)
        self.context = data.StructLayout({"layer": unsigned(plan.layer_bits), "bank": bank})
        self.retire = data.StructLayout({"valid": 1, "layer": unsigned(plan.layer_bits),
                                         "bank": bank})
        self.trace = data.StructLayout({
            "valid": 1, "end": 1, "layer": unsigned(plan.layer_bits), "bank": bank,
            "column": unsigned(plan.column_bits), "value": signed(plan.value_bits),
        })
        self.write = data.StructLayout({"addr": unsigned(plan.address_bits),
                                        "data": unsigned(plan.data_bits)})
        self.bus = data.StructLayout({"en": 1, "addr": unsigned(plan.address_bits),
                                      "data": unsigned(plan.data_bits)})
        self.logit = signed(plan.logit_bits)
        assert self.trace.size == plan.trace_bits


def layouts(plan: EnginePlan) -> _Layouts:
    """The struct layouts (``item``, ``source``, ``group``, ``trace``, ``write``, ...) of ``plan``."""
    return _Layouts(plan)
