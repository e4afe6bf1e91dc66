"""The per-layer fields of the artifact's header and payload that are not the sparse stream
(``docs/artifact-format.md``): the codebook's arrays (a per-layer codebook, per-row codebooks or
an LQ-Nets basis, and learned activation levels) and the integer data (version 2's scalars and
arrays, version 3's thresholds and levels).

Each field has a writer (``put`` appends an array to the payload and returns its entry) and a
reader (``get`` returns a named array of the layer's entry), used by
:mod:`core.artifact`.
"""

from __future__ import annotations

import numpy as np

from .integer import MAX_CODE_BITS, IntegerLayer

__all__ = ["INTEGER_SCALARS", "codebook_arrays", "integer_header", "integer_values",
           "read_codebook", "read_integer"]


def codebook_arrays(layer, put, learned: dict) -> dict:
    """The codebook's arrays (written first in the layer's payload) and, in ``learned``, the
    version-3 header fields: a per-row codebook's shape or basis width, the activation code
    width."""
    arrays = {}
    if layer.basis is not None:
        learned["basis_bits"] = int(layer.basis.shape[1])
        arrays["basis"] = put(layer.basis, "float16")
    elif layer.per_row:
        learned["codebook_entries"] = int(layer.codebook.shape[1])
        arrays["centroids"] = put(layer.codebook[:, 1:], "float32")
    else:
        arrays["centroids"] = put(layer.codebook[1:], "float32")
    if layer.activation_levels is not None:
        learned["activation_code_bits"] = int(len(layer.activation_levels)).bit_length() - 1
        arrays["activation_levels"] = put(layer.activation_levels[1:], "float32")
    return arrays


def read_codebook(header: dict, get, out_features: int) -> dict:
    """The :class:`CompressedLayer` fields of :func:`codebook_arrays`' arrays."""
    fields = {"codebook": None, "basis": None, "activation_levels": None}
    if "basis_bits" in header:
        bits = int(header["basis_bits"])
        if not 1 <= bits <= 8:
            raise ValueError(f"basis_bits must be 1..8, not {bits}")
        basis = get("basis")
        if basis.size != out_features * bits:
            raise ValueError(f"the basis has {basis.size} values, not {out_features} x {bits}")
        fields["basis"] = basis.astype(np.float32).reshape(out_features, bits)
    elif "codebook_entries" in header:
        entries = int(header["codebook_entries"])
        centroids = get("centroids")
        if entries < 1 or centroids.size != out_features * (entries - 1):
            raise ValueError(f"the per-row codebook has {centroids.size} values, not "
                             f"{out_features} x {entries - 1}")
        fields["codebook"] = np.concatenate(
            [np.zeros((out_features, 1), np.float32),
             centroids.reshape(out_features, entries - 1)], axis=1)
    else:
        fields["codebook"] = np.concatenate([[0.0], get("centroids")]).astype(np.float32)
    if "activation_code_bits" in header:
        bits = int(header["activation_code_bits"])
        levels = get("activation_levels")
        if not 1 <= bits <= MAX_CODE_BITS or len(levels) != (1 << bits) - 1:
            raise ValueError(f"activation_code_bits must be 1..{MAX_CODE_BITS} with 2**bits - 1 "
                             f"stored levels, not {bits} with {len(levels)}")
        fields["activation_levels"] = np.concatenate([[0.0], levels]).astype(np.float32)
    return fields


INTEGER_SCALARS = {"weight_bits": int, "activation_bits": int, "input_signed": bool,
                    "accumulator_bits": int, "multiplier": int, "shift": int, "logits": bool,
                    "input_scale": float, "weight_scale": float, "output_scale": float}


def integer_header(integer: IntegerLayer, put) -> dict:
    entry = {name: kind(getattr(integer, name)) for name, kind in INTEGER_SCALARS.items()}
    if integer.per_row:
        entry["codebook_rows"] = int(integer.codebook.shape[0])
    entry["arrays"] = {"codebook": put(integer.codebook, "int32"),
                       "bias": put(integer.bias, "int32")}
    if integer.levels is not None:                                  # A10, version 3
        entry["arrays"]["thresholds"] = put(integer.thresholds, "int64")
        entry["arrays"]["levels"] = put(integer.levels, "int32")
    return entry


def integer_values(entry: dict) -> dict:
    values = {}
    for name, kind in INTEGER_SCALARS.items():
        value = entry[name]
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if not ok:
            raise ValueError(f"integer field {name!r} must be a {kind.__name__}, not {value!r}")
        values[name] = kind(value)
    return values


def read_integer(entry: dict, get, out_features: int) -> IntegerLayer:
    values = integer_values(entry)
    codebook = get("codebook", entry).astype(np.int32)
    if "codebook_rows" in entry:                                     # A9, version 3
        rows = int(entry["codebook_rows"])
        if rows != out_features or codebook.size % max(rows, 1):
            raise ValueError(f"the integer codebook has {codebook.size} values, not {rows} rows")
        codebook = codebook.reshape(rows, -1)
    learned = {}
    if "thresholds" in entry["arrays"] or "levels" in entry["arrays"]:
        learned = {"thresholds": get("thresholds", entry).astype(np.int64),
                   "levels": get("levels", entry).astype(np.int32)}
    return IntegerLayer(codebook=codebook, bias=get("bias", entry).astype(np.int32), **values,
                        **learned)
