"""Tests for core.huffman (canonical Huffman coding, Deep Compression §4)."""

import heapq
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.huffman import HuffmanCode, huffman_decode, huffman_encode

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- helpers -----------------------------------------------------------------


def reference_cost(counts) -> int:
    """Total bits of an optimal prefix code: sum of all merged weights."""
    weights = [int(c) for c in counts if c > 0]
    if len(weights) == 1:
        return weights[0]  # one symbol still needs one bit per occurrence
    heapq.heapify(weights)
    cost = 0
    while len(weights) > 1:
        merged = heapq.heappop(weights) + heapq.heappop(weights)
        cost += merged
        heapq.heappush(weights, merged)
    return cost


def codewords(code: HuffmanCode) -> dict[int, str]:
    return {
        s: format(int(code.codes[s]), f"0{int(code.lengths[s])}b")
        for s in np.flatnonzero(code.lengths).tolist()
    }


@st.composite
def symbol_streams(draw):
    """(symbols, alphabet_size) covering skewed, degenerate and flat streams."""
    alphabet = draw(st.integers(1, 256))
    kind = draw(st.sampled_from(["list", "skewed", "single", "two", "distinct", "empty"]))
    if kind == "list":
        symbols = draw(st.lists(st.integers(0, alphabet - 1), max_size=300))
    elif kind == "skewed":
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        p = draw(st.floats(0.02, 0.9))
        n = draw(st.integers(0, 3000))
        symbols = np.minimum(rng.geometric(p, n) - 1, alphabet - 1)
    elif kind == "single":
        symbols = [draw(st.integers(0, alphabet - 1))] * draw(st.integers(1, 50))
    elif kind == "two":
        a, b = draw(st.integers(0, alphabet - 1)), draw(st.integers(0, alphabet - 1))
        symbols = draw(st.lists(st.sampled_from([a, b]), min_size=1, max_size=200))
    elif kind == "distinct":
        symbols = draw(st.permutations(list(range(alphabet))))
    else:
        symbols = []
    return np.asarray(symbols, dtype=np.int64), alphabet


# -- round trip and optimality -------------------------------------------------


@SETTINGS
@given(symbol_streams())
def test_round_trip(stream):
    symbols, alphabet = stream
    code, data, n_bits = huffman_encode(symbols, alphabet)
    assert len(data) == (n_bits + 7) // 8
    assert n_bits == code.encoded_bits(symbols)
    decoded = huffman_decode(code, data, n_bits, symbols.size)
    assert decoded.dtype == np.int64
    np.testing.assert_array_equal(decoded, symbols)
    # A code rebuilt from the stored length table decodes the same stream.
    rebuilt = HuffmanCode(code.lengths.copy())
    np.testing.assert_array_equal(rebuilt.decode(data, n_bits, symbols.size), symbols)


@SETTINGS
@given(symbol_streams())
def test_optimal_and_canonical(stream):
    symbols, alphabet = stream
    counts = np.bincount(symbols, minlength=alphabet)
    code = HuffmanCode.from_counts(counts)
    assert code.lengths.dtype == np.uint8 and code.lengths.shape == (alphabet,)
    np.testing.assert_array_equal(code.lengths > 0, counts > 0)
    assert code.encoded_bits(symbols) == (reference_cost(counts) if symbols.size else 0)

    words = codewords(code)
    # Prefix-free.
    ordered = sorted(words.values())
    for a, b in zip(ordered, ordered[1:]):
        assert not b.startswith(a)
    # Canonical: in (length, symbol) order, codes are consecutive within a
    # length and increasing as left-justified binary fractions overall.
    by_rank = sorted(words, key=lambda s: (len(words[s]), s))
    for s, t in zip(by_rank, by_rank[1:]):
        ws, wt = words[s], words[t]
        if len(ws) == len(wt):
            assert int(wt, 2) == int(ws, 2) + 1
        assert int(ws, 2) << (len(wt) - len(ws)) < int(wt, 2)
    if by_rank:
        assert set(words[by_rank[0]]) == {"0"}  # first code is all zeros
    # Complete (Kraft equality) as soon as there are two symbols.
    kraft = sum(2.0 ** -int(l) for l in code.lengths if l)
    if code.n_symbols >= 2:
        assert kraft == 1.0
    elif code.n_symbols == 1:
        assert kraft == 0.5


