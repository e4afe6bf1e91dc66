"""The board side of the UART host link (``docs/host-link.md``): :class:`HostBridge` (its request
decoder, executor and response sequencer in ``request``, ``execute`` and ``response``) and
:class:`LinkedEngine`, the bridge wired to an engine (``bridge``)."""

from accel.gateware.link.bridge import HostBridge, LinkedEngine, buffer_shapes, meter_window

__all__ = ["HostBridge", "LinkedEngine", "buffer_shapes", "meter_window"]
