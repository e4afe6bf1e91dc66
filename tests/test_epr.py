"""EPR (issue 24): the reparameterization and its rate term (``compress.epr``) and the range
coding of latents (``core.range_coding``)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from compress import epr
from core import range_coding
from core.latents import LATENT_LIMIT


# -- the rate lambda ----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [-1e-3, float("nan"), float("inf"), -float("inf"), True, "1",
                                 None])
def test_rate_lambda_is_refused_unless_finite_and_non_negative(bad):
    with pytest.raises(ValueError, match="rate_lambda must be a finite number >= 0"):
        epr.check_rate_lambda(bad)


def test_rate_lambda_accepts_zero_and_positive():
    assert epr.check_rate_lambda(0) == 0.0 and epr.check_rate_lambda(2.5) == 2.5


# -- the probability model ----------------------------------------------------------------------

@pytest.mark.parametrize("log_scale", [-3.0, 0.0, 1.0, 2.5])
def test_logistic_bits_are_a_distribution_over_the_integers(log_scale):
    k = torch.arange(-400, 401, dtype=torch.float64)
    p = 2.0 ** -epr.logistic_bits(k, torch.tensor(log_scale, dtype=torch.float64))
    assert abs(float(p.sum()) - 1.0) < 1e-6
    assert torch.all(p[:-1][k[:-1] >= 0] >= p[1:][k[:-1] >= 0])       # unimodal at 0
    assert torch.allclose(p, p.flip(0))                                   # symmetric


def test_logistic_bits_are_bounded_in_the_tail():
    bits = epr.logistic_bits(torch.tensor([1e6]), torch.tensor(-3.0))
    assert float(bits) == pytest.approx(-math.log2(1e-9), rel=1e-4)


@pytest.mark.parametrize("log_scale,low,high", [(0.3, -20, 20), (-2.0, -3, 5), (3.0, -127, 127),
                                                (1.0, 0, 0), (0.0, 4, 9)])
def test_frequencies_sum_to_the_precision_each_at_least_one(log_scale, low, high):
    f = range_coding.logistic_frequencies(log_scale, low, high)
    assert f.sum() == 1 << range_coding.PRECISION and f.min() >= 1 and len(f) == high - low + 1


def test_frequencies_follow_the_logistic():
    f = range_coding.logistic_frequencies(1.0, -60, 60)
    k = torch.arange(-60, 61, dtype=torch.float64)
    p = 2.0 ** -epr.logistic_bits(k, torch.tensor(1.0, dtype=torch.float64))
    p = (p / p.sum()).numpy()
    assert np.max(np.abs(f / 2.0 ** range_coding.PRECISION - p)) < 1e-6


def test_frequencies_are_a_fixed_rule():
    """The table is part of the file format: a change of rule would make old files undecodable.
    (The digest is of this implementation's table, pinned.)"""
    f = range_coding.logistic_frequencies(0.75, -12, 12)
    assert f.tolist() == range_coding.logistic_frequencies(np.float32(0.75), -12, 12).tolist()
    assert hashlib.sha256(f.astype("<i8").tobytes()).hexdigest()[:16] == _PINNED_TABLE


_PINNED_TABLE = "1c62f87efd6bf576"


@pytest.mark.parametrize("low,high", [(1, 0), (0, range_coding.MAX_SYMBOLS)])
def test_a_bad_symbol_range_is_refused(low, high):
    with pytest.raises(ValueError, match="symbol range must hold"):
        range_coding.logistic_frequencies(0.0, low, high)


# -- range coding --------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-127, 127), min_size=0, max_size=400),
       st.floats(-4.0, 5.0, allow_nan=False))
def test_round_trip_is_exact(values, log_scale):
    values = np.array(values, dtype=np.int64)
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    words = range_coding.encode(values, log_scale, low, high)
    assert np.array_equal(range_coding.decode(words, values.size, log_scale, low, high), values)


def _sparse_latents(n, seed=0):
    rng = np.random.default_rng(seed)
    v = np.clip(np.round(rng.logistic(0, 3.0, n)), -127, 127).astype(np.int64)
    v[rng.random(n) < 0.9] = 0
    return v


def test_code_length_is_within_one_percent_of_the_ideal():
    values = _sparse_latents(100_000)
    for log_scale in (-1.0, 0.0, 1.5):
        words = range_coding.encode(values, log_scale, int(values.min()), int(values.max()))
        ideal = range_coding.ideal_bits(values, log_scale, int(values.min()), int(values.max()))
        assert ideal <= 32 * words.size <= 1.01 * ideal + 64


def test_the_coder_codes_under_the_stored_frequencies():
    """Each symbol costs ``PRECISION - log2 frequency`` bits, the rarest (frequency 1) too."""
    import constriction

    f = range_coding.logistic_frequencies(-1.0, -28, 27)
    assert (f == 1).sum() > 10
    model = range_coding._model(f)
    for symbol in (0, 3, 27, 28, 40, 55):
        encoder = constriction.stream.queue.RangeEncoder()
        encoder.encode(np.full(4000, symbol, dtype=np.int32), model)
        assert encoder.num_bits() / 4000 == pytest.approx(
            range_coding.PRECISION - math.log2(f[symbol]), abs=0.01)


