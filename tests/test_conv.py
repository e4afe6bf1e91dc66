"""Convolutional networks through compress (issue 25): the chain check and its refusals,
BatchNorm folding, the geometry, the float model against PyTorch, the format-5 artifact, the
Deep Compression pipeline on a small conv net, and the clear refusals of the stages that do not
run convolutions yet. The integer rules (A12-A13) are property-tested against a loop in
``test_sim_properties.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import compress
import sim
from core.artifact import CompressedLayer, CompressedModel
from core.datasets import load_dataset
from core.geometry import ConvGeometry, im2col
from core.integer import quantize_model
from compress.models import build_builtin, linear_chain
from compress.pipeline import CompressConfig, compress_model
from compress.torch_model import to_torch

_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- the chain ----------------------------------------------------------------------------------

def test_builtin_lenet5_is_caffes():
    specs = linear_chain(build_builtin("lenet-5"), (1, 28, 28))
    assert [type(s.linear).__name__ for s in specs] == ["Conv2d", "Conv2d", "Linear", "Linear"]
    assert [s.relu for s in specs] == [False, False, True, False]
    assert [s.geometry.pool for s in specs[:2]] == ["max", "max"]
    assert [(s.in_size, s.out_size) for s in specs] == [(784, 2880), (2880, 800), (800, 500),
                                                         (500, 10)]
    parameters = sum(p.numel() for p in build_builtin("lenet-5").parameters())
    assert parameters == 431_080


def test_traced_module_with_functional_pooling_and_view():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
            return self.fc(x.view(-1, 64))

    specs = linear_chain(Net(), (8, 8))
    assert specs[0].geometry == ConvGeometry(1, 8, 8, 3, 3, stride=1, padding=1, pool="max")
    assert specs[0].relu and not specs[1].relu


def test_the_pipelines_own_float_network_is_a_chain():
    """canonical_sequential starts a conv net with Unflatten(1, (C, H, W)): it loads back."""
    from compress.train import canonical_sequential

    specs = linear_chain(build_builtin("lenet-5"), (1, 28, 28))
    for spec in specs:
        spec.linear.geometry = spec.geometry
    net = canonical_sequential([s.linear for s in specs], [s.relu for s in specs])
    again = linear_chain(net, (1, 28, 28))
    assert [(s.relu, s.geometry) for s in again] == [(s.relu, s.geometry) for s in specs]
    assert [s.geometry for s in linear_chain(net)] == [s.geometry for s in specs]
    with pytest.raises(ValueError, match="unflattens to"):
        linear_chain(net, (1, 8, 8))
    with pytest.raises(ValueError, match="supported only first"):
        linear_chain(nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Unflatten(1, (1, 2, 2))))


def test_max_pool_before_relu_is_the_same_function():
    a = linear_chain(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.ReLU()), (1, 6, 6))
    b = linear_chain(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)), (1, 6, 6))
    assert [(s.relu, s.geometry) for s in a] == [(s.relu, s.geometry) for s in b]


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2)), r"dilation \(2, 2\) \(only 1\)"),
    (nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), r"groups 2 \(only 1\)"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")), "padding_mode"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, stride=3)), r"stride \(3, 3\)"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, padding=(1, 0))), r"padding \(1, 0\)"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(3)), "only a 2x2 window with stride 2"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, stride=1)), "stride 1"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2, ceil_mode=True)), "ceil_mode"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2), nn.ReLU()), "follows an AvgPool2d"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.MaxPool2d(2)),
     "one pooling per convolution"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.BatchNorm2d(2)),
     r"does not directly follow a Conv2d"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm1d(2)), "does not directly follow a Linear"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(8, 2)), "without a Flatten"),
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Conv2d(1, 2, 3)), "follows a Linear"),
    (nn.Sequential(nn.Conv2d(2, 2, 3)), "takes 2 channels but its input has 1"),
    (nn.Sequential(nn.Conv2d(1, 2, 9)), "does not fit a 8x8 map"),
    (nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(1, 2, 3)), "must follow a Conv2d"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh()), r"\(Tanh\) is not supported; supported "
                                                   "layers: Linear, Conv2d"),
])
def test_unsupported_conv_chains_are_refused_by_name(model, message):
    with pytest.raises(ValueError, match=message):
        linear_chain(model, (1, 8, 8))


def test_a_convolution_needs_the_input_shape():
    with pytest.raises(ValueError, match=r"needs the input's shape \(C, H, W\)"):
        linear_chain(nn.Sequential(nn.Conv2d(1, 2, 3)))


@pytest.mark.parametrize("norm_after", ["conv", "linear"])
def test_batch_norm_is_folded_exactly(norm_after):
    torch.manual_seed(0)
    conv, linear = nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.Linear(3 * 3 * 3, 4)
    norm = nn.BatchNorm2d(3) if norm_after == "conv" else nn.BatchNorm1d(4)
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    parts = ([conv, norm, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), linear]
             if norm_after == "conv" else
             [conv, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), linear, norm])
    model = nn.Sequential(*parts).eval()
    specs = linear_chain(model, (2, 6, 6))
    assert len(specs) == 2
    from compress.train import canonical_sequential
    layers = [s.linear for s in specs]
    for layer, spec in zip(layers, specs):
        layer.geometry = spec.geometry
    folded = canonical_sequential(layers, [s.relu for s in specs]).eval()
    x = torch.rand(5, 2, 6, 6)
    torch.testing.assert_close(folded(x.reshape(5, -1)), model(x), atol=1e-5, rtol=1e-5)
    # the module itself is untouched
    assert any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model)


# -- the geometry ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(stride=3), "stride must be one of 1, 2"),
    (dict(padding=3), r"padding must be 0\.\.2"),
    (dict(pool="min"), "pool must be one of max, avg"),
    (dict(kernel_height=0), r"kernel_height must be 1\.\.11"),
    (dict(in_channels=0), r"in_channels must be 1\.\.4096"),
    (dict(in_height=300), r"in_height must be 1\.\.256"),
    (dict(kernel_height=7), "does not fit a 5x5 map"),
    (dict(kernel_height=5, kernel_width=5, pool="max"), "2x2 pooling needs a map of at least"),
])
def test_geometry_refuses_bad_values(kwargs, message):
    base = dict(in_channels=1, in_height=5, in_width=5, kernel_height=3, kernel_width=3)
    with pytest.raises(ValueError, match=message):
        ConvGeometry(**{**base, **kwargs})


def test_geometry_from_dict_refuses_unknown_fields():
    good = ConvGeometry(1, 5, 5, 3, 3).as_dict()
    assert ConvGeometry.from_dict(good) == ConvGeometry(1, 5, 5, 3, 3)
    with pytest.raises(ValueError, match="unknown fields"):
        ConvGeometry.from_dict({**good, "dilation": 2})
    with pytest.raises(ValueError, match="lacks"):
        ConvGeometry.from_dict({"in_channels": 1})


@settings(max_examples=60, **_SETTINGS)
@given(channels=st.integers(1, 3), height=st.integers(3, 10), width=st.integers(3, 10),
       kernel=st.integers(1, 3), stride=st.sampled_from([1, 2]), padding=st.integers(0, 2),
       pool=st.sampled_from([None, "max", "avg"]), out=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1))
def test_float_layer_equals_torch(channels, height, width, kernel, stride, padding, pool, out,
                                  seed):
    padding = min(padding, kernel - 1)
    geometry = ConvGeometry(channels, height, width, kernel, kernel, stride=stride,
                            padding=padding)
    if pool and (geometry.conv_height < 2 or geometry.conv_width < 2):
        pool = None
    geometry = ConvGeometry(channels, height, width, kernel, kernel, stride=stride,
                            padding=padding, pool=pool)
    rng = np.random.default_rng(seed)
    codebook = np.concatenate([[0.0], np.sort(rng.normal(size=7))]).astype(np.float32)
    layer = CompressedLayer(codebook=codebook,
                            index=rng.integers(0, 8, (out, geometry.columns)).astype(np.uint8),
                            bias=rng.normal(size=out).astype(np.float32), relu=True,
                            index_bits=3, geometry=geometry)
    x = rng.random((3, geometry.input_size)).astype(np.float32)
    net = to_torch(CompressedModel([layer]))
    want = net(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(layer.output(x), want, atol=1e-5, rtol=1e-5)
    patches = im2col(np.rint(x * 100).astype(np.int64), geometry)        # integers stay integers
    assert patches.dtype == np.int64
    assert patches.shape == (3, geometry.conv_height * geometry.conv_width, geometry.columns)


def test_layer_refuses_a_matrix_of_the_wrong_width():
    geometry = ConvGeometry(2, 5, 5, 3, 3)
    with pytest.raises(ValueError, match="has 18 weight columns, not 9"):
        CompressedLayer(codebook=[0.0, 1.0], index=np.ones((2, 9), np.uint8), bias=[0.0, 0.0],
                        relu=False, geometry=geometry)


def test_model_refuses_maps_that_do_not_connect():
    first = CompressedLayer(codebook=[0.0, 1.0], index=np.ones((2, 9), np.uint8),
                            bias=[0.0, 0.0], relu=True, geometry=ConvGeometry(1, 6, 6, 3, 3))
    # 2x4x4 = 32 values, read as 1x4x8 maps by the next convolution: same size, other maps
    second = CompressedLayer(codebook=[0.0, 1.0], index=np.ones((1, 9), np.uint8), bias=[0.0],
                             relu=False, geometry=ConvGeometry(1, 4, 8, 3, 3))
    with pytest.raises(ValueError, match="layer 0 does not give them"):
        CompressedModel([first, second])


# -- the pipeline ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, stride=2, padding=1),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 10)).eval()
    path = tmp_path_factory.mktemp("conv") / "net.pt"
    torch.save(net, path)
    config = CompressConfig(model=str(path), epochs=10, retrain_epochs=2, finetune_epochs=2,
                            prune_rounds=2, density=(0.6, 0.4, 0.8), bits=(4, 3, 4),
                            progress=False)
    return config, compress_model(config, log=lambda line: None)


def test_pipeline_compresses_a_conv_net(conv_run, tmp_path):
    config, result = conv_run
    model = result.model
    assert [layer.kind for layer in model.layers] == ["conv", "conv", "fc"]
    assert [layer.geometry.pool for layer in model.layers[:2]] == ["max", "avg"]
    assert model.layers[0].index.shape == (6, 9) and model.layers[1].index.shape == (8, 54)
    np.testing.assert_allclose([layer.density for layer in model.layers], [0.6, 0.4, 0.8],
                               atol=0.02)
    assert result.accuracy_compressed > 0.5 and result.accuracy_int > 0.5
    # the stored float model is the trained one, and the file keeps it and its integer twin
    loaded = compress.load(model.save(tmp_path / "m.dcz"))
    assert loaded.format_version == 5
    data = result.dataset
    np.testing.assert_array_equal(loaded.forward(data.x_test), model.forward(data.x_test))
    q = sim.quantize_input(loaded, data.x_test)
    np.testing.assert_array_equal(sim.run(loaded, q), sim.run(model, q))
    logits = to_torch(model)(torch.from_numpy(data.x_test)).detach().numpy()
    np.testing.assert_allclose(logits, model.forward(data.x_test), atol=1e-4, rtol=1e-4)


def test_pipeline_is_deterministic(conv_run):
    config, result = conv_run
    again = compress_model(config, log=lambda line: None).model
    for a, b in zip(result.model.layers, again.layers, strict=True):
        np.testing.assert_array_equal(a.index, b.index)
        np.testing.assert_array_equal(a.codebook, b.codebook)
        np.testing.assert_array_equal(a.integer.codebook, b.integer.codebook)


@pytest.mark.parametrize("method", ["trp", "svd"])
def test_low_rank_decomposes_conv_channels(conv_run, tmp_path, method):
    """TRP (and the SVD baseline) on kernels: a decomposed k x k convolution becomes one to r
    channels (no pooling, no ReLU) and a 1 x 1 convolution with the bias, ReLU and pooling."""
    from dataclasses import replace

    config, _ = conv_run
    config = replace(config, low_rank=method, energy=0.9, low_rank_epochs=1,
                     ranks=(4, 2, 6) if method == "svd" else None, density=(0.8,),
                     bits=(4,))
    result = compress_model(config, log=lambda line: None)
    model, report = result.model, result.low_rank
    assert [row.decomposed for row in report][1]
    kinds = [(layer.kind, layer.geometry) for layer in model.layers]
    split = 1 if report[0].decomposed else 0
    first, second = kinds[1 + split][1], kinds[2 + split][1]
    rank = report[1].rank
    assert (first.kernel_height, first.stride, first.padding, first.pool) == (3, 2, 1, None)
    assert (second.in_channels, second.kernel_height, second.pool) == (rank, 1, "avg")
    assert (second.in_height, second.in_width) == (first.conv_height, first.conv_width)
    assert not model.layers[1 + split].relu
    loaded = compress.load(model.save(tmp_path / "lowrank.dcz"))
    q = sim.quantize_input(loaded, result.dataset.x_test)
    np.testing.assert_array_equal(sim.run(loaded, q), sim.run(model, q))
    assert result.accuracy_int > 0.4


def test_the_engine_runs_the_pipelines_conv_net_exactly(conv_run):
    """The pipeline's artifact (conv, BatchNorm folded, max pool, strided conv, average pool,
    Linear) on the engine, in Amaranth's simulator: every feature map and logit equal ``sim``."""
    from accel.planning.plan import EnginePlan
    from accel.verification.amaranth_sim import run_engine

    config, result = conv_run
    model = result.model
    data = load_dataset(config.dataset or "digits", seed=config.seed)
    x = sim.quantize_input(model, data.x_test[:3])
    run = run_engine(EnginePlan.from_model(model, n_pes=2), x)
    want = sim.trace(model, x)
    assert [h.tolist() for h in run.hidden] == [w.tolist() for w in want[:-1]]
    assert run.logits.tolist() == want[-1].tolist()


