"""Convolutions on the engine (issue 25): the plan's layout of a convolution, its refusals, its
cycle model, and the gateware against ``sim`` in Amaranth's simulator on random convolutional
networks (every hidden feature map and every logit, with idle inputs and backpressure).

LeNet-5 itself runs in ``bench/`` (Verilator)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sim_properties import _conv_models_and_inputs

import sim
from accel.planning.conv import pad_input, run_layer, tap_masks
from accel.planning.plan import MAX_ENGINE_KERNEL, EnginePlan
from accel.verification.amaranth_sim import run_engine
from core.artifact import CompressedLayer, CompressedModel
from core.geometry import ConvGeometry
from core.integer import quantize_model

_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _conv_net(geometry, out_channels=3, outputs=4, seed=0):
    """A random float conv layer of ``geometry`` (ReLU), then a Linear layer to ``outputs``
    logits (none when 0), quantized on random inputs; and those inputs."""
    rng = np.random.default_rng(seed)
    codebook = np.array([0.0, -1.0, -0.5, -0.25, 0.25, 0.5, 0.75, 1.0])
    conv = CompressedLayer(codebook=codebook,
                           index=rng.integers(0, 8, (out_channels, geometry.columns),
                                              dtype=np.uint8),
                           bias=rng.normal(0, 0.1, out_channels), relu=True,
                           index_bits=3, geometry=geometry)
    layers = [conv]
    if outputs:
        layers.append(CompressedLayer(
            codebook=codebook, index=rng.integers(0, 8, (outputs, conv.output_size), np.uint8),
            bias=rng.normal(0, 0.1, outputs), relu=False, index_bits=3))
    model = CompressedModel(layers)
    calibration = rng.random((8, model.in_features)).astype(np.float32)
    model = quantize_model(model, calibration)
    return model, sim.quantize_input(model, calibration)


@pytest.fixture(scope="module")
def conv_model():
    return _conv_net(ConvGeometry(2, 6, 5, 3, 3, stride=1, padding=1, pool="max"))


@settings(max_examples=3, **_SETTINGS)
@given(_conv_models_and_inputs(linear_last=True), st.integers(1, 3), st.integers(1, 3),
       st.sampled_from([0.0, 0.3]))
def test_engine_equals_sim_on_random_convolutions(case, n_pes, banks, stall):
    """Every feature map and logit, bit for bit, for 1-3 PEs and banks, with stalls."""
    model, x = case
    x = x[:3]
    plan = EnginePlan.from_model(model, n_pes=n_pes, banks=banks, lanes=1 + n_pes % 2)
    run = run_engine(plan, x, idle=stall, backpressure=stall, seed=n_pes)
    want = sim.trace(model, x)
    for i, got in enumerate(run.hidden):
        assert got.tolist() == want[i].tolist(), f"layer {i}"
    assert run.logits.tolist() == want[-1].tolist()


@settings(max_examples=30, **_SETTINGS)
@given(_conv_models_and_inputs(linear_last=True), st.integers(1, 5))
def test_cycle_model_counts_the_planned_walk(case, n_pes):
    """``plan.work`` of a convolution is the planned dataflow's count (``run_layer``)."""
    model, x = case
    plan = EnginePlan.from_model(model, n_pes=n_pes)
    inputs = [x] + sim.trace(model, x)[:-1]
    work = plan.work(inputs)
    for i, layer in enumerate(plan.layers):
        if layer.conv is None:
            continue
        for k in range(len(x)):
            _, counted = run_layer(model.layers[i], layer.image, inputs[i][k])
            assert work["work"][k, i].tolist() == counted[:, 1].tolist()
            assert (work["columns"][k, i] >= counted[:, 0]).all()


def test_plan_lays_out_a_convolution(conv_model):
    model, _ = conv_model
    plan = EnginePlan.from_model(model, n_pes=2)
    first, second = plan.layers[0], plan.layers[1]
    g = first.conv.geometry
    assert plan.has_conv and plan.in_features == g.in_channels * g.in_height * g.in_width
    assert plan.input_columns == first.fields.size
    # the broadcaster's mask is per input channel, and so is a PE's tap mask
    assert plan.region("col_mask", 0).depth == g.in_channels
    for p in range(2):
        assert plan.init("tap_masks", 0, p) == tap_masks(first.image, first.conv)[p].tolist()
    # a channel's row id is its packed output column
    out = first.conv.outputs
    assert first.row_ids[1, 0] == 1 << (out.y_bits + out.x_bits)
    # the Linear layer after it reads packed columns
    assert second.in_features == out.size
    assert second.weight_shape == model.layers[1].index.shape
    # a plan of Linear layers has none of it
    assert not EnginePlan.from_model(CompressedModel(model.layers[1:])).has_conv


