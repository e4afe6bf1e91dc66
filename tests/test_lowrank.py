"""TRP and the truncated-SVD baseline (``compress.lowrank``) and their place in the pipeline:
the energy rank, the projection, the nuclear-norm sub-gradient, the factorization, and the
decomposed chain (a hidden layer with no ReLU) through the artifact and ``sim``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import compress
import sim
from compress.lowrank import TrainedRankPruning, energy_rank, factorize, truncate
from compress.pipeline import CompressConfig, compress_model

# -- energy rank, truncation --------------------------------------------------------------------


def test_energy_rank_edges():
    s = torch.tensor([4.0, 3.0])                  # energies 16/25 = 0.64, then 1
    assert energy_rank(s, 0.64) == 1
    assert energy_rank(s, 0.65) == 2
    assert energy_rank(s, 1.0) == 2
    assert energy_rank(torch.zeros(5), 0.99) == 1            # an all-zero layer keeps rank 1
    assert energy_rank(torch.tensor([1.0, 0.0, 0.0]), 1.0) == 1
    for bad in (0.0, 1.5, -1, True, "0.9"):
        with pytest.raises(ValueError, match="energy must be in \\(0, 1\\]"):
            energy_rank(s, bad)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 12), columns=st.integers(1, 12), seed=st.integers(0, 2**16),
       energy=st.floats(0.05, 1.0))
def test_energy_rank_is_the_smallest_rank_holding_the_energy(rows, columns, seed, energy):
    w = torch.from_numpy(np.random.default_rng(seed).normal(size=(rows, columns)))
    s = torch.linalg.svdvals(w)
    k = energy_rank(s, energy)
    power = (s ** 2).tolist()
    assert sum(power[:k]) >= energy * sum(power) - 1e-9
    assert k == 1 or sum(power[:k - 1]) < energy * sum(power)
    # The truncation at k is the best rank-k approximation: its error is the dropped energy.
    error = torch.linalg.norm(w - truncate(w, k)) ** 2
    assert float(error) == pytest.approx(sum(power[k:]), abs=1e-9)


# -- TRP's hooks --------------------------------------------------------------------------------


def test_projection_leaves_the_energy_rank_and_keeps_pruned_weights_zero():
    torch.manual_seed(0)
    layer = nn.Linear(20, 12)
    mask = (torch.rand(12, 20) > 0.3).float()
    with torch.no_grad():
        layer.weight.mul_(mask)
    before = torch.linalg.svdvals(layer.weight.detach())
    trp = TrainedRankPruning([layer], energy=0.9, nuclear=0.0, period=1, masks=[mask])
    trp.project()
    assert trp.ranks == [energy_rank(before, 0.9)]
    assert torch.all(layer.weight[mask == 0] == 0)
    # Without a mask the projection is exactly the truncation, of rank k.
    other = nn.Linear(20, 12)
    reference = truncate(other.weight.detach(), energy_rank(
        torch.linalg.svdvals(other.weight.detach()), 0.8))
    trp = TrainedRankPruning([other], energy=0.8, nuclear=0.0, period=1)
    trp.project()
    torch.testing.assert_close(other.weight.detach(), reference)
    assert int(torch.linalg.matrix_rank(other.weight.detach())) == trp.ranks[0]


def test_nuclear_term_gradient_is_the_subgradient_u_vt():
    torch.manual_seed(1)
    layer = nn.Linear(9, 6)
    trp = TrainedRankPruning([layer], energy=1.0, nuclear=0.25, period=3)
    assert float(trp.loss()) == 0.0                     # no directions before a projection
    trp.on_step(0)                                      # step 0 projects (energy 1: no change)
    u, s, vh = torch.linalg.svd(layer.weight.detach(), full_matrices=False)
    layer.weight.grad = None
    trp.loss().backward()
    torch.testing.assert_close(layer.weight.grad, 0.25 * u @ vh, atol=1e-5, rtol=1e-5)
    # The loss is lambda times the nuclear norm at the projection.
    assert float(trp.loss().detach()) == pytest.approx(0.25 * float(s.sum()), rel=1e-5)
    with torch.no_grad():
        layer.weight.add_(1.0)
    trp.on_step(1)                                      # not a projection step: unchanged
    assert int(torch.linalg.matrix_rank(layer.weight.detach())) == 6


@pytest.mark.parametrize("kwargs, message", [
    (dict(energy=0.0), "energy must be in"), (dict(nuclear=-1.0), "nuclear must be >= 0"),
    (dict(period=0), "trp_period must be >= 1"), (dict(period=1.5), "trp_period must be >= 1"),
])
def test_trp_refuses_bad_settings(kwargs, message):
    settings_ = dict(energy=0.99, nuclear=3e-4, period=1)
    settings_.update(kwargs)
    with pytest.raises(ValueError, match=message):
        TrainedRankPruning([nn.Linear(3, 3)], **settings_)


# -- factorization ------------------------------------------------------------------------------


def test_factorize_equals_the_truncated_layer_and_decomposes_only_when_it_saves():
    torch.manual_seed(2)
    wide, square = nn.Linear(40, 30), nn.Linear(8, 8)
    linears, relus, report = factorize([wide, square], [True, False], [5, 5])
    assert [row.decomposed for row in report] == [True, False]       # 5*16 > 64
    assert relus == [False, True, False] and len(linears) == 3
    first, second = linears[0], linears[1]
    assert first.weight.shape == (5, 40) and second.weight.shape == (30, 5)
    assert torch.all(first.bias == 0) and torch.equal(second.bias, wide.bias)
    x = torch.randn(7, 40)
    expected = x @ truncate(wide.weight.detach(), 5).T + wide.bias
    torch.testing.assert_close(second(first(x)), expected, atol=1e-5, rtol=1e-5)
    assert report[0].macs_before == 1200 and report[0].macs_after == 5 * 70
    assert report[1].macs_after == report[1].macs_before == 64
    assert 0 < report[0].energy_kept < 1 and report[1].as_dict()["rank"] == 5
    with pytest.raises(ValueError, match="has rank at most 8, not 9"):
        factorize([square], [False], [9])
    with pytest.raises(ValueError, match="rank must be >= 1"):
        factorize([square], [False], [0])


# -- the pipeline -------------------------------------------------------------------------------

_QUICK = dict(epochs=10, prune_rounds=1, retrain_epochs=1, finetune_epochs=1, progress=False,
              low_rank_epochs=2)


@pytest.mark.parametrize("method", ["trp", "svd"])
def test_low_rank_chain_goes_through_the_artifact_and_sim(method, tmp_path):
    extra = dict(ranks=(8, 8, 4)) if method == "svd" else dict(energy=0.95, nuclear=1e-3)
    result = compress_model(CompressConfig(low_rank=method, density=(0.5,), **extra, **_QUICK),
                            log=lambda _: None)
    report = result.low_rank
    assert len(report) == 3 and report[0].decomposed and report[1].decomposed
    if method == "svd":
        assert [row.rank for row in report] == [8, 8, 4]
    model = compress.load(result.model.save(tmp_path / "m.dcz"))
    n = sum(2 if row.decomposed else 1 for row in report)
    assert len(model.layers) == n
    # A decomposed layer's first factor has no ReLU: its integer output is signed.
    assert model.layers[0].relu is False and model.layers[1].relu is True
    assert model.layers[1].integer.input_signed
    assert model.metadata["low_rank"][0]["rank"] == report[0].rank
    x = sim.quantize_input(model, result.dataset.x_test)
    accuracy = float((sim.run(model, x).argmax(1) == result.dataset.y_test).mean())
    assert accuracy == pytest.approx(result.accuracy_int) and accuracy > 0.5
    # Both factors of a layer took its density.
    assert model.layers[0].density == pytest.approx(0.5, abs=0.01)


def test_trp_lowers_the_rank_below_the_svd_energy_rank():
    """Trained with projections at energy e, a layer's rank at e ends below the trained float
    layer's rank at the same energy (the point of TRP)."""
    trp = compress_model(CompressConfig(low_rank="trp", energy=0.9, density=(1.0,), **_QUICK),
                         log=lambda _: None)
    svd = compress_model(CompressConfig(low_rank="svd", energy=0.9, density=(1.0,), **_QUICK),
                         log=lambda _: None)
    assert sum(r.rank for r in trp.low_rank) < sum(r.rank for r in svd.low_rank)


