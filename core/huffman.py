"""Canonical Huffman coding of quantised weight indices and sparse-index streams.

Deep Compression's last stage Huffman-codes the codebook indices and the
relative (zero-run) indices of a pruned, weight-shared layer; the distributions
are strongly skewed, so this saves a further 20-30 % of storage (Han et al.,
2016, "Deep Compression", §4).  The code here is *canonical* (RFC 1951
§3.2.2): a code is fully described by its per-symbol code lengths, which is
all that has to be stored next to the bit stream, and it decodes with the
small per-length tables of zlib's ``puff.c`` -- the same structure a hardware
decoder in front of EIE's sparse matrix-vector engine (Han et al., 2016,
"EIE", §III) would use.

References
----------
.. [1] S. Han, H. Mao, W. J. Dally, "Deep Compression: Compressing Deep Neural
   Networks with Pruning, Trained Quantization and Huffman Coding", ICLR 2016,
   §3-4.
.. [2] S. Han et al., "EIE: Efficient Inference Engine on Compressed Deep
   Neural Network", ISCA 2016, §III.
.. [3] P. Deutsch, "DEFLATE Compressed Data Format Specification version 1.3",
   RFC 1951, §3.2.2.
"""

from __future__ import annotations

import heapq
import operator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ._checks import as_index_array

__all__ = ["HuffmanCode", "huffman_encode", "huffman_decode"]

#: Longest code length accepted.  Codes are held in ``uint64``.
_MAX_CODE_LENGTH = 64
#: Width of the first-level decoding table; longer codes fall back to the
#: per-length canonical decoder.  Must be <= 16 (see ``_windows``).
_TABLE_BITS = 12
#: Table entries pack ``symbol << _LEN_SHIFT | length`` into one int.
_LEN_SHIFT = 6
_LEN_MASK = (1 << _LEN_SHIFT) - 1
#: Bit positions whose look-up windows are computed per numpy batch.
_WINDOW_CHUNK = 1 << 16
#: Symbols expanded to bits per numpy batch when encoding (bounds memory).
_ENCODE_CHUNK = 1 << 15


