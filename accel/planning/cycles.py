"""The engine's cycle model: the work each PE gets, and a schedule of a stream of images on the
engine's resources (``docs/accelerator.md``, "Analytic model and utilization").

The functions take an :class:`accel.planning.plan.EnginePlan` (its methods ``work`` and
``predict`` call them); the latencies below are fitted to the engine's measured single-image
latencies.
"""

from __future__ import annotations

import heapq

import numpy as np

from accel.planning import conv
from core.geometry import im2col, patch_batch

__all__ = ["HIDDEN_LAYER_LATENCY", "LAST_LAYER_LATENCY", "LAYER_LATENCY", "MODEL_OVERLAP_LIMIT",
           "predict", "work"]

#: Clocks from a hidden layer's last accumulate to the next layer's first one, for one image
#: alone: fence retire and drain command (each registered as it arrives), drain pipeline, the
#: PE's list, broadcast (the list's and the cluster's skid buffers, registered end marks and
#: fence, the column masks' register, the group queue), the PE's registered input and queue,
#: pointer read and column queue, MAC pipeline. Registers after every block RAM read and at
#: every crossing between blocks count one clock each. Fitted to single-image latencies on
#: 1 to 8 PEs and 1 to 4 layers (Amaranth simulation, 2026-12-03): 54 to 60; one more since
#: the drain takes the accumulator's read data from a register (2026-12-06).
HIDDEN_LAYER_LATENCY = 58
#: Clocks from the last layer's last accumulate to its first logit leaving the engine, less its
#: drain (``rows_per_pe`` rows): fence, drain command, drain pipeline, logit list, collector.
#: Fitted like :data:`HIDDEN_LAYER_LATENCY`: 61, and one more (2026-12-06).
LAST_LAYER_LATENCY = 62
#: The old single figure (hidden and last layers alike), kept for callers that quote it.
LAYER_LATENCY = HIDDEN_LAYER_LATENCY
#: The cycle model's range of validity (``docs/accelerator.md``, measured by ``accel.fuzz``):
#: streams whose predicted clocks per image are at least ``1 / MODEL_OVERLAP_LIMIT`` of the
#: layers-not-overlapped figure (``layer_by_layer``), i.e. that the overlap of the images in flight
#: speeds up by at most this factor. The schedule takes that overlap as perfect; beyond it, with
#: little work per image, the per-image costs it does not count (drain commands sequenced per
#: image and layer, the collector on a wide last layer, PEs held in step by a shallow queue)
#: show: up to 1.86 times the prediction on the fuzz's 48 models (0.99 to 1.09 inside it).
MODEL_OVERLAP_LIMIT = 1.2


def work(plan, activations: list[np.ndarray]) -> dict:
    """Per image, layer and PE: entries read (``work``) and useful multiply-accumulates.

    ``activations`` is every layer's input for a batch (``[x] + sim.trace(model, x)[:-1]``).
    Returns ``work`` (n, layers, N), ``columns`` (n, layers, N) columns delivered to each PE,
    ``nonzeros`` (n, layers) nonzero inputs, and ``useful`` (n,) nonzero weight x nonzero
    activation products.
    """
    n = len(activations[0])
    work = np.zeros((n, plan.n_layers, plan.n_pes), dtype=np.int64)
    columns = np.zeros_like(work)
    nonzeros = np.zeros((n, plan.n_layers), dtype=np.int64)
    useful = np.zeros(n, dtype=np.int64)
    for i, (layer, x) in enumerate(zip(plan.layers, activations)):
        active = (np.asarray(x) != 0).astype(np.int64)
        nonzeros[:, i] = active.sum(axis=1)
        if layer.conv is not None:
            # A convolution: each PE's tap walk (a clock per tap, at least one per
            # activation it gets) and its entries (``accel.planning.conv.pe_work``).
            taps_entries = conv.pe_work(layer.image, layer.conv, active)
            delivered = active.reshape(n, layer.conv.geometry.in_channels, -1).sum(axis=2) \
                @ (conv.channel_masks(layer.image, layer.conv)[:, None]
                   >> np.arange(plan.n_pes, dtype=np.uint64) & np.uint64(1)).astype(np.int64)
            work[:, i] = taps_entries[:, :, 1]
            columns[:, i] = np.maximum(taps_entries[:, :, 0], delivered)
            useful += _conv_useful(layer, active)
            continue
        if layer.fields is not None:                    # maps at their packed columns
            active = conv.pad_input(active, layer.fields)
        per_column = np.diff(layer.image.col_start, axis=1)
        work[:, i] = active @ per_column.T
        columns[:, i] = active @ (per_column > 0).T
        useful += active @ layer.column_nonzeros
    return {"work": work, "columns": columns, "nonzeros": nonzeros, "useful": useful}

def _conv_useful(layer, active: np.ndarray) -> np.ndarray:
    """A convolution's products of a nonzero weight and a nonzero input, per image (every
    output position before pooling: A12's sums)."""
    g = layer.conv.geometry
    out = np.zeros(len(active), dtype=np.int64)
    step = patch_batch(g)
    for start in range(0, len(active), step):
        patches = im2col(active[start:start + step], g)          # (n, positions, columns)
        out[start:start + step] = (patches @ layer.column_nonzeros).sum(axis=1)
    return out