def test_per_layer_lists_for_the_decomposed_chain():
    # One value per decomposed layer (6 here) is taken as given, one per original layer is
    # shared by the factors, any other length is refused after the decomposition.
    config = dict(low_rank="svd", ranks=(8, 8, 4), **_QUICK)
    result = compress_model(CompressConfig(density=(1.0, 0.5, 1.0, 0.5, 1.0, 1.0), **config),
                            log=lambda _: None)
    assert [round(layer.density, 2) for layer in result.model.layers] == [1, 0.5, 1, 0.5, 1, 1]
    with pytest.raises(ValueError, match="one per each of the 6 layers after decomposition"):
        compress_model(CompressConfig(density=(1.0, 0.5), **config), log=lambda _: None)


@pytest.mark.parametrize("kwargs, message", [
    (dict(low_rank="tucker"), "low_rank must be one of none, trp, svd"),
    (dict(low_rank="trp", energy=0.0), "energy must be in"),
    (dict(low_rank="trp", trp_period=0), "trp_period must be >= 1"),
    (dict(low_rank="trp", low_rank_epochs=-1), "low_rank_epochs must be >= 0"),
    (dict(low_rank="trp", ranks=(3,)), "ranks must go with low_rank svd"),
    (dict(low_rank="svd", ranks=(0,)), "ranks must be >= 1"),
    (dict(low_rank="svd", ranks=(65,)), "layer 0 \\(256x64\\) has rank at most 64, not 65"),
    (dict(low_rank="svd", activation_quantizer="lq", activation_bits=2),
     "activation_quantizer must be none with a low-rank method"),
])
def test_low_rank_settings_are_checked_before_training(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compress_model(CompressConfig(epochs=0, progress=False, **kwargs), log=lambda _: None)


def test_low_rank_factors_take_lq_nets_per_row_bases(tmp_path):
    result = compress_model(CompressConfig(low_rank="svd", ranks=(8, 8, 4), quantizer="lq",
                                           bits=(2,), density=(0.6,), **_QUICK),
                            log=lambda _: None)
    model = compress.load(result.model.save(tmp_path / "lq.dcz"))
    assert len(model.layers) == 6 and all(layer.integer.per_row for layer in model.layers)
    x = sim.quantize_input(model, result.dataset.x_test)
    accuracy = float((sim.run(model, x).argmax(1) == result.dataset.y_test).mean())
    assert accuracy == pytest.approx(result.accuracy_int)