def test_rfc1951_example():
    # RFC 1951 §3.2.2: lengths (3, 3, 3, 3, 3, 2, 4, 4) for A..H.
    code = HuffmanCode(np.array([3, 3, 3, 3, 3, 2, 4, 4]))
    assert list(codewords(code).values()) == [
        "010", "011", "100", "101", "110", "00", "1110", "1111"
    ]
    assert code.max_length == 4 and code.alphabet_size == 8 and code.n_symbols == 8


def test_known_lengths_and_bits():
    code = HuffmanCode.from_counts([5, 0, 1, 1, 2])
    assert code.lengths.tolist() == [1, 0, 3, 3, 2]
    data, n_bits = code.encode([0, 4, 2, 3])
    assert (data, n_bits) == (bytes([0b01011011, 0b10000000]), 9)
    np.testing.assert_array_equal(code.decode(data, n_bits, 4), [0, 4, 2, 3])


def test_determinism():
    rng = np.random.default_rng(1)
    symbols = rng.integers(0, 8, 500)  # many near-ties
    first = HuffmanCode.from_symbols(symbols, 8)
    assert HuffmanCode.from_symbols(symbols, 8) == first
    assert HuffmanCode.from_symbols(rng.permutation(symbols), 8) == first
    assert hash(HuffmanCode.from_symbols(symbols, 8)) == hash(first)
    # Exact ties: the same lengths every time.
    assert HuffmanCode.from_counts([1, 1, 1]).lengths.tolist() == [2, 2, 1]
    assert HuffmanCode.from_counts([3, 3, 3, 3]).lengths.tolist() == [2, 2, 2, 2]


def test_degenerate_cases():
    empty = HuffmanCode.from_symbols([], 5)
    assert empty.lengths.tolist() == [0] * 5 and empty.max_length == 0
    assert empty.encode([]) == (b"", 0)
    assert empty.decode(b"", 0, 0).shape == (0,)
    with pytest.raises(ValueError, match="empty code"):
        empty.decode(b"", 0, 1)

    code, data, n_bits = huffman_encode([3, 3, 3], 4)
    assert code.lengths.tolist() == [0, 0, 0, 1]
    assert (data, n_bits) == (b"\x00", 3)
    np.testing.assert_array_equal(huffman_decode(code, data, n_bits, 3), [3, 3, 3])

    assert huffman_encode([], 0)[1:] == (b"", 0)


def test_long_codes():
    # Fibonacci counts give the deepest possible tree: lengths up to 39, which
    # exercises the slow per-length path beyond the 12-bit table.
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    code = HuffmanCode.from_counts(fib)
    assert code.max_length == 39
    symbols = np.random.default_rng(2).integers(0, 40, 2000)
    data, n_bits = code.encode(symbols)
    np.testing.assert_array_equal(code.decode(data, n_bits, symbols.size), symbols)


def test_64_bit_codes():
    lengths = np.array(list(range(1, 65)) + [64])  # complete, Kraft sum exactly 1
    code = HuffmanCode(lengths)
    assert code.max_length == 64
    assert int(code.codes[64]) == 2**64 - 1 and int(code.codes[63]) == 2**64 - 2
    symbols = np.array([64, 0, 63, 5, 64, 40])
    data, n_bits = code.encode(symbols)
    assert n_bits == 64 + 1 + 64 + 6 + 64 + 41
    np.testing.assert_array_equal(code.decode(data, n_bits, symbols.size), symbols)


def test_speed_100k():
    rng = np.random.default_rng(3)
    symbols = np.minimum(rng.geometric(0.1, 100_000) - 1, 255)
    t0 = time.perf_counter()
    code, data, n_bits = huffman_encode(symbols, 256)
    decoded = huffman_decode(code, data, n_bits, symbols.size)
    elapsed = time.perf_counter() - t0
    np.testing.assert_array_equal(decoded, symbols)
    assert code.max_length > 12  # the slow path is used too
    assert elapsed < 1.0


# -- refusals -------------------------------------------------------------------


@pytest.mark.parametrize(
    "lengths, match",
    [
        ([1, 1, 1], "Kraft"),
        ([2, 2, 2, 2, 3], "Kraft"),
        ([0, 1, 1, 2], "Kraft"),
        ([-1, 1], "non-negative"),
        ([65, 1], "<= 64"),
        ([[1, 1]], "1-D"),
        ([1.0, 1.0], "integers"),
    ],
)
def test_bad_lengths_refused(lengths, match):
    with pytest.raises(ValueError, match=match):
        HuffmanCode(np.array(lengths))


def test_incomplete_lengths_accepted():
    code = HuffmanCode(np.array([1, 0, 2]))  # Kraft sum 3/4
    np.testing.assert_array_equal(code.decode(*code.encode([0, 2]), 2), [0, 2])
    with pytest.raises(ValueError, match="invalid Huffman code"):
        code.decode(bytes([0b11000000]), 2, 1)