def predict(plan, activations: list[np.ndarray]) -> dict:
    """The cycle model of a stream of images, back to back (``docs/accelerator.md``).

    A schedule of the stream, image by image and layer by layer, on the engine's resources:

    - image ``k`` enters once its input beats have arrived (one beat per clock) and the
      image ``k - banks`` that used its bank has left (at most ``banks`` images in flight);
    - layer ``l`` of an image starts :data:`HIDDEN_LAYER_LATENCY` clocks after its
      previous layer has finished (fence, drain command, drain, lists, broadcast, queues,
      pointer read and MAC pipeline); each PE takes its entries of the layer (one per
      clock) and its columns (one pointer read per clock) after whatever work of other
      images in flight it already has, in the order the layers become ready; the broadcaster
      hands out ``lanes`` nonzero activations per clock, shared by every image likewise;
      a layer is not finished before its inputs are drained (the previous layer's
      ``drain_reads``: its rows, or a convolution's accumulators, one per clock, on a drain
      shared by the images in flight, in the order the layers finish);
    - the last layer's logits leave :data:`LAST_LAYER_LATENCY` clocks after it finishes,
      after its own drain, one logit per clock in image order.

    Measured clocks (first beat accepted to last logit accepted) are predicted as the last
    image's exit time less the first image's entry time.

    Parameters
    ----------
    activations : list of numpy.ndarray
        Every layer's integer input for the images (``[x] + sim.trace(model, x)[:-1]``).

    Returns
    -------
    dict
        ``cycles`` for the stream, ``cycles_per_inference``; ``per_image`` (n,) clocks
        between consecutive images' exits (the first: its whole latency); ``latency`` (n,)
        each image's clocks from entry to its last logit; ``layer_by_layer`` (clocks per
        image if layers and images did not overlap: each layer's bottleneck plus its
        latency, summed, for comparison); ``stream_bound`` (clocks per image of the PE with
        the most work over the whole stream: no schedule on these PEs can beat it);
        ``useful_macs`` (n,) and ``work`` (see :func:`work`); ``in_range``: whether the
        stream is in the model's range of validity (:data:`MODEL_OVERLAP_LIMIT`).
    """
    work = plan.work(activations)
    n, n_layers, n_pes = work["work"].shape
    pe_clocks = np.maximum(work["work"], work["columns"])          # (n, layers, N)
    broadcast = -(-work["nonzeros"] // plan.lanes)                  # (n, layers)
    drained = [0] + [layer.drain_reads for layer in plan.layers[:-1]]
    last_drain = plan.layers[-1].image.rows_per_pe
    pe_free = np.zeros(n_pes, dtype=np.int64)
    broadcaster_free = 0
    # The PEs' drain sequencers, one row (a convolution's: one accumulator) a clock, shared by
    # the images in flight: a layer's drain starts when it is ready and the drains before it
    # are done (a whole map takes thousands of clocks: the fuzz's seed 140 ran 8x its
    # prediction when they were taken as free).
    drain_free = 0
    input_drained = np.zeros(n, dtype=np.int64)
    entry = np.zeros(n, dtype=np.int64)
    leave = np.full(n, -1, dtype=np.int64)
    exit_ = np.zeros(n, dtype=np.int64)
    # Layers of the images in flight are taken in the order they become ready (ties: the
    # older image first), as the PEs' queues take them.
    ready_layers: list[tuple[int, int, int]] = []

    def enter(k):
        arrival = k * plan.beats_per_image
        bank_free = int(exit_[k - plan.banks]) if k >= plan.banks else 0
        entry[k] = max(arrival, bank_free, int(entry[k - 1]) if k else 0)
        heapq.heappush(ready_layers, (int(entry[k]), k, 0))

    for k in range(min(n, plan.banks)):
        enter(k)
    exited = 0
    while ready_layers:
        ready, k, l = heapq.heappop(ready_layers)
        start = np.maximum(pe_free, ready)
        finish = start + pe_clocks[k, l]
        pe_free = np.where(pe_clocks[k, l] > 0, finish, pe_free)
        broadcaster_free = max(broadcaster_free, ready) + int(broadcast[k, l])
        done = max(int(finish.max()), broadcaster_free,
                   int(input_drained[k]) if l else 0,
                   int(entry[k]) + plan.beats_per_image if l == 0 else 0)
        if l < n_layers - 1:
            next_ready = done + HIDDEN_LAYER_LATENCY
            drain_free = max(next_ready, drain_free) + drained[l + 1]
            input_drained[k] = drain_free
            heapq.heappush(ready_layers, (next_ready, k, l + 1))
            continue
        leave[k] = done + LAST_LAYER_LATENCY + last_drain
        # Logits leave in image order, one per clock; a bank frees when its image leaves.
        while exited < n and leave[exited] >= 0:
            j = exited
            exit_[j] = max(int(leave[j]), int(exit_[j - 1]) + plan.out_features) if j \
                else leave[j]
            exited += 1
            if j + plan.banks < n:
                enter(j + plan.banks)
    cycles = int(exit_[-1] - entry[0]) if n else 0
    per_image = np.diff(exit_, prepend=entry[0]) if n else np.zeros(0, dtype=np.int64)
    per_layer = np.maximum.reduce([work["work"].max(axis=2), work["columns"].max(axis=2),
                                   broadcast])
    layer_by_layer = (per_layer.sum(axis=1) + (n_layers - 1) * HIDDEN_LAYER_LATENCY
                      + LAST_LAYER_LATENCY + last_drain)
    stream_bound = float(work["work"].sum(axis=(0, 1)).max()) / n if n else 0.0
    return {
        "in_range": bool(n) and (float(layer_by_layer.mean())
                                 <= MODEL_OVERLAP_LIMIT * cycles / n),
        "latency": exit_ - entry,
        "cycles": cycles,
        "cycles_per_inference": cycles / n if n else 0.0,
        "layer_by_layer": float(layer_by_layer.mean()) if n else 0.0,
        "per_image": per_image,
        "stream_bound": stream_bound,
        "useful_macs": work["useful"],
        "work": work,
    }
