"""An artifact's float model as a PyTorch module (the attacks' surrogate, PyTorch's timings)."""

from __future__ import annotations

import torch
from torch import nn

from core.artifact import CompressedModel

from .lq import FixedLevels
from .train import canonical_sequential

__all__ = ["to_torch"]


def to_torch(model: CompressedModel) -> nn.Sequential:
    """An ``nn.Sequential`` (Flatten, Linear or Conv2d, ReLU, pooling ...) holding ``model``'s
    shared float weights, with each layer's learned activation levels (A10) after its ReLU: the
    same function as :meth:`core.artifact.CompressedModel.forward`."""
    linears = []
    for layer in model.layers:
        g = layer.geometry
        if g is None:
            linear = nn.Linear(layer.in_features, layer.out_features)
        else:
            linear = nn.Conv2d(g.in_channels, layer.out_features,
                               (g.kernel_height, g.kernel_width), stride=g.stride,
                               padding=g.padding)
            linear.geometry = g
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(layer.weight).reshape(linear.weight.shape))
            linear.bias.copy_(torch.from_numpy(layer.bias))
        linears.append(linear)
    net = canonical_sequential(linears, [layer.relu for layer in model.layers])
    modules = []
    for module in net:
        modules.append(module)
        if isinstance(module, nn.ReLU):
            layer = model.layers[sum(isinstance(m, (nn.Linear, nn.Conv2d))
                                     for m in modules) - 1]
            if layer.activation_levels is not None:
                modules.append(FixedLevels(layer.activation_levels))
    return nn.Sequential(*modules)
