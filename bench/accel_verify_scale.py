"""Benchmark: verification at scale, the 16-PE LeNet-300-100 engine on 100,000 images.

Issue 20 §2. Icarus runs this engine at milliseconds per clock, so the cocotb flow checks a few
hundred images; here the engine is compiled by Verilator (``accel.verification.batch_sim``) and every logit
and every hidden activation of at least 100,000 images is compared with ``sim.trace``.

Part 1 (:func:`part_images`): MNIST's 10,000 test and 60,000 training images, and 30,000 derived
in-range inputs (4 extremes: all-max, all-zero and the two checkerboards; the rest training
images shifted by one pixel with random pixel noise, clipped to the input range). Chunks of
``--chunk`` images, each one ``run_engine`` stream (images back to back, no idle input, no
backpressure), run in ``--workers`` processes; printed: mismatches (target 0), wall time (target
<= 30 min on 2 cores), measured cycles per inference against ``EnginePlan.predict`` over the same
chunks.

Part 2 (:func:`part_fuzz`, with ``--fuzz-models N``): ``accel.fuzz.run_fuzz`` on N random models
and engine options, when that module is there.

The plan is ``bench/accel_build.py``'s: 16 PEs, rows balanced on the first 1,000 training images,
defaults otherwise. The artifact is ``bench/compress_lenet.py``'s, made here the same way when it
is missing (a few minutes).

    python bench/accel_verify_scale.py [--images 100000] [--chunk 2500] [--workers 2]
                                       [--fuzz-models N] [--model ARTIFACT] [--data-dir D]
                                       [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, lenet_arguments, mnist_missing, run  # noqa: E402

import compress  # noqa: E402
import sim  # noqa: E402
from accel.verification import batch_sim  # noqa: E402
from accel.verification.compare import compare_run  # noqa: E402
from accel.build import default_banks, make_plan  # noqa: E402
from core.integer import activation_range  # noqa: E402
from compress.pipeline import CompressConfig  # noqa: E402

TARGET_SECONDS = 30 * 60
DERIVED = 30_000


# -- inputs -------------------------------------------------------------------------------------

def extremes(model) -> np.ndarray:
    """All-max, all-zero and the two checkerboards of the input range (28 x 28 pixels)."""
    lo, hi = model.layers[0].integer.input_range()
    side = int(round(np.sqrt(model.in_features)))
    board = (np.add.outer(np.arange(side), np.arange(side)) % 2).reshape(-1)[:model.in_features]
    low = max(lo, 0)
    rows = [np.full(model.in_features, hi), np.full(model.in_features, low),
            np.where(board == 1, hi, low), np.where(board == 0, hi, low)]
    return np.array(rows, dtype=np.int64)


def derived(model, train: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` inputs: training images shifted by one pixel (one of 8 directions, zero fill)
    with random noise (+-32 on about 10% of the pixels), clipped to the input range."""
    lo, hi = model.layers[0].integer.input_range()
    rng = np.random.default_rng(seed)
    side = 28
    picks = rng.integers(0, len(train), count)
    images = train[picks].astype(np.int64).reshape(count, side, side)
    shifted = np.zeros_like(images)
    moves = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    direction = rng.integers(0, len(moves), count)
    for k, (dy, dx) in enumerate(moves):
        chosen = direction == k
        src = images[chosen]
        dst = np.zeros_like(src)
        ys, yd = (slice(0, side - dy), slice(dy, side)) if dy >= 0 else \
            (slice(-dy, side), slice(0, side + dy))
        xs, xd = (slice(0, side - dx), slice(dx, side)) if dx >= 0 else \
            (slice(-dx, side), slice(0, side + dx))
        dst[:, yd, xd] = src[:, ys, xs]
        shifted[chosen] = dst
    noise = rng.integers(-32, 33, shifted.shape) * (rng.random(shifted.shape) < 0.1)
    return np.clip(shifted + noise, lo, hi).reshape(count, side * side)


def scale_inputs(model, data, images: int) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """The first ``images`` of: extremes, MNIST test, MNIST training, derived; and the parts'
    names and sizes."""
    test = sim.quantize_input(model, data.x_test)
    train = sim.quantize_input(model, data.x_train)
    edge = extremes(model)
    dtype = np.int16 if test.dtype.itemsize <= 2 and np.issubdtype(test.dtype, np.integer) \
        else np.int64
    need = max(0, images - len(edge) - len(test) - len(train))
    shifted = derived(model, train, max(need, 0))
    parts = [("extremes (all-max, all-zero, checkerboards)", edge), ("MNIST test", test),
             ("MNIST training", train),
             ("derived: training images shifted by a pixel, with pixel noise", shifted)]
    x = np.concatenate([p.astype(dtype) for _, p in parts])[:images]
    sizes, left = [], images
    for name, part in parts:
        take = min(left, len(part))
        if take:
            sizes.append((name, take))
        left -= take
    return x, sizes


# -- part 1: the images -------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(model, plan, build_dir):
    _WORKER.update(model=model, plan=plan, build_dir=build_dir)


