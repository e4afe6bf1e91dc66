"""Quantized models with chosen shapes for the accelerator tests, built without training.

Each layer gets random codebook indices at a chosen density (optionally with all-zero rows and
columns), a random signed codebook with ``codebook[0] = 0`` (A2), int32 biases (A4), the derived
accumulator width (A5) and a requantization factor that maps the accumulator bound to about the
output range (A6), so hidden activations are neither all zero nor all saturated. With
``per_row``, each row has its own codebook (A9); with ``code_bits``, hidden layers have a
threshold activation (A10) whose thresholds spread over the accumulator's reachable range.
"""

from __future__ import annotations

import numpy as np

from core.artifact import CompressedLayer, CompressedModel
from core.integer import (IntegerLayer, accumulator_bound, accumulator_width,
                              activation_range, requantization_parameters)

__all__ = ["random_inputs", "random_model"]


def random_model(seed: int, features: list[int], *, density: float | list[float] = 0.3,
                 index_bits: int = 4, weight_bits: int = 8, activation_bits: int = 8,
                 input_signed: bool = False, zero_rows: float = 0.0, zero_columns: float = 0.0,
                 bias_bits: int = 12, gain: float = 4.0, per_row: bool = False,
                 code_bits: int | None = None) -> CompressedModel:
    """A model ``features[0] -> features[1] -> ... -> features[-1]`` with ReLU hidden layers."""
    rng = np.random.default_rng(seed)
    n_layers = len(features) - 1
    densities = density if isinstance(density, list) else [density] * n_layers
    layers = []
    signed = input_signed
    for i in range(n_layers):
        out_features, in_features = features[i + 1], features[i]
        size = 1 << index_bits
        index = rng.integers(1, size, (out_features, in_features))
        index[rng.random(index.shape) >= densities[i]] = 0
        index[rng.random(out_features) < zero_rows, :] = 0
        index[:, rng.random(in_features) < zero_columns] = 0
        limit = (1 << (weight_bits - 1)) - 1
        codebook = rng.integers(-limit, limit + 1, (out_features, size) if per_row else size)
        codebook[..., 0] = 0
        bias = rng.integers(-(1 << bias_bits), 1 << bias_bits, out_features)
        bound = accumulator_bound(codebook, index, bias, activation_bits, signed)
        last = i == n_layers - 1
        multiplier = shift = 0
        thresholds = levels = float_levels = None
        hi = activation_range(activation_bits, False)[1]
        if not last and code_bits:
            # Sums are mostly far below the bound: thresholds over its lower part.
            span = max(1, int(bound / gain))
            thresholds = np.sort(rng.integers(-span // 8, span + 1, (1 << code_bits) - 1))
            levels = np.concatenate([[0], np.sort(rng.integers(0, hi + 1,
                                                               (1 << code_bits) - 1))])
            float_levels = (levels * 0.01).astype(np.float32)
        elif not last:
            multiplier, shift = requantization_parameters(gain * hi / max(bound, 1))
        integer = IntegerLayer(codebook=codebook, bias=bias, weight_bits=weight_bits,
                               activation_bits=activation_bits, input_signed=signed,
                               accumulator_bits=accumulator_width(bound),
                               multiplier=multiplier, shift=shift, logits=last,
                               thresholds=thresholds, levels=levels)
        layers.append(CompressedLayer(
            codebook=(codebook * 0.01).astype(np.float32), index=index.astype(np.uint8),
            bias=(bias * 1e-4).astype(np.float32), relu=not last, index_bits=index_bits,
            zero_run_bits=4, integer=integer, activation_levels=float_levels))
        signed = False
    return CompressedModel(layers, {"test": "accel"})


def random_inputs(model: CompressedModel, n: int, seed: int, *, density: float = 0.5) -> np.ndarray:
    """``n`` integer inputs over the model's input range, about ``density`` of them nonzero."""
    rng = np.random.default_rng(seed)
    first = model.layers[0].integer
    lo, hi = first.input_range()
    x = rng.integers(lo, hi + 1, (n, model.in_features))
    x[rng.random(x.shape) >= density] = 0
    return x.astype(np.int64)
