"""Benchmark: digits-mlp compression ratio and accuracy drop, over several seeds.

Target (issue 2): compression ratio >= 40x with accuracy drop <= 0.5 percentage points.
The test set has 450 images, so one image is 0.22 points: the target is checked on the mean
over seeds, and every seed is printed. ``--quantizers`` also runs the Deep Compression
k-means baselines on the first seed, side by side with the exact DP.

    python bench/compress_digits.py [--seeds 0,...,9] [--quantizers] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_rows, run  # noqa: E402

from compress.cluster import QUANTIZERS  # noqa: E402
from compress.pipeline import CompressConfig  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--quantizers", action="store_true",
                        help="also run the k-means baselines on the first seed")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for seed in seeds:
        rows.append(run(CompressConfig(model="digits-mlp", seed=seed, progress=False)))
        print(f"seed {seed}: {rows[-1]['compression_ratio']:.1f}x, "
              f"drop {rows[-1]['drop_points']:+.2f} points", flush=True)
    print_rows(rows)
    ratio = statistics.mean(r["compression_ratio"] for r in rows)
    drop = statistics.mean(r["drop_points"] for r in rows)
    print(f"\ndigits-mlp over seeds {seeds}: mean compression ratio {ratio:.1f}x "
          f"(min {min(r['compression_ratio'] for r in rows):.1f}x), mean accuracy drop "
          f"{drop:+.2f} points (max {max(r['drop_points'] for r in rows):+.2f})")
    baselines = []
    if args.quantizers:
        for quantizer in QUANTIZERS:
            baselines.append(rows[0] if quantizer == "dp" else run(CompressConfig(
                model="digits-mlp", seed=seeds[0], quantizer=quantizer, progress=False)))
        print("\nweight sharing methods, same seed, same pruned network:")
        print_rows(baselines)
    met = ratio >= 40 and drop <= 0.5
    print(f"target (ratio >= 40x, drop <= 0.5 points): {'met' if met else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "quantizers": baselines,
                                         "mean_ratio": ratio, "mean_drop_points": drop,
                                         "target_met": met}, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
