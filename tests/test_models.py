"""Only chains of the supported layers are accepted, with errors naming the layer (the
convolution chains are in test_conv.py)."""

import pytest
import torch
from torch import nn

from compress.models import BUILTIN_MODELS, build_builtin, linear_chain, load_model


def test_builtins_are_chains():
    for name, builtin in BUILTIN_MODELS.items():
        specs = linear_chain(build_builtin(name), builtin.in_shape or None)
        linears = [s for s in specs if s.geometry is None]
        assert len(specs) - len(linears) == len(builtin.convs)
        assert [s.linear.in_features for s in linears] == list(builtin.sizes[:-1])
        assert [s.relu for s in linears] == [True] * (len(linears) - 1) + [False]


def test_builtin_init_is_deterministic_and_keeps_global_rng():
    state = torch.random.get_rng_state()
    a, b = build_builtin("digits-mlp", seed=5), build_builtin("digits-mlp", seed=5)
    assert torch.equal(a[1].weight, b[1].weight)
    assert torch.equal(state, torch.random.get_rng_state())


def test_nested_sequential_and_traced_module():
    nested = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(4, 3), nn.ReLU()),
                           nn.Linear(3, 2))
    assert [s.relu for s in linear_chain(nested)] == [True, False]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(3, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(torch.flatten(x, 1))))

    specs = linear_chain(Net())
    assert [(s.name, s.relu) for s in specs] == [("a", True), ("b", False)]


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Linear(4, 3), nn.Tanh()), r"layer '1' \(Tanh\) is not supported; "
                                                 "supported layers: Linear, Conv2d"),
    (nn.Sequential(nn.Conv2d(1, 2, 3)), r"layer '0' \(Conv2d\) needs the input's shape"),
    (nn.Sequential(nn.ReLU(), nn.Linear(4, 3)), "comes before the first Linear"),
    (nn.Sequential(nn.Linear(4, 3), nn.Linear(5, 2)), "takes 5 inputs but the layer before it "
                                                      "gives 3"),
    (nn.Sequential(nn.Flatten()), "has no Linear or Conv2d layer"),
])
def test_unsupported(model, message):
    with pytest.raises(ValueError, match=message):
        linear_chain(model)


def test_traced_residual_is_refused():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            return self.a(x) + x

    with pytest.raises(ValueError, match="not a simple chain"):
        linear_chain(Residual())


def test_load_model_from_file(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(nn.Sequential(nn.Linear(64, 10)), path)
    module, builtin = load_model(path)
    assert not builtin and isinstance(module, nn.Sequential)
    torch.save(nn.Sequential(nn.Linear(64, 10)).state_dict(), path)
    with pytest.raises(ValueError, match="not an nn.Module"):
        load_model(path)
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="could not be read"):
        load_model(path)
    with pytest.raises(ValueError, match="model must be one of digits-mlp, lenet-300-100"):
        load_model(tmp_path / "missing.pt")
