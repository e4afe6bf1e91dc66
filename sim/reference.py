"""The bit-exact integer reference: ``docs/arithmetic.md`` in vectorized numpy.

Every function on the integer path takes and returns integer arrays and uses no floating point:
the accumulation (A5) is an integer sparse-matrix product (scipy.sparse, which keeps integer
dtypes and skips the pruned weights), a convolution's (A12) the same product with its input
patches (an integer im2col), requantization (A6) an int64 multiply, add and arithmetic shift, the
activation function and clamp (A7) integer comparisons, pooling (A13) an integer maximum or a
rounded shift of a sum. Only :func:`quantize_input` (A1, the host's conversion of float features)
touches floats.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from core.geometry import im2col, max_pool, patch_batch, sum_pool
from core.integer import activation_range

__all__ = ["SATURATION_WARNING_FRACTION", "pool", "quantize_input", "requantize", "run",
           "run_layer", "saturation_warning", "threshold_activation", "trace"]


# -- edge checks -----------------------------------------------------------------------------

def _integer_layers(model):
    if not getattr(model, "has_integer", False):
        raise ValueError("the model has no integer data: quantize it with "
                         "core.integer.quantize_model (python -m compress does by default) "
                         "or load a format-2 artifact")
    return model.layers


def _layer_index(model, i) -> int:
    layers = _integer_layers(model)
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < len(layers):
        raise ValueError(f"layer must be 0..{len(layers) - 1}, not {i!r}")
    return int(i)


def _check_input(x, features: int, lo: int, hi: int, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{what} must have shape (n_samples, {features}), not {x.shape} "
                         "(give a batch, even of one sample)")
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{what} must be an integer array, not dtype {x.dtype} "
                         "(convert float features with sim.quantize_input)")
    x = x.reshape(len(x), -1)
    if x.shape[1] != features:
        raise ValueError(f"{what} must have {features} features per sample, not {x.shape[1]}")
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"{what} values must be {lo}..{hi}, found {x.min()}..{x.max()}")
    return x


# -- the arithmetic ----------------------------------------------------------------------------

def requantize(acc: np.ndarray, multiplier: int, shift: int, *, relu: bool,
               bits: int) -> np.ndarray:
    """A6-A7: ``clamp(relu((acc * multiplier + round) >> shift))`` to the ``bits``-wide range.

    The output range is unsigned after a ReLU, signed without one (A1). ``acc`` must be an
    integer array whose products with ``multiplier`` fit in int64 (guaranteed by A5).
    """
    acc = np.asarray(acc)
    if not np.issubdtype(acc.dtype, np.integer):
        raise ValueError(f"acc must be an integer array, not dtype {acc.dtype}")
    rounding = (1 << shift) >> 1                    # 2**(shift-1), or 0 for shift 0
    t = (acc.astype(np.int64) * np.int64(multiplier) + np.int64(rounding)) >> np.int64(shift)
    if relu:
        t = np.maximum(t, 0)
    lo, hi = activation_range(bits, not relu)
    return np.clip(t, lo, hi)


def threshold_activation(acc: np.ndarray, thresholds: np.ndarray,
                         levels: np.ndarray) -> np.ndarray:
    """A10: ``levels[#{j : acc >= thresholds[j]}]``, int64.

    ``thresholds`` is non-decreasing, so the count is the insertion point to the right.
    """
    acc = np.asarray(acc)
    if not np.issubdtype(acc.dtype, np.integer):
        raise ValueError(f"acc must be an integer array, not dtype {acc.dtype}")
    code = np.searchsorted(np.asarray(thresholds, dtype=np.int64), acc.astype(np.int64),
                           side="right")
    return np.asarray(levels, dtype=np.int64)[code]


def _weights(layer) -> scipy.sparse.csr_array:
    """The layer's integer weights ``codebook[index]`` (A3), or ``codebook[r][index]`` (A9),
    as a sparse matrix, zeros dropped."""
    dtype = np.int32 if layer.integer.accumulator_bits <= 32 else np.int64
    codebook = layer.integer.codebook.astype(dtype)
    if codebook.ndim == 2:
        dense = np.take_along_axis(codebook, layer.index.astype(np.intp), axis=1)
    else:
        dense = codebook[layer.index]
    return scipy.sparse.csr_array(dense)


def _product(weights: scipy.sparse.csr_array, x: np.ndarray) -> np.ndarray:
    """``x W^T`` for rows ``x``, exactly: ``W @ x.T`` walks each nonzero once and adds a whole
    row of the batch, integer throughout."""
    columns = np.ascontiguousarray(x.T, dtype=weights.dtype)
    return np.asarray(weights @ columns, dtype=weights.dtype).T


def _accumulate(layer, x: np.ndarray) -> np.ndarray:
    """A5: ``bias + W x`` for a batch, exactly, in int32 when the derived width allows; for a
    convolution (A12) the maps ``(n, O, H_c, W_c)``, the same product with each output
    position's input patch (zero padding is 0, A1)."""
    integer = layer.integer
    weights = _weights(layer)
    dtype = weights.dtype
    bias = integer.bias.astype(dtype)
    g = layer.geometry
    if g is None:
        return (_product(weights, x) + bias).astype(np.int64)
    positions = g.conv_height * g.conv_width
    maps = np.empty((len(x), layer.out_features, positions), dtype=np.int64)
    step = patch_batch(g)
    for start in range(0, len(x), step):
        patches = im2col(x[start:start + step], g)          # (n, positions, columns)
        acc = _product(weights, patches.reshape(-1, g.columns)) + bias
        maps[start:start + step] = acc.reshape(-1, positions, layer.out_features).transpose(
            0, 2, 1)
    return maps.reshape(len(x), layer.out_features, g.conv_height, g.conv_width)


def pool(maps: np.ndarray, kind: str | None) -> np.ndarray:
    """A13 on a layer's output maps ``(n, O, H_c, W_c)``: ``"max"``, the maximum of each 2 x 2
    window; ``"avg"``, ``(sum + 2) >> 2``; ``None``, the maps unchanged. int64."""
    maps = np.asarray(maps)
    if not np.issubdtype(maps.dtype, np.integer) or maps.ndim != 4:
        raise ValueError(f"maps must be a 4-D integer array, not {maps.dtype} {maps.shape}")
    if kind is None:
        return maps.astype(np.int64)
    if kind == "max":
        return max_pool(maps).astype(np.int64)
    if kind == "avg":
        return (sum_pool(maps) + 2) >> 2
    raise ValueError(f"kind must be max, avg or None, not {kind!r}")


def _layer(layer, x: np.ndarray) -> np.ndarray:
    integer = layer.integer
    acc = _accumulate(layer, x)
    if integer.logits:                              # A8
        out = np.maximum(acc, 0) if layer.relu else acc
    elif integer.levels is not None:                # A10
        out = threshold_activation(acc, integer.thresholds, integer.levels)
    else:
        out = requantize(acc, integer.multiplier, integer.shift, relu=layer.relu,
                         bits=integer.activation_bits)
    if layer.geometry is not None:                  # A13, then flattened channel-major
        out = pool(out, layer.geometry.pool).reshape(len(out), -1)
    return out


def run_layer(model, i: int, x) -> np.ndarray:
    """Layer ``i``'s integer output for its integer input ``x``, shape ``(n, input_size)``
    (a convolution's ``C x H x W`` maps flattened channel-major).

    Hidden layers return their requantized activations (A6-A7), the last layer its logits (A8),
    a convolution's pooled (A13) and flattened; always as int64, shape ``(n, output_size)``.
    """
    i = _layer_index(model, i)
    layer = model.layers[i]
    lo, hi = layer.integer.input_range()
    x = _check_input(x, layer.input_size, lo, hi, f"layer {i}'s input")
    return _layer(layer, x)


def trace(model, x) -> list[np.ndarray]:
    """Every layer's integer output for a batch of integer network inputs (int64 arrays)."""
    layers = _integer_layers(model)
    lo, hi = layers[0].integer.input_range()
    activations = _check_input(x, model.in_features, lo, hi, "x")
    outputs = []
    for layer in layers:
        activations = _layer(layer, activations)
        outputs.append(activations)
    return outputs


def run(model, x) -> np.ndarray:
    """Integer logits (int64, shape ``(n, out_features)``) for integer inputs ``x``.

    ``x`` has shape ``(n, in_features)`` (or ``(n, ...)`` flattening to it) and values in the
    input range of ``docs/arithmetic.md`` A1: ``0..2**A-1`` for unsigned inputs (uint8),
    ``-2**(A-1)..2**(A-1)-1`` for signed ones (int8).
    """
    return trace(model, x)[-1]


#: The share of input values outside the calibrated range above which the command lines warn
#: (:func:`saturation_warning`): more than 1%. Data scaled like the calibration set saturates
#: no value or very few (the calibration set's own maximum maps to the range's end); a data set
#: scaled differently saturates many.
SATURATION_WARNING_FRACTION = 0.01


def quantize_input(model, x, *, return_saturation: bool = False):
    """A1: float features to the network's integer inputs, ``clamp(rint(x / s_in))``.

    The host's step, before the integer path. Returns uint8/int8 for 8-bit activations
    (uint16/int16 up to 16 bits). With ``return_saturation``, returns ``(q, saturation)``,
    ``saturation`` a dict: ``count`` (input values outside ``lo .. hi`` before the clamp, so
    clamped to an end), ``total`` (values), ``fraction``, ``range`` (``[lo, hi]``) and
    ``below``/``above`` (how many on each side); see :func:`saturation_warning`.
    """
    layers = _integer_layers(model)
    x = np.asarray(x)
    if x.ndim < 2 or not (np.issubdtype(x.dtype, np.floating)
                          or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"x must be a numeric array of shape (n_samples, {model.in_features}), "
                         f"not {x.dtype} {x.shape}")
    x = x.reshape(len(x), -1).astype(np.float64)
    if x.shape[1] != model.in_features:
        raise ValueError(f"x must have {model.in_features} features per sample, not {x.shape[1]}")
    if not np.isfinite(x).all():
        raise ValueError("x must be finite; it holds NaN or inf")
    first = layers[0].integer
    lo, hi = first.input_range()
    unclamped = np.rint(x / first.input_scale)
    q = np.clip(unclamped, lo, hi)
    bits = first.activation_bits
    dtype = {(False, True): np.uint8, (True, True): np.int8,
             (False, False): np.uint16, (True, False): np.int16}[first.input_signed, bits <= 8]
    if not return_saturation:
        return q.astype(dtype)
    below, above = int((unclamped < lo).sum()), int((unclamped > hi).sum())
    total = int(unclamped.size)
    saturation = {"count": below + above, "total": total,
                  "fraction": (below + above) / total if total else 0.0,
                  "below": below, "above": above, "range": [int(lo), int(hi)]}
    return q.astype(dtype), saturation


def saturation_warning(saturation: dict, *, threshold: float = SATURATION_WARNING_FRACTION,
                       recalibrate: str = "python -m compress --dataset DATA retrains and "
                                          "recalibrates; core.integer.quantize_model(model, "
                                          "x_train) recalibrates alone") -> str | None:
    """The warning for :func:`quantize_input`'s ``saturation`` when more than ``threshold`` of
    the input values were clamped, else ``None``.

    Such inputs are not what the model was calibrated on (A1): the integer model, and the
    hardware, which clamps the same way, see them clipped, and accuracy falls silently.
    """
    if saturation["total"] == 0 or saturation["fraction"] <= threshold:
        return None
    lo, hi = saturation["range"]
    return (f"warning: {saturation['fraction']:.1%} of input values ({saturation['count']:,} of "
            f"{saturation['total']:,}) fell outside the calibrated input range [{lo}, {hi}] and "
            f"were clamped ({saturation['below']:,} below, {saturation['above']:,} above); the "
            f"data looks scaled differently from the calibration set: rescale it like the data "
            f"the model was compressed on, or recalibrate on it ({recalibrate}; "
            f"docs/arithmetic.md, A1)")
