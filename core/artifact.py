"""The compressed-model artifact: a versioned, checksummed file (``docs/artifact-format.md``).

A :class:`CompressedModel` is a chain of :class:`CompressedLayer`; each layer's weights are
``codebook[index]`` with ``codebook[0] == 0`` (index 0 is a pruned weight). On disk each layer is
stored as Deep Compression stores it: the relative-index sparse stream of (codebook index, zero
run) pairs, both Huffman-coded, plus the float32 codebook and bias. So the file is as small as the
reported compressed size (plus a JSON header), and loading it decodes the real streams.

Since format version 2 a layer may also carry its integer data (:class:`~core.integer.
IntegerLayer`, ``docs/arithmetic.md``): the integer codebook, biases, requantization and
accumulator width the integer reference and the hardware use. Version 1 files still load,
without it.

Format version 3 adds learned quantizers (LQ-Nets): a codebook per row (stored as its binary
basis, or as its values) and learned activation levels with their integer thresholds
(``docs/arithmetic.md`` A9-A10). A model that uses neither is still written as version 2.

Format version 4 adds latent layers (EPR, A11): a layer stored as its range-coded integer
latents with their steps and model scales (:mod:`core.latents`), from which the codebook,
indices and biases, and the integer biases, are derived when the file is read.

Format version 5 adds convolution layers (A12-A13): a layer's weight matrix is then its kernels,
``out_channels x (in_channels x kh x kw)``, and its header holds its
:class:`~core.geometry.ConvGeometry` (input map, kernel, stride, padding, pooling).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .geometry import ConvGeometry, im2col, max_pool, mean_pool, patch_batch
from .huffman import HuffmanCode
from .integer import LEVEL_COUNTS, MAX_CODE_BITS, IntegerLayer, latent_integer_bias
from .latents import MODEL_BITS, LatentCode, LayerLatents, latent_codebook
from .layer_fields import (INTEGER_SCALARS, codebook_arrays, integer_header, integer_values,
                           read_codebook, read_integer)
from .levels import basis_codebook, quantize_to_levels
from .sparse import RelativeIndexStream, decode_relative, encode_relative

__all__ = ["FORMAT_VERSION", "MAGIC", "CompressedLayer", "CompressedModel", "LayerSize", "load"]

MAGIC = b"DCACCEL\x00"
FORMAT_VERSION = 5
_PREFIX = struct.Struct("<8sHHI")  # magic, version, reserved, header length
_DIGEST = 32


@dataclass(frozen=True)
class LayerSize:
    """Storage of one layer in bits, by the Deep Compression paper's accounting (§4-5)."""

    dense_bits: int        # fp32 weights and biases of the uncompressed layer
    index_bits: int        # Huffman-coded codebook indices, padding entries included
    zero_run_bits: int     # Huffman-coded relative row indices (the sparse-index overhead)
    codebook_bits: int     # fp32 centroids, or basis values (the implicit zero is not stored)
    table_bits: int        # the two Huffman code tables, one byte per code length
    bias_bits: int         # fp32 biases
    entries: int           # (index, zero run) pairs, padding included
    padding: int           # padding entries among them
    integer_bits: int = 0  # a latent layer's integer scalars (the others' are not counted)

    @property
    def compressed_bits(self) -> int:
        return (self.index_bits + self.zero_run_bits + self.codebook_bits + self.table_bits
                + self.bias_bits + self.integer_bits)

    @property
    def compressed_bytes(self) -> int:
        return -(-self.compressed_bits // 8)

    @property
    def dense_bytes(self) -> int:
        return self.dense_bits // 8


@dataclass
class CompressedLayer:
    """One weight-shared sparse Linear layer.

    Attributes
    ----------
    codebook : numpy.ndarray
        float32, shape ``(K,)``, ``codebook[0] == 0``, ``K <= 2 ** index_bits``; or one
        codebook per row, shape ``(out_features, K)``, ``codebook[:, 0] == 0``
        (``docs/arithmetic.md`` A9). Derived from ``basis`` when that is given.
    index : numpy.ndarray
        uint8 or uint16, shape ``(out_features, in_features)``; 0 marks a pruned weight.
    bias : numpy.ndarray
        float32, shape ``(out_features,)``.
    relu : bool
        Whether a ReLU follows the layer.
    index_bits, zero_run_bits : int
        Widths ``b_w`` and ``b_z`` of the sparse format's (index, zero run) entries.
    integer : IntegerLayer or None
        The layer's integer data (``docs/arithmetic.md``), once quantized.
    basis : numpy.ndarray or None
        float32 holding float16 values, shape ``(out_features, K)``: a signed binary basis per
        row (LQ-Nets); the codebook is then :func:`core.levels.basis_codebook` of it
        (``2**K + 1`` entries), and the artifact stores the basis, 16 bits a value, not the
        levels.
    activation_levels : numpy.ndarray or None
        float32, ``2**K`` ascending levels from 0 (``K = 1..4``) of a learned quantizer of the
        layer's output, after its ReLU (A10); ``None``: the output is not quantized in float.
    latents : LayerLatents or None
        A latent layer (EPR, A11): ``codebook``, ``index`` and ``bias`` are then those the
        latents make (:meth:`from_latents`), and the artifact stores the latents, range-coded.
    geometry : ConvGeometry or None
        A convolution (A12-A13): ``index`` is then ``out_channels x (in_channels x kh x kw)``,
        and the layer reads ``geometry.input_size`` activations and gives
        ``geometry.output_size(out_channels)``.
    """

    codebook: np.ndarray | None
    index: np.ndarray
    bias: np.ndarray
    relu: bool
    index_bits: int = 4
    zero_run_bits: int = 4
    integer: IntegerLayer | None = None
    basis: np.ndarray | None = None
    activation_levels: np.ndarray | None = None
    latents: LayerLatents | None = None
    geometry: ConvGeometry | None = None

    @classmethod
    def from_latents(cls, latents: LayerLatents, *, relu: bool, zero_run_bits: int = 4,
                     integer: IntegerLayer | None = None,
                     geometry: ConvGeometry | None = None) -> CompressedLayer:
        """The layer of a :class:`~core.latents.LayerLatents` (A11): its codebook (0 then the
        distinct nonzero latents times the step), indices and index width, and its bias."""
        if not isinstance(latents, LayerLatents):
            raise ValueError(f"latents must be a LayerLatents, not {type(latents).__name__}")
        codebook, index, index_bits = _latent_layer_fields(latents)
        return cls(codebook=codebook, index=index, bias=latents.bias.decoded(), relu=relu,
                   index_bits=index_bits, zero_run_bits=zero_run_bits, integer=integer,
                   latents=latents, geometry=geometry)

    def __post_init__(self):
        if self.basis is not None:
            self.basis = np.ascontiguousarray(self.basis, dtype=np.float32)
            half = self.basis.astype(np.float16).astype(np.float32)
            if not np.array_equal(half, self.basis, equal_nan=True):
                raise ValueError("basis values must be float16 values (the artifact stores a "
                                 "basis in 16 bits): round it with .astype(numpy.float16)")
            derived = basis_codebook(self.basis)
            if self.codebook is not None and not np.array_equal(
                    np.asarray(self.codebook, dtype=np.float32), derived):
                raise ValueError("codebook must be the basis's levels (or None with a basis)")
            self.codebook = derived
        if self.codebook is None:
            raise ValueError("a layer needs a codebook or a basis")
        self.codebook = np.ascontiguousarray(self.codebook, dtype=np.float32)
        self.bias = np.ascontiguousarray(self.bias, dtype=np.float32)
        self.index = np.ascontiguousarray(self.index)
        if self.activation_levels is not None:
            self.activation_levels = np.ascontiguousarray(self.activation_levels,
                                                          dtype=np.float32)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError if the fields are inconsistent."""
        for name in ("index_bits", "zero_run_bits"):
            bits = getattr(self, name)
            if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
                raise ValueError(f"{name} must be 1..16, not {bits!r}")
        if self.index.ndim != 2 or not np.issubdtype(self.index.dtype, np.integer):
            raise ValueError(f"index must be a 2-D integer array, not {self.index.dtype} "
                             f"{self.index.shape}")
        entries = self.codebook.shape[-1] if self.codebook.ndim else 0
        if self.codebook.ndim not in (1, 2) or not 1 <= entries <= 2 ** self.index_bits:
            raise ValueError(f"codebook must have 1..{2 ** self.index_bits} entries for "
                             f"index_bits={self.index_bits}, not {entries}")
        if self.codebook.ndim == 2 and self.codebook.shape[0] != self.out_features:
            raise ValueError(f"a per-row codebook must have {self.out_features} rows, not "
                             f"{self.codebook.shape[0]}")
        if np.any(self.codebook[..., 0] != 0.0):
            raise ValueError("codebook[0] must be 0 (the pruned weight)")
        if not np.isfinite(self.codebook).all() or not np.isfinite(self.bias).all():
            raise ValueError("codebook and bias must be finite")
        if self.index.size and (self.index.min() < 0 or self.index.max() >= entries):
            raise ValueError(f"index values must be 0..{entries - 1}, found "
                             f"{self.index.min()}..{self.index.max()}")
        if self.bias.shape != (self.out_features,):
            raise ValueError(f"bias must have shape ({self.out_features},), not {self.bias.shape}")
        self._validate_activation_levels()
        self._validate_latents()
        if self.geometry is not None:
            if not isinstance(self.geometry, ConvGeometry):
                raise ValueError(f"geometry must be a ConvGeometry or None, not "
                                 f"{type(self.geometry).__name__}")
            if self.in_features != self.geometry.columns:
                raise ValueError(f"a convolution with {self.geometry.in_channels} input channels "
                                 f"and a {self.geometry.kernel_height}x"
                                 f"{self.geometry.kernel_width} kernel has "
                                 f"{self.geometry.columns} weight columns, not {self.in_features}")
        if self.integer is not None:
            if not isinstance(self.integer, IntegerLayer):
                raise ValueError(f"integer must be an IntegerLayer or None, not "
                                 f"{type(self.integer).__name__}")
            if self.integer.codebook.shape != self.codebook.shape:
                raise ValueError(f"the integer codebook has shape {self.integer.codebook.shape}, "
                                 f"the float codebook {self.codebook.shape}")
            if (self.integer.levels is None) != (self.activation_levels is None):
                raise ValueError("a layer has integer thresholds (A10) exactly when it has "
                                 "learned activation levels")
            if self.integer.levels is not None and \
                    len(self.integer.levels) != len(self.activation_levels):
                raise ValueError(f"the integer level table has {len(self.integer.levels)} "
                                 f"levels, the float one {len(self.activation_levels)}")
            self.integer.check_against(self.index)

    def _validate_latents(self) -> None:
        latents = self.latents
        if latents is None:
            return
        if not isinstance(latents, LayerLatents):
            raise ValueError(f"latents must be a LayerLatents or None, not "
                             f"{type(latents).__name__}")
        if self.basis is not None or self.per_row or self.activation_levels is not None:
            raise ValueError("a latent layer (A11) has one codebook and no learned activation "
                             "levels")
        codebook, index, index_bits = _latent_layer_fields(latents)
        if not (np.array_equal(self.index, index) and np.array_equal(self.codebook, codebook)
                and np.array_equal(self.bias, latents.bias.decoded())
                and self.index_bits == index_bits):
            raise ValueError("a latent layer's codebook, index, index_bits and bias must be "
                             "those its latents make (docs/arithmetic.md A11; use "
                             "CompressedLayer.from_latents)")

    def _validate_activation_levels(self) -> None:
        levels = self.activation_levels
        if levels is None:
            return
        if levels.ndim != 1 or len(levels) not in LEVEL_COUNTS:
            counts = ", ".join(map(str, LEVEL_COUNTS))
            raise ValueError(f"activation_levels must hold {counts} values "
                             f"(2**K, K = 1..{MAX_CODE_BITS}), not shape {levels.shape}")
        if not np.isfinite(levels).all() or levels[0] != 0 or np.any(np.diff(levels) < 0):
            raise ValueError("activation_levels must be finite and ascending from 0")
        if not self.relu:
            raise ValueError("learned activation levels need a ReLU after the layer (their "
                             "codes are {0,1}^K and level 0 is 0; docs/arithmetic.md A10)")

    @property
    def out_features(self) -> int:
        return self.index.shape[0]

    @property
    def in_features(self) -> int:
        """Columns of the weight matrix (inputs of a Linear layer; ``C x kh x kw`` of a
        convolution: see :attr:`input_size`)."""
        return self.index.shape[1]

    @property
    def kind(self) -> str:
        """``"conv"`` or ``"fc"``: the prefix of the layer's name in reports (``conv1``,
        ``fc3``)."""
        return "fc" if self.geometry is None else "conv"

    @property
    def shape(self) -> list[int]:
        """``[out, in]``, or a convolution's kernel shape ``[O, C, kh, kw]``."""
        g = self.geometry
        if g is None:
            return [self.out_features, self.in_features]
        return [self.out_features, g.in_channels, g.kernel_height, g.kernel_width]

    @property
    def input_size(self) -> int:
        """Activations the layer reads (``C x H x W`` for a convolution)."""
        return self.geometry.input_size if self.geometry else self.in_features

    @property
    def output_size(self) -> int:
        """Activations the layer gives, after pooling."""
        return self.geometry.output_size(self.out_features) if self.geometry else \
            self.out_features

    @property
    def weight(self) -> np.ndarray:
        """The float32 shared weights ``codebook[index]`` (or ``codebook[r][index]``, A9),
        shape ``(out, in)``."""
        if self.codebook.ndim == 2:
            return np.take_along_axis(self.codebook, self.index.astype(np.intp), axis=1)
        return self.codebook[self.index]

    @property
    def per_row(self) -> bool:
        """Whether the layer has one codebook per row (A9)."""
        return self.codebook.ndim == 2

    @property
    def stored_codebook_bits(self) -> int:
        """Bits the artifact stores for the codebook: 32 per nonzero centroid (per row for a
        per-row codebook), or 16 per basis value."""
        if self.basis is not None:
            return 16 * int(self.basis.size)
        return 32 * int(self.codebook[..., 1:].size)

    def affine(self, x: np.ndarray, dtype=np.float32) -> np.ndarray:
        """``W x + b`` in ``dtype``: shape ``(n, out_features)``, or the convolution's maps
        ``(n, O, H_c, W_c)`` before pooling (A12)."""
        x = np.asarray(x, dtype=dtype)
        weight, bias = self.weight.astype(dtype), self.bias.astype(dtype)
        g = self.geometry
        if g is None:
            return x @ weight.T + bias
        positions = g.conv_height * g.conv_width
        maps = np.empty((len(x), self.out_features, positions), dtype=dtype)
        step = patch_batch(g)
        for start in range(0, len(x), step):
            patches = im2col(x[start:start + step], g)
            maps[start:start + step] = (patches @ weight.T).transpose(0, 2, 1)
        maps += bias[:, None]
        return maps.reshape(len(x), self.out_features, g.conv_height, g.conv_width)

    def pool(self, y: np.ndarray) -> np.ndarray:
        """A convolution's maps pooled (A13, in float) and flattened channel-major; a Linear
        layer's output unchanged."""
        if self.geometry is None:
            return y
        if self.geometry.pool == "max":
            y = max_pool(y)
        elif self.geometry.pool == "avg":
            y = mean_pool(y)
        return y.reshape(len(y), -1)

    def output(self, x: np.ndarray) -> np.ndarray:
        """The layer's float32 output: ``W x + b``, ReLU, the learned levels if any, then the
        pooling (flattened)."""
        y = self.affine(x)
        if self.relu:
            y = np.maximum(y, 0, dtype=np.float32)
        if self.activation_levels is not None:
            y = quantize_to_levels(y, self.activation_levels)
        return self.pool(y)

    @property
    def nonzero(self) -> int:
        return int(np.count_nonzero(self.index))

    @property
    def density(self) -> float:
        return self.nonzero / self.index.size

    def sparse_stream(self) -> RelativeIndexStream:
        """The relative-index stream: columns in order, rows ascending within a column (CSC)."""
        return encode_relative(self.index.T.reshape(-1), self.zero_run_bits)

    def coded(self) -> tuple[RelativeIndexStream, HuffmanCode, HuffmanCode]:
        """The sparse stream and the Huffman codes of its indices and of its zero runs."""
        stream = self.sparse_stream()
        return (stream, HuffmanCode.from_symbols(stream.index, 2 ** self.index_bits),
                HuffmanCode.from_symbols(stream.zero_run, 2 ** self.zero_run_bits))

    def size(self) -> LayerSize:
        if self.latents is not None:
            return self._latent_size()
        stream, index_code, zero_run_code = self.coded()
        return LayerSize(
            dense_bits=32 * (self.index.size + self.out_features),
            index_bits=index_code.encoded_bits(stream.index),
            zero_run_bits=zero_run_code.encoded_bits(stream.zero_run),
            codebook_bits=self.stored_codebook_bits + 32 * (
                0 if self.activation_levels is None else len(self.activation_levels) - 1),
            table_bits=8 * (2 ** self.index_bits + 2 ** self.zero_run_bits),
            bias_bits=32 * self.out_features,
            entries=len(stream.index),
            padding=int(np.count_nonzero(stream.index == 0)),
        )


    def _latent_size(self) -> LayerSize:
        """A latent layer's storage: the range-coded words of its weight and bias latents, each
        tensor's model (:data:`~core.latents.MODEL_BITS`), and its integer scalars."""
        return LayerSize(
            dense_bits=32 * (self.index.size + self.out_features),
            index_bits=32 * len(self.latents.weight.encode()), zero_run_bits=0,
            codebook_bits=2 * MODEL_BITS, table_bits=0,
            bias_bits=32 * len(self.latents.bias.encode()),
            entries=self.nonzero, padding=0,
            integer_bits=0 if self.integer is None else _LATENT_INTEGER_BITS)


