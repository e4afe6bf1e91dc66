"""Shared by the compression benchmarks: run the pipeline and collect its figures."""

from __future__ import annotations

import time
from pathlib import Path

from compress.pipeline import CompressConfig, compress_model

#: Where benchmarks keep artifacts they build, so a later benchmark can reuse them.
CACHE = Path(__file__).resolve().parent.parent / "out" / "bench"


def mnist_missing(data_dir) -> bool:
    """True (after saying so) when the MNIST test files are not in ``data_dir``."""
    if (Path(data_dir) / "t10k-images-idx3-ubyte.gz").exists():
        return False
    print(f"MNIST not found in {data_dir}: skipped (pass --data-dir)")
    return True


def lenet_arguments(parser) -> None:
    """The ``--model`` and ``--data-dir`` options of the benchmarks that reuse LeNet-300-100."""
    import os

    from core.datasets import DEFAULT_MNIST_DIR

    parser.add_argument("--model", type=Path, default=CACHE / "lenet-300-100-seed0.dcz",
                        help="artifact (default: the one bench/compress_lenet.py keeps)")
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DIR", DEFAULT_MNIST_DIR))


def lenet_missing(args) -> int | None:
    """An exit code when MNIST (0, skipped) or the artifact (2) is missing, else None."""
    if mnist_missing(args.data_dir):
        return 0
    if not args.model.exists():
        print(f"{args.model} not found: run bench/compress_lenet.py first (or pass --model)")
        return 2
    return None


def run(config: CompressConfig, *, save: Path | None = None) -> dict:
    """Run one compression and return its headline figures (and save the artifact if asked)."""
    start = time.perf_counter()
    result = compress_model(config, log=lambda line: print(f"  {line}", flush=True))
    if save is not None:
        result.model.save(save)
    sizes = result.model.sizes()
    original = sum(s.dense_bytes for s in sizes)
    compressed = sum(s.compressed_bytes for s in sizes)
    return {
        "seed": config.seed,
        "quantizer": config.quantizer,
        "accuracy_float": result.accuracy_float,
        "accuracy_pruned": result.accuracy_pruned,
        "accuracy_shared": result.accuracy_shared,
        "accuracy_compressed": result.accuracy_compressed,
        "drop_points": 100 * (result.accuracy_float - result.accuracy_compressed),
        "accuracy_int": result.accuracy_int,
        "sharing_sse": result.sharing_sse,
        "original_bytes": original,
        "compressed_bytes": compressed,
        "compression_ratio": original / compressed,
        "density": [layer.density for layer in result.model.layers],
        "seconds": time.perf_counter() - start,
    }


def print_rows(rows: list[dict]) -> None:
    print(f"{'seed':>4} {'quantizer':>15} {'float':>7} {'pruned':>7} {'shared':>7} "
          f"{'final':>7} {'drop pt':>8} {'ratio':>7} {'bytes':>8} {'sharing SSE':>12} {'s':>6}")
    for r in rows:
        print(f"{r['seed']:>4} {r['quantizer']:>15} {r['accuracy_float']:>7.2%} "
              f"{r['accuracy_pruned']:>7.2%} {r['accuracy_shared']:>7.2%} "
              f"{r['accuracy_compressed']:>7.2%} {r['drop_points']:>+8.2f} "
              f"{r['compression_ratio']:>6.1f}x {r['compressed_bytes']:>8,} "
              f"{r['sharing_sse']:>12.5g} {r['seconds']:>6.1f}")
