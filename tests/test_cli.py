"""``python -m compress`` end to end on digits, a user's model and .npz, and its errors."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import compress
from compress.__main__ import main
from compress.pipeline import CompressConfig, compress_model

QUICK = ["--epochs", "4", "--prune-rounds", "2", "--retrain-epochs", "1",
         "--finetune-epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    assert main(QUICK + ["--out", str(out), "--json", str(out / "copy.json")]) == 0
    return out


def test_outputs(digits_run):
    report = json.loads((digits_run / "report.json").read_text())
    assert json.loads((digits_run / "copy.json").read_text()) == report
    for key in ("artifact", "compression_ratio", "accuracy_float", "accuracy_compressed",
                "params", "nonzero_params", "layers"):
        assert key in report
    assert report["params"] == 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert len(report["layers"]) == 3 and report["compression_ratio"] > 1
    assert (digits_run / "weights.png").stat().st_size > 1000
    assert (digits_run / "density.png").stat().st_size > 1000
    model = compress.load(report["artifact"])
    assert model.metadata["model"] == "digits-mlp"
    data = compress.load_dataset("digits")
    predictions = model.forward(data.x_test).argmax(1)
    assert (predictions == data.y_test).mean() == pytest.approx(report["accuracy_compressed"])


def test_pruned_weights_stay_exactly_zero_and_shared():
    result = compress_model(CompressConfig(epochs=3, prune_rounds=2, retrain_epochs=2,
                                           finetune_epochs=2, density=(0.1, 0.05, 0.3),
                                           bits=(3,), progress=False), log=lambda _: None)
    for i, (layer, pruned) in enumerate(zip(result.model.layers, result.pruned_weights)):
        # The mask after retraining is the one weight sharing and fine-tuning kept.
        np.testing.assert_array_equal(layer.index == 0, pruned == 0)
        assert layer.weight[layer.index == 0].tolist() == [0.0] * int((layer.index == 0).sum())
        assert layer.density == pytest.approx((0.1, 0.05, 0.3)[i], abs=1e-3)
        assert len(layer.codebook) <= 8 and np.all(np.diff(layer.codebook[1:]) >= 0)


def test_same_seed_same_artifact(tmp_path):
    args = QUICK + ["--no-plots"]
    main(args + ["--out", str(tmp_path / "a")])
    main(args + ["--out", str(tmp_path / "b")])
    assert (tmp_path / "a" / "model.dcz").read_bytes() == (tmp_path / "b" / "model.dcz").read_bytes()


def test_user_model_and_signed_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    np.savez(tmp_path / "tab.npz", x_train=x[:240], y_train=y[:240], x_test=x[240:],
             y_test=y[240:])
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(torch.from_numpy(x[:240])), torch.from_numpy(y[:240])
                                    ).backward()
        optimizer.step()
    torch.save(net, tmp_path / "net.pt")
    out = tmp_path / "out"
    assert main(["--model", str(tmp_path / "net.pt"), "--dataset", str(tmp_path / "tab.npz"),
                 "--density", "0.5", "--prune-rounds", "1", "--retrain-epochs", "2",
                 "--finetune-epochs", "1", "--bits", "3", "--quiet", "--no-plots",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy_float"] > 0.9
    model = compress.load(out / "model.dcz")
    assert model.metadata["signed_inputs"] is True
    assert [layer.density for layer in model.layers] == [0.5, 0.5]


@pytest.mark.parametrize("args, message", [
    (["--bits", "12"], "bits must be 1..8, not 12"),
    (["--bits", "four"], "comma-separated ints"),
    (["--density", "1.5"], r"density must be in \(0, 1\], not 1.5"),
    (["--quantizer", "median"], "invalid choice: 'median'"),
    (["--model", "resnet"], "model must be one of digits-mlp, lenet-300-100"),
    (["--dataset", "cifar"], "dataset must be one of digits, breast-cancer, mnist"),
    (["--bits", "4,4,4,4"], "bits has 4 values but the model has 3 Linear layers"),
    (["--density", "0.1", "--quality", "1"], "not allowed with argument"),
    (["--model", "lenet-300-100", "--dataset", "digits"], "takes 784 inputs but data set "
                                                          "'digits' has 64 features"),
])
def test_bad_arguments(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--quiet", "--epochs", "0"])
    assert exit_info.value.code == 2
    assert __import__("re").search(message, capsys.readouterr().err)


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "compress", "--help"], capture_output=True,
                            text=True, check=True)
    assert "--quantizer" in result.stdout and "--json" in result.stdout


@pytest.mark.parametrize("options", [
    dict(quality=(0.5, 0.8, 0.8)),                 # the paper's quality factor x std
    dict(cluster_reg=0.5),                         # DP-Net's clustering-friendly penalty
    dict(quantizer="kmeans-linear"), dict(quantizer="kmeans-density"),
    dict(quantizer="kmeans-random"),
])
def test_pipeline_options(options):
    config = dict(epochs=2, prune_rounds=2, retrain_epochs=1, finetune_epochs=1, bits=(3,),
                  progress=False)
    config.update(options)
    result = compress_model(CompressConfig(**config), log=lambda _: None)
    assert result.model.metadata["settings"]["quantizer"] == config.get("quantizer", "dp")
    for layer in result.model.layers:
        assert 2 <= len(layer.codebook) <= 8
    if "quality" in options:
        # Pruning by threshold keeps more weights where the threshold factor is lower.
        assert result.model.layers[0].density > result.model.layers[1].density


def test_auto_zero_run_bits_stores_each_layer_in_its_fewest_bits(tmp_path):
    config = dict(epochs=2, prune_rounds=1, retrain_epochs=1, finetune_epochs=0, bits=(3,),
                  density=(0.1, 0.3, 0.9), progress=False, integer=False)
    auto = compress_model(CompressConfig(zero_run_bits="auto", **config), log=lambda _: None)
    fixed = compress_model(CompressConfig(zero_run_bits=5, **config), log=lambda _: None)
    for chosen, five in zip(auto.model.layers, fixed.model.layers):
        np.testing.assert_array_equal(chosen.index, five.index)    # only the coding differs
        sizes = {b: dataclasses.replace(chosen, zero_run_bits=b).size().compressed_bits
                 for b in range(1, 9)}
        assert sizes[chosen.zero_run_bits] == min(sizes.values())
    # Denser layers need fewer bits to reach their next weight.
    widths = [layer.zero_run_bits for layer in auto.model.layers]
    assert widths[0] > widths[2]
    loaded = compress.load(auto.model.save(tmp_path / "auto.dcz"))
    assert [layer.zero_run_bits for layer in loaded.layers] == widths
    assert auto.model.metadata["settings"]["zero_run_bits"] == "auto"


def test_dp_sharing_error_is_lowest():
    common = dict(epochs=2, prune_rounds=1, retrain_epochs=1, finetune_epochs=0, bits=(3,),
                  progress=False)
    errors = {q: compress_model(CompressConfig(quantizer=q, **common), log=lambda _: None
                                ).sharing_sse for q in compress.QUANTIZERS}
    assert errors["dp"] <= min(errors.values()) * (1 + 1e-9)
