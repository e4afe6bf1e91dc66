"""The broadcaster (``Broadcaster``) and its stages: the lists' intake (``intake``), the group
issue with the context bookkeeping (``issue``) and the commit to the PEs (``commit``)."""

from accel.gateware.broadcaster.broadcaster import Broadcaster

__all__ = ["Broadcaster"]
