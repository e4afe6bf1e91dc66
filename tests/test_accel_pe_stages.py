"""The processing element's stages, each at its own ports, in Amaranth's simulator.

The PE is six components (``accel.gateware.pe``): pointer stage, entry stage, accumulate, drain
sequencer, requantizer and result lists. Each test drives one of them with seeded random
stimulus (idle clocks, backpressure where the stage has a ``ready``) and checks it against a
small Python model of its contract as its docstring states it: what comes out, in which order,
how many clocks after it went in (latency), and at what rate (throughput). A change to one
stage is then caught at that stage, not only by the whole-engine tests
(``tests/test_accel_engine.py``) and the fuzz.
"""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from accel.gateware.pe.accumulate import Accumulate
from accel.gateware.pe.drain import DrainSequencer
from accel.gateware.pe.entry import EntryStage
from accel.gateware.pe.lists import ResultLists, list_depths
from accel.gateware.pe.pointer import PointerStage
from accel.gateware.pe.requantizer import LATENCY, Requantizer
from accel.gateware.pe.stages import pe_widths
from accel.planning.plan import SHIFT_BITS, EnginePlan
from core.integer import MULTIPLIER_BITS, activation_range
from accel_models import random_model

#: Small plans: two and three layers, one and two lanes, short zero runs (padding entries),
#: narrow accumulators (the requantizer's sign extension), a PE with rows in every layer.
PLANS = {
    "2-layers": ([20, 12, 6], {"density": 0.4}, {"n_pes": 2}),
    "3-layers-1-lane": ([9, 30, 14, 5], {"density": 0.3},
                        {"n_pes": 3, "lanes": 1, "zero_run_bits": 1, "banks": 2}),
    "narrow": ([6, 5, 3], {"density": 0.6, "weight_bits": 4, "activation_bits": 3,
                           "index_bits": 2, "bias_bits": 3}, {"n_pes": 2, "banks": 4}),
    # LQ-Nets: per-row codebooks (A9) and threshold activations of 3 code bits (A10).
    "lq": ([10, 14, 9, 4], {"density": 0.5, "index_bits": 3, "per_row": True, "code_bits": 3},
           {"n_pes": 3}),
}


def _plan(name: str) -> EnginePlan:
    features, model_options, plan_options = PLANS[name]
    return EnginePlan.from_model(random_model(7, features, **model_options), **plan_options)


