"""``accel.build`` and ``accel.run`` end to end: real Yosys and nextpnr runs on tiny engines, and
the host program against the simulated board."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import sim
from accel.build import build, format_table
from boards import get_board
from boards.synthesis import TimingError
from boards.toolchain import sha256_file

from accel_models import random_model


class _Data:
    """The part of a data set ``accel.build.build`` reads."""

    def __init__(self, model, n_train=40, n_test=6, seed=0):
        rng = np.random.default_rng(seed)
        self.name = "random"
        self.x_train = rng.random((n_train, model.in_features)).astype(np.float32)
        self.x_test = rng.random((n_test, model.in_features)).astype(np.float32)


def _npz(path, model, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.random((40, model.in_features)), y_train=rng.integers(0, 3, 40),
             x_test=rng.random((6, model.in_features)), y_test=rng.integers(0, 3, 6))
    return path


def test_build_without_synthesis_reports_the_verified_engine(tmp_path):
    model = random_model(11, [20, 12, 3])
    report = build(model, _Data(model), get_board("ulx3s"), out=tmp_path, pes=2,
                   verify_samples=3, synthesis=False)
    assert report["verification"]["mismatches"] == 0
    assert report["verification"]["samples"] == 3
    assert report["cycles_per_inference"] > 0
    assert report["dense_macs_per_inference"] == 20 * 12 + 12 * 3
    assert report["weight_bytes_on_chip"] > 0
    assert json.loads((tmp_path / "report.json").read_text())["board"] == "ulx3s-85f"
    with pytest.raises(ValueError, match="verify_samples must be >= 1"):
        build(model, _Data(model), get_board("ulx3s"), out=tmp_path, verify_samples=0)


def test_verification_alongside_synthesis_reports_its_result_and_its_failures(tmp_path):
    """The verification that runs in its own process while synthesis runs: the same result as
    in this process, and a failure inside it raised here, named."""
    from accel.build import _checked, _Verification
    from accel.verify import verify

    model = random_model(16, [12, 8, 3])
    x = sim.quantize_input(model, _Data(model).x_test[:2]).astype(np.int64)
    options = dict(model=model, x=x, simulator="amaranth", build_dir=tmp_path, n_pes=2)
    got, expected = _Verification(options).result(), verify(**options)
    for timed in (got, expected):
        del timed["simulation_seconds"]
    assert got == expected and got["mismatches"] == 0
    with pytest.raises(RuntimeError, match="verification failed: ValueError: simulator must be "
                                           "'verilator', 'icarus' or 'amaranth', not 'nonsense'"):
        _Verification({**options, "simulator": "nonsense"}).result()
    mismatch = {"mismatches": 1, "first_mismatch": {"sample": 0, "layer": 1, "neuron": 2,
                                                    "expected": 3, "got": 4}, "waveform": "w"}
    with pytest.raises(RuntimeError, match=r"differs from sim on 1 of 2 images \(first: sample "
                                           r"0, layer 1, neuron 2: expected 3, got 4\)"):
        _checked(mismatch, 2)


def _build_small_ecp5(out) -> dict:
    """One build of the end-to-end test (a module-level function: it runs in a process of its
    own)."""
    model = random_model(12, [16, 6, 3])
    return build(model, _Data(model), get_board("ulx3s-12f"), out=out, pes=1, clock_mhz=50,
                 verify_samples=2, progress=False)


@pytest.mark.slow
def test_ecp5_build_end_to_end_and_deterministic(tmp_path):
    """A one-PE engine on the ULX3S-12F through Yosys, nextpnr-ecp5 and ecppack, twice: the two
    builds in two processes side by side (the tools run on one core each; CI time)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        reports = list(pool.map(_build_small_ecp5, [tmp_path / "run0", tmp_path / "run1"]))
    report = reports[0]
    assert report["timing_met"] and report["clock_mhz"] == 50.0
    assert report["fmax_mhz"] >= 50.0
    for name in ("luts", "flip_flops", "block_rams", "multipliers", "plls"):
        used, available = report["utilization"][name]["used"], \
            report["utilization"][name]["available"]
        assert 0 <= used <= available
    assert report["utilization"]["plls"]["used"] == 1
    assert report["utilization"]["multipliers"]["used"] >= 1
    assert sha256_file(report["bitstream"]) == report["bitstream_sha256"]
    assert (tmp_path / "run0" / "utilization.png").stat().st_size > 0
    assert report["inferences_per_second"] == pytest.approx(
        50e6 / report["cycles_per_inference"])
    # Same model, same options, same seed: the same bitstream.
    assert reports[1]["bitstream_sha256"] == report["bitstream_sha256"]
    table = format_table(report)
    assert "ulx3s-12f (LFE5U-12F)" in table and "timing met" in table