def test_lengths_are_immutable_copy():
    raw = np.array([1, 1])
    code = HuffmanCode(raw)
    raw[0] = 5
    assert code.lengths.tolist() == [1, 1]
    with pytest.raises(ValueError):
        code.lengths[0] = 2


def test_encode_refusals():
    code = HuffmanCode.from_counts([4, 0, 2])
    with pytest.raises(ValueError, match="symbol 1 has no codeword"):
        code.encode([0, 2, 1])
    with pytest.raises(ValueError, match="symbol 1"):
        code.encoded_bits([1])
    with pytest.raises(ValueError, match="alphabet_size"):
        code.encode([3])
    with pytest.raises(ValueError, match="non-negative"):
        code.encode([-1])
    with pytest.raises(ValueError, match="1-D"):
        code.encode([[0]])
    with pytest.raises(ValueError, match="integers"):
        code.encode([0.5])
    with pytest.raises(ValueError, match="alphabet_size"):
        huffman_encode([0, 7], 4)


def _sample():
    symbols = np.array([0, 1, 0, 2, 3, 0, 0, 1, 4, 0, 2, 0, 0, 0, 1, 3] * 4)
    code, data, n_bits = huffman_encode(symbols, 5)
    return symbols, code, data, n_bits


def test_truncated_refused():
    symbols, code, data, n_bits = _sample()
    with pytest.raises(ValueError, match=rf"truncated: decoded {symbols.size} of {symbols.size + 1}"):
        code.decode(data, n_bits, symbols.size + 1)
    with pytest.raises(ValueError, match="truncated"):
        code.decode(data, n_bits, 10 * symbols.size)
    short = n_bits - 3
    cut = bytearray(data[: (short + 7) // 8])
    if short % 8:
        cut[-1] &= (0xFF << (8 - short % 8)) & 0xFF
    with pytest.raises(ValueError, match="truncated"):
        code.decode(bytes(cut), short, symbols.size)
    with pytest.raises(ValueError, match="n_bits must be <="):
        code.decode(data[:-1], n_bits, symbols.size)


def test_wrong_n_bits_and_count_refused():
    symbols, code, data, n_bits = _sample()
    with pytest.raises(ValueError, match="unused bits"):
        code.decode(data, n_bits, symbols.size - 1)
    with pytest.raises(ValueError, match="unused bits"):
        code.decode(data + b"\x00", n_bits + 8, symbols.size)
    with pytest.raises(ValueError):
        code.decode(data, n_bits + 1, symbols.size)
    with pytest.raises(ValueError, match="n_bits must be <="):
        code.decode(data, 8 * len(data) + 1, symbols.size)
    with pytest.raises(ValueError, match="len\\(data\\)"):
        code.decode(data + b"\x00", n_bits, symbols.size)
    with pytest.raises(ValueError, match="n_bits must be >= 0"):
        code.decode(data, -1, symbols.size)
    with pytest.raises(ValueError, match="count must be >= 0"):
        code.decode(data, n_bits, -1)
    with pytest.raises(ValueError, match="unused bits"):
        code.decode(data, n_bits, 0)


def test_nonzero_padding_refused():
    code = HuffmanCode.from_counts([1, 1])
    data, n_bits = code.encode([1, 0, 1])
    assert (data, n_bits) == (bytes([0b10100000]), 3)
    with pytest.raises(ValueError, match="padding"):
        code.decode(bytes([0b10100001]), 3, 3)


def test_single_symbol_invalid_code_refused():
    code, data, n_bits = huffman_encode([2] * 8, 3)
    assert data == b"\x00"
    with pytest.raises(ValueError, match="invalid Huffman code"):
        code.decode(bytes([0b00010000]), 8, 8)


@SETTINGS
@given(symbol_streams(), st.data())
def test_bit_flips_never_crash(stream, data):
    symbols, alphabet = stream
    code, encoded, n_bits = huffman_encode(symbols, alphabet)
    if n_bits == 0:
        return
    bit = data.draw(st.integers(0, n_bits - 1))
    corrupt = bytearray(encoded)
    corrupt[bit // 8] ^= 0x80 >> (bit % 8)
    try:
        decoded = code.decode(bytes(corrupt), n_bits, symbols.size)
    except ValueError:
        return  # detected
    # Undetected flips (complete codes) must still change the output.
    assert not np.array_equal(decoded, symbols)
