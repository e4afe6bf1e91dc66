"""The Amaranth engine in Amaranth's own simulator, against ``sim`` (the golden model).

Every case compares the logits and every hidden activation (from the trace bus) with
``sim.trace``. The shapes are the awkward ones of issue 4: 1x1, 37x13, fully dense, all-zero
rows and columns, zero runs longer than ``2**b_z``, one PE, more PEs than rows, a PE count that
divides no layer, all-zero inputs, signed inputs; with random idle cycles and backpressure.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

import sim
from accel.verification.amaranth_sim import run_engine
from accel.gateware.engine import Collector, Engine, Loader
from accel.planning.plan import EnginePlan
from accel_models import random_inputs, random_model


def _check(model, x, plan, **kwargs):
    run = run_engine(plan, x, **kwargs)
    expected = sim.trace(model, x)
    np.testing.assert_array_equal(run.logits, expected[-1])
    assert len(run.hidden) == len(expected) - 1
    for layer, (got, want) in enumerate(zip(run.hidden, expected[:-1])):
        np.testing.assert_array_equal(got, want, err_msg=f"hidden layer {layer}")
    return run


CASES = {
    # name: (features, model options, plan options, input density)
    "1x1": ([1, 1], {"density": 1.0}, {"n_pes": 1}, 1.0),
    "37x13": ([13, 37], {"density": 0.3}, {"n_pes": 4}, 0.5),
    "dense-3-layers": ([10, 12, 7, 4], {"density": 1.0}, {"n_pes": 4}, 1.0),
    "zero-rows-and-columns": ([20, 16, 6], {"density": 0.5, "zero_rows": 0.3,
                                            "zero_columns": 0.3}, {"n_pes": 3}, 0.6),
    "long-zero-runs": ([9, 40, 3], {"density": 0.05}, {"n_pes": 1, "zero_run_bits": 1}, 0.8),
    "one-pe": ([8, 6, 5], {"density": 0.4}, {"n_pes": 1}, 0.5),
    "more-pes-than-rows": ([6, 3, 2], {"density": 0.7}, {"n_pes": 16}, 0.7),
    "pes-divide-no-layer": ([11, 13, 7], {"density": 0.4}, {"n_pes": 5}, 0.5),
    "signed-input": ([9, 8, 3], {"density": 0.5, "input_signed": True}, {"n_pes": 3}, 0.9),
    "one-lane-one-bank": ([12, 10, 4], {"density": 0.4}, {"lanes": 1, "input_lanes": 1,
                                                          "banks": 1, "n_pes": 2}, 0.5),
    "wide-weights-2-bit-activations": ([10, 8, 3], {"density": 0.5, "weight_bits": 16,
                                                    "activation_bits": 2}, {"n_pes": 3}, 0.8),
    "empty-layer": ([8, 6, 3], {"density": [0.0, 0.5]}, {"n_pes": 2}, 0.8),
    # LQ-Nets: per-row codebooks (A9), threshold activations of 1, 2 and 4 code bits (A10).
    "lq-per-row-2-bit-codes": ([10, 14, 9, 4], {"density": 0.5, "index_bits": 3,
                                                "per_row": True, "code_bits": 2},
                               {"n_pes": 3}, 0.7),
    "lq-4-bit-codes": ([8, 12, 5], {"density": 0.6, "code_bits": 4}, {"n_pes": 2}, 0.8),
    "lq-per-row-1-bit-codes-16-pes": ([7, 9, 6, 3], {"density": 0.6, "per_row": True,
                                                     "code_bits": 1, "index_bits": 2},
                                      {"n_pes": 16}, 0.8),
}


def test_narrow_accumulators_requantize_negative_sums():
    """Issue 20: with accumulators of 16 bits or fewer the drain split ``acc + bias`` into a low
    17-bit part and a high part as if the sum were wider, took a negative sum's low part as
    unsigned, and every hidden activation of a negative sum came out saturated."""
    model = random_model(0, [20, 12, 5], index_bits=3, weight_bits=6, activation_bits=4,
                         bias_bits=4)
    assert max(layer.integer.accumulator_bits for layer in model.layers) <= 16
    x = random_inputs(model, 4, seed=1)
    _check(model, x, EnginePlan.from_model(model, n_pes=2))


@pytest.mark.parametrize("accumulator_bits", [15, 16, 17, 18])
def test_requantizer_split_at_the_boundary(accumulator_bits):
    """Sums just below, at and above the requantizer's 17-bit split, negative and positive."""
    models = (random_model(seed, [6, 5, 3], index_bits=2, weight_bits=4, activation_bits=8,
                           bias_bits=bias_bits)
              for bias_bits in range(accumulator_bits - 4, accumulator_bits)
              for seed in range(20))
    model = next(m for m in models if m.layers[0].integer.accumulator_bits == accumulator_bits)
    x = random_inputs(model, 3, seed=2, density=0.9)
    _check(model, x, EnginePlan.from_model(model, n_pes=1, banks=1))


