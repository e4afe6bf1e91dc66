"""Design study: PE utilization of EIE-style dataflows on the compressed LeNet-300-100.

Reproduces the table "Load balance (design study)" of ``docs/accelerator.md``: cycles per image
and utilization (useful MACs / (PEs x cycles)) predicted by the analytic model for a lockstep
column broadcast, decoupled PE queues with 1 or 2 broadcast lanes, and the same with hidden
neurons reordered to balance the PEs (which ``sim.run`` shows leaves the logits unchanged).

    python bench/accel_balance.py [--model ARTIFACT] [--pes 16] [--images 300] [--data-dir D]

Default model: ``out/bench/lenet-300-100-seed0.dcz`` (``bench/compress_lenet.py`` writes it).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import lenet_arguments, lenet_missing  # noqa: E402

import compress  # noqa: E402
import sim  # noqa: E402
from accel.planning.pack import pack_model  # noqa: E402
from accel.planning.plan import balance_rows as balanced_rows  # noqa: E402

PIPELINE_CYCLES = 6     # pointer read, entry read, codebook, multiply, accumulate, handshakes


def reorder_hidden(model, calibration: np.ndarray, n_pes: int):
    """An equivalent model whose hidden neurons are reordered by :func:`balanced_rows`."""
    layers = list(model.layers)
    inputs = [calibration] + sim.trace(model, calibration)[:-1]
    rates = [(x != 0).mean(axis=0) for x in inputs]
    for i in range(len(layers) - 1):
        perm = balanced_rows(layers[i].index, rates[i], n_pes)
        a, b = layers[i], layers[i + 1]
        layers[i] = replace(a, index=a.index[perm], bias=a.bias[perm],
                            integer=replace(a.integer, bias=a.integer.bias[perm]))
        layers[i + 1] = replace(b, index=b.index[:, perm])
        rates[i + 1] = rates[i + 1][perm]
    return compress.CompressedModel(layers, model.metadata)


def predict(model, images: np.ndarray, n_pes: int, lanes: int, lockstep: bool) -> dict:
    packed = pack_model(model, n_pes)
    inputs = [images] + sim.trace(model, images)[:-1]
    useful = cycles = work_bound = 0
    for layer, image in enumerate(packed):
        per_column = np.diff(image.col_start, axis=1)          # (N, in) entries per column
        for active in inputs[layer] != 0:
            chosen = per_column[:, active]
            work = chosen.sum(axis=1)
            useful += int(work.sum())
            work_bound += int(work.max())
            if lockstep:
                cycles += int(chosen.max(axis=0).sum())
            else:
                broadcast = -(-int(active.sum()) // lanes)
                cycles += max(broadcast, int(work.max()), int((chosen > 0).sum(axis=1).max()))
            cycles += PIPELINE_CYCLES + image.rows_per_pe
    n = len(images)
    return {"cycles": cycles / n, "utilization": useful / (n_pes * cycles),
            "work_bound": useful / (n_pes * work_bound)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    lenet_arguments(parser)
    parser.add_argument("--pes", type=int, default=16)
    parser.add_argument("--images", type=int, default=300)
    args = parser.parse_args()
    missing = lenet_missing(args)
    if missing is not None:
        return missing
    model = compress.load(args.model)
    data = compress.load_dataset("mnist", data_dir=args.data_dir)
    images = sim.quantize_input(model, data.x_test[:args.images])
    calibration = sim.quantize_input(model, data.x_train[:1000])
    balanced = reorder_hidden(model, calibration, args.pes)
    same = np.array_equal(sim.run(balanced, images), sim.run(model, images))
    print(f"reordered model gives identical integer logits on {len(images)} images: {same}")
    print(f"\n{args.pes} PEs, {len(images)} MNIST test images")
    print(f"{'design':<48} {'cycles':>8} {'util':>6} {'work-only':>10}")
    for name, chosen, lanes, lockstep in [
        ("lockstep per column", model, 1, True),
        ("decoupled queues, 1 lane", model, 1, False),
        ("decoupled queues, 2 lanes, rows r mod N", model, 2, False),
        ("same, hidden neurons reordered for balance", balanced, 2, False),
    ]:
        r = predict(chosen, images, args.pes, lanes, lockstep)
        print(f"{name:<48} {r['cycles']:>8.0f} {r['utilization']:>6.0%} {r['work_bound']:>10.0%}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
