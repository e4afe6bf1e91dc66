"""Relative-index ("zero run") sparse format of Deep Compression and EIE.

A pruned, weight-shared matrix is stored as a stream of pairs ``(v, z)``:
walking the weights in a fixed order, every nonzero weight emits its codebook
index ``v`` (1 .. 2**b_w - 1; index 0 means "zero weight") and the number
``z`` of zeros since the previous entry (Han et al., 2016, Deep Compression
§3; Han et al., 2016, EIE §III).  ``z`` has only ``b_z`` bits, so when a zero
run is longer than ``2**b_z - 1`` a *padding* entry ``(0, 2**b_z - 1)`` is
emitted.  A padding entry stands for ``2**b_z`` positions: its own (a zero)
plus the ``2**b_z - 1`` zeros before it.

Example with ``b_z = 4``: the sequence ``[0, 0, a, b, <18 zeros>, c]`` becomes
``v = [a, b, 0, c]``, ``z = [2, 0, 15, 2]``.  Zeros after the last nonzero
emit nothing; the sequence length is stored separately.

References
----------
.. [1] S. Han, H. Mao, W. J. Dally, "Deep Compression: Compressing Deep Neural
   Networks with Pruning, Trained Quantization and Huffman Coding", ICLR 2016,
   §3-4 (Fig. 2: relative-index padding).
.. [2] S. Han et al., "EIE: Efficient Inference Engine on Compressed Deep
   Neural Network", ISCA 2016, §III (the (v, z) encoding, Fig. 3).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from ._checks import as_index_array

__all__ = ["RelativeIndexStream", "encode_relative", "decode_relative"]

_MAX_ZERO_RUN_BITS = 16
#: Largest codebook index representable in the ``uint16`` index array.
_MAX_INDEX = np.iinfo(np.uint16).max


@dataclass(frozen=True, eq=False)
class RelativeIndexStream:
    """A sparse index sequence in relative-index (EIE ``(v, z)``) form.

    Entry ``k`` sits ``zero_run[k] + 1`` positions after entry ``k - 1`` (the
    first one ``zero_run[0]`` positions after the start); it is a nonzero with
    codebook index ``index[k]``, or a zero when ``index[k] == 0`` (padding,
    then ``zero_run[k] == 2**zero_run_bits - 1``).  See Han et al., 2016,
    Deep Compression §3 and Han et al., 2016, EIE §III.

    The constructor does not validate, so that a stream read from a file can
    be represented as-is; :func:`decode_relative` refuses malformed streams.

    Parameters
    ----------
    index : numpy.ndarray of uint8 or uint16, 1-D
        Codebook indices ``v``; 0 marks a padding entry.
    zero_run : numpy.ndarray of uint8 or uint16, 1-D
        Zero-run lengths ``z``, each in ``0 .. 2**zero_run_bits - 1``.
    length : int
        Number of positions in the encoded sequence (so trailing zeros,
        which emit no entries, are known).
    zero_run_bits : int
        ``b_z``, the width of a ``z`` field, 1 .. 16.

    Notes
    -----
    Streams produced by :func:`encode_relative` are canonical: padding is
    emitted only when needed and never after the last nonzero.  Decoding
    accepts exactly these streams, so ``encode_relative(decode_relative(s),
    s.zero_run_bits)`` reproduces ``s`` for every stream that decodes.
    """

    index: np.ndarray
    zero_run: np.ndarray
    length: int
    zero_run_bits: int

    @property
    def n_entries(self) -> int:
        """Number of ``(v, z)`` entries, padding included."""
        return int(np.asarray(self.index).size)

    def __eq__(self, other):
        if not isinstance(other, RelativeIndexStream):
            return NotImplemented
        return (
            self.length == other.length
            and self.zero_run_bits == other.zero_run_bits
            and np.array_equal(self.index, other.index)
            and np.array_equal(self.zero_run, other.zero_run)
        )

    __hash__ = None  # holds mutable arrays


def _check_zero_run_bits(zero_run_bits) -> int:
    if isinstance(zero_run_bits, (bool, np.bool_)):
        raise TypeError(f"zero_run_bits must be an int 1..16, not {zero_run_bits!r}")
    try:
        bits = operator.index(zero_run_bits)
    except TypeError:
        raise TypeError(f"zero_run_bits must be an int 1..16, not {zero_run_bits!r}") from None
    if not 1 <= bits <= _MAX_ZERO_RUN_BITS:
        raise ValueError(f"zero_run_bits must be 1..{_MAX_ZERO_RUN_BITS}, not {bits!r}")
    return bits


def encode_relative(index_sequence, zero_run_bits) -> RelativeIndexStream:
    """Encode an index sequence in relative-index (``(v, z)``) form.

    Vectorised: gaps between nonzeros give ``gap // 2**b_z`` padding entries
    and ``z = gap % 2**b_z`` for the nonzero itself (Han et al., 2016, Deep
    Compression §3; Han et al., 2016, EIE §III).

    Parameters
    ----------
    index_sequence : array_like of int, 1-D
        The weights in walk order as codebook indices: 0 for a zero (pruned)
        weight, ``> 0`` (at most 65535) for a nonzero.
    zero_run_bits : int
        ``b_z``, 1 .. 16.

    Returns
    -------
    RelativeIndexStream
        ``index`` is ``uint8`` if all indices are < 256, else ``uint16``;
        ``zero_run`` is ``uint8`` for ``b_z <= 8``, else ``uint16``.

    Raises
    ------
    ValueError
        If ``zero_run_bits`` is out of range, or ``index_sequence`` is not a
        1-D array of integers in 0 .. 65535.

    Examples
    --------
    >>> s = encode_relative([0, 0, 3, 1] + [0] * 18 + [2], zero_run_bits=4)
    >>> s.index.tolist(), s.zero_run.tolist()
    ([3, 1, 0, 2], [2, 0, 15, 2])
    """
    bits = _check_zero_run_bits(zero_run_bits)
    seq = as_index_array(index_sequence, "index_sequence")
    if seq.size and seq.max() > _MAX_INDEX:
        raise ValueError(
            f"index_sequence values must be <= {_MAX_INDEX}, not {int(seq.max())!r}"
        )
    run_dtype = np.uint8 if bits <= 8 else np.uint16
    period = 1 << bits  # positions covered by one padding entry
    nonzero = np.flatnonzero(seq)
    values = seq[nonzero]
    index_dtype = np.uint8 if values.size == 0 or values.max() <= 0xFF else np.uint16
    # Zeros between each nonzero and the previous one (or the start).
    gaps = np.diff(nonzero, prepend=-1) - 1
    n_pad = gaps // period
    # Entry slot of each nonzero: its padding entries come right before it.
    slots = np.cumsum(n_pad + 1) - 1
    n_entries = int(slots[-1]) + 1 if slots.size else 0
    index = np.zeros(n_entries, dtype=index_dtype)
    zero_run = np.full(n_entries, period - 1, dtype=run_dtype)
    index[slots] = values
    zero_run[slots] = gaps % period
    return RelativeIndexStream(index, zero_run, int(seq.size), bits)


def decode_relative(stream: RelativeIndexStream) -> np.ndarray:
    """Decode a relative-index stream back to the index sequence.

    Vectorised: entry positions are ``cumsum(z + 1) - 1``.

    Parameters
    ----------
    stream : RelativeIndexStream

    Returns
    -------
    numpy.ndarray of int64, shape (stream.length,)
        0 for zero weights, the codebook index for nonzeros.

    Raises
    ------
    ValueError
        If the stream is malformed: ``index`` and ``zero_run`` not 1-D
        non-negative integer arrays of equal length, ``zero_run_bits`` out of
        1 .. 16, ``length`` negative, a ``z`` above ``2**zero_run_bits - 1``, a
        padding entry whose ``z`` is not ``2**zero_run_bits - 1``, a padding
        entry after the last nonzero (never emitted by the encoder), or
        entries running past ``length``.

    Notes
    -----
    Han et al., 2016, Deep Compression §3; Han et al., 2016, EIE §III.
    """
    if not isinstance(stream, RelativeIndexStream):
        raise TypeError(f"stream must be a RelativeIndexStream, not {type(stream).__name__}")
    bits = _check_zero_run_bits(stream.zero_run_bits)
    index = as_index_array(stream.index, "index")
    zero_run = as_index_array(stream.zero_run, "zero_run")
    if isinstance(stream.length, (bool, np.bool_)):
        raise TypeError(f"length must be an int, not {stream.length!r}")
    try:
        length = operator.index(stream.length)
    except TypeError:
        raise TypeError(f"length must be an int, not {stream.length!r}") from None
    if length < 0:
        raise ValueError(f"length must be >= 0, not {length!r}")
    if index.size != zero_run.size:
        raise ValueError(
            f"index and zero_run must have the same length, not {index.size} and {zero_run.size}"
        )
    max_run = (1 << bits) - 1
    if zero_run.size and zero_run.max() > max_run:
        k = int(np.argmax(zero_run > max_run))
        raise ValueError(
            f"zero_run values must be <= 2**{bits} - 1 = {max_run}, "
            f"not {int(zero_run[k])!r} (entry {k})"
        )
    padding = index == 0
    bad_pad = padding & (zero_run != max_run)
    if bad_pad.any():
        k = int(np.argmax(bad_pad))
        raise ValueError(
            f"padding entries (index 0) must have zero_run 2**{bits} - 1 = {max_run}, "
            f"not {int(zero_run[k])!r} (entry {k})"
        )
    if padding.size and padding[-1]:
        # The encoder drops trailing zeros; accepting this would make the format
        # ambiguous (two streams for one sequence).
        raise ValueError("the last entry must be a nonzero, not padding (index 0)")
    positions = np.cumsum(zero_run + 1) - 1
    if positions.size and positions[-1] >= length:
        raise ValueError(
            f"stream entries run past length={length}: last entry at position "
            f"{int(positions[-1])}"
        )
    out = np.zeros(length, dtype=np.int64)
    keep = ~padding
    out[positions[keep]] = index[keep]
    return out
