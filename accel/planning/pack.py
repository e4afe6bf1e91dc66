"""EIE's interleaved CSC memory images of a compressed layer (``docs/accelerator.md``).

The accelerator has ``N`` processing elements (PEs). Output row ``r`` of a Linear layer belongs
to PE ``r % N``, at its local row ``r // N`` (EIE §IV, "row interleaving"). Each PE stores its
share of the weights column by column, in the relative-index ``(v, z)`` form of
``core/sparse.py``, restarted at every column and counting only the PE's own rows:
``v`` is the codebook index (0 for a padding entry) and ``z`` the number of the PE's local rows
skipped since the previous entry of the column. The hardware walks a column with
``row = -1; for each entry: row = row + z + 1``.

Per PE, :func:`pack_layer` builds the memories the hardware loads: the entry words
``v | z << index_bits``, a column pointer table (one word ``start | end << pointer_bits`` per
column), and the PE's slice of the integer biases (``docs/arithmetic.md`` A4); per layer, the
integer codebook (A2) and, per column, the mask of the PEs that hold entries in it, so the
broadcaster sends an activation only to those.

Plain numpy; every size is derived from the layer.

References
----------
.. [1] S. Han et al., "EIE: Efficient Inference Engine on Compressed Deep Neural Network",
   ISCA 2016, §III-IV (interleaved CSC, relative row index, pointer pairs).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from core.artifact import CompressedLayer, CompressedModel

__all__ = [
    "MAX_PES",
    "MAX_ZERO_RUN_BITS",
    "LayerImage",
    "pack_layer",
    "pack_model",
    "pe_work",
    "unpack_layer",
]

#: Largest number of PEs: a column mask is one ``uint64``.
MAX_PES = 64
#: Largest ``z`` field width of an entry word.
MAX_ZERO_RUN_BITS = 8


@dataclass(frozen=True, eq=False)
class LayerImage:
    """The memory images of one layer on ``n_pes`` PEs (``docs/accelerator.md``).

    The arrays are read-only. The constructor does not validate; :func:`unpack_layer` refuses
    an image its pointers and entries do not describe.

    Attributes
    ----------
    in_features, out_features : int
        The layer's shape: the weight matrix is ``(out_features, in_features)``.
    n_pes : int
        ``N``; output row ``r`` is local row ``r // N`` of PE ``r % N``.
    index_bits, zero_run_bits : int
        ``b_w`` and ``b_z``, the widths of an entry's ``v`` and ``z`` fields.
    depth : int
        Entry memory depth: the largest entry count of a PE, at least 1.
    pointer_bits : int
        Width of one pointer, enough to hold the value ``depth``.
    rows_per_pe : int
        ``ceil(out_features / N)``, the accumulator and bias memory depth.
    row_bits : int
        Width of a local row index ``0 .. rows_per_pe - 1``, at least 1.
    entries : numpy.ndarray
        uint32, shape ``(N, depth)``: entry words ``v | z << index_bits``, zero past each PE's
        count.
    entry_counts : numpy.ndarray
        int64, shape ``(N,)``: entries of each PE, padding included.
    col_start : numpy.ndarray
        int64, shape ``(N, in_features + 1)``: column ``j`` of PE ``p`` is entries
        ``col_start[p, j] .. col_start[p, j + 1] - 1``.
    pointer_words : numpy.ndarray
        uint64, shape ``(N, in_features)``: ``col_start[p, j] | col_start[p, j + 1] <<
        pointer_bits``, the (start, end) pair the PE reads as one word.
    col_mask : numpy.ndarray
        uint64, shape ``(in_features,)``: bit ``p`` is set iff PE ``p`` has entries (padding
        included) in column ``j``.
    codebook : numpy.ndarray
        int32, shape ``(K,)``: the integer codebook (``docs/arithmetic.md`` A2),
        ``codebook[0] == 0``; or one per row, shape ``(out_features, K)`` (A9), in the packed
        row order (:meth:`pe_codebook` gives a PE's).
    bias : numpy.ndarray
        int32, shape ``(N, rows_per_pe)``: ``bias[p, k]`` is the integer bias (A4) of row
        ``k * N + p``, 0 where that row does not exist.
    padding : int
        Padding entries ``(0, 2**zero_run_bits - 1)`` over all PEs.
    """

    in_features: int
    out_features: int
    n_pes: int
    index_bits: int
    zero_run_bits: int
    depth: int
    pointer_bits: int
    rows_per_pe: int
    row_bits: int
    entries: np.ndarray
    entry_counts: np.ndarray
    col_start: np.ndarray
    pointer_words: np.ndarray
    col_mask: np.ndarray
    codebook: np.ndarray
    bias: np.ndarray
    padding: int

    __hash__ = None  # holds arrays

    @property
    def entry_bits(self) -> int:
        """Width of an entry word, ``index_bits + zero_run_bits``."""
        return self.index_bits + self.zero_run_bits

    @property
    def pointer_word_bits(self) -> int:
        """Width of a column pointer word, ``2 * pointer_bits``."""
        return 2 * self.pointer_bits

    def rows(self, pe: int) -> int:
        """Local rows PE ``pe`` owns: ``len(range(pe, out_features, n_pes))``."""
        return len(range(pe, self.out_features, self.n_pes))

    @property
    def per_row(self) -> bool:
        """Whether each row has its own codebook (A9)."""
        return self.codebook.ndim == 2

    def pe_codebook(self, pe: int) -> np.ndarray:
        """PE ``pe``'s per-row codebooks as one memory image, int64 ``(rows_per_pe <<
        index_bits,)``: word ``k << index_bits | v`` is entry ``v`` of local row ``k`` (row
        ``k * N + pe``); 0 beyond the codebook and for rows that do not exist."""
        words = np.zeros((self.rows_per_pe, 1 << self.index_bits), dtype=np.int64)
        rows = np.arange(pe, self.out_features, self.n_pes)
        words[:len(rows), :self.codebook.shape[1]] = self.codebook[rows]
        return words.reshape(-1)


def _check_int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an int {low}..{high}, not {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int {low}..{high}, not {value!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be {low}..{high}, not {value!r}")
    return value


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.flags.writeable = False
    return array


def pack_layer(layer: CompressedLayer, n_pes: int, *, zero_run_bits: int = 4) -> LayerImage:
    """Build the memory images of ``layer`` for ``n_pes`` PEs.

    Parameters
    ----------
    layer : CompressedLayer
        A layer carrying integer data (``layer.integer``, ``docs/arithmetic.md``).
    n_pes : int
        ``N``, 1 .. :data:`MAX_PES`.
    zero_run_bits : int, optional
        ``b_z``, the width of an entry's ``z`` field, 1 .. :data:`MAX_ZERO_RUN_BITS`
        (default 4). Independent of the artifact's ``layer.zero_run_bits``.

    Returns
    -------
    LayerImage

    Raises
    ------
    ValueError
        A bad ``n_pes`` or ``zero_run_bits``, a layer without integer data or without rows or
        columns.
    """
    if not isinstance(layer, CompressedLayer):
        raise ValueError(f"layer must be a CompressedLayer, not {type(layer).__name__}")
    n = _check_int("n_pes", n_pes, 1, MAX_PES)
    bits = _check_int("zero_run_bits", zero_run_bits, 1, MAX_ZERO_RUN_BITS)
    if layer.integer is None:
        raise ValueError("the layer has no integer data (docs/arithmetic.md): quantize the model "
                         "with core.integer.quantize_model, or write the artifact with "
                         "python -m compress (without --no-integer)")
    out_features, in_features = layer.index.shape
    if out_features == 0 or in_features == 0:
        raise ValueError(f"the layer must have at least one row and one column, not shape "
                         f"{layer.index.shape}")
    index_bits = int(layer.index_bits)
    period = 1 << bits
    rows_per_pe = -(-out_features // n)

    # local[p, j, k] = index[k * N + p, j]: walk order per PE is column j outer, local row k
    # inner, so np.nonzero lists the nonzeros in (PE, column, row) order: the stream order.
    padded = np.zeros((rows_per_pe * n, in_features), dtype=np.int64)
    padded[:out_features] = layer.index
    local = padded.reshape(rows_per_pe, n, in_features).transpose(1, 2, 0)
    pe, col, row = np.nonzero(local)
    values = local[pe, col, row]

    # Local rows skipped since the previous nonzero of the same PE and column (or row -1).
    first = np.ones(len(row), dtype=bool)
    first[1:] = (pe[1:] != pe[:-1]) | (col[1:] != col[:-1])
    previous = np.where(first, -1, np.concatenate([[-1], row[:-1]]))
    gaps = row - previous - 1
    n_pad = gaps // period
    size = n_pad + 1                        # entries per nonzero: its padding, then itself

    per_column = np.zeros(n * in_features, dtype=np.int64)
    np.add.at(per_column, pe * in_features + col, size)
    per_column = per_column.reshape(n, in_features)
    col_start = np.zeros((n, in_features + 1), dtype=np.int64)
    np.cumsum(per_column, axis=1, out=col_start[:, 1:])
    entry_counts = col_start[:, -1].copy()
    depth = max(1, int(entry_counts.max()))
    pointer_bits = max(1, depth.bit_length())

    # Slot of each nonzero in its PE's memory: its padding entries come right before it.
    pe_offset = np.concatenate([[0], np.cumsum(entry_counts)[:-1]])
    slot = np.cumsum(size) - 1 - pe_offset[pe]
    padding_word = (period - 1) << index_bits
    entries = np.zeros((n, depth), dtype=np.uint32)
    entries[np.arange(depth) < entry_counts[:, None]] = padding_word   # then the nonzeros:
    entries[pe, slot] = (values | ((gaps % period) << index_bits)).astype(np.uint32)

    start = col_start[:, :-1].astype(np.uint64)
    end = col_start[:, 1:].astype(np.uint64)
    pointer_words = start | (end << np.uint64(pointer_bits))
    occupied = (per_column > 0).astype(np.uint64)
    col_mask = np.bitwise_or.reduce(occupied << np.arange(n, dtype=np.uint64)[:, None], axis=0)

    bias = np.zeros(rows_per_pe * n, dtype=np.int32)
    bias[:out_features] = layer.integer.bias
    return LayerImage(
        in_features=in_features,
        out_features=out_features,
        n_pes=n,
        index_bits=index_bits,
        zero_run_bits=bits,
        depth=depth,
        pointer_bits=pointer_bits,
        rows_per_pe=rows_per_pe,
        row_bits=max(1, (rows_per_pe - 1).bit_length()),
        entries=_readonly(entries),
        entry_counts=_readonly(entry_counts),
        col_start=_readonly(col_start),
        pointer_words=_readonly(pointer_words),
        col_mask=_readonly(col_mask.astype(np.uint64)),
        codebook=_readonly(layer.integer.codebook.astype(np.int32)),
        bias=_readonly(bias.reshape(rows_per_pe, n).T),
        padding=int(n_pad.sum()),
    )


def pack_model(model: CompressedModel, n_pes: int, *,
               zero_run_bits: int = 4) -> list[LayerImage]:
    """:func:`pack_layer` for every layer of ``model``, in order.

    Raises
    ------
    ValueError
        As :func:`pack_layer`, naming the layer.
    """
    if not isinstance(model, CompressedModel):
        raise ValueError(f"model must be a CompressedModel, not {type(model).__name__}")
    _check_int("n_pes", n_pes, 1, MAX_PES)
    _check_int("zero_run_bits", zero_run_bits, 1, MAX_ZERO_RUN_BITS)
    images = []
    for i, layer in enumerate(model.layers):
        try:
            images.append(pack_layer(layer, n_pes, zero_run_bits=zero_run_bits))
        except ValueError as error:
            raise ValueError(f"layer {i} ({layer.out_features}x{layer.in_features}): "
                             f"{error}") from None
    return images


def unpack_layer(image: LayerImage) -> np.ndarray:
    """Decode an image back to the ``(out, in)`` index matrix, as the hardware walks it.

    For each PE and column, the pointer word gives ``start`` and ``end``; the entry words
    ``start .. end - 1`` are read in order with ``row = -1`` at the column start and
    ``row = row + z + 1`` per entry; an entry with ``v != 0`` is the weight at local row
    ``row``, i.e. output row ``row * n_pes + pe``. ``col_start`` is not used.

    Returns
    -------
    numpy.ndarray
        uint8 (uint16 if ``index_bits > 8``), shape ``(out_features, in_features)``.

    Raises
    ------
    ValueError
        The pointers or entries do not describe a layer of the image's shape: a pointer past
        ``depth`` or ending before it starts, an index outside the codebook, a padding entry
        with another ``z`` or ending a column, or a weight past the PE's rows.
    """
    n, in_features = image.n_pes, image.in_features
    entries = np.asarray(image.entries, dtype=np.int64)
    words = np.asarray(image.pointer_words, dtype=np.uint64)
    if entries.shape != (n, image.depth) or words.shape != (n, in_features):
        raise ValueError(f"entries and pointer_words must have shapes {(n, image.depth)} and "
                         f"{(n, in_features)}, not {entries.shape} and {words.shape}")
    mask = np.uint64((1 << image.pointer_bits) - 1)
    start = (words & mask).astype(np.int64)
    end = (words >> np.uint64(image.pointer_bits)).astype(np.int64)
    if np.any(end < start) or np.any(end > image.depth):
        raise ValueError(f"pointer words must satisfy start <= end <= depth = {image.depth}")

    # One element per entry read, in walk order: PE, then column, then address.
    lengths = (end - start).reshape(-1)
    nonempty = lengths > 0
    total = int(lengths.sum())
    pe = np.repeat(np.arange(n), in_features)
    col = np.tile(np.arange(in_features), n)
    column_first = np.cumsum(lengths) - lengths            # first element of each column
    within = np.arange(total) - np.repeat(column_first, lengths)
    pe, col = np.repeat(pe, lengths), np.repeat(col, lengths)
    word = entries[pe, np.repeat(start.reshape(-1), lengths) + within]
    v = word & ((1 << image.index_bits) - 1)
    z = word >> image.index_bits
    if np.any(z >= 1 << image.zero_run_bits):
        raise ValueError(f"entry words must be below 2**{image.entry_bits}")
    entries_per_codebook = image.codebook.shape[-1]
    if np.any(v >= entries_per_codebook):
        raise ValueError(f"entry indices must be below the codebook size {entries_per_codebook}")
    padding = v == 0
    if np.any(padding & (z != (1 << image.zero_run_bits) - 1)):
        raise ValueError(f"padding entries (v = 0) must have z = 2**{image.zero_run_bits} - 1")
    if np.any(padding[(column_first + lengths - 1)[nonempty]]):
        raise ValueError("a column must not end with a padding entry")

    # row = row + z + 1 from row = -1: a running sum restarted at every column.
    steps = np.cumsum(z + 1)
    column_base = np.repeat((steps - z - 1)[column_first[nonempty]], lengths[nonempty])
    row = steps - column_base - 1
    rows_owned = np.array([image.rows(p) for p in range(n)], dtype=np.int64)
    weight = ~padding
    if np.any(row[weight] >= rows_owned[pe[weight]]):
        raise ValueError("an entry lies past its PE's rows")
    index = np.zeros((image.out_features, in_features),
                     dtype=np.uint8 if image.index_bits <= 8 else np.uint16)
    index[row[weight] * n + pe[weight], col[weight]] = v[weight]
    return index


def pe_work(image: LayerImage, active_columns) -> np.ndarray:
    """Entries each PE processes when only the active columns are broadcast.

    Parameters
    ----------
    image : LayerImage
    active_columns : array_like of bool, shape ``(in_features,)``
        True for the columns whose input activation is nonzero.

    Returns
    -------
    numpy.ndarray
        int64, shape ``(n_pes,)``: the sum of each PE's column entry counts (padding included)
        over the active columns.
    """
    active = np.asarray(active_columns)
    if active.dtype != bool or active.shape != (image.in_features,):
        raise ValueError(f"active_columns must be a bool array of shape ({image.in_features},), "
                         f"not {active.dtype} {active.shape}")
    per_column = np.diff(np.asarray(image.col_start, dtype=np.int64), axis=1)
    return per_column[:, active].sum(axis=1, dtype=np.int64)
