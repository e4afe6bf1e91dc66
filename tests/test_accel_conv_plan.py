"""The convolution dataflow of ``accel.planning.conv`` equals ``sim`` (A12-A13): the packed
coordinates, the tap walk, the accumulator addresses and the pooling drain, on random
convolution layers (random integer data, every geometry the contract allows) and PE counts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sim_properties import _conv_models_and_inputs

import sim
from accel.planning.conv import (ConvLayout, MapFields, channel_masks, drain_walk,
                                 expand_columns, pad_input, pe_work, run_layer, run_network,
                                 tap_masks, taps)
from accel.planning.pack import pack_layer
from core.geometry import ConvGeometry

_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                       HealthCheck.data_too_large])


@settings(max_examples=150, **_SETTINGS)
@given(_conv_models_and_inputs(), st.integers(1, 5))
def test_dataflow_equals_sim(case, n_pes):
    model, x = case
    inputs = [x] + sim.trace(model, x)[:-1]
    for i, layer in enumerate(model.layers):
        if layer.geometry is None:
            continue
        image = pack_layer(layer, n_pes)
        want = sim.run_layer(model, i, inputs[i])
        counted = pe_work(image, ConvLayout.of(layer, n_pes), inputs[i])
        for k, (sample, expected) in enumerate(zip(np.asarray(inputs[i], dtype=np.int64),
                                                   want)):
            got, work = run_layer(layer, image, sample)
            assert got.tolist() == expected.tolist(), f"layer {i}"
            # every walked tap has at least one entry; the vectorized count agrees
            assert work.shape == (n_pes, 2) and np.all(work[:, 0] <= work[:, 1])
            assert counted[k].tolist() == work.tolist()


@settings(max_examples=40, **_SETTINGS)
@given(_conv_models_and_inputs(), st.integers(1, 4))
def test_whole_network_from_its_images_equals_sim(case, n_pes):
    """Every layer from the images the engine loads, packed columns between layers (a Linear
    layer after a convolution reads the maps' packed columns), equals sim.trace."""
    model, x = case
    want = sim.trace(model, x)
    for k, sample in enumerate(np.asarray(x, dtype=np.int64)[:2]):
        got = run_network(model, n_pes, sample)
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert a.tolist() == b[k].tolist(), f"layer {i}"


@pytest.mark.parametrize("window, pool", [([1, 1, 0, 0], "avg"), ([1, 0, 0, 0], "avg"),
                                          ([3, 1, 2, 2], "avg"), ([-1, 5, 2, 0], "max")])
def test_pooling_drain_rounds_as_the_contract(window, pool):
    """A13 on sums whose average is an exact half (254 = 2 x 127: (254 + 2) >> 2 = 64, where
    any other rounding term gives 63), through the drain of run_layer."""
    from core.artifact import CompressedLayer

    geometry = ConvGeometry(1, 2, 2, 1, 1, pool=pool)
    layer = _quantized(CompressedLayer(codebook=[0.0, 1.0], index=np.ones((1, 1), np.uint8),
                                       bias=[0.0], relu=False, index_bits=1, geometry=geometry),
                       signed=True)
    assert layer.integer.logits and layer.integer.codebook.tolist() == [0, 127]
    x = np.array(window, dtype=np.int64)
    sums = [127 * v for v in window]
    want = max(sums) if pool == "max" else (sum(sums) + 2) >> 2
    from core.artifact import CompressedModel

    model = CompressedModel([layer])
    assert sim.run_layer(model, 0, x[None]).tolist() == [[want]]
    assert run_layer(layer, pack_layer(layer, 1), x)[0].tolist() == [want]


def test_packed_columns_of_a_linear_layer_after_maps():
    fields = MapFields(3, 3, 2)                     # fields 2 + 2 + 1 bits: 32 columns
    assert fields.size == 32
    x = np.arange(1, 19).reshape(1, 18)
    padded = pad_input(x, fields)
    assert padded.shape == (1, 32) and padded[0, fields.packed_order()].tolist() == x[0].tolist()
    assert np.count_nonzero(padded) == 18
    from core.artifact import CompressedLayer

    index = np.arange(18 * 2).reshape(2, 18) % 4
    layer = CompressedLayer(codebook=[0.0, 1.0, 2.0, 3.0], index=index.astype(np.uint8),
                            bias=[0.0, 0.0], relu=False, index_bits=2)
    wide = expand_columns(layer, fields)
    assert wide.index.shape == (2, 32)
    assert wide.index[:, fields.packed_order()].tolist() == index.tolist()
    holes = np.setdiff1d(np.arange(32), fields.packed_order())
    assert not wide.index[:, holes].any()


def test_channel_masks_are_the_union_of_the_taps():
    geometry = ConvGeometry(2, 4, 4, 2, 2)
    from core.artifact import CompressedLayer

    index = np.zeros((3, 8), np.uint8)
    index[0, 1] = index[1, 2] = index[2, 7] = 1     # channel 0: rows 0, 1; channel 1: row 2
    layer = CompressedLayer(codebook=[0.0, 1.0], index=index, bias=[0.0] * 3, relu=False,
                            index_bits=1, geometry=geometry)
    image = pack_layer(_quantized(layer), 2)        # rows 0, 2 in PE 0; row 1 in PE 1
    assert channel_masks(image, ConvLayout(geometry, 3, 2)).tolist() == [0b11, 0b01]


def _quantized(layer, *, signed: bool = False):
    from core.artifact import CompressedModel
    from core.integer import quantize_model

    model = CompressedModel([layer])
    calibration = np.ones((4, model.in_features), np.float32)
    if signed:
        calibration[0] = -1.0
    return quantize_model(model, calibration).layers[0]


@pytest.mark.parametrize("geometry", [
    ConvGeometry(2, 5, 6, 3, 2, stride=1, padding=1),
    ConvGeometry(1, 7, 7, 3, 3, stride=2, padding=1),
    ConvGeometry(3, 4, 9, 1, 4, stride=2, padding=0),
    ConvGeometry(1, 3, 3, 3, 3, stride=1, padding=2),
])
def test_tap_walk_is_every_contributing_tap_once(geometry):
    """Every (input, tap, output) triple of A12, and no other, in dy-then-dx order."""
    layout = ConvLayout(geometry, 2, 1)
    g = geometry
    for c in range(g.in_channels):
        for y in range(g.in_height):
            for x in range(g.in_width):
                want = []
                for dy in range(g.kernel_height):
                    for dx in range(g.kernel_width):
                        for oy in range(g.conv_height):
                            for ox in range(g.conv_width):
                                if (oy * g.stride + dy - g.padding, ox * g.stride + dx
                                        - g.padding) == (y, x):
                                    want.append(((c * g.kernel_height + dy) * g.kernel_width
                                                 + dx, oy * g.conv_width + ox))
                assert taps(layout, c, y, x) == want
                # the gateware's tables give the same walk, and a tap mask filters it
                full = (1 << g.taps) - 1
                assert layout.walk(c, y, x, full) == want
                odd = int("10" * g.taps, 2) & full
                assert layout.walk(c, y, x, odd) == [(column, q) for column, q in want
                                                     if (odd >> (column % g.taps)) & 1]


def test_map_fields_and_addresses():
    fields = MapFields(20, 12, 12)
    assert (fields.c_bits, fields.y_bits, fields.x_bits, fields.size) == (5, 4, 4, 8192)
    order = fields.packed_order()
    assert len(order) == 20 * 12 * 12 and len(set(order.tolist())) == len(order)
    assert fields.unpack(int(fields.pack(19, 11, 7))) == (19, 11, 7)
    # a field of one value costs no bits: MNIST's 1 x 28 x 28 is 1,024 columns, not 2,048
    assert (MapFields(1, 28, 28).bits, MapFields(1, 1, 1).size) == (10, 1)
    layout = ConvLayout(ConvGeometry(20, 12, 12, 5, 5, pool="max"), 50, 16)
    assert (layout.rows_per_pe, layout.row_bits, layout.positions) == (4, 2, 64)
    assert layout.accumulator_depth == 256 and layout.address(63, 3) == 255
    assert (layout.outputs.channels, layout.outputs.height, layout.outputs.width) == (50, 4, 4)
    walk = drain_walk(layout, 15)                   # channels 15, 31, 47: three local rows
    assert len(walk) == 3 * 16 and walk[0] == (0, (0, 0), [0, 1, 8, 9])
    assert walk[-1] == (2, (3, 3), [54, 55, 62, 63])


def test_layout_refuses_a_linear_layer():
    from core.artifact import CompressedLayer

    layer = CompressedLayer(codebook=[0.0, 1.0], index=np.ones((2, 3), np.uint8),
                            bias=[0.0, 0.0], relu=False)
    with pytest.raises(ValueError, match="not a convolution"):
        ConvLayout.of(layer, 2)


def test_tap_masks_mark_the_nonempty_columns():
    from core.artifact import CompressedLayer

    geometry = ConvGeometry(2, 4, 4, 2, 2)
    index = np.zeros((3, 8), np.uint8)
    index[0, 1] = index[2, 6] = index[1, 4] = 1                # (o, c tap): tap 1 of channel 0 ...
    layer = CompressedLayer(codebook=[0.0, 1.0], index=index, bias=[0.0] * 3, relu=False,
                            index_bits=1, geometry=geometry)
    image = pack_layer(_quantized(layer), 2)                   # rows 0, 2 in PE 0; row 1 in PE 1
    masks = tap_masks(image, ConvLayout(geometry, 3, 2))
    assert masks.tolist() == [[0b0010, 0b0100], [0b0000, 0b0001]]