def test_smallest_queue_depth_runs_and_shallower_is_refused():
    """Issue 20: queue depths 2 to 4 were accepted and never became ready (no logit ever came
    out); the plan now refuses them, naming why, and the smallest it takes runs."""
    from accel.planning.plan import MIN_QUEUE_DEPTH

    model = random_model(0, [20, 12, 5])
    for depth in range(2, MIN_QUEUE_DEPTH):
        with pytest.raises(ValueError, match=rf"queue_depth must be {MIN_QUEUE_DEPTH}\.\.4096, "
                                             rf"not {depth}: a PE's registered ready"):
            EnginePlan.from_model(model, n_pes=2, queue_depth=depth)
    x = random_inputs(model, 3, seed=1)
    plan = EnginePlan.from_model(model, n_pes=2, queue_depth=MIN_QUEUE_DEPTH)
    _check(model, x, plan, idle=0.2, backpressure=0.3, seed=2)


@pytest.mark.parametrize("name", sorted(CASES))
def test_engine_equals_sim(name):
    features, model_options, plan_options, input_density = CASES[name]
    model = random_model(len(name), features, **model_options)
    x = random_inputs(model, 4, seed=3, density=input_density)
    plan = EnginePlan.from_model(model, **plan_options)
    _check(model, x, plan, idle=0.3, backpressure=0.4, seed=1)


@pytest.mark.parametrize("shift", ["0", "1", "product-1", "product", "product+1", "62"])
def test_every_requantization_shift_rounds_as_the_reference(shift):
    """The drain's rounding term and shift (A6) at the ends of the shift's range, including
    shifts wider than the requantization product (the result is then 0 or saturates)."""
    from dataclasses import replace

    from core.integer import MULTIPLIER_BITS

    model = random_model(21, [10, 9, 4], density=0.7, bias_bits=14)
    layer = model.layers[0]
    product_bits = layer.integer.accumulator_bits + 1 + MULTIPLIER_BITS + 1
    value = {"0": 0, "1": 1, "product-1": product_bits - 1, "product": product_bits,
             "product+1": product_bits + 1, "62": 62}[shift]
    layer.integer = replace(layer.integer, shift=value, multiplier=(1 << MULTIPLIER_BITS) - 1)
    x = random_inputs(model, 6, seed=4, density=0.9)
    _check(model, x, EnginePlan.from_model(model, n_pes=3), seed=2)


def test_all_zero_inputs_give_the_bias_path():
    model = random_model(7, [12, 9, 4], density=0.5)
    x = np.zeros((3, 12), dtype=np.int64)
    _check(model, x, EnginePlan.from_model(model, n_pes=3))


def test_balanced_rows_change_cycles_not_results():
    model = random_model(8, [30, 24, 5], density=0.3)
    x = random_inputs(model, 6, seed=4)
    plain = _check(model, x, EnginePlan.from_model(model, n_pes=4))
    balanced_plan = EnginePlan.from_model(model, n_pes=4, calibration=x)
    assert not np.array_equal(balanced_plan.layers[0].row_order, np.arange(24))
    balanced = _check(model, x, balanced_plan)
    assert plain.cycles > 0 and balanced.cycles > 0


def test_reload_weights_through_the_write_port():
    """An engine built for one model computes another of the same shapes after a reload."""
    built_for = random_model(9, [10, 8, 3], density=0.9)
    other = random_model(10, [10, 8, 3], density=0.5)
    plan = EnginePlan.from_model(built_for, n_pes=2)
    writes = plan.write_image(other)
    x = random_inputs(other, 3, seed=5)
    _check(other, x, plan, writes=writes)


def test_write_image_refuses_a_model_that_does_not_fit():
    plan = EnginePlan.from_model(random_model(11, [10, 8, 3], density=0.2), n_pes=2)
    with pytest.raises(ValueError, match="layer 0 must be 8x10"):
        plan.write_image(random_model(12, [10, 9, 3]))
    with pytest.raises(ValueError, match="entry depth"):
        plan.write_image(random_model(13, [10, 8, 3], density=1.0))


