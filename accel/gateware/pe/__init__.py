"""The processing element (``ProcessingElement``) and its stages, one module each: the group
queue and pointer stage (``pointer``), the entry stage (``entry``), the multiply-accumulate
stage with the accumulator memories (``accumulate``), and the drain: its sequencer (``drain``),
the requantizer (``requantizer``) and the output lists (``lists``). ``stages`` holds the
payloads that pass between them."""

from accel.gateware.pe.element import ProcessingElement

__all__ = ["ProcessingElement"]
