"""The Verilator batch simulator (accel.verification.batch_sim) against sim and Amaranth's simulator.

One small engine is built once for the module (the build is cached in out/batch_sim, so a rerun
does not compile again).
"""

import numpy as np
import pytest

import sim
from accel.verification import batch_driver, batch_sim
from accel.planning.plan import EnginePlan
from accel_models import random_inputs, random_model

FEATURES = [20, 12, 8, 5]

pytestmark = pytest.mark.skipif(batch_sim.available() is not None,
                                reason=f"{batch_sim.available()}")


@pytest.fixture(scope="module")
def engine():
    model = random_model(1, FEATURES)
    plan = EnginePlan.from_model(model, n_pes=3)
    batch_sim.build(plan)
    return model, plan


def _assert_equal(run, expected):
    assert len(run.hidden) == len(expected) - 1
    for got, want in zip(run.hidden + [run.logits], expected):
        np.testing.assert_array_equal(got, want)


def test_equals_sim_with_idle_and_backpressure(engine):
    model, plan = engine
    x = random_inputs(model, 60, 2)
    run = batch_sim.run_engine(plan, x, idle=0.3, backpressure=0.4, seed=5)
    _assert_equal(run, sim.trace(model, x))
    again = batch_sim.run_engine(plan, x, idle=0.3, backpressure=0.4, seed=5)
    assert again.cycles == run.cycles and again.latency == run.latency      # seeded
    assert len(run.latency) == 60 and min(run.latency) > 0


def test_same_clocks_as_amaranth(engine):
    from accel.verification.amaranth_sim import run_engine
    model, plan = engine
    x = random_inputs(model, 5, 3)
    ours = batch_sim.run_engine(plan, x)
    theirs = run_engine(plan, x)
    _assert_equal(ours, sim.trace(model, x))
    assert (ours.cycles, ours.busy_cycles, ours.latency) == \
        (theirs.cycles, theirs.busy_cycles, theirs.latency)


def _same_shapes_model(plan):
    """A second random model that the plan's engine can load (depths and widths fit)."""
    for seed in range(100, 140):
        model = random_model(seed, FEATURES, density=0.25)
        try:
            return model, plan.write_image(model)
        except ValueError:
            continue
    raise AssertionError("no reloadable model found")


def test_mid_stream_reload(engine):
    model, plan = engine
    other, words = _same_shapes_model(plan)
    x = random_inputs(model, 24, 4)
    k = 10
    run = batch_sim.run_engine(plan, x, idle=0.2, backpressure=0.2, seed=1, reloads={k: words})
    first, second = sim.trace(model, x[:k]), sim.trace(other, x[k:])
    assert not np.array_equal(sim.run(model, x[k:]), second[-1])      # the reload shows
    _assert_equal(run, [np.concatenate([a, b]) for a, b in zip(first, second)])
    # writes= loads before the first image; the original model back at image 5
    back = plan.write_image(model)
    run = batch_sim.run_engine(plan, x[:8], writes=words, reloads={5: back})
    expected = [np.concatenate([a, b]) for a, b in zip(sim.trace(other, x[:5]),
                                                      sim.trace(model, x[5:8]))]
    _assert_equal(run, expected)


def test_hang_is_an_error(engine):
    model, plan = engine
    with pytest.raises(RuntimeError, match=r"produced \d+ of 30 logits in 100 clocks"):
        batch_sim.run_engine(plan, random_inputs(model, 6, 5), max_cycles=100)


@pytest.mark.parametrize("lanes, bits, signed", [(4, 8, False), (16, 8, True), (3, 5, True)])
def test_input_encoding_is_the_plans(lanes, bits, signed):
    model = random_model(2, [37, 6, 3], activation_bits=bits, input_signed=signed)
    plan = EnginePlan.from_model(model, n_pes=2, input_lanes=lanes)
    x = random_inputs(model, 7, 6)
    size = batch_driver._words(lanes * bits) * 4
    expected = b"".join(word.to_bytes(size, "little") for word in plan.encode_inputs(x))
    assert batch_sim._encode_inputs(plan, x).tobytes() == expected
