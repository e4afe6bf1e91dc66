"""Benchmark: LeNet-300-100 (or LeNet-5: ``--model`` a LeNet-5 artifact, ``--banks 1``) on the
ULX3S-85F, built with the open toolchain, next to PyTorch.

Targets (issue 5):

- timing met at >= 100 MHz (aim: 125 MHz);
- effective dense-equivalent throughput (multiply-accumulates of the uncompressed network per
  inference x inferences per second) >= 4x the chip's dense multiplier ceiling (156 MULT18X18D
  x the achieved clock);
- the inference rate next to PyTorch's batch-1 CPU inference, timed in the same run.

Steps, the first two side by side on the two cores: ``accel.build.build`` with 16 PEs at the
highest clock the routed design meets (one place and route, the PLL set from its fmax; or at
``--clock-mhz``, failing loudly when timing is not met), after its own check of 8 images in
Amaranth's simulator; and, in a second process (``python -m accel.verify``), cocotb on
Verilator (``--simulator``, default ``verilator``; ``icarus`` as before issue 20) over
``--samples`` MNIST test images streamed back to back, every logit and hidden activation
compared with ``sim``, whose steady-state cycles per inference give the rate at the achieved
clock. Then PyTorch's batch-1 float inference of the same (shared-weight) model, one
thread and all threads, best of ``--repeats``. The block RAM and multiplier
estimates of the fit check are printed beside what place and route used.

    python bench/accel_build.py [--model ARTIFACT] [--data-dir D] [--clock-mhz F]
                                [--samples 300] [--peer-model ARTIFACT]
                                [--out out/bench/build-lenet] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, lenet_arguments, lenet_missing  # noqa: E402

import compress  # noqa: E402
from compress.torch_model import to_torch  # noqa: E402
from accel.build import build, format_table  # noqa: E402
from boards import get_board  # noqa: E402
from boards.synthesis import TimingError  # noqa: E402


def torch_batch1(model, x, repeats: int, threads: int) -> float:
    """PyTorch float inferences per second at batch 1 (best of ``repeats`` passes)."""
    torch.set_num_threads(threads)
    net = to_torch(model).eval()
    rows = [torch.from_numpy(row[None, :]) for row in x]
    best = float("inf")
    with torch.inference_mode():
        for row in rows[:50]:
            net(row)
        for _ in range(repeats):
            start = time.perf_counter()
            for row in rows:
                net(row)
            best = min(best, time.perf_counter() - start)
    return len(rows) / best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    lenet_arguments(parser)
    parser.add_argument("--clock-mhz", type=float, default=None,
                        help="engine clock (default: the highest the routed design meets)")
    parser.add_argument("--pes", type=int, default=16)
    parser.add_argument("--banks", type=int, default=None,
                        help="images in flight (default: the engine's, 3 with 16 PEs; LeNet-5's "
                             "whole feature maps fit the ULX3S-85F's block RAM with 1)")
    parser.add_argument("--samples", type=int, default=300,
                        help="MNIST test images simulated for the cycle count (default 300)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator",
                        help="the second process's cocotb simulator (default verilator)")
    parser.add_argument("--nextpnr-seed", type=int, default=1,
                        help="placement seed (default 1, as python -m accel.build)")
    parser.add_argument("--router", choices=["auto", "router1", "router2"], default="auto",
                        help="nextpnr-ecp5's router (default auto, as python -m accel.build)")
    parser.add_argument("--peer-model", type=Path,
                        help="another artifact (e.g. the undecomposed model) verified on the "
                             "same images in the same run: its cycles per inference and rate "
                             "at this build's clock are printed beside")
    parser.add_argument("--out", type=Path, default=CACHE / "build-lenet")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.nextpnr_seed < 0:
        parser.error(f"--nextpnr-seed must be 0 or more, not {args.nextpnr_seed}")
    missing = lenet_missing(args)
    if missing is not None:
        return missing
    model = compress.load(args.model)
    data = compress.load_dataset("mnist", data_dir=args.data_dir)
    board = get_board("ulx3s-85f")
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    verify_json = args.out / "verify.json"
    verify_json.unlink(missing_ok=True)
    command = [sys.executable, "-m", "accel.verify", "--model", str(args.model), "--dataset",
               "mnist", "--data-dir", str(args.data_dir), "--samples", str(args.samples),
               "--pes", str(args.pes), "--json", str(verify_json),
               *(["--banks", str(args.banks)] if args.banks is not None else []),
               "--build-dir", str(args.out / "verify"), "--simulator", args.simulator]
    print(f"in parallel: {' '.join(command[1:])} (log {args.out / 'verify.log'})", flush=True)
    with open(args.out / "verify.log", "w") as log:
        verifier = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            report = build(model, data, board, out=args.out, clock_mhz=args.clock_mhz,
                           pes=args.pes, banks=args.banks, model_path=args.model,
                           nextpnr_seed=args.nextpnr_seed, router=args.router)
        except TimingError as error:           # the report is written: print its figures
            print(f"\n{error}")
            report = json.loads((args.out / "report.json").read_text())
        except BaseException:
            verifier.kill()
            raise
        code = verifier.wait()
    build_seconds = time.perf_counter() - start
    if code != 0 or not verify_json.exists():
        print((args.out / "verify.log").read_text())
        print(f"the {args.simulator} verification failed (exit code {code})")
        return 1
    verified = json.loads(verify_json.read_text())
    # The rate at the achieved clock from the steady-state cycle count of the long run.
    report["verification"] = {key: verified[key] for key in (
        "simulator", "samples", "mismatches", "cycles_per_inference", "predicted_cycles",
        "pe_utilization")}
    cycles = verified["cycles_per_inference"]
    clock_hz = report["clock_mhz"] * 1e6
    report["cycles_per_inference"] = cycles
    report["inferences_per_second"] = clock_hz / cycles
    report["dense_equivalent_macs_per_second"] = \
        report["dense_macs_per_inference"] * report["inferences_per_second"]
    report["dense_equivalent_over_multiplier_ceiling"] = \
        report["dense_equivalent_macs_per_second"] / report["multiplier_ceiling_macs_per_second"]
    print()
    print(format_table(report))

    peer = None
    if args.peer_model is not None:
        peer_json = args.out / "verify-peer.json"
        peer_json.unlink(missing_ok=True)
        peer_command = [c if c != str(args.model) else str(args.peer_model) for c in command]
        peer_command[peer_command.index("--json") + 1] = str(peer_json)
        peer_command[peer_command.index("--build-dir") + 1] = str(args.out / "verify-peer")
        print(f"the peer: {' '.join(peer_command[1:])}", flush=True)
        with open(args.out / "verify-peer.log", "w") as log:
            code = subprocess.run(peer_command, stdout=log, stderr=subprocess.STDOUT).returncode
        if code != 0 or not peer_json.exists():
            print((args.out / "verify-peer.log").read_text())
            print(f"the peer's verification failed (exit code {code})")
            return 1
        peer = json.loads(peer_json.read_text())
        report["peer"] = {key: peer[key] for key in (
            "samples", "mismatches", "cycles_per_inference", "predicted_cycles")}
        report["peer"]["model"] = str(args.peer_model)
        report["peer"]["inferences_per_second"] = clock_hz / peer["cycles_per_inference"]

    x = data.x_test[:2000].astype(np.float32)
    threads = torch.get_num_threads() or 2
    torch_1 = torch_batch1(model, x, args.repeats, 1)
    torch_all = torch_batch1(model, x, args.repeats, threads)
    board_rate = report["inferences_per_second"]
    ratio = report["dense_equivalent_over_multiplier_ceiling"]
    print()
    print(f"LeNet-300-100 ({report['dense_macs_per_inference']:,} dense MACs per inference, "
          f"{report['weight_bytes_on_chip']:,.0f} bytes of weights on chip), "
          f"{args.pes} PEs on {board.name}:")
    print(f"  fit-check estimate vs place and route: block RAMs {report['estimate']['brams']} vs "
          f"{report['utilization']['block_rams']['used']}, multipliers "
          f"{report['estimate']['multipliers']} vs {report['utilization']['multipliers']['used']}, "
          f"LUTs {report['estimate']['luts']:,} vs {report['utilization']['luts']['used']:,}")
    print(f"  clock {report['clock_mhz']:.1f} MHz, post-route fmax {report['fmax_mhz']:.2f} MHz, "
          f"timing {'met' if report['timing_met'] else 'NOT met'}")
    print(f"  cycles per inference {cycles:.1f} ({verified['simulator']}, "
          f"{verified['samples']} images, {verified['mismatches']} mismatches; "
          f"the cycle model predicts "
          f"{verified['predicted_cycles']:.1f}), PE utilization {verified['pe_utilization']:.1%}")
    print(f"  FPGA:                     {board_rate:>12,.0f} inferences/s")
    if peer is not None:
        print(f"  peer {args.peer_model.name}: cycles per inference "
              f"{peer['cycles_per_inference']:.1f} ({peer['samples']} images, "
              f"{peer['mismatches']} mismatches), {report['peer']['inferences_per_second']:,.0f} "
              f"inferences/s at this clock (this model / peer "
              f"{board_rate / report['peer']['inferences_per_second']:.2f}x)")
    print(f"  PyTorch CPU batch 1, 1 thread:   {torch_1:>12,.0f} inferences/s "
          f"(FPGA / PyTorch {board_rate / torch_1:.1f}x)")
    print(f"  PyTorch CPU batch 1, {threads} threads:  {torch_all:>12,.0f} "
          f"inferences/s (FPGA / PyTorch {board_rate / torch_all:.1f}x)")
    print(f"  dense-equivalent {report['dense_equivalent_macs_per_second'] / 1e9:.1f} GMAC/s = "
          f"{ratio:.2f} x the multiplier ceiling (156 x {report['clock_mhz']:.1f} MHz = "
          f"{report['multiplier_ceiling_macs_per_second'] / 1e9:.1f} GMAC/s)")
    timing_ok = report["timing_met"] and report["clock_mhz"] >= 100.0
    throughput_ok = ratio >= 4.0
    print(f"target timing met at >= 100 MHz: {'met' if timing_ok else 'NOT met'} "
          f"({report['clock_mhz']:.1f} MHz; aim 125)")
    print(f"target dense-equivalent >= 4x the multiplier ceiling: "
          f"{'met' if throughput_ok else 'NOT met'} ({ratio:.2f}x)")
    print(f"build and verification took {build_seconds / 60:.1f} min")
    if args.json:
        args.json.write_text(json.dumps({
            "report": report, "torch_batch1_1_thread": torch_1,
            "torch_batch1_all_threads": torch_all, "build_seconds": build_seconds,
            "timing_met_100": timing_ok, "throughput_4x": throughput_ok}, indent=2) + "\n")
    return 0 if timing_ok and throughput_ok else 1


if __name__ == "__main__":
    sys.exit(main())
