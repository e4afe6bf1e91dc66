"""Range coding of integer latents under a discretized logistic (EPR's stored form).

The coder is ``constriction``'s range coder (``constriction.stream.queue``); this module only
fixes the model it codes under, so that the encoder and any decoder build the same one from the
stored parameters, bit for bit, on any machine (``docs/artifact-format.md``, EPR layers):

- the symbols are the integers ``low .. high`` (the latents' own range, stored);
- symbol ``k`` has the mass of ``[k - 1/2, k + 1/2]`` under a logistic of scale
  ``exp(log_scale)`` centred on 0 (``log_scale`` stored as float32), renormalised over the
  range, computed in decimal arithmetic with 34 significant digits (Python's ``decimal``, whose
  ``exp`` is correctly rounded: no platform's ``libm`` is involved);
- those masses become integer frequencies summing to ``2 ** PRECISION``, each at least 1:
  ``1 + floor(p_k * (2 ** PRECISION - n))``, then one more for each of the symbols with the
  largest remainders (ties to the lower symbol) until the sum is reached;
- the coder takes ``frequency / 2 ** PRECISION`` (exact in float64) with ``perfect=True``:
  its closest fixed-point model to a fixed-point table is that table, so it codes under
  these frequencies exactly (its faster ``perfect=False`` rule moves the rarest symbols'); a
  range of one symbol codes to no words at all.

:func:`decode` refuses a stream that is not exactly what :func:`encode` makes of the symbols it
decodes to (so a truncated, altered or extended stream is an error, never wrong latents).
"""

from __future__ import annotations

import decimal
import math

import numpy as np

__all__ = ["PRECISION", "decode", "encode", "ideal_bits", "logistic_frequencies"]

#: Bits of the model's fixed-point probabilities (constriction's range coder takes 24).
PRECISION = 24
#: Largest alphabet: latents of ``±LATENT_LIMIT`` (compress.epr).
MAX_SYMBOLS = 1 << 12
_CONTEXT = decimal.Context(prec=34, rounding=decimal.ROUND_HALF_EVEN)


def _check_range(low: int, high: int) -> int:
    if not (isinstance(low, (int, np.integer)) and isinstance(high, (int, np.integer))):
        raise ValueError(f"the symbol range must be integers, not {low!r}..{high!r}")
    n = int(high) - int(low) + 1
    if not 1 <= n <= MAX_SYMBOLS:
        raise ValueError(f"the symbol range must hold 1..{MAX_SYMBOLS} symbols, "
                         f"not {low}..{high}")
    return n


def _sigmoid(x: decimal.Decimal) -> decimal.Decimal:
    c = _CONTEXT
    if x >= 0:
        return c.divide(1, c.add(1, c.exp(c.minus(x))))
    e = c.exp(x)
    return c.divide(e, c.add(1, e))


def logistic_frequencies(log_scale: float, low: int, high: int) -> np.ndarray:
    """Integer frequencies (int64, summing to ``2 ** PRECISION``, each >= 1) of the symbols
    ``low .. high`` under the discretized logistic (see the module's rules)."""
    n = _check_range(low, high)
    if not (isinstance(log_scale, (int, float, np.floating)) and math.isfinite(log_scale)):
        raise ValueError(f"log_scale must be a finite number, not {log_scale!r}")
    c = _CONTEXT
    # float32 as stored, then exactly into decimal.
    scale = c.exp(decimal.Decimal(float(np.float32(log_scale))))
    half = decimal.Decimal("0.5")
    masses = []
    for k in range(int(low), int(high) + 1):
        a = -abs(decimal.Decimal(k))                       # symmetric: the lower tail
        masses.append(c.subtract(_sigmoid(c.divide(a + half, scale)),
                                 _sigmoid(c.divide(a - half, scale))))
    total = sum(masses, decimal.Decimal(0))
    spare = (1 << PRECISION) - n
    frequencies, remainders = [], []
    for mass in masses:
        share = c.divide(c.multiply(mass, spare), total) if total > 0 else decimal.Decimal(0)
        whole = int(share.to_integral_value(rounding=decimal.ROUND_FLOOR))
        frequencies.append(1 + whole)
        remainders.append(share - whole)
    left = (1 << PRECISION) - sum(frequencies)
    for i in sorted(range(n), key=lambda i: (-remainders[i], i))[:left]:
        frequencies[i] += 1
    return np.array(frequencies, dtype=np.int64)


def _model(frequencies: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(
        frequencies.astype(np.float64) / float(1 << PRECISION), perfect=True)


def _symbols(values: np.ndarray, low: int, high: int) -> np.ndarray:
    values = np.asarray(values)
    if values.size and (values.dtype.kind not in "iu" or values.min() < low
                        or values.max() > high):
        raise ValueError(f"the values to code must be integers in {low}..{high}")
    return (values.astype(np.int64).ravel() - low).astype(np.int32)


def encode(values: np.ndarray, log_scale: float, low: int, high: int) -> np.ndarray:
    """The range-coded words (uint32) of ``values`` (integers in ``low .. high``)."""
    import constriction

    _check_range(low, high)
    frequencies = logistic_frequencies(log_scale, low, high)
    encoder = constriction.stream.queue.RangeEncoder()
    symbols = _symbols(values, low, high)
    if symbols.size and low < high:         # one symbol is certain: no words
        encoder.encode(symbols, _model(frequencies))
    return encoder.get_compressed().astype(np.uint32)


def decode(words: np.ndarray, count: int, log_scale: float, low: int, high: int) -> np.ndarray:
    """The ``count`` integers (int64) that :func:`encode` coded into ``words``.

    ``ValueError`` if ``words`` is not exactly the stream of those integers: truncated,
    altered or extended streams are refused.
    """
    import constriction

    _check_range(low, high)
    words = np.asarray(words)
    if words.ndim != 1 or words.dtype != np.uint32:
        raise ValueError("a range-coded stream must be a 1-D array of uint32 words")
    if count < 0:
        raise ValueError(f"count must be >= 0, not {count!r}")
    if count == 0 or low == high:
        if words.size:
            raise ValueError("the range-coded stream is corrupt (extended): it has words but "
                             "codes no information")
        return np.full(count, low, dtype=np.int64)
    decoder = constriction.stream.queue.RangeDecoder(words)
    symbols = np.asarray(decoder.decode(_model(logistic_frequencies(log_scale, low, high)),
                                        int(count)), dtype=np.int64)
    values = symbols + low
    if not np.array_equal(encode(values, log_scale, low, high), words):
        raise ValueError("the range-coded stream is corrupt (truncated, altered or extended): "
                         "it is not the code of the values it decodes to")
    return values


def ideal_bits(values: np.ndarray, log_scale: float, low: int, high: int) -> float:
    """The model's ideal code length of ``values``: ``sum -log2 p``, with the fixed-point
    probabilities the coder uses."""
    frequencies = logistic_frequencies(log_scale, low, high)
    counts = np.bincount(_symbols(values, low, high), minlength=len(frequencies))
    return float(np.sum(counts * (PRECISION - np.log2(frequencies))))
