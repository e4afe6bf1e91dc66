"""Adversarial training and robust accuracy (``compress.adversarial``; DP-Net's robust models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compress.adversarial import Adversary, adversarial_examples, attack, robust_accuracy
from compress.pipeline import CompressConfig, compress_model
from compress.torch_model import to_torch
from compress.report import build_report, format_table


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _batch(seed=0, n=32):
    rng = np.random.default_rng(seed)
    return (torch.from_numpy(rng.random((n, 6), dtype=np.float32)),
            torch.from_numpy(rng.integers(0, 3, n)))


def _loss(net, x, y):
    with torch.no_grad():
        return float(nn.functional.cross_entropy(net(x), y))


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_attacks_stay_in_the_ball_and_the_range_and_raise_the_loss(method):
    net, (x, y) = _net(), _batch()
    adversarial = attack(net, x, y, method=method, epsilon=0.05, low=0.0, high=1.0,
                         generator=torch.Generator().manual_seed(0))
    assert float((adversarial - x).abs().max()) <= 0.05 + 1e-6
    assert float(adversarial.min()) >= 0.0 and float(adversarial.max()) <= 1.0
    assert _loss(net, adversarial, y) > _loss(net, x, y)
    assert net.training                                  # the mode is left as it was


def test_fgsm_is_one_signed_gradient_step():
    net, (x, y) = _net(1), _batch(1)
    x = x * 0.5 + 0.25                                   # away from the range's ends
    probe = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(net(probe), y).backward()
    expected = (x + 0.1 * probe.grad.sign()).clamp(0, 1)
    torch.testing.assert_close(attack(net, x, y, method="fgsm", epsilon=0.1, low=0, high=1),
                               expected)


def test_pgd_is_stronger_than_fgsm_and_deterministic_for_a_seed():
    net, (x, y) = _net(2), _batch(2, n=256)
    fgsm = attack(net, x, y, method="fgsm", epsilon=0.1, low=0, high=1)
    pgd = [adversarial_examples(net, x.numpy(), y.numpy(), method="pgd", epsilon=0.1, low=0,
                                high=1, seed=3) for _ in range(2)]
    np.testing.assert_array_equal(pgd[0], pgd[1])
    assert _loss(net, torch.from_numpy(pgd[0]), y) >= _loss(net, fgsm, y)


def test_adversary_loss_is_the_mean_of_clean_and_adversarial():
    net, (x, y) = _net(3), _batch(3)
    adversary = Adversary("fgsm", 0.1, 0.0, 1.0)
    adversarial = attack(net, x, y, method="fgsm", epsilon=0.1, low=0.0, high=1.0)
    expected = 0.5 * _loss(net, x, y) + 0.5 * _loss(net, adversarial, y)
    assert float(adversary.loss(net, x, y).detach()) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="cw", epsilon=0.1), "adversarial must be one of none, fgsm, pgd"),
    (dict(method="fgsm", epsilon=0.0), "epsilon must be in \\(0, 1\\]"),
    (dict(method="pgd", epsilon=1.5), "epsilon must be in \\(0, 1\\]"),
])
def test_attack_refuses_bad_settings(kwargs, message):
    net, (x, y) = _net(), _batch()
    with pytest.raises(ValueError, match=message):
        attack(net, x, y, low=0.0, high=1.0, **kwargs)


_QUICK = dict(epochs=12, prune_rounds=1, retrain_epochs=2, finetune_epochs=1, progress=False)


def test_adversarial_training_makes_the_float_model_robust_and_is_reported(tmp_path):
    plain = compress_model(CompressConfig(**_QUICK), log=lambda _: None)
    robust = compress_model(CompressConfig(adversarial="fgsm", epsilon=0.1, **_QUICK),
                            log=lambda _: None)
    r = robust.robust
    assert r["attack"] == "fgsm" and r["epsilon"] == 0.1
    assert all(0.0 <= r[k] <= 1.0 for k in ("float", "compressed", "compressed_on_grid", "int"))
    # The same attack on the normally trained network finds it much weaker.
    net = to_torch(plain.model)
    before = robust_accuracy(net, plain.dataset.x_test, plain.dataset.y_test, method="fgsm",
                             epsilon=0.1, low=0.0, high=1.0)
    assert r["compressed"] > before + 0.1
    assert robust.model.metadata["robust"] == r
    report = build_report(robust.model, artifact=tmp_path / "none.dcz",
                          accuracy_float=robust.accuracy_float,
                          accuracy_pruned=robust.accuracy_pruned,
                          accuracy_compressed=robust.accuracy_compressed,
                          accuracy_int=robust.accuracy_int)
    assert "robust accuracy (fgsm, epsilon 0.1): float" in format_table(report)


@pytest.mark.parametrize("kwargs, message", [
    (dict(adversarial="bim"), "adversarial must be one of none, fgsm, pgd"),
    (dict(adversarial="pgd", epsilon=-0.1), "epsilon must be in"),
    (dict(adversarial="pgd", quantizer="lq", activation_quantizer="lq", activation_bits=2),
     "activation_quantizer must be none with adversarial training"),
])
def test_pipeline_refuses_bad_adversarial_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compress_model(CompressConfig(epochs=0, progress=False, **kwargs), log=lambda _: None)
