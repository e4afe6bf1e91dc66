"""Latent layers (EPR, ``docs/arithmetic.md`` A11): integer latents, their steps and
probability models, as the artifact stores them, and the codebook they make.

- :class:`LatentCode`: one tensor's latents ``q`` (``|q| <= LATENT_LIMIT``), its step and its
  model's ``log_scale``, range-coded by :mod:`core.range_coding`;
- :class:`LayerLatents`: a layer's weight and bias codes;
- :func:`latent_codebook`: A11's codebook and indices of a weight latent matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import range_coding

__all__ = ["LATENT_LIMIT", "MODEL_BITS", "LatentCode", "LayerLatents", "latent_codebook"]

#: Largest latent magnitude (A11): 254 nonzero values and zero fit 8 index bits.
LATENT_LIMIT = 127
#: Stored bits of one tensor's model besides its words: step and log_scale (float32 each),
#: the latents' range (int8 each).
MODEL_BITS = 32 + 32 + 8 + 8


def _float32(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise ValueError(f"{name} must be a number, not {value!r}")
    with np.errstate(over="ignore"):
        as32 = float(np.float32(value))       # the stored value
    if not math.isfinite(as32):
        raise ValueError(f"{name} must be finite as a float32, not {value!r}")
    return as32


@dataclass(frozen=True, eq=False)
class LatentCode:
    """One tensor's integer latents, step and model.

    Attributes
    ----------
    values : numpy.ndarray
        int64 latents, ``|q| <= LATENT_LIMIT``, any shape.
    step : float
        > 0, kept as its float32 value (as stored): the tensor is ``float32(q * step)``.
    log_scale : float
        Kept as its float32 value: the logistic model the latents are coded under
        (:mod:`core.range_coding`).
    """

    values: np.ndarray
    step: float
    log_scale: float

    def __post_init__(self):
        values = np.asarray(self.values)
        if values.size and values.dtype.kind not in "iu":
            raise ValueError(f"latents must be integers, not dtype {values.dtype}")
        values = values.astype(np.int64)
        if values.size and np.abs(values).max() > LATENT_LIMIT:
            raise ValueError(f"latents must be -{LATENT_LIMIT}..{LATENT_LIMIT} "
                             f"(docs/arithmetic.md A11), found {values.min()}..{values.max()}")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "step", _float32("step", self.step))
        if not self.step > 0:
            raise ValueError(f"step must be > 0, not {self.step!r}")
        object.__setattr__(self, "log_scale", _float32("log_scale", self.log_scale))

    @property
    def low(self) -> int:
        return int(self.values.min()) if self.values.size else 0

    @property
    def high(self) -> int:
        return int(self.values.max()) if self.values.size else 0

    def decoded(self) -> np.ndarray:
        """The float32 tensor ``q * step`` (A11)."""
        return (self.values.astype(np.float32) * np.float32(self.step)).astype(np.float32)

    def encode(self) -> np.ndarray:
        """The range-coded words (uint32) of the latents, row-major."""
        return range_coding.encode(self.values.ravel(), self.log_scale, self.low, self.high)

    @classmethod
    def decode(cls, words: np.ndarray, shape: tuple[int, ...], step: float, log_scale: float,
               low: int, high: int) -> LatentCode:
        """The code :meth:`encode` made ``words`` of (``ValueError`` on a corrupt stream or
        a range that is not the latents' own)."""
        if not (-LATENT_LIMIT <= low <= high <= LATENT_LIMIT):
            raise ValueError(f"a latent range must lie in -{LATENT_LIMIT}..{LATENT_LIMIT}, "
                             f"not {low}..{high}")
        count = math.prod(shape)
        values = range_coding.decode(words, count, log_scale, low, high).reshape(shape)
        code = cls(values, step, log_scale)
        if count and (code.low, code.high) != (low, high):
            raise ValueError(f"the stored latent range {low}..{high} is not the latents' own "
                             f"({code.low}..{code.high})")
        return code

    def ideal_bits(self) -> float:
        """``sum -log2 p`` of the latents under the coder's model."""
        return range_coding.ideal_bits(self.values.ravel(), self.log_scale, self.low, self.high)

    def stored_bits(self) -> int:
        """Bits the artifact stores for this tensor: its words and :data:`MODEL_BITS`."""
        return 32 * len(self.encode()) + MODEL_BITS


@dataclass(frozen=True, eq=False)
class LayerLatents:
    """A Linear layer's latent codes: ``weight`` (out, in) and ``bias`` (out,)."""

    weight: LatentCode
    bias: LatentCode

    def __post_init__(self):
        if self.weight.values.ndim != 2 or self.bias.values.shape != \
                (self.weight.values.shape[0],):
            raise ValueError(f"latents must be a (out, in) weight and an (out,) bias, not "
                             f"{self.weight.values.shape} and {self.bias.values.shape}")

    @property
    def parameters(self) -> int:
        return self.weight.values.size + self.bias.values.size


def latent_codebook(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """A11: ``(codebook, index, index_bits)`` of a weight latent matrix: the codebook is 0 then
    the distinct nonzero latents ascending (int64), ``index`` (uint8) each latent's position
    in it, ``index_bits = max(1, ceil(log2 K))``."""
    values = np.asarray(values, dtype=np.int64)
    nonzero = np.unique(values[values != 0])
    codebook = np.concatenate([[0], nonzero]).astype(np.int64)
    index = np.searchsorted(nonzero, values) + 1
    index[values == 0] = 0
    index_bits = max(1, math.ceil(math.log2(len(codebook))))
    return codebook, index.astype(np.uint8), index_bits
