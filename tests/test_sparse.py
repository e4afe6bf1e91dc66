"""Tests for core.sparse (relative-index (v, z) format, EIE §III)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.sparse import RelativeIndexStream, decode_relative, encode_relative

SETTINGS = settings(max_examples=150, deadline=None)


def stream(index, zero_run, length, bits=4):
    return RelativeIndexStream(
        np.asarray(index, dtype=np.int64), np.asarray(zero_run, dtype=np.int64), length, bits
    )


def test_eie_example():
    a, b, c = 5, 7, 3
    seq = [0, 0, a, b] + [0] * 18 + [c]
    s = encode_relative(seq, 4)
    assert s.index.tolist() == [a, b, 0, c]
    assert s.zero_run.tolist() == [2, 0, 15, 2]
    assert s.length == 23 and s.zero_run_bits == 4
    assert s.index.dtype == np.uint8 and s.zero_run.dtype == np.uint8
    np.testing.assert_array_equal(decode_relative(s), seq)


@pytest.mark.parametrize(
    "seq, index, zero_run",
    [
        ([], [], []),
        ([0, 0, 0], [], []),  # all zeros: trailing, no entries
        ([1, 2, 3], [1, 2, 3], [0, 0, 0]),  # no zeros
        ([0] * 15 + [9], [9], [15]),  # longest run without padding
        ([0] * 16 + [9], [0, 9], [15, 0]),  # exactly 2**b_z zeros
        ([0] * 32 + [9, 0, 0], [0, 0, 9], [15, 15, 0]),  # multiple, then trailing zeros
        ([4] + [0] * 33 + [1], [4, 0, 0, 1], [0, 15, 15, 1]),
    ],
)
def test_known_streams(seq, index, zero_run):
    s = encode_relative(seq, 4)
    assert s.index.tolist() == index and s.zero_run.tolist() == zero_run
    assert s.n_entries == len(index)
    np.testing.assert_array_equal(decode_relative(s), seq)


def test_dtypes():
    s = encode_relative([0, 300, 0, 2], 9)
    assert s.index.dtype == np.uint16 and s.zero_run.dtype == np.uint16
    s = encode_relative(np.array([0, 255], dtype=np.uint8), 8)
    assert s.index.dtype == np.uint8 and s.zero_run.dtype == np.uint8
    assert decode_relative(s).dtype == np.int64


@st.composite
def run_sequences(draw):
    """Sequences of zero runs and nonzeros, runs biased to 2**b_z boundaries."""
    bits = draw(st.integers(1, 8))
    period = 1 << bits
    run = st.one_of(
        st.integers(0, 3),
        st.sampled_from([period - 1, period, period + 1, 2 * period, 3 * period - 1]),
        st.integers(0, 5 * period),
    )
    max_index = draw(st.sampled_from([1, 15, 255, 65535]))
    parts = []
    for gap, value in draw(st.lists(st.tuples(run, st.integers(1, max_index)), max_size=30)):
        parts += [0] * gap + [value]
    if draw(st.booleans()):
        parts = parts + [0] * draw(run)  # trailing zeros
    return np.asarray(parts, dtype=np.int64), bits


@SETTINGS
@given(run_sequences())
def test_round_trip(case):
    seq, bits = case
    s = encode_relative(seq, bits)
    period = 1 << bits
    assert s.length == seq.size
    assert s.index.size == s.zero_run.size
    assert s.zero_run.max(initial=0) <= period - 1
    assert np.all(s.zero_run[s.index == 0] == period - 1)
    # Entry count: one per nonzero plus gap // 2**b_z paddings per gap.
    nz = np.flatnonzero(seq)
    gaps = np.diff(nz, prepend=-1) - 1
    assert s.index.size == nz.size + int((gaps // period).sum())
    if s.index.size:
        assert s.index[-1] != 0  # no padding after the last nonzero
    decoded = decode_relative(s)
    assert decoded.dtype == np.int64
    np.testing.assert_array_equal(decoded, seq)
    # Canonical: re-encoding the decoded sequence gives the same stream.
    assert encode_relative(decoded, bits) == s


@pytest.mark.parametrize("bits", [1, 2, 8, 12, 16])
def test_round_trip_wide(bits):
    rng = np.random.default_rng(bits)
    seq = rng.integers(1, 16, 3000) * (rng.random(3000) < 0.05)
    seq[1000:1000 + (1 << min(bits, 12)) * 3] = 0
    s = encode_relative(seq, bits)
    np.testing.assert_array_equal(decode_relative(s), seq)


@pytest.mark.parametrize("bits", [0, 17, -1])
def test_zero_run_bits_range(bits):
    with pytest.raises(ValueError, match=f"zero_run_bits must be 1..16, not {bits}"):
        encode_relative([1, 0, 1], bits)
    with pytest.raises(ValueError, match="zero_run_bits must be 1..16"):
        decode_relative(stream([1], [0], 1, bits))


@pytest.mark.parametrize("bits", [4.0, True, "4", None])
def test_zero_run_bits_type(bits):
    with pytest.raises(TypeError, match="zero_run_bits must be an int"):
        encode_relative([1, 0, 1], bits)


@pytest.mark.parametrize(
    "seq, match",
    [
        ([[0, 1]], "1-D"),
        (np.array(3), "1-D"),
        ([0, -1, 2], "non-negative"),
        ([0.0, 1.0], "integers"),
        ([0, 70000], "<= 65535"),
    ],
)
def test_bad_sequences_refused(seq, match):
    with pytest.raises(ValueError, match=match):
        encode_relative(seq, 4)


@pytest.mark.parametrize(
    "s, match",
    [
        (stream([1, 2], [0], 5), "same length"),
        (stream([1], [16], 20), "zero_run values must be <= 2\\*\\*4 - 1 = 15, not 16"),
        (stream([0, 1], [3, 0], 20), "padding entries .* not 3"),
        (stream([1, 0], [0, 15], 20), "last entry must be a nonzero"),
        (stream([1, 2], [2, 3], 6), "run past length=6"),
        (stream([0, 1], [15, 0], 16), "run past length=16"),
        (stream([1], [0], -1), "length must be >= 0"),
        (stream([[1]], [[0]], 1), "1-D"),
        (stream([-1], [0], 1), "non-negative"),
        (stream([1], [-1], 1), "non-negative"),
        (RelativeIndexStream(np.array([1.0]), np.array([0]), 1, 4), "integers"),
    ],
)
def test_malformed_streams_refused(s, match):
    with pytest.raises(ValueError, match=match):
        decode_relative(s)


def test_boundary_stream_accepted():
    # Last entry exactly at position length - 1.
    np.testing.assert_array_equal(decode_relative(stream([0, 1], [15, 0], 17)), [0] * 16 + [1])


def test_bad_stream_types():
    with pytest.raises(TypeError, match="RelativeIndexStream"):
        decode_relative((np.array([1]), np.array([0]), 1, 4))
    with pytest.raises(TypeError, match="length must be an int"):
        decode_relative(stream([1], [0], 1.0))