def test_a_truncated_altered_or_extended_stream_is_refused():
    values = _sparse_latents(5_000, seed=1)
    low, high = int(values.min()), int(values.max())
    words = range_coding.encode(values, 0.5, low, high)
    flipped = words.copy()
    flipped[len(words) // 2] ^= np.uint32(1 << 7)
    for bad in (words[:-1], np.append(words, np.uint32(0)), np.append(words, np.uint32(99)),
                flipped):
        with pytest.raises(ValueError, match="range-coded stream is corrupt"):
            range_coding.decode(bad, values.size, 0.5, low, high)
    with pytest.raises(ValueError, match="corrupt"):            # a different count
        range_coding.decode(words, values.size + 1, 0.5, low, high)


def test_values_outside_the_range_are_refused():
    with pytest.raises(ValueError, match=r"integers in -2..2"):
        range_coding.encode(np.array([0, 3]), 0.0, -2, 2)


# -- the reparameterization ---------------------------------------------------------------------

def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 4))


def test_forward_uses_the_rounded_latents():
    net = _net()
    before = [m.weight.detach().clone() for m in net if isinstance(m, nn.Linear)]
    reparam = epr.EntropyPenalizedReparameterization(net, rate_lambda=1.0)
    for m, latents, w in zip(reparam.linears, reparam.latents(), before):
        assert np.array_equal(m.weight.detach().numpy(), latents.weight.decoded())
        # The step starts at exp(-4): rounding moves a weight by at most half of it.
        assert float((m.weight.detach() - w).abs().max()) <= 0.5 * math.exp(-4) + 1e-7
        assert np.abs(latents.weight.values).max() <= LATENT_LIMIT


def test_latents_are_clamped_to_the_limit():
    net = nn.Sequential(nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[100.0, -0.01]]))
    reparam = epr.EntropyPenalizedReparameterization(net, rate_lambda=0.0)
    assert reparam.latents()[0].weight.values.tolist() == [[LATENT_LIMIT, -1]]


def test_the_rate_term_trains_steps_scales_and_latents():
    net = _net()
    reparam = epr.EntropyPenalizedReparameterization(net, rate_lambda=1.0)
    names = {n for n, _ in net.named_parameters()}
    assert {"0.parametrizations.weight.original", "0.parametrizations.weight.0.log_step",
            "0.parametrizations.bias.0.log_scale"} <= names
    start = sum(reparam.layer_bits())
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    torch.manual_seed(1)
    for _ in range(300):
        optimizer.zero_grad()
        reparam.regularizer().backward()
        optimizer.step()
    assert sum(reparam.layer_bits()) < 0.5 * start


def test_remove_leaves_the_rounded_weights():
    net = _net()
    reparam = epr.EntropyPenalizedReparameterization(net, rate_lambda=1.0)
    latents = reparam.latents()
    reparam.remove()
    for m, lat in zip([m for m in net if isinstance(m, nn.Linear)], latents):
        assert not hasattr(m, "parametrizations")
        assert np.array_equal(m.bias.detach().numpy(), lat.bias.decoded())


def test_a_model_without_linear_layers_or_biases_is_refused():
    with pytest.raises(ValueError, match="no Linear or Conv2d layer"):
        epr.EntropyPenalizedReparameterization(nn.Sequential(nn.ReLU()), rate_lambda=1.0)
    with pytest.raises(ValueError, match="needs a bias"):
        epr.EntropyPenalizedReparameterization(nn.Sequential(nn.Linear(3, 2, bias=False)),
                                               rate_lambda=1.0)


# -- the pipeline ----------------------------------------------------------------------------------

_QUICK = dict(model="cancer-mlp", method="epr", epochs=6, epr_epochs=60, progress=False)


@pytest.fixture(scope="module")
def epr_result():
    from compress import CompressConfig, compress_model

    return compress_model(CompressConfig(rate_lambda=2.0, **_QUICK), log=lambda _: None)


def test_the_pipeline_stores_latent_layers_that_run_on_the_integer_path(epr_result, tmp_path):
    import compress
    import sim

    model = compress.load(epr_result.model.save(tmp_path / "epr.dcz"))
    assert model.format_version == 4
    assert all(layer.latents is not None for layer in model.layers)
    assert [row["parameters"] for row in model.metadata["epr"]] == \
        [layer.index.size + layer.out_features for layer in model.layers]
    data = epr_result.dataset
    x = sim.quantize_input(model, data.x_test)
    accuracy = float(np.mean(sim.run(model, x).argmax(1) == data.y_test))
    assert accuracy == pytest.approx(epr_result.accuracy_int) and accuracy > 0.9
    # Most latents are zero: pruned weights the engine skips.
    assert sum(layer.nonzero for layer in model.layers) < 0.5 * sum(
        layer.index.size for layer in model.layers)


def test_a_larger_rate_lambda_gives_a_smaller_model(epr_result):
    from compress import CompressConfig, compress_model

    larger = compress_model(CompressConfig(rate_lambda=8.0, **_QUICK), log=lambda _: None)

    def size(result):
        return sum(s.compressed_bytes for s in result.model.sizes())

    assert size(larger) < size(epr_result)


def test_same_seed_same_epr_artifact(epr_result, tmp_path):
    from compress import CompressConfig, compress_model

    again = compress_model(CompressConfig(rate_lambda=2.0, **_QUICK), log=lambda _: None)
    a = epr_result.model.save(tmp_path / "a.dcz").read_bytes()
    b = again.model.save(tmp_path / "b.dcz").read_bytes()
    assert a == b