def _run(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _columns(plan: EnginePlan, pe: int, layer: int) -> dict[int, tuple[int, int]]:
    """``{column: (start, count)}`` of the PE's columns of ``layer`` with at least one entry."""
    bits = plan.layers[layer].image.pointer_bits
    columns = {}
    for column, word in enumerate(plan.init("pointers", layer, pe)):
        start, end = word & ((1 << bits) - 1), word >> bits
        if end > start:
            columns[column] = (start, end - start)
    return columns


def _layers_with_columns(plan: EnginePlan, pe: int) -> list[int]:
    return [i for i in range(plan.n_layers) if _columns(plan, pe, i)]


# -- pointer stage ------------------------------------------------------------------------------

def _random_groups(plan: EnginePlan, pe: int, rng: random.Random, count: int) -> list[dict]:
    layers = _layers_with_columns(plan, pe)
    lo, hi = -(1 << (plan.value_bits - 1)), (1 << (plan.value_bits - 1)) - 1
    groups = []
    for _ in range(count):
        if rng.random() < 0.15:
            groups.append({"valid": 0, "items": [{}] * plan.lanes, "fence": 1,
                           "fence_layer": rng.randrange(plan.n_layers),
                           "fence_bank": rng.randrange(plan.banks)})
            continue
        items, valid = [], 0
        for k in range(plan.lanes):
            layer = rng.choice(layers)
            items.append({"column": rng.choice(list(_columns(plan, pe, layer))),
                          "value": rng.randint(lo, hi), "layer": layer,
                          "bank": rng.randrange(plan.banks)})
            valid |= int(rng.random() < 0.7) << k
        groups.append({"valid": valid or 1, "items": items, "fence": 0, "fence_layer": 0,
                       "fence_bank": 0})
    return groups


def _expected_columns(plan: EnginePlan, pe: int, groups: list[dict]) -> list[tuple]:
    """The pointer stage's contract: each valid lane's column (lowest lane first), then the
    group's fence."""
    out = []
    for group in groups:
        for k in range(plan.lanes):
            if group["valid"] >> k & 1:
                item = group["items"][k]
                start, count = _columns(plan, pe, item["layer"])[item["column"]]
                bits = pe_widths(plan).pointer_bits
                out.append((0, start, (count - 2) % (1 << bits), int(count == 1), item["value"],
                            item["layer"], item["bank"]))
        if group["fence"]:
            out.append((1, 0, None, 1, 0, group["fence_layer"], group["fence_bank"]))
    return out


def _column_tuple(column) -> tuple:
    return (column.fence, column.start, column.penultimate if not column.fence else None,
            column.single, column.value, column.layer, column.bank)


@pytest.mark.parametrize("name", list(PLANS))
def test_pointer_stage_columns_in_order_under_idle_and_backpressure(name):
    plan, pe = _plan(name), 1
    dut = PointerStage(plan, pe)
    rng = random.Random(1)
    groups = _random_groups(plan, pe, rng, 60)
    expected = _expected_columns(plan, pe, groups)
    got = []

    async def testbench(ctx):
        pending = list(groups)
        for _ in range(3000):
            # A group is sent only while ``ready`` is high (it promises room for three clocks).
            send = pending and ctx.get(dut.i.ready) and rng.random() < 0.6
            ctx.set(dut.i.valid, bool(send))
            if send:
                ctx.set(dut.i.payload, pending.pop(0))
            ready = rng.random() < 0.6
            ctx.set(dut.o.ready, ready)
            if ready and ctx.get(dut.o.valid):
                got.append(_column_tuple(ctx.get(dut.o.payload)))
            await ctx.tick()
            if not pending and len(got) == len(expected):
                break

    _run(dut, testbench)
    assert got == expected


def test_pointer_stage_latency_and_throughput():
    plan, pe = _plan("2-layers"), 0
    dut = PointerStage(plan, pe)
    layer = _layers_with_columns(plan, pe)[0]
    column = next(iter(_columns(plan, pe, layer)))
    group = {"valid": 1, "items": [{"column": column, "value": 3, "layer": layer, "bank": 0}]
             * plan.lanes, "fence": 0, "fence_layer": 0, "fence_bank": 0}
    seen = []

    async def testbench(ctx):
        ctx.set(dut.o.ready, 1)
        for clock in range(220):
            # Clock 0: one group; then 100 more from clock 20 while ``ready``, one lane each.
            send = clock == 0 or (20 <= clock and len(seen) + 1 < 101 and ctx.get(dut.i.ready))
            ctx.set(dut.i.valid, send)
            ctx.set(dut.i.payload, group)
            if ctx.get(dut.o.valid):
                seen.append(clock)
            await ctx.tick()

    _run(dut, testbench)
    # A group in an idle stage: registered, queued in block RAM (read, registered, skid
    # buffer), issued, pointer read (P0 .. P3), then the column queue: 13 clocks.
    assert seen[0] == 13
    # Single-entry columns back to back: COLUMN_QUEUE_DEPTH + 2 = 9 issues every 11 clocks
    # (the issue waits for room for every column on its way to the queue: see the docstring).
    burst = seen[1:]
    assert len(burst) >= 90
    steady = burst[:88]
    for start in range(0, len(steady) - 9, 9):
        assert steady[start + 9] - steady[start] == 11, steady


# -- entry stage --------------------------------------------------------------------------------

def _entry_model(plan: EnginePlan, pe: int, column: dict) -> list[tuple]:
    """The entry stage's contract for one column: each entry's row (A2: previous row + zero
    run + 1, from -1) and weight ``codebook[index]`` (A3); a fence passes as one entry."""
    if column["fence"]:
        return [(1, column["layer"], column["bank"], None, None, None)]
    layer = plan.layers[column["layer"]]
    words = plan.init("entries", column["layer"], pe)
    codebook = plan.init("codebook", column["layer"], pe if layer.per_row else None)
    index_mask = (1 << layer.image.index_bits) - 1
    run_mask = (1 << layer.image.zero_run_bits) - 1
    row_mask = (1 << pe_widths(plan).row_bits) - 1
    out, row = [], -1
    for word in words[column["start"]:column["start"] + column["count"]]:
        row += ((word >> layer.image.index_bits) & run_mask) + 1
        # A9: the PE's memory holds its local rows' codebooks, row after row.
        base = row << layer.image.index_bits if layer.per_row else 0
        out.append((0, column["layer"], column["bank"], column["value"], row & row_mask,
                    codebook[base + (word & index_mask)]))
    return out


def _random_columns(plan: EnginePlan, pe: int, rng: random.Random, count: int) -> list[dict]:
    bits = pe_widths(plan).pointer_bits
    layers = _layers_with_columns(plan, pe)
    lo, hi = -(1 << (plan.value_bits - 1)), (1 << (plan.value_bits - 1)) - 1
    columns = []
    for _ in range(count):
        layer, bank = rng.choice(layers), rng.randrange(plan.banks)
        if rng.random() < 0.1:
            columns.append({"fence": 1, "start": 0, "penultimate": 0, "single": 1, "value": 0,
                            "layer": layer, "bank": bank, "count": 1})
            continue
        start, count_ = rng.choice(list(_columns(plan, pe, layer).values()))
        columns.append({"fence": 0, "start": start, "penultimate": (count_ - 2) % (1 << bits),
                        "single": int(count_ == 1), "value": rng.randint(lo, hi),
                        "layer": layer, "bank": bank, "count": count_})
    return columns


def _entry_tuple(o) -> tuple:
    entry = o.entry
    if entry.fence:
        return (1, entry.layer, entry.bank, None, None, None)
    return (0, entry.layer, entry.bank, entry.value, entry.row, o.weight)


@pytest.mark.parametrize("name", list(PLANS))
def test_entry_stage_decodes_rows_and_weights(name):
    plan, pe = _plan(name), 1
    dut = EntryStage(plan, pe)
    rng = random.Random(2)
    columns = _random_columns(plan, pe, rng, 50)
    expected = [e for column in columns for e in _entry_model(plan, pe, column)]
    got = []
    payload_keys = ("start", "penultimate", "single", "value", "layer", "bank", "fence")

    async def testbench(ctx):
        pending = list(columns)
        offered = False
        for _ in range(2000):
            if ctx.get(dut.o.entry.valid):
                got.append(_entry_tuple(ctx.get(dut.o)))
            # A column stays offered until taken (``ready`` in its last entry's clock).
            offered = bool(pending) and (offered or rng.random() < 0.7)
            ctx.set(dut.i.valid, offered)
            if offered:
                ctx.set(dut.i.payload, {k: pending[0][k] for k in payload_keys})
            taken = offered and ctx.get(dut.i.ready)
            await ctx.tick()
            if taken:
                pending.pop(0)
                offered = False
            if not pending and len(got) == len(expected):
                break

    _run(dut, testbench)
    assert got == expected


def test_entry_stage_latency_and_no_bubble_between_columns():
    plan, pe = _plan("2-layers"), 0
    dut = EntryStage(plan, pe)
    columns = _random_columns(plan, pe, random.Random(3), 12)
    total = sum(c["count"] for c in columns)
    seen = []
    payload_keys = ("start", "penultimate", "single", "value", "layer", "bank", "fence")

    async def testbench(ctx):
        pending = list(columns)
        for clock in range(total + 40):
            ctx.set(dut.i.valid, bool(pending))
            if pending:
                ctx.set(dut.i.payload, {k: pending[0][k] for k in payload_keys})
                if ctx.get(dut.i.ready):
                    pending.pop(0)
            if ctx.get(dut.o.entry.valid):
                seen.append(clock)
            await ctx.tick()

    _run(dut, testbench)
    # The first entry is taken at clock 0 and leaves 5 clocks later (E0, E1, E1R, E1W, E2);
    # then one entry per clock across every column boundary.
    assert seen == list(range(5, 5 + total))


# -- accumulate ---------------------------------------------------------------------------------

def _idle_drain(ctx, dut):
    for name in ("start", "done", "clear", "row", "row_next"):
        ctx.set(getattr(dut.drain, name), 0)


async def _drain(ctx, dut, layer: int, bank: int, rows: int, feed=None) -> list[int]:
    """Read and clear ``rows`` rows of context (layer, bank) as the drain sequencer does
    (``ReadClearSignature``); ``feed()`` drives the MAC input each clock meanwhile."""
    sums = []
    context = {"layer": layer, "bank": bank}
    ctx.set(dut.drain.sum_context, context)
    ctx.set(dut.drain.context, context)
    steps = [("start", 0, 0)] + [("clear", k, k + 1) for k in range(rows)] + [("done", rows, 0)]
    issued = [False, False]             # whether a row was issued 2 and 1 clocks ago
    for kind, row, row_next in steps + [(None, 0, 0)] * 2:
        _idle_drain(ctx, dut)
        if kind is not None:
            ctx.set(getattr(dut.drain, kind), 1)
            ctx.set(dut.drain.row, row)
            ctx.set(dut.drain.row_next, row_next)
        if feed is not None:
            feed()
        if issued[0]:                   # the sum of the row issued two clocks ago
            sums.append(ctx.get(dut.drain.sum))
        issued = [issued[1], kind == "clear"]
        await ctx.tick()
    return sums


def _conv_plan() -> EnginePlan:
    """A convolution whose accumulator (100 positions x 2 rows) goes to block RAM, then a
    Linear layer (LUT RAM): both of the MAC's read paths."""
    from test_accel_conv_engine import _conv_net

    from core.geometry import ConvGeometry

    model, _ = _conv_net(ConvGeometry(1, 10, 10, 3, 3, padding=1), out_channels=4)
    return EnginePlan.from_model(model, n_pes=2, banks=2)


def _deep_conv_plan() -> EnginePlan:
    """A convolution whose accumulator (576 positions x 2 rows, 19 bits) is deeper than one
    ECP5 block RAM at 18 bits (three 2K x 9)."""
    from test_accel_conv_engine import _conv_net

    from core.geometry import ConvGeometry

    model, _ = _conv_net(ConvGeometry(1, 24, 24, 3, 3, padding=1), out_channels=4)
    return EnginePlan.from_model(model, n_pes=2, banks=2)


ACCUMULATE_PLANS = {**{name: lambda name=name: _plan(name) for name in PLANS}, "conv": _conv_plan,
                    "deep conv": _deep_conv_plan}


def _accumulator_depth(plan: EnginePlan, layer: int) -> int:
    spec = plan.layers[layer]
    return spec.image.rows_per_pe if spec.conv is None else spec.conv.accumulator_depth


@pytest.mark.parametrize("name", list(ACCUMULATE_PLANS))
def test_accumulate_sums_forwarding_retire_and_read_clear(name):
    plan = ACCUMULATE_PLANS[name]()
    w = pe_widths(plan)
    dut = Accumulate(plan)
    rng = random.Random(4)
    sums = {}
    retired = []
    contexts = [(i, b) for i in range(plan.n_layers) for b in range(plan.banks)]
    weight_max = (1 << (w.weight_bits - 1)) - 1

    def entry(layer, bank, *, fence=False):
        spec = plan.layers[layer]
        # Rows (and positions) from a small set: the same accumulator word back to back and
        # two and three clocks apart (forwarding).
        row = rng.randrange(min(spec.image.rows_per_pe, 3))
        position = 0 if spec.conv is None else rng.choice([0, 1, spec.conv.positions - 1])
        address = row if spec.conv is None else spec.conv.address(position, row)
        value, weight = rng.randint(-7, 7), rng.randint(-weight_max, weight_max)
        if not fence:
            key = (layer, bank, address)
            sums[key] = sums.get(key, 0) + value * weight
        fields = {"valid": 1, "fence": int(fence), "first": 0, "layer": layer, "bank": bank,
                  "value": value, "row": row}
        if plan.has_conv:
            fields["position"] = position
        return {"entry": fields, "weight": weight}

    def record_retire(ctx, clock):
        if ctx.get(dut.retire.valid):
            retired.append((clock, ctx.get(dut.retire.layer), ctx.get(dut.retire.bank)))

    async def testbench(ctx):
        _idle_drain(ctx, dut)
        clock = 0
        for _ in range(300):
            if rng.random() < 0.85:
                ctx.set(dut.i, entry(*rng.choice(contexts)))
            else:
                ctx.set(dut.i, {"entry": {"valid": 0}, "weight": 0})
            record_retire(ctx, clock)
            await ctx.tick()
            clock += 1
        fence_clock = clock
        ctx.set(dut.i, entry(0, 0, fence=True))
        await ctx.tick()
        ctx.set(dut.i, {"entry": {"valid": 0}, "weight": 0})
        for _ in range(5):
            clock += 1
            record_retire(ctx, clock)
            await ctx.tick()
        assert retired == [(fence_clock + 3, 0, 0)]        # 3 clocks after the fence
        # Drain every context, while the MAC goes on adding to the contexts not drained.
        for layer, bank in contexts:
            others = [c for c in contexts if c != (layer, bank)]

            def feed():
                if others and rng.random() < 0.7:
                    ctx.set(dut.i, entry(*rng.choice(others)))
                else:
                    ctx.set(dut.i, {"entry": {"valid": 0}, "weight": 0})

            rows = _accumulator_depth(plan, layer)
            got = await _drain(ctx, dut, layer, bank, rows, feed)
            ctx.set(dut.i, {"entry": {"valid": 0}, "weight": 0})
            for _ in range(4):                   # the last products reach their rows
                await ctx.tick()
            expected = [_signed(sums.pop((layer, bank, r), 0), w.acc_bits) for r in range(rows)]
            assert got == expected, (layer, bank)
        # Every row was cleared as it was read: only the sums added since remain.
        for layer, bank in contexts:
            rows = _accumulator_depth(plan, layer)
            got = await _drain(ctx, dut, layer, bank, rows)
            assert got == [_signed(sums.pop((layer, bank, r), 0), w.acc_bits)
                           for r in range(rows)], (layer, bank)

    _run(dut, testbench)


# -- requantizer --------------------------------------------------------------------------------

def _requantize(plan: EnginePlan, layer: int, total: int, multiplier: int, shift: int,
                thresholds=None, levels=None):
    """A6-A8, or A10, in Python integers: ``(value, logit)``, the one the layer does not make
    0."""
    spec = plan.layers[layer]
    if spec.logits:
        return 0, max(total, 0) if spec.relu else total
    if levels is not None:
        return levels[sum(1 for t in thresholds if total >= t)], 0
    t = (total * multiplier + ((1 << shift) >> 1)) >> shift
    if spec.relu:
        t = max(t, 0)
    lo, hi = activation_range(spec.output_bits, spec.output_signed)
    return min(max(t, lo), hi), 0


@pytest.mark.parametrize("name", list(PLANS))
def test_requantizer_fixed_latency_against_the_rules(name):
    plan, pe = _plan(name), 0
    dut = Requantizer(plan, pe)
    rng = random.Random(5)
    constants = {i: (layer.multiplier, layer.shift,
                     None if layer.levels is None else layer.thresholds.tolist(),
                     None if layer.levels is None else layer.levels.tolist())
                 for i, layer in enumerate(plan.layers)}
    sent, got = [], []

    async def write(ctx, layer, index, value, name="requant"):
        region = plan.region(name, layer)
        ctx.set(dut.write, {"en": 1, "addr": region.base + index, "data": value})
        await ctx.tick()
        ctx.set(dut.write, {"en": 0, "addr": 0, "data": 0})

    def random_row(clock):
        layer = rng.randrange(plan.n_layers)
        bits = plan.layers[layer].accumulator_bits
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        # ``sum + bias`` within the layer's accumulator width (A5 bounds it with the bias).
        pick = rng.random()
        total = lo if pick < 0.1 else hi if pick < 0.2 else rng.randint(lo, hi)
        bias = rng.randint(max(lo, total - hi), min(hi, total - lo))
        total_sum = total - bias
        return {"stage": {"valid": int(rng.random() < 0.8), "end": int(rng.random() < 0.1),
                          "layer": layer, "bank": rng.randrange(plan.banks),
                          "row": rng.randrange(4)},
                "sum": total_sum, "bias": bias, "column": rng.randrange(1 << plan.column_bits)}

    async def stream(ctx, clocks):
        for clock in range(clocks):
            row = random_row(clock)
            ctx.set(dut.i, row)
            sent.append((row, dict(constants)))
            out = ctx.get(dut.o)
            got.append((out.stage.valid, out.stage.end, out.stage.layer, out.stage.bank,
                        out.stage.row, out.column, out.value, out.logit))
            await ctx.tick()

    async def testbench(ctx):
        await stream(ctx, 150)
        # New constants through the write bus, including shifts beyond the product's width.
        for layer, spec in enumerate(plan.layers):
            if spec.logits:
                continue
            multiplier = rng.randrange(1 << MULTIPLIER_BITS)
            shift = rng.choice([0, 1, rng.randrange(1 << SHIFT_BITS), (1 << SHIFT_BITS) - 1])
            await write(ctx, layer, 0, multiplier)
            await write(ctx, layer, 1, shift)
            thresholds = levels = None
            if spec.levels is not None:          # A10: new thresholds (the range's ends too)
                reach = 1 << (spec.accumulator_bits - 1)
                thresholds = sorted(rng.choice([-reach, reach, rng.randint(-reach, reach)])
                                    for _ in spec.thresholds)
                levels = [0] + sorted(rng.randrange(1 << spec.output_bits)
                                      for _ in spec.levels[1:])
                for j, t in enumerate(thresholds):
                    await write(ctx, layer, j, t & ((1 << spec.threshold_bits) - 1),
                                "thresholds")
                for j, v in enumerate(levels):
                    await write(ctx, layer, j, v, "levels")
            constants[layer] = (multiplier, shift, thresholds, levels)
        for _ in range(3):                      # the writes land (decoded, registered)
            await ctx.tick()
        await stream(ctx, 150)

    _run(dut, testbench)
    # ``got[k]`` is the output LATENCY clocks after ``sent[k - LATENCY]`` (within each burst).
    for burst in (range(LATENCY, 150), range(150 + LATENCY, 300)):
        for k in burst:
            row, consts = sent[k - LATENCY]
            stage = row["stage"]
            value, logit = _requantize(plan, stage["layer"], row["sum"] + row["bias"],
                                       *consts[stage["layer"]])
            assert got[k] == (stage["valid"], stage["end"], stage["layer"], stage["bank"],
                              stage["row"], row["column"], value, logit), (k, row, consts)


# -- drain sequencer ----------------------------------------------------------------------------

def _fake_sum(plan: EnginePlan, layer: int, bank: int, row: int) -> int:
    """A sum that names its row, within the accumulator width."""
    return _signed(1000 * layer + 100 * bank + row - 50, pe_widths(plan).acc_bits)


@pytest.mark.parametrize("name", list(PLANS))
def test_drain_sequencer_rows_biases_ids_and_credits(name):
    plan, pe = _plan(name), 1
    dut = DrainSequencer(plan, pe)
    rng = random.Random(6)
    list_depth, logit_depth = list_depths(plan)
    last = plan.n_layers - 1
    commands = [(rng.randrange(plan.n_layers), rng.randrange(plan.banks)) for _ in range(14)]
    expected = []
    for layer, bank in commands:
        spec = plan.layers[layer]
        biases = plan.init("bias", layer, pe)
        ids = [0] * spec.image.rows_per_pe if spec.logits else plan.init("row_ids", layer, pe)
        for k in range(spec.image.rows(pe)):
            expected.append((0, layer, bank, k, _fake_sum(plan, layer, bank, k), biases[k], ids[k]))
        if layer != last:
            expected.append((1, layer, bank))
    got = []
    outstanding = {"list": 0, "logits": 0, "max_list": 0, "max_logits": 0}

    async def testbench(ctx):
        pending = list(commands)
        issued = [None, None]                    # (context, row) issued 2 and 1 clocks ago
        current = None                           # the context being drained
        for _ in range(3000):
            # The accumulator memories, as the read-and-clear port promises them: the sum of
            # the row issued two clocks ago.
            context = ctx.get(dut.acc.sum_context)
            if issued[0] is not None:
                (layer, bank), row = issued[0]
                assert (context.layer, context.bank) == (layer, bank)
                ctx.set(dut.acc.sum, _fake_sum(plan, layer, bank, row))
            issued = [issued[1], None]
            if ctx.get(dut.acc.start):
                started = ctx.get(dut.acc.context)
                current = (started.layer, started.bank)
            elif ctx.get(dut.acc.clear):
                issued[1] = (current, ctx.get(dut.acc.row))
            send = bool(pending) and ctx.get(dut.i.ready) and rng.random() < 0.5
            ctx.set(dut.i.valid, send)
            if send:
                layer, bank = pending.pop(0)
                ctx.set(dut.i.payload, {"layer": layer, "bank": bank})
            out = ctx.get(dut.o)
            if out.stage.valid:
                if out.stage.end:
                    got.append((1, out.stage.layer, out.stage.bank))
                else:
                    got.append((0, out.stage.layer, out.stage.bank, out.stage.row, out.sum,
                                out.bias, out.column))
                kind = "logits" if out.stage.layer == last else "list"
                outstanding[kind] += 1
                outstanding["max_" + kind] = max(outstanding["max_" + kind], outstanding[kind])
            # The lists free places slowly and at random (at most one of each per clock).
            popped = outstanding["list"] > 0 and rng.random() < 0.3
            popped_logit = outstanding["logits"] > 0 and rng.random() < 0.3
            ctx.set(dut.freed.popped, popped)
            ctx.set(dut.freed.popped_logit, popped_logit)
            outstanding["list"] -= popped
            outstanding["logits"] -= popped_logit
            await ctx.tick()
            if not pending and len(got) == len(expected):
                break

    _run(dut, testbench)
    assert got == expected
    # Never more rows in flight to a list than it has places (the credits).
    assert outstanding["max_list"] <= list_depth
    assert outstanding["max_logits"] <= logit_depth


def test_drain_sequencer_latency_one_row_per_clock_and_credit_stall():
    plan, pe = _plan("2-layers"), 0
    dut = DrainSequencer(plan, pe)
    list_depth, _ = list_depths(plan)
    rows = plan.layers[0].image.rows(pe)
    assert rows + 1 > 2                           # rows and the end mark
    seen = []

    async def testbench(ctx):
        for clock in range(60):
            ctx.set(dut.i.valid, clock == 0)
            ctx.set(dut.i.payload, {"layer": 0, "bank": 0})
            if ctx.get(dut.o.stage.valid):
                seen.append(clock)
            await ctx.tick()

    _run(dut, testbench)
    # A command: registered, queued (loaded 2 clocks after it arrives), its first row issued
    # the clock after and in ``o`` 4 clocks after its issue; then a row per clock and the end
    # mark, as far as the list has places.
    first = 7
    assert seen[0] == first
    assert seen == list(range(first, first + min(rows + 1, list_depth)))


# -- result lists -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PLANS))
def test_result_lists_append_drop_pop_and_trace(name):
    plan = _plan(name)
    dut = ResultLists(plan)
    rng = random.Random(7)
    list_depth, logit_depth = list_depths(plan)
    last = plan.n_layers - 1
    value_lo, value_hi = activation_range(plan.value_bits, True)
    logit_max = (1 << (plan.logit_bits - 1)) - 1
    sent, entries, logits, traces = [], [], [], []
    freed = {"popped": [], "dropped": [], "popped_logit": []}

    async def testbench(ctx):
        credit, logit_credit = list_depth, logit_depth
        pops = []
        for clock in range(1500):
            # Rows as the requantizer sends them, within the places left (the credits).
            layer = rng.randrange(plan.n_layers)
            end = layer != last and rng.random() < 0.15
            has_place = logit_credit > 0 if layer == last else credit > 0
            valid = has_place and rng.random() < 0.6 and clock < 1200
            row = {"stage": {"valid": int(valid), "end": int(end), "layer": layer,
                             "bank": rng.randrange(plan.banks), "row": 0},
                   "value": 0 if rng.random() < 0.3 else rng.randint(value_lo, value_hi),
                   "logit": rng.randint(-logit_max, logit_max),
                   "column": rng.randrange(1 << plan.column_bits)}
            ctx.set(dut.i, row)
            if valid:
                sent.append(row)
                if layer == last:
                    logit_credit -= 1
                else:
                    credit -= 1
            for name_ in freed:
                if ctx.get(getattr(dut.freed, name_)):
                    freed[name_].append(clock)
            credit += ctx.get(dut.freed.popped) + ctx.get(dut.freed.dropped)
            logit_credit += ctx.get(dut.freed.popped_logit)
            if ctx.get(dut.trace.valid):
                t = ctx.get(dut.trace)
                traces.append((t.end, t.layer, t.bank, t.column, t.value))
            ready, logit_ready = rng.random() < 0.5, rng.random() < 0.5
            ctx.set(dut.o.ready, ready)
            ctx.set(dut.logits.ready, logit_ready)
            if ready and ctx.get(dut.o.valid):
                e = ctx.get(dut.o.payload)
                entries.append((e.present, e.end, e.item.layer, e.item.bank, e.item.column,
                                e.item.value))
                pops.append(clock)
            if logit_ready and ctx.get(dut.logits.valid):
                logits.append(ctx.get(dut.logits.payload))
            await ctx.tick()
        freed["pops"] = pops

    _run(dut, testbench)
    hidden = [r for r in sent if r["stage"]["layer"] != last]
    appended = [r for r in hidden if r["stage"]["end"] or r["value"] != 0]
    want = [(0, 1, r["stage"]["layer"] + 1, r["stage"]["bank"], 0, 0) if r["stage"]["end"] else
            (1, 0, r["stage"]["layer"] + 1, r["stage"]["bank"], r["column"], r["value"])
            for r in appended]
    assert entries == want
    assert traces == [(e[1], e[2] - 1, e[3], e[4], e[5]) for e in want]
    assert logits == [r["logit"] for r in sent if r["stage"]["layer"] == last]
    # A zero hidden row frees its place at once; a pop frees it a clock later.
    assert len(freed["dropped"]) == len(hidden) - len(appended)
    assert freed["popped"] == [clock + 1 for clock in freed["pops"]]


def test_result_lists_latency():
    plan = _plan("2-layers")
    dut = ResultLists(plan)
    seen = {}

    async def testbench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.logits.ready, 1)
        for clock in range(20):
            ctx.set(dut.i, {"stage": {"valid": int(clock in (0, 1)), "end": 0,
                                      "layer": 0 if clock == 0 else plan.n_layers - 1,
                                      "bank": 0, "row": 0},
                            "value": 5, "logit": -3, "column": 1})
            if ctx.get(dut.o.valid):
                seen.setdefault("o", clock)
            if ctx.get(dut.logits.valid):
                seen.setdefault("logits", clock)
            await ctx.tick()

    _run(dut, testbench)
    # D6 registered, appended (D7), then out of the list's skid buffer: 4 clocks.
    assert seen == {"o": 4, "logits": 5}


