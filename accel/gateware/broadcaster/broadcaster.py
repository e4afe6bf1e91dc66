"""The broadcaster: nonzero activations to the PEs' queues, and the fences between contexts
(``docs/accelerator.md``): its intake, issue and commit composed."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out, connect

from accel.gateware.broadcaster.commit import GroupCommit
from accel.gateware.broadcaster.intake import ListIntake
from accel.gateware.broadcaster.issue import GroupIssue
from accel.gateware.layouts import layouts
from accel.gateware.primitives import _check_plan
from accel.planning.plan import EnginePlan

__all__ = ["Broadcaster"]


class Broadcaster(wiring.Component):
    """Hands nonzero activations to the PEs that hold weights in their columns (EIE's broadcast).

    Parameters
    ----------
    plan : EnginePlan

    Attributes
    ----------
    inputs : In(stream.Signature(source)).array(input_lanes)
        The loader's lists (first layer; images tagged with their bank).
    lists : In(stream.Signature(source)).array(n_pes)
        The PEs' output lists (later layers).
    o : Out(stream.Signature(group)).array(n_pes)
        One group per clock to each PE that has work in it: up to ``lanes`` activations (the
        ``valid`` bits are already masked by the PE's column mask bits) or a fence. A group is
        committed to all its PEs in the same clock, when all of them are ready.
    release : In(1), release_bank : In(bank_bits)
        Strobe: the image in ``release_bank`` has left the engine; its bank may take the next
        image's inputs.
    write : In(bus)
        The write port (column masks).

    Behaviour: an entry of a list is taken only if its context is open: a first-layer entry of
    bank ``b`` after that bank's last image left; a later-layer entry at once. Once every input
    lane has delivered its end mark of bank ``b``, or every PE list its end mark of a later
    (layer, bank), a fence for that context is sent to all PEs before any later group.

    The stages: :class:`ListIntake` (every list's head buffered, one entry per clock from each
    cluster of lists), :class:`GroupIssue` (a group of up to ``lanes`` entries, or a fence, per
    clock; which lists closed which context), :class:`GroupCommit` (column masks read; the
    group committed to its PEs).

    Latency and throughput: up to ``lanes`` entries per group, and with every PE ready 7 groups
    every 9 clocks (:class:`GroupCommit`'s room; each of the ``2 * lanes`` clusters of lists
    moves one entry per clock); an entry reaches the PEs about nine clocks after it leaves its
    list (the list's skid buffer, the cluster's, the group register, column masks read and
    registered, through a 7-deep group queue that keeps the PEs' ready off the lists' timing
    paths, out of a register). A list's ``ready`` is a flip-flop. The PEs' ``ready`` is
    registered here before the commit tests it; a group committed reaches its PEs, ``valid``,
    in the next clock.
    """

    def __init__(self, plan: EnginePlan):
        _check_plan(self, plan)
        self._plan = plan
        lay = layouts(plan)
        super().__init__({
            "inputs": In(stream.Signature(lay.source)).array(plan.input_lanes),
            "lists": In(stream.Signature(lay.source)).array(plan.n_pes),
            "o": Out(stream.Signature(lay.group)).array(plan.n_pes),
            "release": In(1),
            "release_bank": In(plan.bank_bits),
            "write": In(lay.bus),
        })

    def elaborate(self, platform):
        plan = self._plan
        m = Module()
        m.submodules.intake = intake = ListIntake(plan)
        m.submodules.issue = issue = GroupIssue(plan)
        m.submodules.commit = commit = GroupCommit(plan)
        for src, dst in zip(self.lists, intake.lists):
            connect(m, wiring.flipped(src), dst)
        for src, dst in zip(self.inputs, intake.inputs):
            connect(m, wiring.flipped(src), dst)
        for src, dst in zip(intake.o, issue.i):
            connect(m, src, dst)
        for src, dst in zip(commit.o, self.o):
            connect(m, src, wiring.flipped(dst))
        m.d.comb += [
            intake.release.eq(self.release), intake.release_bank.eq(self.release_bank),
            issue.release.eq(self.release), issue.release_bank.eq(self.release_bank),
            issue.room.eq(commit.room),
            commit.i.eq(issue.o),
            commit.write.eq(self.write),
        ]
        return m