def test_ice40_flow_fails_loudly_when_timing_is_not_met(tmp_path):
    """The iCEBreaker flow (Yosys, nextpnr-ice40, icepack; the PLL on the clock pin's pad) at a
    clock the UP5K cannot reach, on a design of a counter: even the smallest engine with the
    host link (one PE, bank and lane) takes 4,674 of the UP5K's 5,280 logic cells and does not
    place (docs/boards.md)."""
    from amaranth.hdl import Elaboratable, Module, Signal
    from amaranth.lib import io

    from boards.clocks import ClockGenerator
    from boards.synthesis import synthesize

    class Counter(Elaboratable):
        def __init__(self, pll):
            self.pll = pll

        def elaborate(self, platform):
            m = Module()
            clocks = ClockGenerator(self.pll, reference_domain="uart")
            m.domains += clocks.domains()
            m.submodules.clocks = clocks
            m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
            count = Signal(48)
            m.d.sync += count.eq(count + 1)
            m.d.comb += led.o.eq(count[-1])
            return m

    board = get_board("icebreaker")
    with pytest.raises(TimingError, match=r"timing NOT met on icebreaker: .* \(requested 270 MHz\)") \
            as error:
        synthesize(board, Counter, tmp_path, clock_mhz=270, progress=False)
    result = error.value.result
    assert not result.timing_met and result.fmax_mhz < result.clock_mhz <= 270
    assert result.device == "iCE40UP5K" and result.bitstream.suffix == ".bin"
    assert result.bitstream.stat().st_size > 0
    assert result.utilization["plls"]["used"] == 1


def test_run_streams_a_test_set_through_the_simulated_board(tmp_path):
    model = random_model(14, [12, 8, 3])
    path = model.save(tmp_path / "m.dcz")
    data = _npz(tmp_path / "d.npz", model)
    report_path = tmp_path / "run.json"
    done = subprocess.run(
        [sys.executable, "-m", "accel.run", "--port", "sim", "--model", str(path), "--dataset",
         str(data), "--samples", "3", "--pes", "2", "--reload", "--json", str(report_path)],
        capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert report["samples"] == 3 and report["mismatches"] == 0
    assert report["cycles_per_inference"] > 0 and report["retransmissions"] == 0
    assert "reloaded the weights" in done.stdout


def test_run_refuses_bad_options(tmp_path):
    model = random_model(15, [12, 8, 3])
    path = model.save(tmp_path / "m.dcz")
    done = subprocess.run(
        [sys.executable, "-m", "accel.run", "--port", "sim", "--model", str(path), "--dataset",
         str(_npz(tmp_path / "d.npz", model)), "--repeat", "0"],
        capture_output=True, text=True)
    assert done.returncode == 2 and "--repeat must be 1..65535, not 0" in done.stderr


def test_banks_default_to_two_with_one_pe_and_three_with_more():
    from accel.build import build_parser, default_banks, engine_options

    assert default_banks(1) == 2 and default_banks(2) == 3 and default_banks(16) == 3
    parser = build_parser()
    assert engine_options(parser.parse_args([]))["banks"] == 2
    assert engine_options(parser.parse_args(["--pes", "16"]))["banks"] == 3
    assert engine_options(parser.parse_args(["--pes", "16", "--banks", "1"]))["banks"] == 1