def _latent_layer_fields(latents: LayerLatents) -> tuple[np.ndarray, np.ndarray, int]:
    """A11: the float codebook (0, then the distinct nonzero latents ascending, times the
    step), the indices and the index width a layer's latents make."""
    values, index, index_bits = latent_codebook(latents.weight.values)
    codebook = (values.astype(np.float32) * np.float32(latents.weight.step)).astype(np.float32)
    return codebook, index, index_bits


@dataclass
class CompressedModel:
    """A chain of weight-shared sparse Linear layers plus metadata (JSON-serialisable dict)."""

    layers: list[CompressedLayer]
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.layers:
            raise ValueError("a compressed model needs at least one layer")
        for i, (a, b) in enumerate(zip(self.layers[:-1], self.layers[1:])):
            if a.output_size != b.input_size:
                raise ValueError(f"layer {i} gives {a.output_size} outputs but layer {i + 1} "
                                 f"takes {b.input_size} inputs")
            if b.geometry is not None and (a.geometry is None or (
                    a.out_features, a.geometry.out_height, a.geometry.out_width) != (
                    b.geometry.in_channels, b.geometry.in_height, b.geometry.in_width)):
                raise ValueError(f"layer {i + 1} is a convolution over "
                                 f"{b.geometry.in_channels}x{b.geometry.in_height}x"
                                 f"{b.geometry.in_width} maps; layer {i} does not give them")
        quantized = [layer.integer is not None for layer in self.layers]
        if any(quantized):
            if not all(quantized):
                raise ValueError("either every layer or no layer must carry integer data")
            self._check_integer_chain()

    def _check_integer_chain(self) -> None:
        """The integer layers must connect (docs/arithmetic.md A1, A8)."""
        first = self.layers[0].integer
        for i, layer in enumerate(self.layers):
            integer = layer.integer
            if integer.activation_bits != first.activation_bits:
                raise ValueError(f"layer {i} has activation_bits {integer.activation_bits}, "
                                 f"layer 0 has {first.activation_bits}")
            if integer.logits != (i == len(self.layers) - 1):
                raise ValueError(f"only the last layer emits logits; layer {i} has "
                                 f"logits={integer.logits}")
            if i and integer.input_signed != (not self.layers[i - 1].relu):
                raise ValueError(f"layer {i}'s input must be "
                                 f"{'unsigned' if self.layers[i - 1].relu else 'signed'} "
                                 f"(layer {i - 1} {'has' if self.layers[i - 1].relu else 'has no'}"
                                 " ReLU), not the opposite")

    @property
    def has_integer(self) -> bool:
        """Whether the layers carry integer data (``core.integer.quantize_model``)."""
        return self.layers[0].integer is not None

    @property
    def in_features(self) -> int:
        """Network inputs (flattened channel-major for a convolution)."""
        return self.layers[0].input_size

    @property
    def out_features(self) -> int:
        return self.layers[-1].output_size

    @property
    def has_convolution(self) -> bool:
        return any(layer.geometry is not None for layer in self.layers)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Float32 logits of the shared-weight network (numpy; the float reference)."""
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        if x.shape[1] != self.in_features:
            raise ValueError(f"x must have {self.in_features} features, not {x.shape[1]}")
        for layer in self.layers:
            x = layer.output(x)
        return x

    def sizes(self) -> list[LayerSize]:
        return [layer.size() for layer in self.layers]

    @property
    def format_version(self) -> int:
        """The version :meth:`save` writes: 5 when a layer is a convolution (A12-A13), 4 when a
        layer is a latent layer (A11), 3 when a layer has a per-row codebook or learned
        activation levels (A9-A10), else 2, which older readers also read."""
        if self.has_convolution:
            return 5
        if any(layer.latents is not None for layer in self.layers):
            return 4
        learned = any(layer.per_row or layer.activation_levels is not None
                      for layer in self.layers)
        return 3 if learned else 2

    # -- file I/O ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the artifact atomically (temporary file, then rename). Returns the path."""
        path = Path(path)
        payload = bytearray()
        layer_headers = []

        def put(array: np.ndarray | bytes, dtype: str) -> dict:
            blob = bytes(array) if isinstance(array, (bytes, bytearray)) else (
                np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes())
            entry = {"offset": len(payload), "nbytes": len(blob), "dtype": dtype}
            payload.extend(blob)
            return entry

        for layer in self.layers:
            if layer.latents is not None:
                entry = _latent_header(layer, put)
                if layer.geometry is not None:
                    entry["geometry"] = layer.geometry.as_dict()
                layer_headers.append(entry)
                continue
            stream, index_code, zero_run_code = layer.coded()
            index_data, index_nbits = index_code.encode(stream.index)
            zero_run_data, zero_run_nbits = zero_run_code.encode(stream.zero_run)
            learned: dict = {}
            arrays = codebook_arrays(layer, put, learned)
            header_entry = {
                "in_features": layer.in_features,
                "out_features": layer.out_features,
                "relu": bool(layer.relu),
                "index_bits": int(layer.index_bits),
                "zero_run_bits": int(layer.zero_run_bits),
                "entries": int(len(stream.index)),
                "index_stream_bits": int(index_nbits),
                "zero_run_stream_bits": int(zero_run_nbits),
                "arrays": {
                    **arrays,
                    "bias": put(layer.bias, "float32"),
                    "index_code_lengths": put(index_code.lengths, "uint8"),
                    "zero_run_code_lengths": put(zero_run_code.lengths, "uint8"),
                    "index_stream": put(index_data, "uint8"),
                    "zero_run_stream": put(zero_run_data, "uint8"),
                },
            }
            header_entry.update(learned)
            if layer.integer is not None:
                header_entry["integer"] = integer_header(layer.integer, put)
            if layer.geometry is not None:
                header_entry["geometry"] = layer.geometry.as_dict()
            layer_headers.append(header_entry)
        version = self.format_version
        header = json.dumps({
            "format": "dcaccel-compressed-model",
            "version": version,
            "metadata": self.metadata,
            "layers": layer_headers,
        }, sort_keys=True, separators=(",", ":")).encode()
        body = _PREFIX.pack(MAGIC, version, 0, len(header)) + header + bytes(payload)
        data = body + hashlib.sha256(body).digest()
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)
        return path