def test_quantize_model_calibrates_conv_scales_before_pooling():
    """A13: the output scale covers the unpooled maps, so nothing the pooling sees saturates."""
    rng = np.random.default_rng(3)
    geometry = ConvGeometry(1, 6, 6, 3, 3, pool="avg")
    layer = CompressedLayer(codebook=np.array([0, -1, 1], np.float32),
                            index=rng.integers(0, 3, (2, 9)).astype(np.uint8),
                            bias=np.zeros(2, np.float32), relu=True, index_bits=2,
                            geometry=geometry)
    tail = CompressedLayer(codebook=np.array([0, 1], np.float32),
                           index=np.ones((3, 8), np.uint8), bias=np.zeros(3, np.float32),
                           relu=False, index_bits=1)
    x = rng.random((64, 36)).astype(np.float32)
    model = quantize_model(CompressedModel([layer, tail]), x)
    maps = np.maximum(layer.affine(x, np.float64), 0)
    assert model.layers[0].integer.output_scale == pytest.approx(maps.max() / 255)


def test_epr_trains_conv_kernels(conv_run, tmp_path):
    """EPR's latents on the kernels (A11-A12): a zero latent is a pruned weight, the distinct
    nonzero latents the codebook, and the range-coded file decodes to the same integer model."""
    from dataclasses import replace

    config, _ = conv_run
    config = replace(config, method="epr", rate_lambda=0.5, epr_epochs=2, density=None,
                     bits=None, prune_rounds=None)
    result = compress_model(config, log=lambda line: None)
    model = result.model
    assert [layer.kind for layer in model.layers] == ["conv", "conv", "fc"]
    assert all(layer.latents is not None for layer in model.layers)
    assert model.layers[1].latents.weight.values.shape == (8, 54)
    loaded = compress.load(model.save(tmp_path / "epr.dcz"))
    assert loaded.format_version == 5
    q = sim.quantize_input(loaded, result.dataset.x_test)
    np.testing.assert_array_equal(sim.run(loaded, q), sim.run(model, q))
    assert result.accuracy_int > 0.5


