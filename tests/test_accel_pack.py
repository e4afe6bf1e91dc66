"""Tests for accel.planning.pack: EIE's interleaved CSC memory images (docs/accelerator.md)."""

import dataclasses

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from accel.planning.pack import MAX_PES, LayerImage, pack_layer, pack_model, pe_work, unpack_layer
from core.artifact import CompressedLayer, CompressedModel
from core.integer import IntegerLayer, accumulator_bound, accumulator_width, quantize_model
from core.sparse import encode_relative

SETTINGS = settings(max_examples=60, deadline=None)


def make_layer(index, index_bits=4, seed=0, bias=None):
    """A CompressedLayer with integer data (the logits layer: no requantization)."""
    index = np.asarray(index)
    rng = np.random.default_rng(seed)
    k = max(int(index.max(initial=0)) + 1, 2)
    codebook = rng.integers(-127, 128, size=k)
    codebook[0] = 0
    if bias is None:
        bias = rng.integers(-1000, 1001, size=index.shape[0])
    width = accumulator_width(accumulator_bound(codebook, index, bias, 8, False))
    integer = IntegerLayer(codebook=codebook, bias=bias, weight_bits=8, activation_bits=8,
                           input_signed=False, accumulator_bits=width, multiplier=0, shift=0,
                           logits=True)
    return CompressedLayer(codebook=np.concatenate([[0.0], np.arange(1, k)]),
                           index=index.astype(np.uint8 if index_bits <= 8 else np.uint16),
                           bias=np.zeros(index.shape[0]), relu=False, index_bits=index_bits,
                           integer=integer)


def reference_entries(index, n_pes, bits):
    """Per PE, the (v, z) entries and per-column counts by a plain loop over core.sparse."""
    out, n_in = index.shape
    per_pe, counts = [], np.zeros((n_pes, n_in), dtype=np.int64)
    for p in range(n_pes):
        v, z = [], []
        for j in range(n_in):
            stream = encode_relative(index[p::n_pes, j].astype(np.int64), bits)
            v += stream.index.tolist()
            z += stream.zero_run.tolist()
            counts[p, j] = stream.n_entries
        per_pe.append((v, z))
    return per_pe, counts


