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

Output channels (rows) are dealt to PEs by ``accel.planning.plan.balance_rows`` and packed as
the engine packs them (``accel.planning.plan.pack_in_order``); each PE's entries (its weights
and padding entries, one clock each in its entry stage) are counted by
``accel.planning.conv.pe_work`` (a convolution's tap walk, with the PE's tap masks) or
``accel.planning.pack.pe_work`` (a Linear layer). A layer takes at least its busiest PE's
entries at ``--lanes`` per PE per cycle; the figures are that lower bound (no drain, no pipeline
fill), so they say which PE counts and lanes could reach a throughput at all, not what a build
will measure.

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
from compress.torch_model import to_torch  # noqa: E402
import sim  # noqa: E402
from accel.planning.conv import ConvLayout  # noqa: E402
from accel.planning.conv import pe_work as conv_pe_work  # noqa: E402
from accel.planning.pack import pe_work as pack_pe_work  # noqa: E402
from accel.planning.plan import balance_rows, pack_in_order  # noqa: E402
from core.datasets import DEFAULT_MNIST_DIR, load_dataset  # noqa: E402


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
    """Per layer: dense MACs, sparse MACs, and the busiest PE's entries (padding included:
    a clock each in its entry stage) per image, with rows balanced and packed as the engine
    packs them (``balance_rows``, ``pack_in_order``, ``b_z`` = 4)."""
    inputs = [x] + sim.trace(model, x)[:-1]
    rows = []
    for i, (layer, activations) in enumerate(zip(model.layers, inputs)):
        rate = (activations != 0).mean(axis=0)
        g = layer.geometry
        columns = rate if g is None else np.repeat(
            rate.reshape(g.in_channels, -1).mean(axis=1), g.taps)
        order = balance_rows(layer.index, columns.astype(np.float64), n_pes)
        image, _ = pack_in_order(layer, n_pes, 4, order)
        if g is None:
            active = activations != 0
            entries = np.stack([pack_pe_work(image, a) for a in active])
        else:
            entries = conv_pe_work(image, ConvLayout.of(layer, n_pes), activations)[:, :, 1]
        nonzero = (layer.index != 0).astype(np.int64)
        if g is None:
            sparse = (activations != 0).astype(np.int64) @ nonzero.sum(axis=0)
        else:
            sparse = conv_pe_work(pack_in_order(layer, 1, 8, np.arange(layer.out_features))[0],
                                  ConvLayout.of(layer, 1), activations)[:, 0, 1]
        words, blocks = accumulator_blocks(layer, n_pes)
        rows.append({"layer": f"{layer.kind}{i + 1}", "dense_macs": dense_macs(layer),
                     "accumulator_words_per_pe": words, "accumulator_blocks_per_pe": blocks,
                     "input_density": float((activations != 0).mean()),
                     "sparse_macs": float(np.mean(sparse)),
                     "busiest_pe_macs": float(entries.max(axis=1).mean())})
    return rows


def pytorch_batch1(model, x: np.ndarray, repeats: int = 3) -> float:
    """Inferences per second of the float network, one image at a time, one thread."""
    net = to_torch(model).eval()
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
