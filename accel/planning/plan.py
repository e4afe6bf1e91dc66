"""The engine plan: every size, width and memory image of the accelerator, derived from a model.

:class:`EnginePlan` is the one place where the hardware's parameters come from. It packs each
layer with :func:`accel.planning.pack.pack_layer` (optionally with its hidden neurons assigned to PEs by
expected work, :func:`balance_rows`), derives the widths of every signal and memory, lays out
the write port's address map, and encodes what crosses the engine's ports: input beats,
logits, the trace bus. :mod:`accel.gateware.engine` reads only this object; the co-simulation and the
host read only this object and the ports.

The datapath and the interfaces are described in ``docs/accelerator.md``; the arithmetic in
``docs/arithmetic.md`` (rules A1-A10).
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass, replace

import numpy as np

from core.artifact import CompressedModel
from core.integer import MULTIPLIER_BITS, activation_range
from accel.planning import cycles
from accel.planning.conv import (ConvLayout, MapFields, channel_masks, expand_columns,
                                 input_fields, pad_input, tap_masks)
from accel.planning.pack import MAX_PES, MAX_ZERO_RUN_BITS, LayerImage, _check_int, pack_layer

__all__ = [
    "CONV_QUEUE_DEPTH",
    "DEFAULT_PES",
    "DEFAULT_QUEUE_DEPTH",
    "EnginePlan",
    "GROUP_QUEUE_SLACK",
    "LayerPlan",
    "MIN_QUEUE_DEPTH",
    "Region",
    "TraceRecord",
    "balance_rows",
    "default_banks",
    "pack_in_order",
]

#: Processing elements of the default engine: one, so that the default job builds in under five
#: minutes on two cores (place and route time grows with the design: nextpnr took 275 s on
#: the 2-PE digits engine, 234 s on the 1-PE one with three banks); 16 for throughput, as
#: ``bench/accel_build.py`` builds LeNet-300-100. The default of :meth:`EnginePlan.from_model`,
#: :func:`accel.verify.verify`, :func:`accel.build.build` and every command's ``--pes``.
DEFAULT_PES = 1


def default_banks(n_pes: int) -> int:
    """Images in flight when not told: 2 with one PE, 3 with more.

    A single PE bounds the rate by itself: on the 1-PE digits engine a third bank measured no
    faster (4188.8 clocks per image with 2 or 3 banks, 4340.5 with 1) and costs LUT RAM and
    place-and-route time; with more PEs the third bank hides the layers' latency.
    """
    return 2 if n_pes == 1 else 3


#: Width of the ``shift`` register of a layer (A6: ``0 <= shift <= 62``).
SHIFT_BITS = 6

#: Groups a PE's group queue must have room for when it says ``ready``: the broadcaster sees the
#: registered ``ready`` a clock later, and a group it commits then lands in the queue three clocks
#: after that, so the queue promises room for the groups of the five clocks from the one whose
#: level it tests (``accel.gateware.pe.ProcessingElement``).
GROUP_QUEUE_SLACK = 5
#: Each PE's group queue when not told: 64 groups, or 513 with convolutions. A convolution's
#: input arrives channel by channel (the drain walks a channel's map, then the next), and a PE's
#: work differs from channel to channel: a queue of many channels' groups lets each PE run
#: ahead of the others (LeNet-5 on 16 PEs: 15,176 clocks an image with 64, 13,862 with 513).
#: 512 words of a group are one or two block RAMs wide, as 64 are: the depth costs nothing.
DEFAULT_QUEUE_DEPTH, CONV_QUEUE_DEPTH = 64, 513
#: The shallowest PE group queue: one that cannot hold :data:`GROUP_QUEUE_SLACK` groups is never
#: ready, and the engine would never start (issue 20: depths 2 to 4 deadlocked).
MIN_QUEUE_DEPTH = GROUP_QUEUE_SLACK

#: One PE's record on the trace bus: a hidden activation (or end of a layer) it emitted.
TraceRecord = namedtuple("TraceRecord", "valid end layer bank column value")


#: Largest kernel side of a convolution on the engine: a PE's tap mask of an input channel is
#: one word of ``kh * kw`` bits on the write bus, and its tap walk picks the lowest of them in
#: a clock.
MAX_ENGINE_KERNEL = 7


def _check_conv(model: CompressedModel) -> None:
    """Refuse, by name, a convolution the engine cannot run."""
    last = model.layers[-1]
    if last.geometry is not None:
        raise ValueError(f"the last layer is a convolution ({last.geometry.describe(last.out_features)}); "
                         "the engine's logits come from a Linear layer (add a Flatten and a "
                         "Linear classifier): python -m sim runs this model bit-exactly")
    for i, layer in enumerate(model.layers):
        g = layer.geometry
        if g is not None and max(g.kernel_height, g.kernel_width) > MAX_ENGINE_KERNEL:
            raise ValueError(f"layer {i} is a convolution "
                             f"({g.describe(layer.out_features)}); the engine runs kernels of "
                             f"1..{MAX_ENGINE_KERNEL} on a side, not "
                             f"{g.kernel_height}x{g.kernel_width}: python -m sim runs this "
                             "model bit-exactly")


def _bits(count: int) -> int:
    """Width of an index ``0 .. count - 1``, at least 1."""
    return max(1, (count - 1).bit_length())


# -- load balance -------------------------------------------------------------------------------

def balance_rows(index: np.ndarray, column_rate: np.ndarray, n_pes: int) -> np.ndarray:
    """Row order ``order`` (new row ``i`` is row ``order[i]``) balancing work over the PEs.

    Each row costs its nonzeros weighted by how often their input column is nonzero
    (``column_rate``); rows go, most expensive first, to the least loaded PE that still has a
    free slot (longest processing time first), and PE ``p``'s ``k``-th row becomes row
    ``k * N + p``, so row interleaving ``r mod N`` on the reordered rows gives that assignment.
    """
    cost = (np.asarray(index) != 0).astype(np.float64) @ np.asarray(column_rate, np.float64)
    slots = np.array([len(range(p, len(cost), n_pes)) for p in range(n_pes)])
    load = np.zeros(n_pes)
    assigned: list[list[int]] = [[] for _ in range(n_pes)]
    for row in np.argsort(-cost, kind="stable"):
        free = np.flatnonzero([len(a) < s for a, s in zip(assigned, slots)])
        pe = int(free[np.argmin(load[free])])          # lowest index among the least loaded
        load[pe] += cost[row]
        assigned[pe].append(int(row))
    order = np.empty(len(cost), dtype=np.int64)
    for pe, rows in enumerate(assigned):
        order[np.arange(len(rows)) * n_pes + pe] = rows
    return order


def _column_rates(model: CompressedModel, calibration: np.ndarray) -> list[np.ndarray]:
    import sim                                          # the golden model gives the activations
    inputs = [calibration] + sim.trace(model, calibration)[:-1]
    return [(x != 0).mean(axis=0) for x in inputs]


# -- plan ---------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class LayerPlan:
    """One layer on the engine: its memory images and its arithmetic constants.

    Attributes
    ----------
    image : LayerImage
        The layer packed with its rows in ``row_order`` (``accel.planning.pack``).
    row_order : numpy.ndarray
        int64 ``(out_features,)``: packed row ``i`` is the layer's row ``row_order[i]``
        (identity for the last layer, whose logits leave in order).
    row_ids : numpy.ndarray
        int64 ``(N, rows_per_pe)``: the layer's row (the next layer's column) of PE ``p``'s
        local row ``k``; 0 where the PE has no such row.
    input_signed : bool
        Whether the layer's input activations are signed (A1).
    input_bits, output_bits : int
        Activation widths of the layer's input and (hidden layers) output.
    relu, logits : bool
        The activation function; ``logits`` for the last layer (A8).
    weight_bits, accumulator_bits : int
        Codebook value width (signed) and accumulator width (A5).
    multiplier, shift : int
        Requantization constants (A6); 0 for the last layer and for a threshold activation.
    column_nonzeros : numpy.ndarray
        int64 ``(in_features,)``: nonzero weights per input column (useful MACs).
    thresholds, levels : numpy.ndarray or None
        A threshold activation (A10) in place of A6-A7: int64 ``2**K - 1`` thresholds and
        ``2**K`` levels; ``None`` for a layer that requantizes.
    weight_shape : tuple of int
        The model layer's weight matrix shape (a convolution's ``O x (C kh kw)``; a Linear
        layer's before its columns are expanded to packed ones).
    conv : ConvLayout or None
        A convolution's layout (``accel.planning.conv``); its image's columns are the
        matrix's, ``c kh kw + t``, its row ids ``o`` shifted to the output's packed column.
    fields : MapFields or None
        The packed columns the layer's input activations carry: a convolution's input maps,
        or the maps a Linear layer after a convolution reads (its image then has one column
        per packed column); ``None`` for a flat input.
    """

    image: LayerImage
    row_order: np.ndarray
    row_ids: np.ndarray
    input_signed: bool
    input_bits: int
    output_bits: int
    relu: bool
    logits: bool
    weight_bits: int
    accumulator_bits: int
    multiplier: int
    shift: int
    column_nonzeros: np.ndarray
    thresholds: np.ndarray | None = None
    levels: np.ndarray | None = None
    weight_shape: tuple = ()
    conv: ConvLayout | None = None
    fields: MapFields | None = None

    __hash__ = None

    @property
    def input_size(self) -> int:
        """Activations of the layer's input tensor (flat, channel-major)."""
        return self.fields.channels * self.fields.height * self.fields.width \
            if self.fields is not None else self.in_features

    @property
    def input_columns(self) -> int:
        """Columns an input activation may carry: packed ones (holes included), or flat."""
        return self.fields.size if self.fields is not None else self.in_features

    @property
    def output_size(self) -> int:
        """Activations of the layer's output tensor (flat, channel-major)."""
        if self.conv is None:
            return self.out_features
        out = self.conv.outputs
        return out.channels * out.height * out.width

    @property
    def row_id_bits(self) -> int:
        """Width of a row id: the next layer's column of a local row (a convolution's: its
        channel, shifted to the output's packed column)."""
        return max(1, self.conv.outputs.bits) if self.conv is not None \
            else _bits(self.out_features)

    @property
    def address_bits(self) -> int:
        """Width of an accumulator address: ``(position << row_bits) | row`` for a
        convolution, the local row otherwise."""
        if self.conv is None:
            return self.image.row_bits
        return _bits(self.conv.positions) + self.image.row_bits

    @property
    def drain_reads(self) -> int:
        """Accumulators a PE's drain reads per image: its rows, times a convolution's
        output positions and pooling window."""
        if self.conv is None:
            return self.image.rows_per_pe
        g = self.conv.geometry
        return self.image.rows_per_pe * g.out_height * g.out_width * (1 if g.pool is None
                                                                     else 4)

    @property
    def output_columns(self) -> int:
        """Columns this layer's outputs may carry (a convolution's packed ``(o, Y, X)``,
        holes included): the size of a vector rebuilt from the trace bus."""
        return self.conv.outputs.size if self.conv is not None else self.out_features

    def packed_output(self, flat) -> np.ndarray:
        """Outputs ``(n, output_size)`` (flat, as ``sim.trace`` gives them) at the columns
        the engine emits them with: ``(n, output_columns)``, zeros in the holes."""
        flat = np.asarray(flat)
        return flat if self.conv is None else pad_input(flat, self.conv.outputs)

    def flat_output(self, packed) -> np.ndarray:
        """The inverse of :meth:`packed_output`.

        Raises
        ------
        ValueError
            A nonzero value in a hole (a column that is no output of this layer).
        """
        packed = np.asarray(packed)
        if self.conv is None:
            return packed
        order = self.conv.outputs.packed_order()
        holes = np.ones(packed.shape[1], dtype=bool)
        holes[order] = False
        if np.any(packed[:, holes]):
            column = int(np.flatnonzero(np.any(packed[:, holes] != 0, axis=0))[0])
            raise ValueError(f"output column {int(np.flatnonzero(holes)[column])} holds a value "
                             f"but is no output of this {self.conv.geometry.describe(self.out_features)} layer")
        return packed[:, order]

    def output_index(self, columns) -> np.ndarray:
        """The flat (channel-major) output index of each output column this layer emits
        (a convolution's ``(o, Y, X)`` packed; -1 for a column that is no output)."""
        columns = np.asarray(columns, dtype=np.int64)
        if self.conv is None:
            return np.where((columns >= 0) & (columns < self.out_features), columns, -1)
        out = self.conv.outputs
        o, y, x = out.unpack(columns)
        ok = (columns >= 0) & (o < out.channels) & (y < out.height) & (x < out.width)
        return np.where(ok, (o * out.height + y) * out.width + x, -1)

    @property
    def per_row(self) -> bool:
        """Whether each row has its own codebook (A9)."""
        return self.image.per_row

    @property
    def code_bits(self) -> int | None:
        """``K`` of a threshold activation (A10), else ``None``."""
        return None if self.levels is None else len(self.levels).bit_length() - 1

    @property
    def threshold_bits(self) -> int:
        """Width of a threshold (A10: within ``+-2**(accumulator_bits - 1)``, signed)."""
        return self.accumulator_bits + 1

    @property
    def in_features(self) -> int:
        return self.image.in_features

    @property
    def out_features(self) -> int:
        return self.image.out_features

    @property
    def column_bits(self) -> int:
        """Width of an input column index (a packed one when the input is maps), and of a
        convolution's matrix column (its tap walk's output)."""
        return _bits(max(self.input_columns, self.in_features))

    @property
    def output_signed(self) -> bool:
        return not self.relu


