"""Benchmark: the integer reference's speed on the MNIST test set, next to PyTorch.

Target (issue 3): the 10,000 MNIST test images through the LeNet-300-100 integer reference
(``sim.run``) in <= 1 s on one core. PyTorch's float inference of the same (shared-weight)
model is timed in the same run, also on one thread, for the ratio.

    python bench/sim_speed.py [--model ARTIFACT] [--data-dir D] [--repeats 5] [--json PATH]

Default model: ``out/bench/lenet-300-100-seed0.dcz`` (``bench/compress_lenet.py`` writes it).
"""

from __future__ import annotations

import os

# One core, fixed before numpy, scipy and torch load their thread pools.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import lenet_arguments, lenet_missing  # noqa: E402

import compress  # noqa: E402
from compress.torch_model import to_torch  # noqa: E402
import sim  # noqa: E402


def _best(function, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    lenet_arguments(parser)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    missing = lenet_missing(args)
    if missing is not None:
        return missing
    torch.set_num_threads(1)
    model = compress.load(args.model)
    data = compress.load_dataset("mnist", data_dir=args.data_dir)
    images = sim.quantize_input(model, data.x_test)        # uint8 pixels, the hardware's input
    n = len(images)

    sim.run(model, images[:100])                            # warm-up
    seconds_int, logits = _best(lambda: sim.run(model, images), args.repeats)
    net = to_torch(model).eval()
    x = torch.from_numpy(data.x_test)
    with torch.inference_mode():
        net(x[:100])
        seconds_torch, float_logits = _best(lambda: net(x), args.repeats)
    seconds_numpy, _ = _best(lambda: model.forward(data.x_test), args.repeats)

    accuracy_int = float((logits.argmax(1) == data.y_test).mean())
    accuracy_torch = float((float_logits.numpy().argmax(1) == data.y_test).mean())
    nonzero = sum(layer.nonzero for layer in model.layers)
    dense = sum(layer.index.size for layer in model.layers)
    rows = {
        "samples": n,
        "threads": 1,
        "int_reference_s": seconds_int,
        "int_images_per_second": n / seconds_int,
        "torch_float_s": seconds_torch,
        "torch_images_per_second": n / seconds_torch,
        "numpy_float_s": seconds_numpy,
        "int_over_torch_time": seconds_int / seconds_torch,
        "accuracy_int": accuracy_int,
        "accuracy_torch_float": accuracy_torch,
        "nonzero_weights": nonzero,
        "dense_weights": dense,
    }
    print(f"LeNet-300-100, {n:,} MNIST test images, one thread, best of {args.repeats}:")
    print(f"  integer reference (sim.run, sparse):  {seconds_int:.3f} s  "
          f"{n / seconds_int:>10,.0f} images/s  accuracy {accuracy_int:.2%}")
    print(f"  PyTorch float (dense Linear):         {seconds_torch:.3f} s  "
          f"{n / seconds_torch:>10,.0f} images/s  accuracy {accuracy_torch:.2%}")
    print(f"  numpy float (dense, for reference):   {seconds_numpy:.3f} s")
    print(f"  integer / PyTorch time: {seconds_int / seconds_torch:.2f} "
          f"({nonzero:,} of {dense:,} weights nonzero)")
    met = seconds_int <= 1.0
    print(f"target <= 1 s for 10,000 images on one core: {'met' if met else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({**rows, "met": met}, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
