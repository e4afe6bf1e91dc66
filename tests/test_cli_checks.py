"""What a new user met (issue 20, section 3): clamped inputs said nothing, the same seed gave
another artifact on another thread count, the commands' default engines differed, arguments
were refused late or under Python names, short per-layer lists were stretched, and progress
bars filled logs. Every test here takes seconds."""

from __future__ import annotations

import inspect
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import sim
from accel_models import random_model

#: One epoch of training and nothing else: enough to differ between 1 and 2 threads before
#: the fix (measured: two different artifacts).
TINY = ["--epochs", "1", "--prune-rounds", "1", "--retrain-epochs", "0", "--finetune-epochs",
        "0", "--quiet", "--no-plots"]


# -- 1. inputs outside the calibrated range ----------------------------------------------------

@pytest.fixture
def model_and_scaled_data(tmp_path):
    """A 12-input model whose input scale is 1 (range 0..255), a data set scaled like its
    calibration data and one 1,000 times larger."""
    model = random_model(21, [12, 9, 4], density=0.4)
    path = model.save(tmp_path / "model.dcz")
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (40, 12)).astype(np.float32)
    x_test = rng.integers(1, 256, (6, 12)).astype(np.float32)
    labels = dict(y_train=rng.integers(0, 4, 40), y_test=rng.integers(0, 4, 6))
    np.savez(tmp_path / "same.npz", x_train=x_train, x_test=x_test, **labels)
    np.savez(tmp_path / "large.npz", x_train=x_train, x_test=x_test * 1000, **labels)
    return model, path, tmp_path / "same.npz", tmp_path / "large.npz"


def test_quantize_input_counts_the_clamped_values(model_and_scaled_data):
    model = model_and_scaled_data[0]
    x = np.array([[-3.0, 0.0, 255.4, 255.6, 1e6] + [7.0] * 7])
    q, saturation = sim.quantize_input(model, x, return_saturation=True)
    np.testing.assert_array_equal(q, sim.quantize_input(model, x))
    assert q[0, :5].tolist() == [0, 0, 255, 255, 255]
    # -3 below, 255.6 and 1e6 above (255.4 rounds to 255: inside); 0 is the range's end, not
    # outside it.
    assert saturation == {"count": 3, "total": 12, "fraction": 0.25, "below": 1, "above": 2,
                          "range": [0, 255]}
    warning = sim.saturation_warning(saturation)
    assert warning.startswith("warning: 25.0% of input values (3 of 12) fell outside the "
                              "calibrated input range [0, 255] and were clamped")
    assert "recalibrate" in warning and "python -m compress" in warning
    none = sim.quantize_input(model, np.full((2, 12), 9.0), return_saturation=True)[1]
    assert none["count"] == 0 and sim.saturation_warning(none) is None
    # The threshold: more than 1% of the values.
    assert sim.SATURATION_WARNING_FRACTION == 0.01
    assert sim.saturation_warning({**none, "count": 1, "total": 100, "fraction": 0.01}) is None
    assert sim.saturation_warning({**none, "count": 2, "total": 100, "fraction": 0.02})


