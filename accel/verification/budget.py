"""The clock budget of a simulated run: a hang becomes a failure, not an endless wait."""

from __future__ import annotations

__all__ = ["LAYER_LATENCY", "layer_clocks", "max_cycles"]

#: Clocks a layer adds to an image beyond its entries, columns and drained rows: the pipelines
#: of the PE (entry, multiply, accumulate) and of the drain, and the fence between layers.
LAYER_LATENCY = 64


def layer_clocks(layer) -> int:
    """A PE's clocks for one image of ``layer`` at most: its entries, its columns and its
    drain; a convolution walks each tap and its entries once per input position."""
    entries = int(layer.image.entry_counts.max())
    if layer.conv is None:
        return entries + layer.input_columns + layer.drain_reads
    g = layer.conv.geometry
    positions = g.in_height * g.in_width
    return (entries + g.in_channels * g.taps + g.in_channels) * positions + layer.drain_reads


def max_cycles(plan, images: int, *, idle: float, backpressure: float, reloads: int = 0,
               reload_words: int = 0, writes: int = 0) -> int:
    """A generous bound on streaming ``images`` through ``Engine(plan)``: per image and layer
    its busiest PE's entries, its columns, its rows to drain and :data:`LAYER_LATENCY`, then
    the input beats and the logits; stalls multiply it by ``1 + 4 * max(idle, backpressure)``.

    (Before issue 23's fuzz it left out the drained rows and the latencies: a 1-PE, 1-bank,
    four-layer case of width 1 layers with 14 logits took 25,733 clocks for 100 images against
    a budget of 23,848, and its hang report was a false alarm.)
    """
    per_image = (sum(layer_clocks(layer) + LAYER_LATENCY for layer in plan.layers)
                 + plan.beats_per_image + plan.out_features + 200)
    return int((images + 2 + reloads) * per_image * (1 + 4 * max(idle, backpressure))
               + 2 * reload_words + 2 * writes) + 1000