def check_image(image, layer, n_pes, bits):
    """Every documented property of an image, against independent plain-loop computations."""
    index = layer.index
    out, n_in = index.shape
    assert (image.in_features, image.out_features, image.n_pes) == (n_in, out, n_pes)
    assert (image.index_bits, image.zero_run_bits) == (layer.index_bits, bits)
    assert image.entry_bits == layer.index_bits + bits
    assert image.pointer_word_bits == 2 * image.pointer_bits

    per_pe, counts = reference_entries(index, n_pes, bits)
    np.testing.assert_array_equal(image.entry_counts, counts.sum(axis=1))
    assert image.depth == max(1, int(counts.sum(axis=1).max()))
    assert image.pointer_bits == max(1, image.depth.bit_length())
    assert 2 ** image.pointer_bits > image.depth
    assert image.rows_per_pe == -(-out // n_pes)
    assert image.row_bits >= 1 and 2 ** image.row_bits >= image.rows_per_pe
    assert image.row_bits == 1 or 2 ** (image.row_bits - 1) < image.rows_per_pe
    assert image.padding == int(counts.sum()) - int(np.count_nonzero(index))

    assert image.entries.dtype == np.uint32 and image.entries.shape == (n_pes, image.depth)
    for p, (v, z) in enumerate(per_pe):
        words = [a | b << layer.index_bits for a, b in zip(v, z)]
        assert image.entries[p].tolist() == words + [0] * (image.depth - len(words))
    assert int(image.entries.max()) < 2 ** image.entry_bits

    assert image.col_start.shape == (n_pes, n_in + 1)
    np.testing.assert_array_equal(image.col_start[:, 0], 0)
    np.testing.assert_array_equal(np.diff(image.col_start, axis=1), counts)
    np.testing.assert_array_equal(image.col_start[:, -1], image.entry_counts)
    assert image.pointer_words.dtype == np.uint64
    for p in range(n_pes):
        for j in range(n_in):
            word = int(image.pointer_words[p, j])
            start, end = image.col_start[p, j], image.col_start[p, j + 1]
            assert word == start | end << image.pointer_bits
            assert word < 2 ** image.pointer_word_bits
    assert image.col_mask.dtype == np.uint64 and image.col_mask.shape == (n_in,)
    for j in range(n_in):
        assert int(image.col_mask[j]) == sum(1 << p for p in range(n_pes) if counts[p, j])

    np.testing.assert_array_equal(image.codebook, layer.integer.codebook)
    assert image.codebook.dtype == np.int32 and image.bias.dtype == np.int32
    assert image.bias.shape == (n_pes, image.rows_per_pe)
    for p in range(n_pes):
        assert image.rows(p) == len(range(p, out, n_pes))
        for k in range(image.rows_per_pe):
            r = k * n_pes + p
            assert image.bias[p, k] == (layer.integer.bias[r] if r < out else 0)

    decoded = unpack_layer(image)
    assert decoded.dtype == index.dtype
    np.testing.assert_array_equal(decoded, index)


# -- the worked example of docs/accelerator.md ----------------------------------------------

DOC_INDEX = np.array([
    [0, 0, 1, 0],
    [2, 0, 0, 0],
    [0, 0, 1, 0],
    [0, 0, 3, 0],
    [0, 0, 0, 0],
    [0, 0, 0, 2],
    [0, 0, 1, 0],
    [0, 0, 2, 0],
    [3, 0, 0, 0],
])
DOC_BIAS = np.array([10, -11, 12, -13, 14, -15, 16, -17, 18])


def test_documented_example():
    layer = make_layer(DOC_INDEX, index_bits=2, bias=DOC_BIAS)
    image = pack_layer(layer, 2, zero_run_bits=2)
    # PE 0 owns rows 0, 2, 4, 6, 8; PE 1 rows 1, 3, 5, 7.
    # PE 0: column 0 (0,3) (3,0); column 2 (1,0) (1,0) (1,1).  v | z << 2:
    assert image.entries[0].tolist() == [12, 3, 1, 1, 5]
    # PE 1: column 0 (2,0); column 2 (3,1) (2,1); column 3 (2,2); one unused word.
    assert image.entries[1].tolist() == [2, 7, 6, 10, 0]
    assert image.entry_counts.tolist() == [5, 4]
    assert image.col_start.tolist() == [[0, 2, 2, 5, 5], [0, 1, 1, 3, 4]]
    assert (image.depth, image.pointer_bits, image.pointer_word_bits) == (5, 3, 6)
    assert image.pointer_words.tolist() == [[16, 18, 42, 45], [8, 9, 25, 35]]
    assert image.col_mask.tolist() == [0b11, 0b00, 0b11, 0b10]
    assert (image.rows_per_pe, image.row_bits, image.entry_bits) == (5, 3, 4)
    assert image.bias.tolist() == [[10, 12, 14, 16, 18], [-11, -13, -15, -17, 0]]
    assert image.padding == 1
    np.testing.assert_array_equal(image.codebook, layer.integer.codebook)
    np.testing.assert_array_equal(unpack_layer(image), DOC_INDEX)
    assert pe_work(image, np.array([True, False, False, True])).tolist() == [2, 2]
    assert pe_work(image, np.array([False, False, True, False])).tolist() == [3, 2]
    check_image(image, layer, 2, 2)


def test_image_is_read_only():
    image = pack_layer(make_layer(DOC_INDEX, index_bits=2), 2)
    assert isinstance(image, LayerImage)
    with pytest.raises(ValueError):
        image.entries[0, 0] = 1
    with pytest.raises(AttributeError):
        image.depth = 3


# -- round trips ----------------------------------------------------------------------------

@st.composite
def layers(draw):
    """Index matrices: any shape up to 40x40, densities from empty to dense, zero runs that
    often exceed 2**b_z (so padding appears), some all-zero rows and columns."""
    out = draw(st.integers(1, 40))
    n_in = draw(st.integers(1, 40))
    index_bits = draw(st.sampled_from([1, 2, 4, 8]))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    density = draw(st.sampled_from([0.0, 0.02, 0.1, 0.5, 1.0]))
    top = min(2 ** index_bits - 1, 15)
    index = rng.integers(1, top + 1, size=(out, n_in)) * (rng.random((out, n_in)) < density)
    if draw(st.booleans()):
        index[rng.random(out) < 0.3] = 0
        index[:, rng.random(n_in) < 0.3] = 0
    n_pes = draw(st.sampled_from([1, 2, 3, 5, 7, 16, 64]))
    bits = draw(st.integers(1, 4))
    return make_layer(index, index_bits, seed % 1000), n_pes, bits


@SETTINGS
@given(layers())
@example((make_layer([[0]]), 1, 4))
@example((make_layer([[5]]), 64, 1))
@example((make_layer(np.random.default_rng(1).integers(0, 16, (37, 13))), 5, 4))
@example((make_layer(np.ones((12, 9), dtype=np.int64)), 4, 2))           # fully dense
@example((make_layer(np.zeros((8, 6), dtype=np.int64)), 3, 4))          # all zero
@example((make_layer(np.eye(40, dtype=np.int64)[::-1] * 3), 1, 1))      # long runs, b_z = 1
@example((make_layer(np.eye(40, 7, k=-33, dtype=np.int64)), 2, 2))      # padding then a weight
def test_round_trip(case):
    layer, n_pes, bits = case
    check_image(pack_layer(layer, n_pes, zero_run_bits=bits), layer, n_pes, bits)


@pytest.mark.parametrize("n_pes, shape", [(1, (17, 11)), (20, (7, 5)), (7, (37, 13)),
                                          (64, (64, 3)), (3, (1, 30))])
def test_pe_counts_and_shapes(n_pes, shape):
    """One PE, more PEs than rows (idle PEs), a PE count dividing no dimension."""
    rng = np.random.default_rng(sum(shape))
    index = rng.integers(1, 16, size=shape) * (rng.random(shape) < 0.3)
    layer = make_layer(index)
    image = pack_layer(layer, n_pes)
    check_image(image, layer, n_pes, 4)
    idle = np.arange(n_pes) >= shape[0]
    assert not image.entry_counts[idle].any()
    assert not image.bias[idle].any()


def test_padding_breaks_long_runs():
    index = np.zeros((70, 2), dtype=np.int64)
    index[68, 0] = 7            # PE 0 of 2: local row 34, 34 rows skipped = 2 * 16 + 2
    index[1, 1] = 1             # PE 1: local row 0
    index[67, 1] = 2            # PE 1: local row 33, 32 rows skipped = 2 * 16 + 0
    image = pack_layer(make_layer(index), 2, zero_run_bits=4)
    pad = 0 | 15 << 4
    assert image.entries[0, :image.entry_counts[0]].tolist() == [pad, pad, 7 | 2 << 4]
    assert image.entries[1, :image.entry_counts[1]].tolist() == [1, pad, pad, 2 | 0 << 4]
    assert image.padding == 4
    # 31 rows skipped = one padding (16 rows) + z = 15.
    index[67, 1], index[65, 1] = 0, 2
    image = pack_layer(make_layer(index), 2, zero_run_bits=4)
    assert image.entries[1, :image.entry_counts[1]].tolist() == [1, pad, 2 | 15 << 4]
    assert image.padding == 3
    # 15 rows skipped: no padding.
    index[65, 1], index[33, 1] = 0, 2
    image = pack_layer(make_layer(index), 2, zero_run_bits=4)
    assert image.entries[1, :image.entry_counts[1]].tolist() == [1, 2 | 15 << 4]


def test_lenet_layer_size():
    rng = np.random.default_rng(0)
    index = rng.integers(1, 16, size=(300, 784)) * (rng.random((300, 784)) < 0.05)
    layer = make_layer(index)
    image = pack_layer(layer, 16)
    np.testing.assert_array_equal(unpack_layer(image), index)
    assert image.rows_per_pe == 19 and image.row_bits == 5
    assert image.entry_counts.sum() == np.count_nonzero(index) + image.padding


def test_pack_model():
    rng = np.random.default_rng(4)

    def layer(n_out, n_in, relu):
        index = rng.integers(1, 16, size=(n_out, n_in)) * (rng.random((n_out, n_in)) < 0.3)
        return CompressedLayer(codebook=np.concatenate([[0.0], np.linspace(-1, 1, 15)]),
                               index=index.astype(np.uint8), bias=rng.normal(size=n_out),
                               relu=relu)

    model = CompressedModel([layer(20, 12, True), layer(5, 20, False)])
    with pytest.raises(ValueError, match=r"layer 0 \(20x12\).*python -m compress"):
        pack_model(model, 4)
    model = quantize_model(model, rng.random((50, 12)))
    images = pack_model(model, 4, zero_run_bits=3)
    assert len(images) == 2
    for image, layer in zip(images, model.layers):
        check_image(image, layer, 4, 3)


# -- pe_work --------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(layers(), st.integers(0, 2 ** 32 - 1))
def test_pe_work_is_a_plain_loop(case, seed):
    layer, n_pes, bits = case
    image = pack_layer(layer, n_pes, zero_run_bits=bits)
    active = np.random.default_rng(seed).random(layer.in_features) < 0.5
    expected = [0] * n_pes
    for p in range(n_pes):
        for j in range(layer.in_features):
            if active[j]:
                expected[p] += int(image.col_start[p, j + 1] - image.col_start[p, j])
    work = pe_work(image, active)
    assert work.dtype == np.int64 and work.tolist() == expected
    assert pe_work(image, np.ones(layer.in_features, bool)).tolist() == \
        image.entry_counts.tolist()
    assert not pe_work(image, np.zeros(layer.in_features, bool)).any()


@pytest.mark.parametrize("active", [np.ones(3, bool), np.ones(4, int), np.ones((1, 4), bool)])
def test_pe_work_refuses_bad_masks(active):
    image = pack_layer(make_layer(DOC_INDEX, index_bits=2), 2)
    with pytest.raises(ValueError, match=r"active_columns must be a bool array of shape \(4,\)"):
        pe_work(image, active)


# -- errors ---------------------------------------------------------------------------------

def test_layer_without_integer_data_refused():
    layer = CompressedLayer(codebook=[0.0, 1.0], index=np.ones((2, 2), np.uint8),
                            bias=np.zeros(2), relu=True)
    with pytest.raises(ValueError, match="no integer data.*quantize_model.*python -m compress"):
        pack_layer(layer, 2)


@pytest.mark.parametrize("n_pes", [0, MAX_PES + 1, -1, 2.0, True, "4"])
def test_bad_pe_count_refused(n_pes):
    with pytest.raises(ValueError, match=f"n_pes must be .*1..64, not {n_pes!r}"):
        pack_layer(make_layer(DOC_INDEX), n_pes)


@pytest.mark.parametrize("bits", [0, 9, 4.0, None])
def test_bad_zero_run_bits_refused(bits):
    with pytest.raises(ValueError, match=f"zero_run_bits must be .*1..8, not {bits!r}"):
        pack_layer(make_layer(DOC_INDEX), 2, zero_run_bits=bits)


def test_malformed_images_refused():
    image = pack_layer(make_layer(DOC_INDEX, index_bits=2), 2, zero_run_bits=2)

    def altered(**fields):
        return dataclasses.replace(image, **fields)

    words = image.pointer_words.copy()
    words[0, 0] = np.uint64(6 << image.pointer_bits)          # end past depth
    with pytest.raises(ValueError, match="start <= end <= depth"):
        unpack_layer(altered(pointer_words=words))
    entries = image.entries.copy()
    entries[0, 1] = 3 | 1 << 2                                  # PE 0 column 0: local row 5
    with pytest.raises(ValueError, match="past its PE's rows"):
        unpack_layer(altered(entries=entries))
    entries = image.entries.copy()
    entries[0, 0] = 0 | 1 << 2                                  # padding with z != 3
    with pytest.raises(ValueError, match="padding entries"):
        unpack_layer(altered(entries=entries))
    with pytest.raises(ValueError, match="codebook size"):
        unpack_layer(altered(codebook=image.codebook[:3]))
