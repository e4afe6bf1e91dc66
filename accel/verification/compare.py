"""The engine's outputs against the golden model's: which samples differ, and where first.

One comparison for every runner and checker (``accel.verify``, ``accel.fuzz``, the benchmarks):
every hidden layer's activations and the logits, sample by sample, against ``sim.trace``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Comparison", "compare_outputs", "compare_run"]


@dataclass
class Comparison:
    """What :func:`compare_outputs` found.

    Attributes
    ----------
    bad : numpy.ndarray
        bool ``(n,)``: the samples with at least one differing output.
    values : int
        Differing values, over every layer and sample.
    compared : int
        Values compared.
    first : dict or None
        The first difference: ``sample``, ``layer`` (hidden layers first, the logits last),
        ``neuron``, ``expected``, ``got``; None when everything is equal.
    """

    bad: np.ndarray
    values: int
    compared: int
    first: dict | None

    @property
    def mismatches(self) -> int:
        """Samples that differ anywhere."""
        return int(self.bad.sum())


def _structural(n: int, layer: int, expected, got) -> Comparison:
    # The outputs cannot be compared value by value: every sample counts as wrong.
    return Comparison(np.ones(n, dtype=bool), 0, 0, {"sample": 0, "layer": layer, "neuron": 0,
                                                     "expected": expected, "got": got})


def compare_outputs(outputs, expected) -> Comparison:
    """Compare ``outputs`` (per layer, ``(n, out_features)``: the hidden layers, then the
    logits) with ``expected`` (``sim.trace``'s list of the same)."""
    n = len(expected[-1])
    if len(outputs) != len(expected):
        return _structural(n, min(len(outputs), len(expected)) - 1,
                           f"{len(expected)} layers of outputs", f"{len(outputs)}")
    outputs = [np.asarray(o) for o in outputs]
    bad = np.zeros(n, dtype=bool)
    values = compared = 0
    for layer, (got, want) in enumerate(zip(outputs, expected)):
        if got.shape != want.shape:
            return _structural(n, layer, f"shape {want.shape}", f"shape {got.shape}")
        differs = got != want
        values += int(differs.sum())
        compared += differs.size
        bad |= differs.any(axis=1)
    first = None
    for sample in np.flatnonzero(bad)[:1]:
        for layer, (got, want) in enumerate(zip(outputs, expected)):
            neurons = np.flatnonzero(got[sample] != want[sample])
            if len(neurons):
                neuron = int(neurons[0])
                first = {"sample": int(sample), "layer": layer, "neuron": neuron,
                         "expected": int(want[sample, neuron]), "got": int(got[sample, neuron])}
                break
    return Comparison(bad, values, compared, first)


def compare_run(run, expected) -> Comparison:
    """:func:`compare_outputs` of an :class:`~accel.verification.amaranth_sim.EngineRun` (``hidden``, then
    ``logits``)."""
    return compare_outputs(list(run.hidden) + [run.logits], expected)
