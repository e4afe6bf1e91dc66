"""``python -m accel.verify`` end to end on a small artifact and a user's own ``.npz`` data set."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from accel.verify import main
from accel_models import random_model


@pytest.fixture
def artifact_and_data(tmp_path):
    model = random_model(21, [12, 9, 4], density=0.4)
    path = tmp_path / "model.dcz"
    model.save(path)
    rng = np.random.default_rng(0)
    data = tmp_path / "mine.npz"
    # input_scale is 1 in these models: float features 0..255 become the same integers.
    np.savez(data, x_train=rng.integers(0, 256, (40, 12)).astype(np.float32),
             y_train=rng.integers(0, 4, 40), x_test=rng.integers(0, 256, (6, 12)).astype(np.float32),
             y_test=rng.integers(0, 4, 6))
    return path, data


@pytest.mark.parametrize("simulator", ["amaranth", "verilator", "icarus"])
def test_verify_reports_zero_mismatches_and_the_cycle_figures(artifact_and_data, tmp_path,
                                                              simulator, capsys):
    if simulator == "icarus" and shutil.which("iverilog") is None:
        pytest.skip("Icarus Verilog (iverilog) not installed")
    if simulator == "verilator":
        from accel.verification.simulators import _verilator_setup
        if _verilator_setup()[0] is None:
            pytest.skip(f"Verilator cannot run (missing: {_verilator_setup()[1]})")
    model, data = artifact_and_data
    report_path = tmp_path / "report.json"
    code = main(["--model", str(model), "--dataset", str(data), "--pes", "3",
                 "--simulator", simulator, "--build-dir", str(tmp_path / "build"),
                 "--json", str(report_path)])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["samples"] == 6 and report["mismatches"] == 0
    assert report["first_mismatch"] is None
    assert report["cycles_per_inference"] > 0 and report["predicted_cycles"] > 0
    assert 0 < report["pe_utilization"] <= 1
    out = capsys.readouterr().out
    assert "mismatches 0" in out and "PE utilization" in out


@pytest.mark.parametrize("arguments, message", [
    (["--samples", "0"], "--samples must be >= 1"),
    (["--pes", "65"], "--pes must be 1..64, not 65"),
    (["--dataset", "digits"], "has 64 features, the model takes 12"),
])
def test_verify_refuses_bad_arguments(artifact_and_data, tmp_path, arguments, message, capsys):
    model, data = artifact_and_data
    base = ["--model", str(model), "--dataset", str(data), "--simulator", "amaranth",
            "--build-dir", str(tmp_path / "build")]
    with pytest.raises(SystemExit) as exit_info:
        main(base + arguments)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_verify_refuses_a_missing_artifact(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "nothing.dcz")])
    assert "does not exist" in capsys.readouterr().err