def _as_index(value, name: str) -> int:
    """Return ``value`` as a Python int, refusing bools, floats and the like."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {value!r}") from None


@dataclass(frozen=True, eq=False)
class HuffmanCode:
    """A canonical prefix code over the alphabet ``0 .. alphabet_size - 1``.

    The code is defined entirely by ``lengths``; codewords are assigned in
    order of (length, symbol) as in DEFLATE (RFC 1951 §3.2.2), so a stored
    length table is enough to rebuild encoder and decoder.  Used for the
    final Huffman stage of Deep Compression (Han et al., 2016, §4) on
    codebook and relative indices (Han et al., 2016, EIE §III).

    Parameters
    ----------
    lengths : array_like of int, shape (alphabet_size,)
        Code length of each symbol, 0 for symbols that cannot occur.  Must be
        1-D, in ``0 .. 64`` and satisfy the Kraft inequality
        ``sum(2**-l for l > 0) <= 1``; otherwise ``ValueError`` (this guards
        against corrupt tables read from a file).  Stored as a read-only
        ``uint8`` copy.

    Attributes
    ----------
    lengths : numpy.ndarray of uint8
        As above.
    codes : numpy.ndarray of uint64
        Canonical codeword of each symbol (its low ``lengths[s]`` bits, sent
        MSB first); 0 for absent symbols.
    max_length : int
        Longest code length (0 for an empty code).
    alphabet_size : int
    n_symbols : int
        Number of symbols with a codeword.

    Notes
    -----
    Bit streams are packed MSB-first and the last byte is zero-padded.  A
    single-symbol code has the one codeword ``0`` (length 1); the codeword
    ``1`` is then invalid, which ``decode`` detects.
    """

    lengths: np.ndarray

    def __post_init__(self):
        lengths = _check_lengths(self.lengths)
        object.__setattr__(self, "lengths", lengths)
        max_length = int(lengths.max()) if lengths.size else 0
        # bl_count[l] = number of codewords of length l (RFC 1951 notation).
        bl_count = np.bincount(lengths, minlength=max_length + 1).tolist()
        bl_count[0] = 0
        codes = np.zeros(lengths.size, dtype=np.uint64)
        code = 0
        for length in range(1, max_length + 1):
            code = (code + bl_count[length - 1]) << 1
            members = np.flatnonzero(lengths == length)  # ascending symbol order
            if members.size:
                codes[members] = np.uint64(code) + np.arange(members.size, dtype=np.uint64)
        codes.setflags(write=False)
        object.__setattr__(self, "_codes", codes)
        object.__setattr__(self, "_max_length", max_length)
        object.__setattr__(self, "_bl_count", bl_count)

    # -- derived data -------------------------------------------------------

    @property
    def codes(self) -> np.ndarray:
        return self._codes

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def alphabet_size(self) -> int:
        return int(self.lengths.size)

    @property
    def n_symbols(self) -> int:
        return int(np.count_nonzero(self.lengths))

    def __eq__(self, other):
        if not isinstance(other, HuffmanCode):
            return NotImplemented
        return np.array_equal(self.lengths, other.lengths)

    def __hash__(self):
        return hash(self.lengths.tobytes())

    def __repr__(self):
        return (
            f"HuffmanCode(alphabet_size={self.alphabet_size}, "
            f"n_symbols={self.n_symbols}, max_length={self.max_length})"
        )

    # -- construction ---------------------------------------------------------

    @classmethod
    def from_counts(cls, counts) -> "HuffmanCode":
        """Build the optimal (minimum total length) code for symbol counts.

        Standard Huffman construction with a binary heap (Han et al., 2016,
        Deep Compression §4).  Ties are broken by insertion order -- leaves in
        symbol order, then internal nodes in order of creation -- so equal
        inputs always give the same code.

        Parameters
        ----------
        counts : array_like of int, shape (alphabet_size,)
            Non-negative occurrence count per symbol.  Symbols with count 0
            get length 0.

        Returns
        -------
        HuffmanCode
            If exactly one symbol occurs it gets length 1; if none occurs all
            lengths are 0.

        Raises
        ------
        ValueError
            If ``counts`` is not a 1-D array of non-negative integers, or the
            optimal code would need codewords longer than 64 bits (only
            possible for astronomically skewed, Fibonacci-like counts).
        """
        counts = as_index_array(counts, "counts")
        present = np.flatnonzero(counts)
        lengths = np.zeros(counts.size, dtype=np.int64)
        if present.size == 1:
            lengths[present] = 1
        elif present.size > 1:
            lengths[present] = _huffman_depths(counts[present].tolist())
        if lengths.size and lengths.max() > _MAX_CODE_LENGTH:
            raise ValueError(
                f"optimal code lengths must be <= {_MAX_CODE_LENGTH}, "
                f"not {int(lengths.max())!r}; the counts are too skewed"
            )
        return cls(lengths)

    @classmethod
    def from_symbols(cls, symbols, alphabet_size) -> "HuffmanCode":
        """Build the optimal code for the symbol frequencies of a stream.

        Parameters
        ----------
        symbols : array_like of int, 1-D
            Symbols in ``0 .. alphabet_size - 1``.
        alphabet_size : int
            Size of the alphabet (length of the resulting ``lengths``).

        Returns
        -------
        HuffmanCode
        """
        alphabet_size = _as_index(alphabet_size, "alphabet_size")
        if alphabet_size < 0:
            raise ValueError(f"alphabet_size must be >= 0, not {alphabet_size!r}")
        symbols = as_index_array(symbols)
        if symbols.size and symbols.max() >= alphabet_size:
            raise ValueError(
                f"symbols must be < alphabet_size={alphabet_size}, not {int(symbols.max())!r}"
            )
        return cls.from_counts(np.bincount(symbols, minlength=alphabet_size))

    # -- encoding -------------------------------------------------------------

    def _check_encodable(self, symbols) -> np.ndarray:
        symbols = as_index_array(symbols)
        if symbols.size == 0:
            return symbols
        if symbols.max() >= self.alphabet_size:
            raise ValueError(
                f"symbols must be < alphabet_size={self.alphabet_size}, "
                f"not {int(symbols.max())!r}"
            )
        absent = self.lengths[symbols] == 0
        if absent.any():
            bad = int(symbols[np.argmax(absent)])
            raise ValueError(f"symbol {bad} has no codeword (code length 0); cannot encode it")
        return symbols

    def encoded_bits(self, symbols) -> int:
        """Exact length in bits of ``encode(symbols)``, without building it.

        Parameters
        ----------
        symbols : array_like of int, 1-D

        Returns
        -------
        int
            ``sum(lengths[symbols])``.

        Raises
        ------
        ValueError
            If a symbol is out of range or has no codeword.
        """
        symbols = self._check_encodable(symbols)
        return int(self.lengths[symbols].sum(dtype=np.int64))

    def encode(self, symbols) -> tuple[bytes, int]:
        """Encode a symbol stream.

        Vectorised: codewords and lengths are looked up per symbol, expanded
        to one byte per bit with ``np.repeat`` and shifts, and packed with
        ``np.packbits``.

        Parameters
        ----------
        symbols : array_like of int, 1-D
            Symbols to encode; each must have a codeword.

        Returns
        -------
        data : bytes
            Bit stream, MSB first, last byte zero-padded; exactly
            ``ceil(n_bits / 8)`` bytes.
        n_bits : int
            Number of valid bits in ``data``.

        Raises
        ------
        ValueError
            If a symbol is out of range or has no codeword (naming it).
        """
        symbols = self._check_encodable(symbols)
        lens = self.lengths[symbols].astype(np.int64)
        n_bits = int(lens.sum())
        if n_bits == 0:
            return b"", 0
        codes = self._codes[symbols]
        bits = np.empty(n_bits, dtype=np.uint8)
        out = 0
        # Chunked so the uint64 temporaries stay small for long streams.
        for start in range(0, symbols.size, _ENCODE_CHUNK):
            chunk_lens = lens[start:start + _ENCODE_CHUNK]
            ends = np.cumsum(chunk_lens)
            nb = int(ends[-1])
            # Bit p of a codeword ending at (exclusive) e is at shift e - 1 - p.
            shifts = (np.repeat(ends, chunk_lens) - 1 - np.arange(nb)).astype(np.uint64)
            chunk_codes = np.repeat(codes[start:start + _ENCODE_CHUNK], chunk_lens)
            bits[out:out + nb] = (chunk_codes >> shifts) & np.uint64(1)
            out += nb
        return np.packbits(bits).tobytes(), n_bits

    # -- decoding -------------------------------------------------------------

    @cached_property
    def _decoder(self):
        """Tables for canonical decoding, built on first use.

        Returns ``(table_bits, table, bl_count, sorted_symbols)``: ``table``
        maps every ``table_bits``-bit window to ``symbol << 6 | length`` for
        codes no longer than the window, else -1 (use the slow path);
        ``sorted_symbols`` lists symbols in (length, symbol) order as
        ``puff.c``'s ``h->symbol``.
        """
        table_bits = min(self._max_length, _TABLE_BITS)
        table = np.full(1 << table_bits, -1, dtype=np.int64)
        for length in range(1, table_bits + 1):
            spread = table_bits - length
            for sym in np.flatnonzero(self.lengths == length).tolist():
                first = int(self._codes[sym]) << spread
                table[first:first + (1 << spread)] = (sym << _LEN_SHIFT) | length
        order = np.lexsort((np.arange(self.alphabet_size), self.lengths))
        sorted_symbols = order[self.lengths[order] > 0].tolist()
        return table_bits, table.tolist(), self._bl_count, sorted_symbols

    def decode(self, data: bytes, n_bits: int, count: int) -> np.ndarray:
        """Decode exactly ``count`` symbols from a bit stream.

        Table-driven: the next 12 bits index a table giving symbol and length;
        longer codewords, incomplete codes and the stream's end use the
        per-length canonical decoder of zlib's ``puff.c``.

        Parameters
        ----------
        data : bytes-like
            Bit stream as produced by :meth:`encode`: MSB first, exactly
            ``ceil(n_bits / 8)`` bytes, padding bits zero.
        n_bits : int
            Number of valid bits.
        count : int
            Number of symbols to decode.

        Returns
        -------
        numpy.ndarray of int64, shape (count,)

        Raises
        ------
        ValueError
            If the stream is truncated (ends before ``count`` symbols), holds
            an invalid codeword, ``n_bits`` does not match ``len(data)``, the
            padding bits are not zero, or the ``count`` symbols do not consume
            exactly ``n_bits`` bits.
        """
        data = bytes(data)
        n_bits = _as_index(n_bits, "n_bits")
        count = _as_index(count, "count")
        if n_bits < 0:
            raise ValueError(f"n_bits must be >= 0, not {n_bits!r}")
        if count < 0:
            raise ValueError(f"count must be >= 0, not {count!r}")
        if n_bits > 8 * len(data):
            raise ValueError(
                f"n_bits must be <= 8 * len(data) = {8 * len(data)}, not {n_bits!r}"
            )
        n_bytes = (n_bits + 7) // 8
        if len(data) != n_bytes:
            raise ValueError(
                f"len(data) must be ceil(n_bits / 8) = {n_bytes} for n_bits={n_bits}, "
                f"not {len(data)!r}"
            )
        if n_bits % 8 and data[-1] & ((1 << (8 - n_bits % 8)) - 1):
            raise ValueError("Huffman stream padding bits after n_bits must be zero")
        if count == 0:
            if n_bits:
                raise ValueError(f"Huffman stream has {n_bits} unused bits after 0 symbols")
            return np.zeros(0, dtype=np.int64)
        if self.n_symbols == 0:
            raise ValueError(f"cannot decode {count} symbols with an empty code (all lengths 0)")

        table_bits, table, bl_count, sorted_symbols = self._decoder
        buf = np.frombuffer(data + b"\0\0\0", dtype=np.uint8)
        max_length = self._max_length

        def truncated(k):
            return ValueError(f"Huffman stream truncated: decoded {k} of {count} symbols")

        def slow(pos, k):
            # puff.c decode(): walk the code one bit at a time, per length.
            code = first = index = 0
            for length in range(1, max_length + 1):
                if pos >= n_bits:
                    raise truncated(k)
                code |= (data[pos >> 3] >> (7 - (pos & 7))) & 1
                pos += 1
                n = bl_count[length]
                if code - n < first:
                    return sorted_symbols[index + code - first], pos
                index += n
                first = (first + n) << 1
                code <<= 1
            raise ValueError(
                f"invalid Huffman code at bit {pos - max_length} while decoding symbol {k}"
            )

        # Each symbol takes >= 1 bit, so a longer output cannot be filled.
        out = [0] * min(count, n_bits)
        len_mask, len_shift, chunk = _LEN_MASK, _LEN_SHIFT, _WINDOW_CHUNK  # locals: hot loop
        pos = 0
        base = 0
        win = []
        n_win = 0
        for k in range(count):
            rel = pos - base
            if rel >= n_win:
                if pos >= n_bits:
                    raise truncated(k)
                base, rel = pos, 0
                win = _windows(buf, pos, min(pos + chunk, n_bits), table_bits)
                n_win = len(win)
            entry = table[win[rel]]
            if entry >= 0 and pos + (entry & len_mask) <= n_bits:
                out[k] = entry >> len_shift
                pos += entry & len_mask
            else:
                out[k], pos = slow(pos, k)
        if pos != n_bits:
            raise ValueError(
                f"Huffman stream has {n_bits - pos} unused bits: {count} symbols "
                f"consumed {pos} of n_bits={n_bits}"
            )
        return np.asarray(out, dtype=np.int64)


def _check_lengths(lengths) -> np.ndarray:
    """Validate a code-length table; return it as a read-only uint8 copy."""
    arr = np.asarray(lengths)
    if arr.ndim != 1:
        raise ValueError(f"lengths must be a 1-D array, not an array of shape {arr.shape}")
    if arr.size == 0:
        arr = np.zeros(0, dtype=np.uint8)
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"lengths must be integers, not dtype {arr.dtype}")
    elif arr.min() < 0:
        raise ValueError(f"lengths must be non-negative, not {int(arr.min())!r}")
    elif arr.max() > _MAX_CODE_LENGTH:
        raise ValueError(f"lengths must be <= {_MAX_CODE_LENGTH}, not {int(arr.max())!r}")
    arr = arr.astype(np.uint8)  # always a copy, so the caller cannot mutate it
    # Kraft sum scaled by 2**64, in exact integer arithmetic.
    bl_count = np.bincount(arr, minlength=_MAX_CODE_LENGTH + 1).tolist()
    kraft = sum(n << (_MAX_CODE_LENGTH - l) for l, n in enumerate(bl_count) if l)
    if kraft > 1 << _MAX_CODE_LENGTH:
        raise ValueError(
            f"lengths must satisfy the Kraft inequality sum(2**-l) <= 1, "
            f"not {kraft / 2.0**_MAX_CODE_LENGTH!r}; the code table is corrupt"
        )
    arr.setflags(write=False)
    return arr


def _huffman_depths(weights: list[int]) -> list[int]:
    """Leaf depths of a Huffman tree over ``weights`` (at least two).

    Heap items are ``(weight, order, node)``; ``order`` is the insertion
    order, making the tie-breaking and so the code deterministic.
    """
    n = len(weights)
    heap = [(w, i, i) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    children = []  # children[j] = (a, b) of internal node n + j
    while len(heap) > 1:
        wa, _, a = heapq.heappop(heap)
        wb, _, b = heapq.heappop(heap)
        node = n + len(children)
        children.append((a, b))
        heapq.heappush(heap, (wa + wb, node, node))
    depth = [0] * (n + len(children))
    # Internal nodes are created after their children, so walk back from the root.
    for j in range(len(children) - 1, -1, -1):
        d = depth[n + j] + 1
        a, b = children[j]
        depth[a] = d
        depth[b] = d
    return depth[:n]


def _windows(buf: np.ndarray, start: int, stop: int, width: int) -> list[int]:
    """The ``width``-bit big-endian value starting at each bit in ``start:stop``.

    ``buf`` must carry 3 zero bytes past the stream so that windows near the
    end read zeros; ``width`` <= 16 so every window lies within 3 bytes.
    """
    if width == 0:
        return [0] * (stop - start)
    pos = np.arange(start, stop, dtype=np.int64)
    byte = pos >> 3
    word = (
        (buf[byte].astype(np.uint32) << 16)
        | (buf[byte + 1].astype(np.uint32) << 8)
        | buf[byte + 2].astype(np.uint32)
    )
    shift = (24 - width - (pos & 7)).astype(np.uint32)
    return ((word >> shift) & np.uint32((1 << width) - 1)).tolist()


def huffman_encode(symbols, alphabet_size) -> tuple[HuffmanCode, bytes, int]:
    """Build the optimal canonical code for ``symbols`` and encode them.

    Parameters
    ----------
    symbols : array_like of int, 1-D
        Symbols in ``0 .. alphabet_size - 1``.
    alphabet_size : int

    Returns
    -------
    code : HuffmanCode
        Store ``code.lengths`` to rebuild it.
    data : bytes
        MSB-first bit stream, last byte zero-padded.
    n_bits : int
        Number of valid bits in ``data``.

    Notes
    -----
    Han et al., 2016, Deep Compression §4; Han et al., 2016, EIE §III.
    """
    symbols = as_index_array(symbols)
    code = HuffmanCode.from_symbols(symbols, alphabet_size)
    data, n_bits = code.encode(symbols)
    return code, data, n_bits


def huffman_decode(code: HuffmanCode, data: bytes, n_bits: int, count: int) -> np.ndarray:
    """Decode ``count`` symbols; see :meth:`HuffmanCode.decode`.

    Parameters
    ----------
    code : HuffmanCode
    data : bytes-like
    n_bits : int
    count : int

    Returns
    -------
    numpy.ndarray of int64, shape (count,)
    """
    if not isinstance(code, HuffmanCode):
        raise TypeError(f"code must be a HuffmanCode, not {type(code).__name__}")
    return code.decode(data, n_bits, count)
