"""Benchmark: LeNet-300-100 on MNIST against the Deep Compression paper's row.

Paper (Han et al. 2016, Table 1): error 1.64% -> 1.58% at 40x. Target here: reproduce the row
(compressed error no worse than the paper's float baseline at >= 40x); aim for >= 50x at error
<= 1.6%. Skips (exit 0 with a message) when MNIST is absent.

    python bench/compress_lenet.py [--data-dir ../shared/data/mnist] [--seed 0] [--json PATH]

The artifact is kept as ``out/bench/lenet-300-100-seed{SEED}.dcz`` for the sim benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, mnist_missing, print_rows, run  # noqa: E402

from core.datasets import DEFAULT_MNIST_DIR  # noqa: E402
from compress.pipeline import CompressConfig  # noqa: E402

PAPER = {"error_float": 1.64, "error_compressed": 1.58, "ratio": 40}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DIR", DEFAULT_MNIST_DIR))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if mnist_missing(args.data_dir):
        return 0
    row = run(CompressConfig(model="lenet-300-100", dataset="mnist", data_dir=str(args.data_dir),
                             seed=args.seed, progress=False),
              save=CACHE / f"lenet-300-100-seed{args.seed}.dcz")
    print_rows([row])
    # Errors as whole misclassified images (of 10,000), so 1.60% compares equal to 1.6%.
    error_float = round(100 * (1 - row["accuracy_float"]), 4)
    error = round(100 * (1 - row["accuracy_compressed"]), 4)
    print(f"\n{'':<22}{'error float':>12}{'error compressed':>18}{'ratio':>8}")
    print(f"{'Deep Compression':<22}{PAPER['error_float']:>11.2f}%"
          f"{PAPER['error_compressed']:>17.2f}%{PAPER['ratio']:>7}x")
    print(f"{'this project':<22}{error_float:>11.2f}%{error:>17.2f}%"
          f"{row['compression_ratio']:>7.1f}x")
    reproduced = row["compression_ratio"] >= 40 and error <= PAPER["error_float"]
    aim = row["compression_ratio"] >= 50 and error <= 1.6
    print(f"paper's row reproduced (>= 40x, error <= {PAPER['error_float']}%): "
          f"{'yes' if reproduced else 'NO'}; aim (>= 50x at <= 1.6%): {'yes' if aim else 'no'}")
    if args.json:
        args.json.write_text(json.dumps({"run": row, "paper": PAPER, "error_float": error_float,
                                         "error_compressed": error, "reproduced": reproduced,
                                         "aim_met": aim}, indent=2))
    return 0 if reproduced else 1


if __name__ == "__main__":
    sys.exit(main())
