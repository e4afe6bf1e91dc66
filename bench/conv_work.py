"""Design study: the work of a compressed LeNet-5 on an SCNN-style sparse engine, next to
PyTorch's batch-1 CPU inference of the same float network, timed in the same run.

Issue 25 asks for convolutions on the sparse engine. Before the gateware, this counts what an
input-stationary Cartesian-product dataflow (SCNN, Parashar et al., ISCA 2017) has to do for a
real artifact on real MNIST images, with the integer activations of ``sim.trace``:

- each nonzero input activation ``(c, y, x)`` is broadcast to every PE;
- each PE walks, for every kernel tap ``(dy, dx)`` whose output position
  ``((y + p - dy) / s, (x + p - dx) / s)`` exists, its own nonzero weights of column
  ``(c, dy, dx)`` (its output channels), one multiply-accumulate each;
- a Linear layer is EIE's: each nonzero input walks its column's nonzero weights in each PE.

It also prints each PE's accumulator words (``ceil(O / N)`` whole output maps per layer) and the
ECP5 block RAMs they take per bank of images in flight.

Output channels (rows) are dealt to PEs by ``accel.planning.plan.balance_rows`` (by nonzero
count). A layer takes at least its busiest PE's MACs at ``--lanes`` MACs per PE per cycle; the
figures are that lower bound (no drain, no pipeline fill), so they say which PE counts and lanes
could reach a throughput at all, not what a build will measure.

    python bench/conv_work.py [--model out/bench/lenet-5-seed0.dcz] [--data-dir DIR]
        [--samples 200] [--pes 8,16,32] [--lanes 1,2,4] [--clock-mhz 100] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, mnist_missing  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import compress  # noqa: E402
import sim  # noqa: E402
from accel.planning.plan import balance_rows  # noqa: E402
from compress.data import DEFAULT_MNIST_DIR, load_dataset  # noqa: E402


def _column_counts(layer, owner: np.ndarray, n_pes: int) -> np.ndarray:
    """``counts[k, col]``: PE ``k``'s nonzero weights in column ``col``."""
    nonzero = layer.index != 0                              # (rows, columns)
    counts = np.zeros((n_pes, layer.in_features), dtype=np.int64)
    for k in range(n_pes):
        counts[k] = nonzero[owner == k].sum(axis=0)
    return counts


