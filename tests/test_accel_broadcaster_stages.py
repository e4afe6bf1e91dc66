"""The broadcaster's stages, each at its own ports, in Amaranth's simulator.

The broadcaster is three components (``accel.gateware.broadcaster``): list intake, group issue
and commit. Each test drives one with seeded random stimulus (idle clocks, backpressure) and
checks it against a small Python model of its contract as its docstring states it (what comes
out, in which order, latency, throughput), so that a change to one stage is caught at that
stage, not only by the whole-engine tests and the fuzz.
"""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from accel.gateware.broadcaster.commit import GroupCommit
from accel.gateware.broadcaster.intake import ListIntake, cluster_count
from accel.gateware.broadcaster.issue import GroupIssue
from accel.planning.plan import EnginePlan
from accel_models import random_model

PLANS = {
    "2-lanes": ([14, 11, 9, 4], {"n_pes": 3, "lanes": 2, "input_lanes": 2, "banks": 2}),
    "1-lane": ([7, 10, 3], {"n_pes": 2, "lanes": 1, "input_lanes": 3, "banks": 3}),
}


def _plan(name: str) -> EnginePlan:
    features, options = PLANS[name]
    return EnginePlan.from_model(random_model(5, features, density=0.5), **options)


def _run(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


def _entry(column=0, value=1, layer=0, bank=0, end=False):
    return {"present": int(not end), "end": int(end),
            "item": {"column": column, "value": value, "layer": layer, "bank": bank}}


def _key(entry) -> tuple:
    return (entry.present, entry.end, entry.item.column, entry.item.value, entry.item.layer,
            entry.item.bank)


def _dict_key(e: dict) -> tuple:
    i = e["item"]
    return (e["present"], e["end"], i["column"], i["value"], i["layer"], i["bank"])


# -- list intake --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PLANS))
def test_intake_keeps_each_list_in_order_tagged_under_backpressure(name):
    plan = _plan(name)
    dut = ListIntake(plan)
    rng = random.Random(1)
    sources = list(dut.lists) + list(dut.inputs)
    n_clusters = cluster_count(plan)
    # Later-layer entries on the PE lists; first-layer entries of bank 0 on the input lanes,
    # no end marks there (the bank-closing rule has a test of its own).
    queues = [[_entry(rng.randrange(4), rng.randrange(1, 100), 1 if s < plan.n_pes else 0)
               for _ in range(25)] for s in range(len(sources))]
    expected = {s: [_dict_key(e) for e in q] for s, q in enumerate(queues)}
    got = {s: [] for s in range(len(sources))}

    async def testbench(ctx):
        pending = [list(q) for q in queues]
        offered = [False] * len(sources)
        for _ in range(1500):
            for s, src in enumerate(sources):
                offered[s] = bool(pending[s]) and (offered[s] or rng.random() < 0.6)
                ctx.set(src.valid, offered[s])
                if offered[s]:
                    ctx.set(src.payload, pending[s][0])
            taken = [offered[s] and ctx.get(src.ready) for s, src in enumerate(sources)]
            for c, o in enumerate(dut.o):
                ready = rng.random() < 0.6
                ctx.set(o.ready, ready)
                if ready and ctx.get(o.valid):
                    tagged = ctx.get(o.payload)
                    assert tagged.source % n_clusters == c
                    got[tagged.source].append(_key(tagged.entry))
            await ctx.tick()
            for s, t in enumerate(taken):
                if t:
                    pending[s].pop(0)
                    offered[s] = False
            if all(len(got[s]) == len(expected[s]) for s in got):
                break

    _run(dut, testbench)
    assert got == expected


def test_intake_latency_and_a_closed_bank_waits_for_release():
    plan = _plan("2-lanes")
    dut = ListIntake(plan)
    lane = dut.inputs[0]
    source = plan.n_pes
    cluster = dut.o[source % cluster_count(plan)]
    seen = []

    async def testbench(ctx):
        for o in dut.o:
            ctx.set(o.ready, 1)
        # Clock 0: an end mark of bank 1 on input lane 0; it is in its cluster 2 clocks later.
        ctx.set(lane.valid, 1)
        ctx.set(lane.payload, _entry(bank=1, end=True))
        assert ctx.get(lane.ready)
        for clock in range(1, 12):
            await ctx.tick()
            # From clock 1 the lane offers an entry of bank 1: held while the bank is closed.
            ctx.set(lane.payload, _entry(column=3, value=7, bank=1))
            ctx.set(dut.release, clock == 8)
            ctx.set(dut.release_bank, 1)
            if ctx.get(cluster.valid):
                seen.append((clock, ctx.get(cluster.payload).entry.end))
            if clock < 9:
                assert not ctx.get(lane.ready), clock
        ctx.set(dut.release, 0)

    _run(dut, testbench)
    assert seen[0] == (2, 1)                    # 2 clocks: the list's skid buffer, the cluster's
    assert [c for c, end in seen if not end] and min(c for c, end in seen if not end) >= 11


# -- group issue --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PLANS))
def test_issue_groups_entries_in_order_and_sends_fences(name):
    plan = _plan(name)
    dut = GroupIssue(plan)
    rng = random.Random(2)
    n_clusters = cluster_count(plan)
    n_sources = plan.n_pes + plan.input_lanes
    # Per cluster, a stream of tagged entries from its lists: first-layer entries of bank 0 from
    # the input lanes, then each lane's end mark of bank 0; layer-1 entries of bank 1 from the
    # PE lists, then each PE's end mark of (1, 1).
    streams = {c: [] for c in range(n_clusters)}
    values = iter(range(1, 100))                # every entry distinct: its order is checkable
    for s in range(n_sources):
        layer, bank = (0, 0) if s >= plan.n_pes else (1, 1)
        entries = [_entry(rng.randrange(4), next(values), layer, bank)
                   for _ in range(rng.randrange(2, 6))] + [_entry(layer=layer, bank=bank,
                                                                  end=True)]
        streams[s % n_clusters].extend({"source": s, "entry": e} for e in entries)
    present = {c: [_dict_key(t["entry"]) for t in stream if not t["entry"]["end"]]
               for c, stream in streams.items()}
    groups, room_log = [], []

    async def testbench(ctx):
        pending = {c: list(s) for c, s in streams.items()}
        offered = {c: False for c in streams}
        room = 1
        for clock in range(600):
            ctx.set(dut.room, room)             # the pops depend on it in the same clock
            for c, i in enumerate(dut.i):
                offered[c] = bool(pending[c]) and (offered[c] or rng.random() < 0.7)
                ctx.set(i.valid, offered[c])
                if offered[c]:
                    ctx.set(i.payload, pending[c][0])
            # Which clusters pop depends on every cluster's ``valid``: read after all are set.
            taken = {c: offered[c] and ctx.get(i.ready) for c, i in enumerate(dut.i)}
            room_log.append(room)
            out = ctx.get(dut.o)
            if out.valid:
                g = out.group
                groups.append((clock, g.fence, g.fence_layer, g.fence_bank,
                               [(k, _key_item(g.items[k])) for k in range(plan.lanes)
                                if g.valid >> k & 1]))
            room = int(rng.random() < 0.8)
            await ctx.tick()
            for c, t in taken.items():
                if t:
                    pending[c].pop(0)
                    offered[c] = False

    _run(dut, testbench)
    # A group is in ``o`` a clock after its entries were taken, which needs ``room``.
    for clock, *_ in groups:
        assert room_log[clock - 1]
    # Every present entry once; each cluster's in order (lanes within a group in lane order).
    entries = [e for *_, lanes in groups for _, e in lanes]
    flat = sorted(e for c in present.values() for e in c)
    assert sorted(entries) == flat, (sorted(set(flat) - set(entries)), sorted(set(entries) - set(flat)), len(entries), len(flat))
    for c, keys in present.items():
        assert [e for e in entries if e in set(keys)] == keys
    # The two fences: layer 0 bank 0 after every input lane's end mark, (1, 1) after every PE's;
    # each after all of its context's entries and sent once.
    fences = [(clock, layer, bank) for clock, fence, layer, bank, _ in groups if fence]
    assert sorted((layer, bank) for _, layer, bank in fences) == [(0, 0), (1, 1)]
    for clock, layer, bank in fences:
        later = [e for c, _, _, _, lanes in groups if c > clock for _, e in lanes]
        assert not [e for e in later if (e[4], e[5]) == (layer, bank)]


def _key_item(item) -> tuple:
    return (1, 0, item.column, item.value, item.layer, item.bank)


# -- commit -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PLANS))
def test_commit_sends_each_group_to_its_pes_at_once(name):
    plan = _plan(name)
    dut = GroupCommit(plan)
    rng = random.Random(3)
    masks = [plan.init("col_mask", layer) for layer in range(plan.n_layers)]
    groups = []
    for _ in range(40):
        if rng.random() < 0.15:
            groups.append({"valid": 0, "items": [{}] * plan.lanes, "fence": 1,
                           "fence_layer": rng.randrange(plan.n_layers),
                           "fence_bank": rng.randrange(plan.banks)})
            continue
        items = []
        for _ in range(plan.lanes):
            layer = rng.randrange(plan.n_layers)
            items.append({"column": rng.randrange(len(masks[layer])), "value": rng.randrange(1, 9),
                          "layer": layer, "bank": rng.randrange(plan.banks)})
        groups.append({"valid": rng.randrange(1, 1 << plan.lanes), "items": items, "fence": 0,
                       "fence_layer": 0, "fence_bank": 0})
    # The model: PE p gets the group, with lane k valid if lane k is and p's mask bit of the
    # lane's column (in the lane's layer) is set; a fence goes to every PE.
    expected = {p: [] for p in range(plan.n_pes)}
    for g in groups:
        for p in range(plan.n_pes):
            if g["fence"]:
                expected[p].append((1, 0))
                continue
            lanes = sum(1 << k for k in range(plan.lanes) if g["valid"] >> k & 1
                        and masks[g["items"][k]["layer"]][g["items"][k]["column"]] >> p & 1)
            if lanes:
                expected[p].append((0, lanes))
    got = {p: [] for p in range(plan.n_pes)}
    commits = []

    async def testbench(ctx):
        pending = list(groups)
        for clock in range(800):
            send = bool(pending) and ctx.get(dut.room) and rng.random() < 0.7
            ctx.set(dut.i.valid, send)
            if send:
                ctx.set(dut.i.group, pending.pop(0))
            delivered = []
            for p, o in enumerate(dut.o):
                ctx.set(o.ready, rng.random() < 0.7)
                if ctx.get(o.valid):
                    g = ctx.get(o.payload)
                    got[p].append((g.fence, 0 if g.fence else g.valid))
                    delivered.append(p)
            if delivered:
                commits.append(delivered)
            await ctx.tick()

    _run(dut, testbench)
    assert got == expected
    # A group reaches all its PEs in one clock: no clock delivers to a PE twice.
    assert all(len(set(d)) == len(d) for d in commits)


def test_commit_latency():
    plan = _plan("2-lanes")
    dut = GroupCommit(plan)
    seen = []

    async def testbench(ctx):
        for o in dut.o:
            ctx.set(o.ready, 1)
        for clock in range(20):
            ctx.set(dut.i.valid, clock == 0)
            ctx.set(dut.i.group, {"valid": 0, "items": [{}] * plan.lanes, "fence": 1,
                                  "fence_layer": 0, "fence_bank": 0})
            if ctx.get(dut.o[0].valid):
                seen.append(clock)
            await ctx.tick()

    _run(dut, testbench)
    # T (masks read), U (words registered, queued), the queue's head, the commit registered.
    assert seen == [LATENCY_COMMIT]


LATENCY_COMMIT = 6