def _check_chunk(start: int, x: np.ndarray) -> dict:
    """One stream through the engine, compared with sim.trace (in the worker process)."""
    model, plan = _WORKER["model"], _WORKER["plan"]
    x = x.astype(np.int64)
    begin = time.perf_counter()
    result = batch_sim.run_engine(plan, x, build_dir=_WORKER["build_dir"])
    seconds = time.perf_counter() - begin
    expected = sim.trace(model, x)
    comparison = compare_run(result, expected)
    bad, first = comparison.bad, comparison.first
    if first is not None:
        first = {"image": start + first.pop("sample"), **first}
    prediction = plan.predict([x] + expected[:-1])
    return {"start": start, "images": len(x), "mismatching_images": int(bad.sum()),
            "mismatching_values": comparison.values, "compared_values": comparison.compared,
            "bad": (start + np.flatnonzero(bad)).tolist(), "first": first,
            "cycles": int(result.cycles), "predicted_cycles": int(prediction["cycles"]),
            "useful_macs": int(prediction["useful_macs"].sum()), "seconds": seconds}


def part_images(model, plan, x, *, chunk: int, workers: int, build_dir) -> dict:
    """Every image of ``x`` through the engine in chunks on ``workers`` processes, against
    ``sim.trace``; prints progress and returns the totals."""
    total = len(x)
    start = time.perf_counter()
    done = mismatching = values = compared = cycles = predicted = useful = 0
    simulated = 0.0
    first, bad = None, []
    with ProcessPoolExecutor(workers, initializer=_init_worker,
                             initargs=(model, plan, build_dir)) as pool:
        futures = [pool.submit(_check_chunk, at, x[at:at + chunk])
                   for at in range(0, total, chunk)]
        for future in as_completed(futures):
            r = future.result()
            done += r["images"]
            mismatching += r["mismatching_images"]
            values += r["mismatching_values"]
            compared += r["compared_values"]
            cycles += r["cycles"]
            predicted += r["predicted_cycles"]
            useful += r["useful_macs"]
            simulated += r["seconds"]
            bad += r["bad"]
            if r["first"] is not None and (first is None or r["first"]["image"] < first["image"]):
                first = r["first"]
            elapsed = time.perf_counter() - start
            print(f"  {done:>7,} / {total:,} images, mismatches so far {mismatching}, "
                  f"{elapsed:6.0f} s, {done / elapsed:6.0f} images/s", flush=True)
    wall = time.perf_counter() - start
    return {"images": total, "mismatching_images": mismatching, "mismatching_values": values,
            "compared_values": compared, "first_mismatch": first, "mismatching_indices":
            sorted(bad)[:1000], "wall_seconds": wall, "images_per_second": total / wall,
            "cycles": cycles, "cycles_per_inference": cycles / total,
            "predicted_cycles_per_inference": predicted / total,
            "measured_over_predicted": cycles / predicted,
            "pe_utilization": useful / (plan.n_pes * cycles),
            "simulated_clocks_per_second": cycles / simulated, "chunks": -(-total // chunk),
            "chunk": chunk, "workers": workers}


# -- part 2: random models ----------------------------------------------------------------------

def part_fuzz(models: int, inputs: int, build_dir) -> dict | None:
    """``accel.fuzz.run_fuzz`` on ``models`` random models (None when the module is absent)."""
    try:
        from accel.fuzz import run_fuzz, summary
    except ImportError:
        print("fuzz: accel.fuzz is not available; part 2 skipped")
        return None
    print(f"part 2: {models} random models and engine options, {inputs} inputs each "
          f"(accel.fuzz, Verilator) ...", flush=True)
    results = run_fuzz(models, inputs, 0, "verilator",
                       progress=lambda line: print(f"  {line}", flush=True), build_dir=build_dir)
    s = summary(results)
    print(f"  {s['models']} models, {s['inputs']:,} inputs, failing models {s['failing_models']}"
          f", mismatching samples {s['mismatching_samples']}, errors {s['errors']}, "
          f"{s['seconds']:.0f} s", flush=True)
    if s["ratio_worst"] is not None:
        inside = s["ratio_worst_in_model_range"]
        print(f"  cycle model (streams without stalls): measured/predicted {s['ratio_min']:.2f}"
              f"..{s['ratio_max']:.2f}, worst {s['ratio_worst']:.2f}; in its range of validity "
              f"(images in flight gaining at most accel.planning.cycles.MODEL_OVERLAP_LIMIT) "
              f"{s['models_in_model_range']} models, worst "
              f"{'n/a' if inside is None else f'{inside:.2f}'} (target within 10%)", flush=True)
    return {"summary": s, "results": results}


# -- main ---------------------------------------------------------------------------------------

def _artifact(args):
    if args.model.exists():
        return compress.load(args.model)
    if args.model != CACHE / "lenet-300-100-seed0.dcz":
        raise SystemExit(f"{args.model} not found")
    print(f"{args.model} not found: compressing LeNet-300-100 as bench/compress_lenet.py does "
          f"(a few minutes) ...", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    run(CompressConfig(model="lenet-300-100", dataset="mnist", data_dir=str(args.data_dir),
                       seed=0, progress=False), save=args.model)
    return compress.load(args.model)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    lenet_arguments(parser)
    parser.add_argument("--images", type=int, default=100_000,
                        help="images to verify (default 100,000: MNIST's 70,000 and 30,000 "
                             "derived)")
    parser.add_argument("--pes", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=2500, help="images per engine run")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--fuzz-models", type=int, default=0,
                        help="part 2: random models through accel.fuzz (default 0: skipped)")
    parser.add_argument("--fuzz-inputs", type=int, default=200)
    parser.add_argument("--build-dir", type=Path, default=CACHE / "batch_sim")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.images < 1 or args.chunk < 1 or args.workers < 1:
        parser.error("--images, --chunk and --workers must be >= 1")
    if mnist_missing(args.data_dir):
        return 0
    reason = batch_sim.available()
    if reason:
        print(f"skipped: {reason}")
        return 0
    start = time.perf_counter()
    model = _artifact(args)
    data = compress.load_dataset("mnist", data_dir=args.data_dir)
    options = dict(n_pes=args.pes, lanes=2, input_lanes=4, banks=default_banks(args.pes),
                   queue_depth=64, zero_run_bits=4)
    plan, _ = make_plan(model, data, options)           # as bench/accel_build.py plans it
    x, parts = scale_inputs(model, data, args.images)
    lo, hi = activation_range(plan.input_bits, plan.input_signed)
    print(f"LeNet-300-100 ({args.model.name}), {plan.n_pes} PEs, {plan.banks} banks, "
          f"{plan.lanes} lanes, {plan.input_lanes} input lanes, rows balanced on 1,000 "
          f"training images")
    print(f"part 1: {len(x):,} images, inputs {lo}..{hi}:")
    for name, size in parts:
        print(f"  {size:>7,} {name}")
    built = time.perf_counter()
    binary = batch_sim.build(plan, args.build_dir, log=lambda line: print(line, flush=True))
    seconds_file = binary.parent / "build_seconds"
    print(f"simulator {binary} ready in {time.perf_counter() - built:.1f} s "
          f"(built in {seconds_file.read_text().strip()} s when it was built; flags "
          f"{' '.join(batch_sim.VERILATOR_FLAGS)} / {' '.join(batch_sim.MAKE_FLAGS)})",
          flush=True)
    images = part_images(model, plan, x, chunk=args.chunk, workers=args.workers,
                         build_dir=args.build_dir)
    images["inputs"] = [{"part": name, "images": size} for name, size in parts]
    print(f"part 1: {images['images']:,} images, {images['compared_values']:,} outputs compared "
          f"(every logit and hidden activation): {images['mismatching_images']} mismatching "
          f"images, {images['mismatching_values']} mismatching values")
    if images["first_mismatch"]:
        m = images["first_mismatch"]
        print(f"  FIRST MISMATCH: image {m['image']}, layer {m['layer']}, neuron "
              f"{m['neuron']}: expected {m['expected']}, got {m['got']}")
        keep = CACHE / "scale_mismatches.npz"
        index = np.array(images["mismatching_indices"], dtype=np.int64)
        np.savez(keep, indices=index, x=x[index])
        print(f"  mismatching inputs kept in {keep}")
    print(f"  wall {images['wall_seconds']:.0f} s ({images['images_per_second']:.0f} images/s, "
          f"{images['workers']} processes, {images['chunks']} chunks of {images['chunk']:,}); "
          f"{images['simulated_clocks_per_second']:,.0f} clocks/s per process")
    print(f"  cycles per inference {images['cycles_per_inference']:.1f} measured, "
          f"{images['predicted_cycles_per_inference']:.1f} predicted by EnginePlan.predict "
          f"(ratio {images['measured_over_predicted']:.3f}; each chunk a stream of its own); "
          f"PE utilization {images['pe_utilization']:.1%}")
    report = {"images": images}
    if args.fuzz_models > 0:
        report["fuzz"] = part_fuzz(args.fuzz_models, args.fuzz_inputs, args.build_dir / "fuzz")
    total = time.perf_counter() - start
    ok = images["mismatching_images"] == 0 and images["mismatching_values"] == 0
    fuzz_ok = "fuzz" not in report or report["fuzz"] is None or \
        report["fuzz"]["summary"]["failing_models"] == 0
    print("\ntargets:")
    print(f"  0 mismatches over {images['images']:,} images: "
          f"{'met' if ok else 'NOT MET'} ({images['mismatching_images']})")
    print(f"  <= {TARGET_SECONDS // 60} min wall for the images: "
          f"{'met' if images['wall_seconds'] <= TARGET_SECONDS else 'NOT MET'} "
          f"({images['wall_seconds'] / 60:.1f} min; {total / 60:.1f} min in all)")
    if "fuzz" in report and report["fuzz"] is not None:
        print(f"  fuzz: {'met' if fuzz_ok else 'NOT MET'} "
              f"({report['fuzz']['summary']['failing_models']} failing models)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if ok and fuzz_ok else 1


if __name__ == "__main__":
    sys.exit(main())
