"""Convolutions on the sparse engine: the layout and dataflow its gateware implements
(issue 25; ``docs/accelerator.md``, "Convolutions").

The design keeps EIE's structure and adds SCNN's input-stationary Cartesian product (Parashar
et al., ISCA 2017): every nonzero input activation is broadcast once, and each PE multiplies it
by all of its own nonzero weights that touch it, adding each product to the output position it
belongs to. Plain numpy and Python; :func:`run_layer` executes the dataflow step by step, in the
order the hardware does, and is checked equal to ``sim`` (``tests/test_accel_conv_plan.py``).

- **Coordinates.** An activation of a convolution's input travels with its *packed* column
  ``(c << (y_bits + x_bits)) | (y << x_bits) | x`` (:class:`MapFields`, each field as wide as
  the map needs), so a PE slices ``c``, ``y`` and ``x`` out of it with no division. The host
  sends a first-layer image padded to those fields (zeros, which the loader skips); a drain
  emits its outputs' packed columns from its counters.
- **Weights.** The layer's matrix ``O x (C kh kw)`` (A12) is packed by
  :func:`~accel.planning.pack.pack_layer` like a Linear layer's: output channel ``o`` is local
  row ``o // N`` of PE ``o % N``, column ``(c kh + dy) kw + dx`` holds the weights of tap
  ``(dy, dx)`` of input channel ``c``.
- **Tap walk** (:func:`taps`). For an activation ``(c, y, x)`` a PE visits the taps in order,
  ``dy`` outer, ``dx`` inner, and keeps those whose output position exists:
  ``Y = (y + p - dy) / s``, ``X = (x + p - dx) / s`` integers within the convolution's map;
  each gives a column (whose entries it walks as EIE does) and a position ``Y W_c + X``.
  Each PE holds a **tap mask** per input channel (:func:`tap_masks`: bit ``t`` set when it
  has entries in tap ``t``'s column) and walks only the taps both masks allow, one per clock:
  most of a sparse kernel's columns are empty in a given PE (LeNet-5's second convolution: 50
  channels at 12% density over 16 PEs is 0.4 weights per column and PE), and a walk of every
  tap would cost the PE more clocks than its multiply-accumulates.
- **Accumulators.** PE ``p``'s accumulator of local row ``k`` at position ``q`` is word
  ``(q << row_bits) | k`` of the layer's memory: ``positions << row_bits`` words, a
  concatenation, no multiply.
- **Drain** (:func:`drain_walk`). Per local row, per output position (pooled or not): the
  window's accumulators (one, or the four of a 2 x 2 window), each with the row's bias
  (A4-A5); a max-pooled output takes their maximum and requantizes it once (A13: the
  requantization is non-decreasing, so this equals pooling the requantized values); an
  average-pooled one requantizes each and rounds ``(sum + 2) >> 2``. The output's packed
  column for the next layer is ``(o, Y, X)`` in the next map's fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataclasses import replace

from core.artifact import CompressedLayer, CompressedModel
from core.geometry import ConvGeometry

from .pack import LayerImage, pack_layer

__all__ = ["ConvLayout", "MapFields", "channel_masks", "drain_walk", "expand_columns",
           "input_fields", "pad_input", "pe_work", "run_layer", "run_network", "tap_masks",
           "taps"]


def _bits(count: int) -> int:
    """Bits of an index ``0 .. count - 1`` (at least 1)."""
    return max(1, (count - 1).bit_length())


def _field_bits(count: int) -> int:
    """Bits of a packed field holding ``0 .. count - 1``: none for a field of one value (a
    single channel, row or column costs no column bits)."""
    return (count - 1).bit_length()


@dataclass(frozen=True)
class MapFields:
    """The packed column of an activation of a ``channels x height x width`` tensor."""

    channels: int
    height: int
    width: int

    @property
    def x_bits(self) -> int:
        return _field_bits(self.width)

    @property
    def y_bits(self) -> int:
        return _field_bits(self.height)

    @property
    def c_bits(self) -> int:
        return _field_bits(self.channels)

    @property
    def bits(self) -> int:
        """Width of a packed column."""
        return self.c_bits + self.y_bits + self.x_bits

    @property
    def size(self) -> int:
        """Packed columns, holes included: ``2 ** bits``."""
        return 1 << self.bits

    def pack(self, c, y, x):
        """The packed column of ``(c, y, x)`` (ints or integer arrays)."""
        return (c << (self.y_bits + self.x_bits)) | (y << self.x_bits) | x

    def unpack(self, column):
        """``(c, y, x)`` of a packed column."""
        x = column & ((1 << self.x_bits) - 1)
        y = (column >> self.x_bits) & ((1 << self.y_bits) - 1)
        return column >> (self.y_bits + self.x_bits), y, x

    def packed_order(self) -> np.ndarray:
        """The packed column of every flat (channel-major) index: int64 ``(C H W,)``."""
        c, y, x = np.meshgrid(np.arange(self.channels), np.arange(self.height),
                              np.arange(self.width), indexing="ij")
        return self.pack(c, y, x).reshape(-1).astype(np.int64)


@dataclass(frozen=True)
class ConvLayout:
    """Where a convolution layer's work and accumulators sit on ``n_pes`` PEs."""

    geometry: ConvGeometry
    out_channels: int
    n_pes: int

    @classmethod
    def of(cls, layer: CompressedLayer, n_pes: int) -> ConvLayout:
        if layer.geometry is None:
            raise ValueError("the layer is not a convolution (it has no geometry)")
        if isinstance(n_pes, bool) or not isinstance(n_pes, int) or not 1 <= n_pes <= 64:
            raise ValueError(f"n_pes must be 1..64, not {n_pes!r}")
        return cls(layer.geometry, layer.out_features, n_pes)

    @property
    def inputs(self) -> MapFields:
        g = self.geometry
        return MapFields(g.in_channels, g.in_height, g.in_width)

    @property
    def outputs(self) -> MapFields:
        """The output tensor's fields (after pooling): the next layer's input columns."""
        g = self.geometry
        return MapFields(self.out_channels, g.out_height, g.out_width)

    @property
    def positions(self) -> int:
        """Positions of the convolution's map, ``H_c x W_c``."""
        return self.geometry.conv_height * self.geometry.conv_width

    @property
    def rows_per_pe(self) -> int:
        return -(-self.out_channels // self.n_pes)

    @property
    def row_bits(self) -> int:
        return _bits(self.rows_per_pe)

    @property
    def accumulator_depth(self) -> int:
        """Accumulator words per PE and bank: ``positions << row_bits``."""
        return self.positions << self.row_bits

    def address(self, position: int, row: int) -> int:
        return (position << self.row_bits) | row

    # The tap walk's tables (constants of the gateware). For an activation at ``(y, x)`` the
    # taps whose output position exists are those of ``row_taps(y)[0]`` (a bit per ``dy``)
    # crossed with ``column_taps(x)[0]`` (a bit per ``dx``), and tap ``t`` lands on position
    # ``row_taps(y)[1] + column_taps(x)[1] - tap_offsets()[t]``: when ``s`` divides
    # ``y + p - dy``, ``(y + p - dy) / s = (y + p) // s - dy // s``, so no division is left.

    def row_taps(self, y: int) -> tuple[int, int]:
        """For input row ``y``: the mask of kernel rows ``dy`` that reach an output row, and
        ``((y + p) // s) * W_c``."""
        g = self.geometry
        mask = 0
        for dy in range(g.kernel_height):
            row = y + g.padding - dy
            if row >= 0 and row % g.stride == 0 and row // g.stride < g.conv_height:
                mask |= 1 << dy
        return mask, (y + g.padding) // g.stride * g.conv_width

    def column_taps(self, x: int) -> tuple[int, int]:
        """For input column ``x``: the mask of kernel columns ``dx`` that reach an output
        column, and ``(x + p) // s``."""
        g = self.geometry
        mask = 0
        for dx in range(g.kernel_width):
            column = x + g.padding - dx
            if column >= 0 and column % g.stride == 0 and column // g.stride < g.conv_width:
                mask |= 1 << dx
        return mask, (x + g.padding) // g.stride

    def tap_offsets(self) -> list[int]:
        """Per tap ``t = dy kw + dx``: ``(dy // s) * W_c + dx // s``."""
        g = self.geometry
        return [dy // g.stride * g.conv_width + dx // g.stride
                for dy in range(g.kernel_height) for dx in range(g.kernel_width)]

    def walk(self, c: int, y: int, x: int, mask: int) -> list[tuple[int, int]]:
        """The tap walk as the gateware computes it, from the tables: ``(column, position)``
        of every tap in ``mask`` (a PE's tap mask for channel ``c``) whose output position
        exists, lowest tap first."""
        g = self.geometry
        rows, row_base = self.row_taps(y)
        columns, column_base = self.column_taps(x)
        offsets = self.tap_offsets()
        out = []
        for t in range(g.taps):
            dy, dx = divmod(t, g.kernel_width)
            if (mask >> t) & 1 and (rows >> dy) & 1 and (columns >> dx) & 1:
                out.append((c * g.taps + t, row_base + column_base - offsets[t]))
        return out


def taps(layout: ConvLayout, c: int, y: int, x: int) -> list[tuple[int, int]]:
    """The ``(column, position)`` pairs a PE visits for the activation at ``(c, y, x)``, in
    order (``dy`` outer, ``dx`` inner), the taps whose output position exists (A12)."""
    g = layout.geometry
    out = []
    for dy in range(g.kernel_height):
        row = y + g.padding - dy
        if row < 0 or row % g.stride or row // g.stride >= g.conv_height:
            continue
        for dx in range(g.kernel_width):
            column = x + g.padding - dx
            if column < 0 or column % g.stride or column // g.stride >= g.conv_width:
                continue
            out.append(((c * g.kernel_height + dy) * g.kernel_width + dx,
                        (row // g.stride) * g.conv_width + column // g.stride))
    return out


def tap_masks(image: LayerImage, layout: ConvLayout) -> np.ndarray:
    """Each PE's tap mask per input channel: int64 ``(N, C)``, bit ``t`` (``t = dy kw + dx``)
    set when the PE has entries (padding included) in the column of tap ``t``."""
    g = layout.geometry
    counts = np.diff(np.asarray(image.col_start, dtype=np.int64), axis=1)     # (N, C taps)
    nonempty = (counts > 0).reshape(image.n_pes, g.in_channels, g.taps)
    weights = np.int64(1) << np.arange(g.taps, dtype=np.int64)
    return (nonempty * weights).sum(axis=2)


def pe_work(image: LayerImage, layout: ConvLayout, x: np.ndarray) -> np.ndarray:
    """Each PE's work for a batch of a convolution's inputs ``x`` (n, C H W), as
    :func:`run_layer` counts it but vectorized: int64 ``(n, N, 2)``, the taps walked and the
    entries processed (padding included)."""
    g = layout.geometry
    n_pes = image.n_pes
    counts = np.diff(np.asarray(image.col_start, dtype=np.int64), axis=1).reshape(
        n_pes, g.in_channels, g.taps)
    nonempty = (counts > 0).astype(np.int64)
    maps = np.asarray(x).reshape(len(x), g.in_channels, g.in_height, g.in_width) != 0
    work = np.zeros((len(x), n_pes, 2), dtype=np.int64)
    for dy in range(g.kernel_height):
        rows = np.arange(g.in_height) + g.padding - dy
        row_ok = (rows >= 0) & (rows % g.stride == 0) & (rows // g.stride < g.conv_height)
        for dx in range(g.kernel_width):
            cols = np.arange(g.in_width) + g.padding - dx
            col_ok = (cols >= 0) & (cols % g.stride == 0) & (cols // g.stride < g.conv_width)
            # activations of each channel whose output position for this tap exists
            active = (maps & row_ok[None, None, :, None] & col_ok[None, None, None, :]).sum(
                axis=(2, 3)).astype(np.int64)                          # (n, C)
            tap = dy * g.kernel_width + dx
            work[:, :, 0] += active @ nonempty[:, :, tap].T
            work[:, :, 1] += active @ counts[:, :, tap].T
    return work


def channel_masks(image: LayerImage, layout: ConvLayout) -> np.ndarray:
    """The broadcaster's mask of a convolution's input channel: uint64 ``(C,)``, bit ``p`` set
    when PE ``p`` has entries in any tap of the channel (an activation of the channel goes to
    those PEs only)."""
    masks = np.asarray(image.col_mask, dtype=np.uint64).reshape(layout.geometry.in_channels,
                                                                 layout.geometry.taps)
    return np.bitwise_or.reduce(masks, axis=1)


def input_fields(model: CompressedModel, i: int) -> MapFields | None:
    """The packed columns layer ``i`` reads: a convolution's input maps, or those a
    convolution before a Linear layer gives; ``None`` for a flat input."""
    layer = model.layers[i]
    if layer.geometry is not None:
        return ConvLayout(layer.geometry, layer.out_features, 1).inputs
    if i > 0 and model.layers[i - 1].geometry is not None:
        before = model.layers[i - 1]
        return ConvLayout(before.geometry, before.out_features, 1).outputs
    return None


def expand_columns(layer: CompressedLayer, fields: MapFields) -> CompressedLayer:
    """A Linear layer that reads maps, with one column per packed column (``fields.size``):
    its weights at their maps' packed columns, empty columns in the holes (which no
    activation addresses)."""
    index = np.zeros((layer.out_features, fields.size), dtype=layer.index.dtype)
    index[:, fields.packed_order()] = layer.index
    return replace(layer, index=index, latents=None, basis=None)


def pad_input(x: np.ndarray, fields: MapFields) -> np.ndarray:
    """The host's image for a first convolution: the flat (channel-major) input at its packed
    columns, zeros in the holes (``(n, fields.size)``)."""
    x = np.asarray(x)
    padded = np.zeros((len(x), fields.size), dtype=x.dtype)
    padded[:, fields.packed_order()] = x
    return padded


def drain_walk(layout: ConvLayout, pe: int) -> list[tuple[int, tuple[int, int], list[int]]]:
    """PE ``pe``'s drain, in order: ``(local row, (Y, X), window positions)`` for every local
    row it owns and every output position ``(Y, X)`` of the output map (pooled or not)."""
    g = layout.geometry
    out = []
    for row in range(len(range(pe, layout.out_channels, layout.n_pes))):
        for y in range(g.out_height):
            for x in range(g.out_width):
                if g.pool is None:
                    window = [y * g.conv_width + x]
                else:
                    window = [(2 * y + i) * g.conv_width + 2 * x + j
                              for i in (0, 1) for j in (0, 1)]
                out.append((row, (y, x), window))
    return out


def _requantize(layer: CompressedLayer, acc: int) -> int:
    """A6-A8 and A10 for one accumulator (the drain's requantizer)."""
    from sim import requantize, threshold_activation   # the rules' one implementation

    integer = layer.integer
    if integer.logits:
        return max(acc, 0) if layer.relu else acc
    if integer.levels is not None:
        return int(threshold_activation(np.array([acc]), integer.thresholds, integer.levels)[0])
    return int(requantize(np.array([acc], dtype=np.int64), integer.multiplier, integer.shift,
                          relu=layer.relu, bits=integer.activation_bits)[0])


def run_layer(layer: CompressedLayer, image: LayerImage, x: np.ndarray) -> tuple[np.ndarray,
                                                                                   np.ndarray]:
    """One image through the dataflow: each nonzero input in column order, each PE's tap walk
    and entries, its accumulators, then its drain.

    Parameters
    ----------
    layer : CompressedLayer
        A convolution with integer data; ``image`` is ``pack_layer(layer, N)``.
    x : numpy.ndarray
        The layer's integer input, shape ``(C H W,)`` (flat, channel-major).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The output, flat channel-major ``(O H_o W_o,)`` int64 (what ``sim.run_layer`` gives),
        and each PE's work, int64 ``(N, 2)``: the taps it walked (valid, in its mask: one
        clock each in the tap walk) and the entries it processed (padding included: one clock
        each in the entry stage).
    """
    layout = ConvLayout.of(layer, image.n_pes)
    fields = layout.inputs
    n = image.n_pes
    codebooks = [image.pe_codebook(p).reshape(image.rows_per_pe, -1) if image.per_row
                 else None for p in range(n)]
    acc = np.zeros((n, layout.accumulator_depth), dtype=object)     # exact Python ints
    work = np.zeros((n, 2), dtype=np.int64)
    masks = tap_masks(image, layout)
    taps_of_channel = layout.geometry.taps
    columns = fields.packed_order()
    for flat in np.flatnonzero(np.asarray(x)):
        value = int(x[flat])
        c, y, xx = fields.unpack(int(columns[flat]))
        for column, position in taps(layout, int(c), int(y), int(xx)):
            tap = column - int(c) * taps_of_channel
            for p in range(n):
                if not (int(masks[p, c]) >> tap) & 1:
                    continue                    # not in this PE's mask: no clock spent
                work[p, 0] += 1
                start, end = int(image.col_start[p, column]), int(image.col_start[p, column + 1])
                row = -1
                for word in image.entries[p, start:end]:
                    word = int(word)
                    v, z = word & ((1 << image.index_bits) - 1), word >> image.index_bits
                    row += z + 1
                    work[p, 1] += 1
                    if v:
                        weight = int(codebooks[p][row, v] if image.per_row else image.codebook[v])
                        acc[p, layout.address(position, row)] += weight * value
    out_fields = layout.outputs
    output = np.zeros(layout.out_channels * out_fields.height * out_fields.width, dtype=np.int64)
    pool = layout.geometry.pool
    for p in range(n):
        for row, (y, xx), window in drain_walk(layout, p):
            bias = int(image.bias[p, row])
            sums = [int(acc[p, layout.address(q, row)]) + bias for q in window]
            if pool == "avg":
                value = (sum(_requantize(layer, s) for s in sums) + 2) >> 2
            else:                               # one position, or the window's maximum
                value = _requantize(layer, max(sums))
            channel = row * n + p
            output[(channel * out_fields.height + y) * out_fields.width + xx] = value
    return output, work


def _run_linear(layer: CompressedLayer, image: LayerImage, columns: np.ndarray,
                values: np.ndarray) -> np.ndarray:
    """EIE's walk of a Linear layer's image for the nonzero ``(column, value)`` pairs, then
    its drain (A5-A8, A10); flat output."""
    n = image.n_pes
    acc = [[0] * image.rows_per_pe for _ in range(n)]
    codebooks = [image.pe_codebook(p).reshape(image.rows_per_pe, -1) if image.per_row
                 else None for p in range(n)]
    for column, value in zip(columns.tolist(), values.tolist()):
        for p in range(n):
            row = -1
            for word in image.entries[p, image.col_start[p, column]:image.col_start[p, column + 1]]:
                word = int(word)
                v, z = word & ((1 << image.index_bits) - 1), word >> image.index_bits
                row += z + 1
                if v:
                    weight = int(codebooks[p][row, v] if image.per_row else image.codebook[v])
                    acc[p][row] += weight * value
    out = np.zeros(layer.out_features, dtype=np.int64)
    for p in range(n):
        for row in range(image.rows(p)):
            out[row * n + p] = _requantize(layer, acc[p][row] + int(image.bias[p, row]))
    return out


def run_network(model: CompressedModel, n_pes: int, x: np.ndarray) -> list[np.ndarray]:
    """One image through every layer as the engine will run it: the host's padded first
    input, each layer's packed image, packed columns between layers (a convolution's output
    at ``(o, Y, X)`` in its fields, a Linear layer's at its row), each hidden layer's nonzero
    outputs only. Returns every layer's output, flat (what ``sim.trace`` gives for the image).
    """
    outputs = []
    x = np.asarray(x, dtype=np.int64).reshape(-1)
    flat = x
    for i, layer in enumerate(model.layers):
        fields = input_fields(model, i)
        if layer.geometry is not None:
            out, _ = run_layer(layer, pack_layer(layer, n_pes), flat)
        else:
            if fields is None:
                columns, values = np.flatnonzero(flat), flat[flat != 0]
            else:
                packed = pad_input(flat[None], fields)[0]      # the maps at packed columns
                columns, values = np.flatnonzero(packed), packed[packed != 0]
                layer = expand_columns(layer, fields)
            out = _run_linear(layer, pack_layer(layer, n_pes), columns, values)
        outputs.append(out)
        flat = out
    return outputs