# -- threshold activation (A10) -----------------------------------------------------------------

def test_threshold_activation_latency_and_rule():
    from accel.gateware.pe.threshold import LATENCY as THRESHOLD_LATENCY
    from accel.gateware.pe.threshold import ThresholdActivation, threshold_layers

    plan = _plan("lq")
    dut = ThresholdActivation(plan, 0)
    chosen = threshold_layers(plan)
    assert chosen == [0, 1]
    rng = random.Random(9)
    sent, got = [], []

    async def testbench(ctx):
        for _ in range(300):
            layer = rng.choice(chosen)
            spec = plan.layers[layer]
            # Around each threshold (both sides), and anywhere in the accumulator's range.
            reach = 1 << (spec.accumulator_bits - 1)
            total = rng.choice([rng.choice(spec.thresholds.tolist()) + rng.randint(-1, 1),
                                rng.randint(-reach + 1, reach - 1)])
            ctx.set(dut.i, {"layer": layer, "sum": total})
            sent.append((layer, total))
            got.append(ctx.get(dut.o))
            await ctx.tick()

    _run(dut, testbench)
    for k in range(THRESHOLD_LATENCY, len(sent)):
        layer, total = sent[k - THRESHOLD_LATENCY]
        value, _ = _requantize(plan, layer, total, 0, 0, plan.layers[layer].thresholds.tolist(),
                               plan.layers[layer].levels.tolist())
        assert got[k] == value, (k, layer, total)