@dataclass(frozen=True)
class Region:
    """One memory (or register file) on the write port: words ``base .. base + depth - 1``.

    ``pe`` is None for a memory shared by all PEs (a write goes to every copy).
    """

    name: str
    layer: int
    pe: int | None
    depth: int
    width: int
    base: int
    signed: bool = False


def pack_in_order(layer, n_pes: int, zero_run_bits: int, order):
    """``pack_layer`` of ``layer`` with its rows in ``order`` (packed row ``i`` is row
    ``order[i]``: biases and per-row codebooks follow), and the row ids ``(N, rows_per_pe)``
    of each PE's local rows."""
    integer = layer.integer
    rows = dict(bias=integer.bias[order])
    if integer.per_row:                                  # A9: each row keeps its codebook
        rows["codebook"] = integer.codebook[order]
    permuted = replace(layer, index=layer.index[order],
                       bias=None if layer.bias is None else layer.bias[order],
                       codebook=layer.codebook[order] if layer.per_row else layer.codebook,
                       basis=None, latents=None,         # A11: a codebook and indices
                       integer=replace(integer, **rows))
    image = pack_layer(permuted, n_pes, zero_run_bits=zero_run_bits)
    ids = np.zeros(image.rows_per_pe * n_pes, dtype=np.int64)
    ids[:len(order)] = order
    return image, ids.reshape(image.rows_per_pe, n_pes).T.copy()