def test_plan_maps_packed_outputs_back(conv_model):
    model, x = conv_model
    plan = EnginePlan.from_model(model, n_pes=3)
    layer = plan.layers[0]
    flat = sim.trace(model, x)[0]
    packed = layer.packed_output(flat)
    assert packed.shape == (len(x), layer.output_columns)
    assert layer.flat_output(packed).tolist() == flat.tolist()
    columns = np.flatnonzero(packed[0])
    assert (flat[0][layer.output_index(columns)] == packed[0][columns]).all()
    hole = np.setdiff1d(np.arange(layer.output_columns), layer.conv.outputs.packed_order())
    if len(hole):
        packed[0, hole[0]] = 1
        with pytest.raises(ValueError, match="is no output of this conv"):
            layer.flat_output(packed)
    # input beats carry the first maps at their packed columns
    assert len(plan.encode_inputs(x[:1])) == plan.beats_per_image
    assert plan.beats_per_image == -(-plan.input_columns // plan.input_lanes)
    assert pad_input(x[:1], layer.fields).shape == (1, plan.input_columns)


def test_engine_refuses_what_it_cannot_run(conv_model):
    side = MAX_ENGINE_KERNEL + 1
    model, _ = _conv_net(ConvGeometry(1, side, side, side, 2))
    with pytest.raises(ValueError, match=f"runs kernels of 1..{MAX_ENGINE_KERNEL} on a side, "
                                         f"not {side}x2"):
        EnginePlan.from_model(model)
    model, _ = _conv_net(ConvGeometry(2, 6, 5, 3, 3), outputs=0)
    with pytest.raises(ValueError, match="the last layer is a convolution .* logits come from "
                                         "a Linear layer"):
        EnginePlan.from_model(model)


def test_fit_check_names_feature_maps_too_large_for_the_board():
    from accel.gateware.resources import FitError, check_fit
    from boards import get_board

    model, _ = _conv_net(ConvGeometry(1, 32, 32, 3, 3), out_channels=16)
    with pytest.raises(FitError, match=r"block RAMs; ulx3s-12f has 32; of those, layer 0's "
                                       r"feature maps \(16x30x30 sums of \d+ bits, 2 banks\) "
                                       r"take \d+ \(fewer images in flight: --banks 1\)"):
        check_fit(EnginePlan.from_model(model, n_pes=1, banks=2), get_board("ulx3s-12f"))


def test_pointer_stage_of_a_conv_plan_passes_a_column_every_clock(conv_model):
    """Tap columns mostly have one entry in a PE: the column queue of a plan with
    convolutions is deep enough that the issue never waits for room (a Linear layer's
    columns through the tap walk, one per clock, 17 clocks from group to column)."""
    from amaranth.sim import Simulator

    from accel.gateware.pe.pointer import PointerStage

    model, _ = conv_model
    plan = EnginePlan.from_model(model, n_pes=1, lanes=1)
    dut = PointerStage(plan, 0)
    item = {"column": 0, "value": 3, "layer": 1, "bank": 0}
    group = {"valid": 1, "items": [item], "fence": 0, "fence_layer": 0, "fence_bank": 0}
    seen = []

    async def testbench(ctx):
        ctx.set(dut.o.ready, 1)
        for clock in range(200):
            send = clock == 0 or (20 <= clock and len(seen) < 120 and ctx.get(dut.i.ready))
            ctx.set(dut.i.valid, send)
            ctx.set(dut.i.payload, group)
            if ctx.get(dut.o.valid):
                seen.append(clock)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert seen[0] == 17
    burst = seen[1:101]
    assert burst[-1] - burst[0] == len(burst) - 1, burst


def _two_convs():
    """Two convolutions of different kernels and strides (each its own tap tables), then a
    Linear layer, quantized."""
    rng = np.random.default_rng(3)
    codebook = np.array([0.0, -1.0, -0.5, 0.5, 1.0])
    first = ConvGeometry(2, 7, 6, 3, 3, padding=1)
    second = ConvGeometry(3, 7, 6, 5, 5, stride=2, padding=2)

    def layer(out, columns, geometry=None, relu=True):
        # Sparse, so that each PE has a tap mask of its own per channel.
        index = rng.integers(0, 5, (out, columns), dtype=np.uint8)
        index[rng.random(index.shape) < 0.6] = 0
        return CompressedLayer(codebook=codebook, index=index, bias=rng.normal(0, 0.1, out),
                               relu=relu, index_bits=3, geometry=geometry)

    conv1 = layer(3, first.columns, first)
    conv2 = layer(4, second.columns, second)
    model = CompressedModel([conv1, conv2, layer(5, conv2.output_size, relu=False)])
    calibration = rng.random((8, model.in_features)).astype(np.float32)
    return quantize_model(model, calibration)


@pytest.mark.parametrize("stall", [True, False])
def test_tap_walk_gives_each_activation_its_taps_by_the_rule(stall):
    """``TapWalk`` against ``ConvLayout.walk`` (the tables) and ``accel.planning.conv.taps``
    (A12), in order, under random input gaps and backpressure; a Linear layer's activation and
    a fence pass as they are. Without stalls: 4 clocks from ``i`` to ``o`` and an item every
    clock, ``max(1, taps)`` clocks for a convolution's activation."""
    import random

    from amaranth.sim import Simulator

    from accel.gateware.pe.taps import TapWalk
    from accel.planning.conv import taps

    model = _two_convs()
    plan = EnginePlan.from_model(model, n_pes=2, banks=1)
    pe = 1
    rng = random.Random(11)
    items, expected, schedule = [], [], []     # schedule: each output's clock, no stalls
    clock = 4
    for _ in range(120):
        i = rng.randrange(3)
        if rng.random() < 0.05:
            items.append({"column": 0, "value": 0, "layer": i, "bank": 0, "fence": 1})
            outputs = [(0, 0, i, 1, 0)]
        elif i == 2:                                # the Linear layer's packed input column
            column, value = rng.randrange(plan.layers[2].in_features), rng.randint(1, 7)
            items.append({"column": column, "value": value, "layer": 2, "bank": 0, "fence": 0})
            outputs = [(column, value, 2, 0, 0)]
        else:
            conv, value = plan.layers[i].conv, rng.randint(1, 7)
            g, fields = conv.geometry, conv.inputs
            c, y, x = rng.randrange(g.in_channels), rng.randrange(g.in_height), \
                rng.randrange(g.in_width)
            column = (((c << fields.y_bits) | y) << fields.x_bits) | x
            items.append({"column": column, "value": value, "layer": i, "bank": 0, "fence": 0})
            mask = plan.init("tap_masks", i, pe)[c]
            walked = conv.walk(c, y, x, mask)
            assert walked == [(k, q) for k, q in taps(conv, c, y, x)
                              if (mask >> (k % g.taps)) & 1]
            outputs = [(k, value, i, 0, q) for k, q in walked]
        expected += outputs
        schedule += [clock + j for j in range(len(outputs))]
        clock += max(1, len(outputs))
    assert len(expected) > 150
    dut = TapWalk(plan, pe)
    got, emitted = [], []

    async def testbench(ctx):
        pending = list(items)
        for clock in range(3000):
            send = bool(pending) and (not stall or rng.random() < 0.7)
            ctx.set(dut.i.valid, send)
            if send:
                ctx.set(dut.i.payload, pending[0])
            ready = not stall or rng.random() < 0.6
            ctx.set(dut.o.ready, ready)
            if ctx.get(dut.o.valid) and ready:
                out = ctx.get(dut.o.payload)
                got.append((out.column, out.value, out.layer, out.fence, out.position))
                emitted.append(clock)
            if send and ctx.get(dut.i.ready):
                pending.pop(0)
            await ctx.tick()
            if not pending and len(got) == len(expected):
                break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert got == expected
    if not stall:
        assert emitted == schedule


@pytest.mark.parametrize("width", [1, 3, 4, 5, 9, 12, 17])
def test_at_most_one_is_a_popcount_of_at_most_one(width):
    """``_at_most_one``, the tap walk's tree (every value up to 12 bits; sampled above)."""
    import random

    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator

    from accel.gateware.primitives import _at_most_one

    bits, out = Signal(width), Signal()
    m = Module()
    m.d.comb += out.eq(_at_most_one(bits))
    rng = random.Random(width)
    values = range(1 << width) if width <= 12 else \
        [0] + [1 << k for k in range(width)] + [rng.getrandbits(width) for _ in range(2000)]

    async def testbench(ctx):
        for v in values:
            ctx.set(bits, v)
            assert ctx.get(out) == (bin(v).count("1") <= 1), v

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