def test_sim_warns_about_data_scaled_unlike_the_calibration_set(model_and_scaled_data,
                                                                tmp_path, capsys):
    from sim.__main__ import main

    _, path, same, large = model_and_scaled_data
    assert main(["--model", str(path), "--dataset", str(same), "--json",
                 str(tmp_path / "same.json")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads((tmp_path / "same.json").read_text())["input_saturation"]["count"] == 0
    assert main(["--model", str(path), "--dataset", str(large), "--json",
                 str(tmp_path / "large.json")]) == 0
    err = capsys.readouterr().err
    report = json.loads((tmp_path / "large.json").read_text())["input_saturation"]
    assert report["total"] == 72 and report["count"] == 72 and report["fraction"] == 1.0
    assert "warning: 100.0% of input values (72 of 72) fell outside the calibrated input " \
           "range [0, 255]" in err


def test_verify_warns_about_clamped_inputs_too(model_and_scaled_data, tmp_path, capsys):
    from accel.verify import main

    _, path, _, large = model_and_scaled_data
    report_path = tmp_path / "verify.json"
    assert main(["--model", str(path), "--dataset", str(large), "--samples", "2",
                 "--simulator", "amaranth", "--build-dir", str(tmp_path / "build"),
                 "--json", str(report_path)]) == 0
    assert "warning: 100.0% of input values (24 of 24)" in capsys.readouterr().err
    report = json.loads(report_path.read_text())
    assert report["mismatches"] == 0
    assert report["input_saturation"]["count"] == 24 and report["input_saturation"]["total"] == 24


# -- 2. same seed, same artifact on any thread count --------------------------------------------

def test_same_artifact_on_one_and_two_threads(tmp_path):
    """A tiny job in this process with torch on 2 threads, and in another process with
    OMP_NUM_THREADS=1: the same bytes (before the fix they differed)."""
    import torch

    from compress.__main__ import main

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(TINY + ["--out", str(tmp_path / "two")]) == 0
        assert torch.get_num_threads() == 2          # the count is restored after
    finally:
        torch.set_num_threads(previous)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "compress", *TINY, "--out",
                           str(tmp_path / "one")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    one = (tmp_path / "one" / "model.dcz").read_bytes()
    assert (tmp_path / "two" / "model.dcz").read_bytes() == one


def test_torch_threads_restores_the_count():
    import torch

    from compress.train import torch_threads

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError
    assert torch.get_num_threads() == before


# -- 3. one default engine ----------------------------------------------------------------------

def test_every_command_defaults_to_the_same_engine():
    from accel.build import DEFAULT_PES, build, build_parser, default_banks, engine_options
    from accel.run import build_parser as run_parser
    from accel.verify import build_parser as verify_parser
    from accel.verify import verify

    parsers = {"build": build_parser(), "verify": verify_parser(),
               "run": run_parser()}
    needed = {"build": [], "verify": ["--model", "m.dcz"], "run": ["--port", "sim", "--model",
                                                                    "m.dcz"]}
    options = {name: engine_options(p.parse_args(needed[name])) for name, p in parsers.items()}
    assert DEFAULT_PES == 1
    assert options["build"] == options["verify"] == options["run"]
    assert options["build"]["n_pes"] == 1 and options["build"]["banks"] == default_banks(1) == 2
    signature = inspect.signature(verify).parameters
    assert signature["n_pes"].default == DEFAULT_PES and signature["banks"].default is None
    assert inspect.signature(build).parameters["pes"].default == DEFAULT_PES


def test_verify_function_defaults_to_the_built_engine(tmp_path):
    from accel.verify import verify

    model = random_model(16, [12, 8, 3])
    x = sim.quantize_input(model, np.random.default_rng(0).random((2, 12))).astype(np.int64)
    report = verify(model, x, simulator="amaranth", build_dir=tmp_path)
    assert report["mismatches"] == 0
    assert report["engine"]["n_pes"] == 1 and report["engine"]["banks"] == 2


# -- 4, 5. every argument checked before any work, under the flag's own name --------------------

@pytest.mark.parametrize("args, message", [
    (["--clock-mhz", "0"], "--clock-mhz must be 10..400 MHz on ulx3s-85f (its PLL's range), "
                           "not 0"),
    (["--clock-mhz", "1000"], "--clock-mhz must be 10..400 MHz on ulx3s-85f (its PLL's range), "
                              "not 1000"),
    (["--board", "icebreaker", "--clock-mhz", "300"], "--clock-mhz must be 16.125..270 MHz on "
                                                      "icebreaker"),
    (["--pes", "0"], "--pes must be 1..64, not 0"),
    (["--queue-depth", "3"], "--queue-depth must be 5..4096, not 3"),
    (["--zero-run-bits", "9"], "--zero-run-bits must be 1..8, not 9"),
    (["--input-lanes", "17"], "--input-lanes must be 1..16, not 17"),
    (["--verify-samples", "0"], "--verify-samples must be >= 1, not 0"),
    (["--baud", "20000000"], "--baud 20,000,000 does not work from the ulx3s-85f's clock"),
    (["--board", "nope"], "--board must be one of"),
    (["--model", "missing.dcz"], "--model missing.dcz is not an artifact file"),
])
def test_build_refuses_bad_arguments_before_the_first_step(args, message, capsys):
    from accel.build import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""                   # not even "[1/5]"


@pytest.mark.parametrize("args, message", [
    (["--pes", "65"], "--pes must be 1..64, not 65"),
    (["--banks", "0"], "--banks must be 1..8, not 0"),
    (["--idle", "1"], "--idle must be >= 0 and < 1, not 1"),
    (["--samples", "0"], "--samples must be >= 1, not 0"),
    (["--seed", "-1"], "--seed must be 0..4294967295, not -1"),
])
def test_verify_refuses_bad_arguments_by_their_flags(model_and_scaled_data, tmp_path, args,
                                                     message, capsys):
    from accel.verify import main

    _, path, same, _ = model_and_scaled_data
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(path), "--dataset", str(same), "--simulator", "amaranth",
              "--build-dir", str(tmp_path / "build")] + args)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_run_refuses_bad_arguments_by_their_flags(model_and_scaled_data, capsys):
    from accel.run import main

    _, path, same, _ = model_and_scaled_data
    base = ["--port", "sim", "--model", str(path), "--dataset", str(same)]
    for args, message in [(["--lanes", "5"], "--lanes must be 1..4, not 5"),
                          (["--timeout", "0"], "--timeout must be > 0 s, not 0"),
                          (["--samples", "0"], "--samples must be >= 1, not 0")]:
        with pytest.raises(SystemExit) as exit_info:
            main(base + args)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--weight-bits", "1"], "--weight-bits must be 2..16, not 1"),
    (["--activation-bits", "17"], "--activation-bits must be 2..16, not 17"),
    (["--zero-run-bits", "0"], "--zero-run-bits must be 1..8 or 'auto', not 0"),
    (["--zero-run-bits", "wide"], "expected 1..8 or 'auto', not 'wide'"),
    (["--low-rank", "trp", "--energy", "2"], "--energy must be in (0, 1], not 2.0"),
    (["--low-rank", "trp", "--trp-period", "0"], "--trp-period must be >= 1, not 0"),
    (["--low-rank", "svd", "--ranks", "0"], "--ranks must be >= 1, not 0"),
    (["--ranks", "5"], "--ranks must go with low_rank svd"),
    (["--adversarial", "fgsm", "--epsilon", "0"], "--epsilon must be in (0, 1], not 0.0"),
    (["--prune-rounds", "0"], "--prune-rounds must be >= 1, not 0"),
    (["--calibration-samples", "0"], "--calibration-samples must be >= 1, not 0"),
    (["--bits", "9"], "--bits must be 1..8, not 9"),
    (["--seed", "-2"], "--seed must be 0..4294967295, not -2"),
    (["--method", "epr", "--rate-lambda", "-1"], "--rate-lambda must be a finite number >= 0, "
                                                 "not -1.0"),
    (["--method", "epr", "--rate-lambda", "nan"], "--rate-lambda must be a finite number >= 0, "
                                                  "not nan"),
    (["--method", "epr", "--rate-lambda", "inf"], "--rate-lambda must be a finite number >= 0, "
                                                  "not inf"),
    (["--method", "epr", "--epr-epochs", "-1"], "--epr-epochs must be >= 0, not -1"),
    (["--method", "epr", "--epr-lr", "0"], "--epr-lr must be > 0, not 0.0"),
    (["--method", "epr", "--density", "0.1"], "method epr prunes and quantizes by itself: "
                                               "--density cannot be set with it"),
    (["--method", "epr", "--weight-bits", "6"], "--weight-bits must be >= 8 with method epr"),
])
def test_compress_names_its_flags(args, message, capsys):
    from compress.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--quiet"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_sim_names_its_flags(tmp_path, capsys):
    from sim.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tmp_path / "none.dcz")])
    assert exit_info.value.code == 2
    assert "--model " in capsys.readouterr().err