class EnginePlan:
    """Every parameter of the engine for one model (``docs/accelerator.md``).

    Build it with :meth:`from_model`. The plan fixes the shapes and widths the hardware is
    generated with; :meth:`write_image` turns another model of the same shapes into the words to
    reload through the write port.

    Parameters
    ----------
    layers : sequence of LayerPlan
    n_pes : int
        ``N``, processing elements, 1 .. 64.
    lanes : int
        Activations the broadcaster hands out per clock, 1 .. 4.
    input_lanes : int
        Activations per input beat, 1 .. 16.
    queue_depth : int
        Depth of each PE's activation queue (groups of ``lanes`` activations),
        :data:`MIN_QUEUE_DEPTH` (5) .. 4096.
    banks : int
        Images in flight at once, each with its own bank of accumulators, 1 .. 8. Image ``i``
        uses bank ``i mod banks``.
    """

    def __init__(self, layers, *, n_pes: int, lanes: int, input_lanes: int, queue_depth: int,
                 banks: int):
        self.layers = tuple(layers)
        self.banks = banks
        self.bank_bits = _bits(banks)
        self.n_pes = n_pes
        self.lanes = lanes
        self.input_lanes = input_lanes
        self.queue_depth = queue_depth
        first, last = self.layers[0], self.layers[-1]
        self.n_layers = len(self.layers)
        #: The network's input, flat (what a user gives); the engine's input beats carry
        #: ``input_columns`` (a first convolution's packed maps, holes included).
        self.in_features = first.input_size
        self.input_columns = first.input_columns
        self.out_features = last.out_features
        self.input_bits = first.input_bits
        self.input_signed = first.input_signed
        self.beats_per_image = -(-self.input_columns // input_lanes)
        #: Whether any layer is a convolution (the PEs then have a tap walk and addressed
        #: accumulators; a plan of Linear layers builds the same gateware as before them).
        self.has_conv = any(layer.conv is not None for layer in self.layers)
        self.logit_bits = last.accumulator_bits
        # Widths of the activations in flight: any layer's input fits a signed value this wide.
        self.value_bits = max(layer.input_bits for layer in self.layers) + 1
        self.column_bits = max(layer.column_bits for layer in self.layers)
        self.layer_bits = _bits(self.n_layers)
        self.regions = self._address_map()
        top = max(r.base + (1 << _bits(r.depth)) for r in self.regions)
        self.address_bits = _bits(top)
        self.data_bits = max(r.width for r in self.regions)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_model(cls, model: CompressedModel, *, n_pes: int = DEFAULT_PES,
                   zero_run_bits: int = 4, lanes: int = 2, input_lanes: int = 4,
                   queue_depth: int | None = None, banks: int | None = None,
                   calibration=None) -> "EnginePlan":
        """Plan the engine for ``model``.

        Parameters
        ----------
        model : CompressedModel
            With integer data (``docs/arithmetic.md``).
        n_pes, zero_run_bits, lanes, input_lanes, queue_depth, banks : int
            See the class; ``zero_run_bits`` is ``b_z`` of ``accel.planning.pack`` (1 .. 8). The
            defaults are the commands' (one PE, :data:`DEFAULT_PES`); ``banks`` ``None`` means
            :func:`default_banks` (2 with one PE, 3 with more); ``queue_depth`` ``None``
            means :data:`DEFAULT_QUEUE_DEPTH` (64), or :data:`CONV_QUEUE_DEPTH` (513) for a
            model with convolutions.
        calibration : array_like of int, optional
            Integer network inputs ``(n, in_features)``. When given, hidden neurons are assigned
            to PEs by expected work (:func:`balance_rows`); otherwise row ``r`` goes to PE
            ``r mod N``. Either way the results are identical; only the cycle count changes.

        Raises
        ------
        ValueError
            A bad parameter or a model without integer data.
        """
        if not isinstance(model, CompressedModel):
            raise ValueError(f"model must be a CompressedModel, not {type(model).__name__}")
        if not model.has_integer:
            raise ValueError("the model has no integer data: quantize it with "
                             "core.integer.quantize_model (python -m compress does by "
                             "default)")
        _check_conv(model)
        n_pes = _check_int("n_pes", n_pes, 1, MAX_PES)
        zero_run_bits = _check_int("zero_run_bits", zero_run_bits, 1, MAX_ZERO_RUN_BITS)
        lanes = _check_int("lanes", lanes, 1, 4)
        input_lanes = _check_int("input_lanes", input_lanes, 1, 16)
        if queue_depth is None:
            queue_depth = CONV_QUEUE_DEPTH if any(layer.geometry is not None
                                                  for layer in model.layers) \
                else DEFAULT_QUEUE_DEPTH
        if isinstance(queue_depth, int) and not isinstance(queue_depth, bool) \
                and 0 < queue_depth < MIN_QUEUE_DEPTH:
            raise ValueError(f"queue_depth must be {MIN_QUEUE_DEPTH}..4096, not {queue_depth}: a "
                             f"PE's registered ready promises room for the groups of the "
                             f"{GROUP_QUEUE_SLACK} clocks before the broadcaster's commit lands, "
                             f"so a shallower queue would never be ready")
        queue_depth = _check_int("queue_depth", queue_depth, MIN_QUEUE_DEPTH, 4096)
        if banks is None:
            banks = default_banks(n_pes)
        banks = _check_int("banks", banks, 1, 8)
        orders = cls._row_orders(model, n_pes, calibration)
        layers = [cls._layer_plan(model, i, n_pes, zero_run_bits, orders[i])
                  for i in range(len(model.layers))]
        return cls(layers, n_pes=n_pes, lanes=lanes, input_lanes=input_lanes,
                   queue_depth=queue_depth, banks=banks)

    @staticmethod
    def _row_orders(model, n_pes, calibration):
        orders = [np.arange(layer.out_features) for layer in model.layers]
        if calibration is None:
            return orders
        calibration = np.asarray(calibration)
        if not np.issubdtype(calibration.dtype, np.integer) or calibration.ndim != 2 \
                or calibration.shape[1] != model.in_features or len(calibration) == 0:
            raise ValueError(f"calibration must be integer network inputs of shape "
                             f"(n, {model.in_features}), not {calibration.dtype} "
                             f"{calibration.shape}")
        rates = _column_rates(model, calibration)
        for i in range(len(model.layers) - 1):       # the last layer keeps its logit order
            g = model.layers[i].geometry
            rate = rates[i]
            if g is not None:
                # A convolution's output channel costs its weights times how often their input
                # channel is nonzero (over the map: each input meets every tap once at most).
                per_channel = rate.reshape(g.in_channels, -1).sum(axis=1)
                rate = np.repeat(per_channel, g.taps)
            orders[i] = balance_rows(model.layers[i].index, rate, n_pes)
        return orders

    @staticmethod
    def _layer_plan(model, i, n_pes, zero_run_bits, order):
        layer = model.layers[i]
        integer = layer.integer
        weight_shape = tuple(layer.index.shape)
        fields = input_fields(model, i)
        conv = ConvLayout.of(layer, n_pes) if layer.geometry is not None else None
        if conv is None and fields is not None:
            layer = expand_columns(layer, fields)       # one column per packed column
        try:
            image, row_ids = pack_in_order(layer, n_pes, zero_run_bits, order)
        except ValueError as error:
            raise ValueError(f"layer {i}: {error}") from None
        if conv is not None:                            # the channel at its packed column
            row_ids = row_ids << (conv.outputs.y_bits + conv.outputs.x_bits)
        last = i == len(model.layers) - 1
        if not last and not integer.logits and model.layers[i + 1].integer.input_signed \
                != (not layer.relu):
            raise ValueError(f"layer {i}'s output signedness does not match layer {i + 1}'s "
                             "input")
        return LayerPlan(
            image=image, row_order=np.asarray(order, dtype=np.int64), row_ids=row_ids,
            input_signed=bool(integer.input_signed), input_bits=int(integer.activation_bits),
            output_bits=int(integer.activation_bits), relu=bool(layer.relu),
            logits=bool(integer.logits), weight_bits=int(integer.weight_bits),
            accumulator_bits=int(integer.accumulator_bits),
            multiplier=int(integer.multiplier), shift=int(integer.shift),
            column_nonzeros=np.count_nonzero(layer.index, axis=0).astype(np.int64),
            thresholds=None if integer.thresholds is None else integer.thresholds.copy(),
            levels=None if integer.levels is None else integer.levels.astype(np.int64),
            weight_shape=weight_shape, conv=conv, fields=fields)

    # -- address map --------------------------------------------------------------------------

    def _address_map(self) -> tuple[Region, ...]:
        regions = []
        for i, layer in enumerate(self.layers):
            image = layer.image
            if not layer.per_row:
                regions.append(("codebook", i, None, 1 << image.index_bits, layer.weight_bits,
                                True))
            # A convolution's broadcast mask is per input channel (``channel_masks``).
            regions.append(("col_mask", i, None, layer.conv.geometry.in_channels
                            if layer.conv is not None else image.in_features, self.n_pes,
                            False))
            regions.append(("requant", i, None, 2, max(MULTIPLIER_BITS, SHIFT_BITS), False))
            if layer.levels is not None:                           # A10
                regions.append(("thresholds", i, None, len(layer.thresholds),
                                layer.threshold_bits, True))
                regions.append(("levels", i, None, len(layer.levels), layer.output_bits,
                                False))
            for p in range(self.n_pes):
                if layer.per_row:                                  # A9: each PE its rows'
                    regions.append(("codebook", i, p, image.rows_per_pe << image.index_bits,
                                    layer.weight_bits, True))
                regions.append(("entries", i, p, image.depth, image.entry_bits, False))
                regions.append(("pointers", i, p, image.in_features, image.pointer_word_bits,
                                False))
                regions.append(("bias", i, p, image.rows_per_pe, layer.accumulator_bits, True))
                if not layer.logits:
                    regions.append(("row_ids", i, p, image.rows_per_pe, layer.row_id_bits,
                                    False))
                if layer.conv is not None:                         # per input channel
                    g = layer.conv.geometry
                    regions.append(("tap_masks", i, p, g.in_channels, g.taps, False))
        # Largest first, each aligned to its own power-of-two size: decoding is a compare of the
        # upper address bits.
        regions.sort(key=lambda r: -(1 << _bits(r[3])))
        placed, base = [], 0
        for name, layer, pe, depth, width, signed in regions:
            placed.append(Region(name, layer, pe, depth, width, base, signed))
            base += 1 << _bits(depth)
        return tuple(placed)

    def region(self, name: str, layer: int, pe: int | None = None) -> Region:
        for r in self.regions:
            if (r.name, r.layer, r.pe) == (name, layer, pe):
                return r
        raise KeyError((name, layer, pe))

    @staticmethod
    def _contents(name: str, pe: int | None, layer: LayerPlan) -> np.ndarray:
        image = layer.image
        if name == "codebook" and image.per_row:
            return image.pe_codebook(pe)
        if name == "thresholds":
            return layer.thresholds.astype(np.int64)
        if name == "levels":
            return layer.levels.astype(np.int64)
        if name == "codebook":
            words = np.zeros(1 << image.index_bits, dtype=np.int64)
            words[:len(image.codebook)] = image.codebook
            return words
        if name == "col_mask" and layer.conv is not None:
            return channel_masks(image, layer.conv)
        if name == "col_mask":
            return image.col_mask.astype(np.uint64)
        if name == "tap_masks":
            return tap_masks(image, layer.conv)[pe].astype(np.uint64)
        if name == "requant":
            return np.array([layer.multiplier, layer.shift], dtype=np.int64)
        if name == "entries":
            return image.entries[pe].astype(np.int64)
        if name == "pointers":
            return image.pointer_words[pe].astype(np.uint64)
        if name == "bias":
            return image.bias[pe].astype(np.int64)
        if name == "row_ids":
            return layer.row_ids[pe]
        raise KeyError(name)

    def init(self, name: str, layer: int, pe: int | None = None) -> list[int]:
        """Initial contents of one memory, as Python ints (signed where the memory is)."""
        return [int(v) for v in self._contents(name, pe, self.layers[layer])]

    def write_image(self, model: CompressedModel) -> list[tuple[int, int]]:
        """The ``(address, data)`` words that load ``model`` into an engine built from this plan.

        ``model`` must have this plan's layer shapes, activation widths and signedness, codebook
        index widths, and fit its memory depths and accumulator widths; its rows keep this
        plan's assignment to PEs.

        Raises
        ------
        ValueError
            Naming the first layer and quantity that does not fit.
        """
        if not isinstance(model, CompressedModel) or not model.has_integer:
            raise ValueError("model must be a CompressedModel with integer data")
        if len(model.layers) != self.n_layers:
            raise ValueError(f"model must have {self.n_layers} layers, not {len(model.layers)}")
        plans = []
        for i, (mine, layer) in enumerate(zip(self.layers, model.layers)):
            if tuple(layer.index.shape) != mine.weight_shape:
                raise ValueError(f"layer {i} must be {mine.weight_shape[0]}x"
                                 f"{mine.weight_shape[1]}, not {layer.out_features}x"
                                 f"{layer.index.shape[1]}")
            ours = None if mine.conv is None else mine.conv.geometry
            if layer.geometry != ours:
                def shape(g):
                    return "a Linear layer" if g is None else g.describe(layer.out_features)
                raise ValueError(f"layer {i} must be {shape(ours)}, not {shape(layer.geometry)}")
            new = self._layer_plan(model, i, self.n_pes, mine.image.zero_run_bits,
                                   mine.row_order)
            for field, allowed, compare in [
                ("index_bits", mine.image.index_bits, new.image.index_bits.__eq__),
                ("entry depth", mine.image.depth, lambda a: new.image.depth <= a),
                ("pointer_bits", mine.image.pointer_bits, lambda a: new.image.pointer_bits <= a),
                ("weight_bits", mine.weight_bits, lambda a: new.weight_bits <= a),
                ("accumulator_bits", mine.accumulator_bits,
                 lambda a: new.accumulator_bits <= a),
                ("input_bits", mine.input_bits, new.input_bits.__eq__),
                ("input_signed", mine.input_signed, new.input_signed.__eq__),
                ("relu", mine.relu, new.relu.__eq__),
                ("per-row codebooks", mine.per_row, lambda a: new.per_row == a),
                ("activation code bits", mine.code_bits, lambda a: new.code_bits == a),
            ]:
                if not compare(allowed):
                    got = {"index_bits": new.image.index_bits, "entry depth": new.image.depth,
                           "pointer_bits": new.image.pointer_bits,
                           "weight_bits": new.weight_bits,
                           "accumulator_bits": new.accumulator_bits,
                           "input_bits": new.input_bits, "input_signed": new.input_signed,
                           "relu": new.relu, "per-row codebooks": new.per_row,
                           "activation code bits": new.code_bits}[field]
                    raise ValueError(f"layer {i}: {field} is {got}; this engine was built for "
                                     f"{allowed}")
            plans.append(new)
        words = []
        for region in self.regions:
            layer = plans[region.layer]
            values = self._contents(region.name, region.pe, layer)
            if region.name == "pointers":
                # Re-encode the pointer pairs at the engine's pointer width.
                shift = self.layers[region.layer].image.pointer_bits
                starts = layer.image.col_start[region.pe, :-1].astype(np.uint64)
                ends = layer.image.col_start[region.pe, 1:].astype(np.uint64)
                values = starts | (ends << np.uint64(shift))
            full = np.zeros(region.depth, dtype=np.int64 if values.dtype != np.uint64
                            else np.uint64)
            full[:len(values)] = values
            mask = (1 << region.width) - 1
            for k, value in enumerate(full):
                words.append((region.base + k, int(value) & mask))
        return words

    # -- port encodings -----------------------------------------------------------------------

    def encode_inputs(self, x) -> list[int]:
        """Input beats for integer network inputs ``x`` ``(n, in_features)``.

        Beat ``t`` of an image carries columns ``t * L .. t * L + L - 1`` (``L`` =
        ``input_lanes``), lane ``l`` in bits ``l * A .. l * A + A - 1`` (two's complement when
        the input is signed), 0 past the last column. A first convolution's maps go at their
        packed columns (``accel.planning.conv.pad_input``), zeros in the holes.
        """
        x = np.asarray(x)
        lo, hi = activation_range(self.input_bits, self.input_signed)
        if x.ndim != 2 or x.shape[1] != self.in_features or not np.issubdtype(x.dtype,
                                                                               np.integer):
            raise ValueError(f"x must be an integer array of shape (n, {self.in_features}), "
                             f"not {x.dtype} {x.shape}")
        if x.size and (x.min() < lo or x.max() > hi):
            raise ValueError(f"x values must be {lo}..{hi}, found {x.min()}..{x.max()}")
        lanes, bits = self.input_lanes, self.input_bits
        if self.layers[0].fields is not None:           # maps at their packed columns
            x = pad_input(x, self.layers[0].fields)
        padded = np.zeros((len(x), self.beats_per_image * lanes), dtype=np.int64)
        padded[:, :x.shape[1]] = x
        raw = padded & ((1 << bits) - 1)
        beats = raw.reshape(len(x), self.beats_per_image, lanes)
        words = []
        for image in beats:
            for beat in image:
                word = 0
                for lane, value in enumerate(beat):
                    word |= int(value) << (lane * bits)
                words.append(word)
        return words

    def decode_logit(self, word: int) -> int:
        """A raw output payload to its signed logit."""
        bits = self.logit_bits
        word = int(word) & ((1 << bits) - 1)
        return word - (1 << bits) if word >> (bits - 1) else word

    @property
    def trace_bits(self) -> int:
        """Width of one PE's trace record."""
        return 2 + self.layer_bits + self.bank_bits + self.column_bits + self.value_bits

    def decode_trace(self, word: int) -> list[TraceRecord]:
        """The raw ``trace`` bus to one :class:`TraceRecord` per PE.

        Record ``p`` sits in bits ``p * T ..`` (``T`` = :attr:`trace_bits`), fields from the least
        significant bit: ``valid``, ``end``, ``layer``, ``bank``, ``column``, ``value`` (signed).
        ``layer`` is the hidden layer that produced the value.
        """
        word = int(word)
        records = []
        for p in range(self.n_pes):
            r = (word >> (p * self.trace_bits)) & ((1 << self.trace_bits) - 1)
            valid, r = r & 1, r >> 1
            end, r = r & 1, r >> 1
            layer, r = r & ((1 << self.layer_bits) - 1), r >> self.layer_bits
            bank, r = r & ((1 << self.bank_bits) - 1), r >> self.bank_bits
            column, r = r & ((1 << self.column_bits) - 1), r >> self.column_bits
            value = r - (1 << self.value_bits) if r >> (self.value_bits - 1) else r
            records.append(TraceRecord(valid, end, layer, bank, column, value))
        return records

    # -- analytic model (``accel.planning.cycles``) --------------------------------------------

    def work(self, activations: list[np.ndarray]) -> dict:
        """Per image, layer and PE: entries read and useful multiply-accumulates
        (:func:`accel.planning.cycles.work`)."""
        return cycles.work(self, activations)

    def predict(self, activations: list[np.ndarray]) -> dict:
        """The cycle model of a stream of images, back to back
        (:func:`accel.planning.cycles.predict`)."""
        return cycles.predict(self, activations)