def _conv_pe_macs(layer, x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each PE's MACs for a batch of the layer's input activations ``x`` (n, C H W)."""
    g = layer.geometry
    n_pes = len(counts)
    maps = x.reshape(len(x), g.in_channels, g.in_height, g.in_width) != 0
    per_pe = np.zeros((len(x), n_pes), dtype=np.int64)
    for dy in range(g.kernel_height):
        for dx in range(g.kernel_width):
            # Input rows y whose output row (y + p - dy) / s exists, likewise columns.
            rows = np.arange(g.in_height) + g.padding - dy
            cols = np.arange(g.in_width) + g.padding - dx
            row_ok = (rows >= 0) & (rows % g.stride == 0) & (rows // g.stride < g.conv_height)
            col_ok = (cols >= 0) & (cols % g.stride == 0) & (cols // g.stride < g.conv_width)
            valid = maps & row_ok[None, None, :, None] & col_ok[None, None, None, :]
            active = valid.sum(axis=(2, 3))                  # (n, C) activations per channel
            taps = [(c * g.kernel_height + dy) * g.kernel_width + dx
                    for c in range(g.in_channels)]
            per_pe += active @ counts[:, taps].T
    return per_pe


def _linear_pe_macs(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return (x != 0).astype(np.int64) @ counts.T


#: An ECP5 DP16KD's shapes (width, depth).
_BLOCK_SHAPES = ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))


def accumulator_blocks(layer, n_pes: int) -> tuple[int, int]:
    """Accumulator words per PE per bank (``ceil(O / N)`` rows, each a whole map, or one word
    for a Linear layer's row) and the DP16KD blocks a convolution's take (a Linear layer's few
    words are LUT RAM or flip-flops in the engine: 0 blocks)."""
    g = layer.geometry
    positions = 1 if g is None else g.conv_height * g.conv_width
    words = -(-layer.out_features // n_pes) * positions
    bits = layer.integer.accumulator_bits
    if g is None:
        return words, 0
    blocks = min(-(-bits // width) * -(-words // depth) for width, depth in _BLOCK_SHAPES)
    return words, blocks


def dense_macs(layer) -> int:
    g = layer.geometry
    if g is None:
        return layer.index.size
    return layer.out_features * g.conv_height * g.conv_width * g.columns


def study(model, x: np.ndarray, n_pes: int) -> list[dict]:
    """Per layer: dense MACs, sparse MACs and the busiest PE's MACs, per image."""
    inputs = [x] + sim.trace(model, x)[:-1]
    rows = []
    for i, (layer, activations) in enumerate(zip(model.layers, inputs)):
        rate = (activations != 0).mean(axis=0)
        columns = rate if layer.geometry is None else np.repeat(
            rate.reshape(layer.geometry.in_channels, -1).mean(axis=1), layer.geometry.taps)
        order = balance_rows(layer.index, columns.astype(np.float64), n_pes)
        owner = np.empty(len(order), dtype=np.int64)
        owner[order] = np.arange(len(order)) % n_pes      # new row i sits in PE i mod N
        counts = _column_counts(layer, owner, n_pes)
        if layer.geometry is None:
            per_pe = _linear_pe_macs(activations, counts)
        else:
            per_pe = _conv_pe_macs(layer, activations, counts)
        words, blocks = accumulator_blocks(layer, n_pes)
        rows.append({"layer": f"{layer.kind}{i + 1}", "dense_macs": dense_macs(layer),
                     "accumulator_words_per_pe": words, "accumulator_blocks_per_pe": blocks,
                     "input_density": float((activations != 0).mean()),
                     "sparse_macs": float(per_pe.sum(axis=1).mean()),
                     "busiest_pe_macs": float(per_pe.max(axis=1).mean())})
    return rows


def pytorch_batch1(model, x: np.ndarray, repeats: int = 3) -> float:
    """Inferences per second of the float network, one image at a time, one thread."""
    net = model.to_torch().eval()
    samples = torch.from_numpy(x.astype(np.float32))
    best = 0.0
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for _ in range(repeats):
                start = time.perf_counter()
                for row in samples:
                    net(row[None])
                best = max(best, len(samples) / (time.perf_counter() - start))
    finally:
        torch.set_num_threads(previous)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=CACHE / "lenet-5-seed0.dcz")
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DIR", DEFAULT_MNIST_DIR))
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--pes", default="8,16,32")
    parser.add_argument("--lanes", default="1,2,4")
    parser.add_argument("--clock-mhz", type=float, default=100.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if mnist_missing(args.data_dir):
        return 0
    if not args.model.exists():
        print(f"{args.model} not found: run bench/lenet5.py first (or pass --model)")
        return 2
    model = compress.load(args.model)
    data = load_dataset("mnist", data_dir=args.data_dir)
    images = data.x_test[:args.samples]
    x = sim.quantize_input(model, images)
    torch_rate = pytorch_batch1(model, images)
    total_dense = sum(dense_macs(layer) for layer in model.layers)
    print(f"{args.model.name}: {total_dense:,} dense MACs per image; PyTorch batch-1 (float, "
          f"1 thread, same run): {torch_rate:,.0f} inferences/s")
    report = {"model": str(args.model), "samples": len(x), "dense_macs": total_dense,
              "pytorch_batch1_per_s": torch_rate, "clock_mhz": args.clock_mhz, "runs": []}
    for n_pes in (int(v) for v in args.pes.split(",")):
        rows = study(model, x, n_pes)
        print(f"\n{n_pes} PEs   {'dense MACs':>11} {'input nz':>9} {'sparse MACs':>12} "
              f"{'busiest PE':>11} {'acc words/PE':>13} {'blocks/PE':>10}")
        for row in rows:
            print(f"  {row['layer']:<7} {row['dense_macs']:>11,} {row['input_density']:>9.1%} "
                  f"{row['sparse_macs']:>12,.0f} {row['busiest_pe_macs']:>11,.0f} "
                  f"{row['accumulator_words_per_pe']:>13,} {row['accumulator_blocks_per_pe']:>10}")
        blocks = n_pes * sum(row["accumulator_blocks_per_pe"] for row in rows)
        print(f"  accumulators: {blocks} DP16KD per bank of images in flight (ULX3S-85F: 208)")
        busiest = sum(row["busiest_pe_macs"] for row in rows)
        for lanes in (int(v) for v in args.lanes.split(",")):
            cycles = busiest / lanes
            rate = args.clock_mhz * 1e6 / cycles
            print(f"  {lanes} lane(s): >= {cycles:,.0f} cycles per image, <= {rate:,.0f} "
                  f"inferences/s at {args.clock_mhz:g} MHz ({rate / torch_rate:.1f}x PyTorch); "
                  f"{lanes * n_pes} multipliers")
            report["runs"].append({"pes": n_pes, "lanes": lanes, "layers": rows,
                                   "cycles_lower_bound": cycles,
                                   "inferences_per_s_upper_bound": rate})
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