@pytest.mark.parametrize("quantizer, activation", [("lq", "none"), ("uniform", "lq"),
                                                   ("dp", "lq")])
def test_lq_nets_on_conv_kernels(conv_run, tmp_path, quantizer, activation):
    """LQ-Nets per output channel (A9) and learned activation levels (A10) on a conv net: the
    stored model, its file and sim agree."""
    from dataclasses import replace

    config, _ = conv_run
    if activation != "none":
        # learned activation levels start at 0 (A10): a ReLU after every hidden layer
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                            nn.Flatten(), nn.Linear(8, 10))
        torch.save(net, tmp_path / "relu.pt")
        config = replace(config, model=str(tmp_path / "relu.pt"))
    bits = (2, 2, 2) if quantizer != "dp" else (4, 3, 4)
    config = replace(config, quantizer=quantizer, bits=bits, activation_quantizer=activation,
                     activation_bits=2 if activation != "none" else 8)
    result = compress_model(config, log=lambda line: None)
    model = result.model
    assert [layer.kind for layer in model.layers] == ["conv", "conv", "fc"]
    if quantizer != "dp":
        assert all(layer.per_row and layer.basis is not None for layer in model.layers)
        assert model.layers[1].codebook.shape[0] == 8          # one per output channel
    if activation != "none":
        assert all(layer.activation_levels is not None for layer in model.layers[:-1])
    loaded = compress.load(model.save(tmp_path / "lq.dcz"))
    data = result.dataset
    np.testing.assert_array_equal(loaded.forward(data.x_test), model.forward(data.x_test))
    q = sim.quantize_input(loaded, data.x_test)
    np.testing.assert_array_equal(sim.run(loaded, q), sim.run(model, q))
    assert result.accuracy_int > 0.4
    # the stored float model is the network that was fine-tuned
    assert abs(result.accuracy_compressed - float(
        (model.forward(data.x_test).argmax(1) == data.y_test).mean())) < 1e-9