def test_status_counts_busy_cycles():
    model = random_model(14, [6, 5, 2], density=0.5)
    x = random_inputs(model, 2, seed=6)
    run = _check(model, x, EnginePlan.from_model(model, n_pes=2))
    assert run.busy_cycles >= run.cycles > 0
    assert len(run.latency) == 2 and all(v > 0 for v in run.latency)


@pytest.mark.parametrize("options, message", [
    ({"n_pes": 0}, "n_pes must be 1..64"),
    ({"lanes": 5}, "lanes must be 1..4"),
    ({"banks": 0}, "banks must be 1..8"),
    ({"zero_run_bits": 9}, "zero_run_bits must be 1..8"),
])
def test_plan_rejects_bad_parameters(options, message):
    with pytest.raises(ValueError, match=message):
        EnginePlan.from_model(random_model(15, [4, 3]), **options)


def test_components_reject_a_wrong_plan():
    with pytest.raises(TypeError, match="plan must be an EnginePlan"):
        Engine("plan")


# -- components in isolation -------------------------------------------------------------------

def test_loader_lists_nonzero_inputs_and_closes_each_image():
    model = random_model(16, [7, 3])
    plan = EnginePlan.from_model(model, input_lanes=3, banks=2)
    loader = Loader(plan)
    x = np.array([[0, 5, 0, 7, 0, 0, 9], [0, 0, 0, 0, 0, 0, 0]])
    beats = plan.encode_inputs(x)
    seen = {lane: [] for lane in range(3)}

    async def testbench(ctx):
        for lane in range(3):
            ctx.set(loader.o[lane].ready, 1)
        for word in beats:
            ctx.set(loader.i.valid, 1)
            ctx.set(loader.i.payload, word)
            await ctx.delay(0)
            for lane in range(3):
                if ctx.get(loader.o[lane].valid):
                    entry = ctx.get(loader.o[lane].payload)
                    if entry.present:
                        seen[lane].append((1, entry.end, entry.item.column, entry.item.value,
                                           entry.item.bank))
                    else:                       # an end mark alone: no column, no value
                        seen[lane].append((0, entry.end, entry.item.bank))
            await ctx.tick()

    simulator = Simulator(loader)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    # Lane 0 holds columns 0, 3, 6; each image ends with an end mark on its last beat.
    assert seen[0] == [(1, 0, 3, 7, 0), (1, 1, 6, 9, 0), (0, 1, 1)]
    assert seen[1] == [(1, 0, 1, 5, 0), (0, 1, 0), (0, 1, 1)]
    assert seen[2] == [(0, 1, 0), (0, 1, 1)]


def test_collector_streams_logits_in_neuron_order_under_backpressure():
    model = random_model(17, [4, 5])
    plan = EnginePlan.from_model(model, n_pes=2)
    collector = Collector(plan)
    out = []

    async def source(ctx):
        # PE 0 holds neurons 0, 2, 4; PE 1 holds 1, 3: offer them out of step.
        queues = {0: [100, 102, 104], 1: [101, 103]}
        for step in range(40):
            for p in (0, 1):
                ctx.set(collector.i[p].valid, bool(queues[p]))
                if queues[p]:
                    ctx.set(collector.i[p].payload, queues[p][0])
            ctx.set(collector.o.ready, step % 3 != 1)
            await ctx.delay(0)
            for p in (0, 1):
                if ctx.get(collector.i[p].valid) and ctx.get(collector.i[p].ready):
                    queues[p].pop(0)
            if ctx.get(collector.o.valid) and ctx.get(collector.o.ready):
                out.append(ctx.get(collector.o.payload))
            await ctx.tick()

    simulator = Simulator(collector)
    simulator.add_clock(1e-8)
    simulator.add_testbench(source)
    simulator.run()
    assert out == [100, 101, 102, 103, 104]


@pytest.mark.parametrize("features, n_pes, banks", [
    ([40, 30, 10], 2, 1),           # one bank: images do not overlap
    ([64, 48, 10], 1, 2),           # one PE doing every MAC: work-bound
])
def test_cycle_model_within_ten_percent_in_its_range(features, n_pes, banks):
    """EnginePlan.predict within 10% of the measured clocks of a stall-free stream, on streams
    its range of validity (accel.planning.cycles.MODEL_OVERLAP_LIMIT) covers."""
    model = random_model(11, features, density=0.5)
    x = random_inputs(model, 12, seed=3)
    plan = EnginePlan.from_model(model, n_pes=n_pes, banks=banks)
    prediction = plan.predict([x] + sim.trace(model, x)[:-1])
    assert prediction["in_range"]
    run = run_engine(plan, x)
    assert 0.9 <= run.cycles / prediction["cycles"] <= 1.1, (run.cycles, prediction["cycles"])
