"""Run the engine in Amaranth's own simulator (pure Python, no Verilog tools needed).

Slower than the cocotb/Icarus co-simulation (:mod:`accel.verification.cosim`) but needs nothing outside
PyPI, so the main job and the fast unit tests use it. The testbench streams input beats with
optional random idle cycles, takes logits with optional random backpressure, and records every
hidden activation the PEs emit on the trace bus.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.sim import Simulator

from accel.gateware.engine import Engine
from accel.planning.plan import EnginePlan
from accel.verification import budget

__all__ = ["EngineRun", "run_engine"]


@dataclass
class EngineRun:
    """What :func:`run_engine` observed.

    Attributes
    ----------
    logits : numpy.ndarray
        int64 ``(n, out_features)``.
    hidden : list of numpy.ndarray
        Per hidden layer, int64 ``(n, out_features)`` rebuilt from the trace bus.
    cycles : int
        Clocks from the first input beat accepted to the last logit accepted.
    busy_cycles : int
        The engine's own ``cycles`` counter at the end.
    latency : list of int
        Per image, clocks from its first beat accepted to its last logit accepted.
    """

    logits: np.ndarray
    hidden: list = field(default_factory=list)
    cycles: int = 0
    busy_cycles: int = 0
    latency: list = field(default_factory=list)


class _Clocked(Elaboratable):
    """The engine beside a free-running count of clocks, which the testbench samples at the
    clock edge it observes. A count kept by a process of its own would be read before or after
    its increment depending on the order in which the simulator wakes processes at the same
    edge, which changes from run to run."""

    def __init__(self, engine):
        self.engine = engine
        self.clock = Signal(64)

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = self.engine
        m.d.sync += self.clock.eq(self.clock + 1)
        return m


def run_engine(plan: EnginePlan, x, *, idle: float = 0.0, backpressure: float = 0.0,
               seed: int = 0, writes=(), reloads=None, max_cycles: int | None = None,
               vcd: str | None = None) -> EngineRun:
    """Stream integer inputs ``x`` ``(n, in_features)`` through ``Engine(plan)``.

    Parameters
    ----------
    idle, backpressure : float
        Probability, each clock, of withholding an input beat / refusing a logit (0 .. <1).
    writes : sequence of (int, int)
        Words to send through the write port before the first image
        (:meth:`EnginePlan.write_image`).
    reloads : dict of int to sequence of (int, int), optional
        Mid-stream reloads: ``reloads[k]`` are words written through the write port before
        image ``k``'s first beat, once every logit of the images before it has been taken and
        the engine is idle (``busy`` low). Image ``k`` and later ones then run the reloaded
        model (the contract shared with :func:`accel.verification.batch_sim.run_engine`).
    max_cycles : int, optional
        Give up (RuntimeError) after this many clocks; default from the input size.
    vcd : str, optional
        Write a waveform file here.
    """
    for name, value in [("idle", idle), ("backpressure", backpressure)]:
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), not {value!r}")
    beats = plan.encode_inputs(x)
    n = len(np.asarray(x))
    reloads = {int(k): list(words) for k, words in dict(reloads or {}).items()}
    for k in reloads:
        if not 0 <= k < max(n, 1):
            raise ValueError(f"reloads must be keyed by image indices 0..{n - 1}, not {k!r}")
    if max_cycles is None:
        max_cycles = budget.max_cycles(
            plan, n, idle=idle, backpressure=backpressure, reloads=len(reloads),
            reload_words=sum(len(words) for words in reloads.values()))
    engine = Engine(plan)
    top = _Clocked(engine)
    rng = random.Random(seed)
    logits: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    hidden_parts: dict[tuple[int, int], dict] = {}
    completed: dict[int, list[dict]] = {i: [] for i in range(plan.n_layers - 1)}
    ends_seen: dict[tuple[int, int], int] = {}
    state = {"clock": 0, "first": None, "last": None, "busy": 0}

    async def write_words(ctx, words):
        for address, data in words:
            ctx.set(engine.write.valid, 1)
            ctx.set(engine.write.payload.addr, address)
            ctx.set(engine.write.payload.data, data)
            await ctx.tick().until(engine.write.ready)
        ctx.set(engine.write.valid, 0)

    async def writer_and_driver(ctx):
        await write_words(ctx, writes)
        for index, word in enumerate(beats):
            image, first_beat = divmod(index, plan.beats_per_image)
            if first_beat == 0 and image in reloads:
                # Every logit of the images before this one taken and the engine idle.
                while len(logits) < image * plan.out_features or ctx.get(engine.busy):
                    await ctx.tick()
                await write_words(ctx, reloads[image])
            while idle and rng.random() < idle:
                await ctx.tick()
            ctx.set(engine.i.valid, 1)
            ctx.set(engine.i.payload, word)
            clock, = await ctx.tick().sample(top.clock).until(engine.i.ready)
            if index % plan.beats_per_image == 0:
                starts.append(clock)
                if state["first"] is None:
                    state["first"] = clock
            ctx.set(engine.i.valid, 0)

    async def monitor(ctx):
        trace_bits = plan.trace_bits * plan.n_pes
        async for clk_edge, rst, o_valid, o_ready, o_payload, trace, cycles, clock in \
                ctx.tick().sample(engine.o.valid, engine.o.ready, engine.o.payload, engine.trace,
                                  engine.cycles, top.clock):
            state["clock"] = clock
            if o_valid and o_ready:
                logits.append(plan.decode_logit(o_payload))
                if len(logits) % plan.out_features == 0:
                    ends.append(clock)
                    state["last"] = clock
            state["busy"] = cycles
            if trace and trace_bits:
                for record in plan.decode_trace(trace):
                    if not record.valid:
                        continue
                    key = (record.layer, record.bank)
                    if record.end:
                        ends_seen[key] = ends_seen.get(key, 0) + 1
                        if ends_seen[key] == plan.n_pes:
                            ends_seen[key] = 0
                            completed[record.layer].append(
                                (record.bank, hidden_parts.pop(key, {})))
                    else:
                        hidden_parts.setdefault(key, {})[record.column] = record.value
            ready = not (backpressure and rng.random() < backpressure)
            ctx.set(engine.o.ready, ready)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(writer_and_driver)
    sim.add_process(monitor)

    async def watchdog(ctx):
        while len(logits) < n * plan.out_features:
            await ctx.tick()
            if state["clock"] > max_cycles:
                raise RuntimeError(
                    f"engine produced {len(logits)} of {n * plan.out_features} logits in "
                    f"{max_cycles} clocks")
        await ctx.tick().repeat(2)

    sim.add_testbench(watchdog)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()

    out = np.array(logits, dtype=np.int64).reshape(n, plan.out_features)
    hidden = []
    for layer in range(plan.n_layers - 1):
        size = plan.layers[layer].output_columns
        # The k-th completed context of bank b belongs to the k-th image with that bank.
        order = {b: list(range(b, n, plan.banks)) for b in range(plan.banks)}
        rows = np.zeros((n, size), dtype=np.int64)
        used = dict.fromkeys(order, 0)
        for bank, values in completed[layer]:
            image = order[bank][used[bank]]
            used[bank] += 1
            for column, value in values.items():
                rows[image, column] = value
        hidden.append(plan.layers[layer].flat_output(rows))
    cycles = (state["last"] - state["first"]) if n else 0
    return EngineRun(logits=out, hidden=hidden, cycles=cycles, busy_cycles=int(state["busy"]),
                     latency=[e - s for s, e in zip(starts, ends)])