def load(path: str | os.PathLike) -> CompressedModel:
    """Read an artifact written by :meth:`CompressedModel.save`.

    Raises
    ------
    ValueError
        The file is missing, empty, truncated, altered (checksum mismatch), of another format or a
        newer version, or internally inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"artifact {path} does not exist")
    data = path.read_bytes()
    where = f"artifact {path}"
    if len(data) < _PREFIX.size + _DIGEST:
        raise ValueError(f"{where} is {'empty' if not data else 'truncated'} "
                         f"({len(data)} bytes); it is not a compressed model")
    magic, version, _, header_length = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"{where} is not a compressed model (bad magic {magic!r})")
    if version > FORMAT_VERSION or version < 1:
        raise ValueError(f"{where} has format version {version}; this version of the project "
                         f"reads versions 1..{FORMAT_VERSION}")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise ValueError(f"{where} is corrupt: its SHA-256 checksum does not match "
                         "(truncated or altered file)")
    try:
        header = json.loads(body[_PREFIX.size:_PREFIX.size + header_length])
        payload = body[_PREFIX.size + header_length:]
        layers = [_read_layer(h, payload, version) for h in header["layers"]]
        return CompressedModel(layers, header.get("metadata", {}))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as error:
        raise ValueError(f"{where} is malformed: {error}") from None


def _read_layer(header: dict, payload: bytes, version: int) -> CompressedLayer:
    def get(name: str, where: dict = header) -> np.ndarray:
        entry = where["arrays"][name]
        offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
        if offset < 0 or nbytes < 0 or offset + nbytes > len(payload):
            raise ValueError(f"array {name!r} lies outside the payload")
        return np.frombuffer(payload, dtype=np.dtype(entry["dtype"]).newbyteorder("<"),
                             count=nbytes // np.dtype(entry["dtype"]).itemsize, offset=offset)

    out_features, in_features = int(header["out_features"]), int(header["in_features"])
    geometry = None
    if "geometry" in header:
        if version < 5:
            raise ValueError(f"a version-{version} file has a convolution layer (version 5)")
        geometry = ConvGeometry.from_dict(header["geometry"])
    if "latents" in header:
        if version < 4:
            raise ValueError(f"a version-{version} file has a latent layer (version 4)")
        layer = _read_latent_layer(header, get, out_features, in_features)
        return layer if geometry is None else replace(layer, geometry=geometry)
    entries = int(header["entries"])
    index_code = HuffmanCode(get("index_code_lengths").copy())
    zero_run_code = HuffmanCode(get("zero_run_code_lengths").copy())
    index_values = index_code.decode(get("index_stream").tobytes(),
                                     int(header["index_stream_bits"]), entries)
    zero_runs = zero_run_code.decode(get("zero_run_stream").tobytes(),
                                     int(header["zero_run_stream_bits"]), entries)
    stream = RelativeIndexStream(index=index_values, zero_run=zero_runs,
                                 length=in_features * out_features,
                                 zero_run_bits=int(header["zero_run_bits"]))
    index_bits = int(header["index_bits"])
    integer = None
    if "integer" in header:
        integer = read_integer(header["integer"], get, out_features)
    sequence = decode_relative(stream)
    index = sequence.reshape(in_features, out_features).T.astype(
        np.uint8 if index_bits <= 8 else np.uint16)
    if version < 3 and (any(key in header for key in (
            "basis_bits", "codebook_entries", "activation_code_bits"))
            or "codebook_rows" in header.get("integer", {})
            or "levels" in header.get("integer", {}).get("arrays", {})):
        raise ValueError(f"a version-{version} file has version-3 fields (learned quantizers)")
    return CompressedLayer(**read_codebook(header, get, out_features),
                           index=index,
                           bias=get("bias").astype(np.float32),
                           relu=bool(header["relu"]),
                           index_bits=index_bits,
                           zero_run_bits=int(header["zero_run_bits"]),
                           integer=integer, geometry=geometry)


#: A latent layer's stored integer scalars (its integer codebook and biases are derived):
#: input and output scales (float64), multiplier (16), shift, accumulator, weight and
#: activation widths (8 each), input sign and logits (1 each).
_LATENT_INTEGER_BITS = 64 + 64 + 16 + 8 + 8 + 8 + 8 + 1 + 1


def _latent_header(layer: CompressedLayer, put) -> dict:
    """A latent layer's header entry and payload: each tensor's words and its model."""
    latents = {}
    arrays = {}
    for name in ("weight", "bias"):
        code = getattr(layer.latents, name)
        latents[name] = {"low": code.low, "high": code.high}
        arrays[f"{name}_words"] = put(code.encode(), "uint32")
        arrays[f"{name}_model"] = put(np.array([code.step, code.log_scale]), "float32")
    entry = {"in_features": layer.in_features, "out_features": layer.out_features,
             "relu": bool(layer.relu), "zero_run_bits": int(layer.zero_run_bits),
             "latents": latents, "arrays": arrays}
    if layer.integer is not None:
        integer = layer.integer
        entry["integer"] = {name: kind(getattr(integer, name))
                            for name, kind in INTEGER_SCALARS.items()}
    return entry


def _read_latent_layer(header: dict, get, out_features: int, in_features: int):
    """The layer of :func:`_latent_header`'s entry; the integer codebook is the latents (A11)
    and the integer biases A4 of the decoded ones."""
    codes = {}
    for name, shape in (("weight", (out_features, in_features)), ("bias", (out_features,))):
        model = get(f"{name}_model")
        if model.size != 2:
            raise ValueError(f"the {name} latents' model must be 2 float32 values")
        where = header["latents"][name]
        low, high = where["low"], where["high"]
        if not (isinstance(low, int) and isinstance(high, int)):
            raise ValueError(f"the {name} latents' range must be integers")
        try:
            codes[name] = LatentCode.decode(get(f"{name}_words").copy(), shape, float(model[0]),
                                            float(model[1]), low, high)
        except ValueError as error:
            raise ValueError(f"the {name} latents: {error}") from None
    latents = LayerLatents(weight=codes["weight"], bias=codes["bias"])
    integer = None
    if "integer" in header:
        values = integer_values(header["integer"])
        if values["weight_scale"] != latents.weight.step:
            raise ValueError("a latent layer's weight scale must be its step (A11)")
        codebook, _, _ = latent_codebook(latents.weight.values)
        bias = latent_integer_bias(latents.bias.decoded(), values["input_scale"],
                                   values["weight_scale"])
        integer = IntegerLayer(codebook=codebook, bias=bias, **values)
    return CompressedLayer.from_latents(latents, relu=bool(header["relu"]),
                                        zero_run_bits=int(header["zero_run_bits"]),
                                        integer=integer)