def test_flag_message_restates_parameter_names_only():
    import argparse

    from core.options import flag_message

    parser = argparse.ArgumentParser()
    for flag in ("--pes", "--queue-depth", "--bits", "--weight-bits", "--input-lanes"):
        parser.add_argument(flag)
    assert flag_message("n_pes must be 1..64, not 65", parser) == "--pes must be 1..64, not 65"
    assert flag_message("queue_depth must be 5..4096, not 3: a PE's ...", parser) \
        == "--queue-depth must be 5..4096, not 3: a PE's ..."
    assert flag_message("bits has 4 values", parser) == "--bits has 4 values"
    assert flag_message("bad; input_lanes must be 1..16", parser) == "bad; --input-lanes must " \
                                                                      "be 1..16"
    # Prose, names without a flag here, and flags stay as they are.
    for text in ("the model has no integer data", "lanes must be 1..4",
                 "--weight-bits must be 2..16", "3 bits has no meaning"):
        assert flag_message(text, parser) == text


# -- 6. per-layer lists ---------------------------------------------------------------------------

@pytest.mark.parametrize("args, flag", [(["--bits", "4,4"], "--bits"),
                                        (["--density", "0.1,0.2"], "--density"),
                                        (["--quality", "1,1"], "--quality")])
def test_a_per_layer_list_needs_one_value_or_one_per_layer(args, flag, capsys):
    """Refused before the dense training (digits-mlp has three Linear layers)."""
    from compress.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--quiet"])
    assert exit_info.value.code == 2
    assert f"{flag} has 2 values but the model has 3 Linear layers: give one value for all " \
           f"layers or one per layer" in capsys.readouterr().err


def test_per_layer_lists_of_one_or_every_layer_are_taken():
    from compress.pipeline import _per_layer

    assert _per_layer((4,), 3, "bits") == [4, 4, 4]
    assert _per_layer((4, 3, 5), 3, "bits") == [4, 3, 5]
    with pytest.raises(ValueError, match="bits has 2 values"):
        _per_layer((4, 3), 3, "bits")


# -- 7. progress in logs ------------------------------------------------------------------------

def test_progress_prints_plain_lines_when_not_on_a_terminal():
    from compress.progress import progress_bar

    log = io.StringIO()
    bar = progress_bar(range(4), desc="train", unit="epoch", file=log, interval=0.0)
    for step in bar:
        bar.set_postfix(loss=f"{1 / (step + 1):.2f}")
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 4
    assert lines[0].startswith("train: 1/4 epoch (25%), ") and lines[0].endswith("loss=1.00")
    assert lines[-1].startswith("train: 4/4 epoch (100%), ")
    # A long interval: only the last step is reported.
    log = io.StringIO()
    list(progress_bar(range(50), desc="x", file=log))
    assert log.getvalue().count("\n") == 1 and "50/50" in log.getvalue()
    silent = io.StringIO()
    list(progress_bar(range(3), desc="x", enabled=False, file=silent))
    assert silent.getvalue() == ""


def test_compress_progress_in_a_log_has_no_carriage_returns(tmp_path, capsys):
    """Standard error captured (not a terminal), as in a CI log."""
    from compress.__main__ import main

    assert main(["--epochs", "2", "--prune-rounds", "1", "--retrain-epochs", "0",
                 "--finetune-epochs", "1", "--no-plots", "--no-integer",
                 "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "\r" not in captured.out
    assert "train: 2/2 epoch (100%)" in captured.err
    assert "fine-tune centroids: 1/1 epoch (100%)" in captured.err
