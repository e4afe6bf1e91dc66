"""Built-in models, model loading, and the check that a network is one the project can compress.

A supported network is a chain of ``Conv2d``, ``MaxPool2d``/``AvgPool2d`` (2 x 2, stride 2),
``ReLU``, ``Flatten``, ``Linear`` and ``BatchNorm`` directly after a ``Conv2d`` or ``Linear``
(folded into it): an ``nn.Sequential`` (nested ones are flattened) or any module ``torch.fx``
can trace to such a chain. It is reduced to a list of :class:`LinearSpec`, each a weighted layer (``Linear`` or
``Conv2d``) with a flag saying whether a ReLU follows it and, for a convolution, its
:class:`~core.geometry.ConvGeometry` (input map, kernel, stride, padding, pooling;
``docs/arithmetic.md`` A12-A13). The project feeds 2-D feature matrices (``core.datasets``), image
samples flattened channel-major, so a ``Flatten`` before the first layer is a no-op and the first
convolution reads its input map from the data set's sample shape.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.geometry import POOLS, STRIDES, ConvGeometry

__all__ = ["BUILTIN_MODELS", "LinearSpec", "Recipe", "build_builtin", "linear_chain", "load_model"]

_SUPPORTED = ("Linear, Conv2d (groups 1, dilation 1, zero padding), MaxPool2d and AvgPool2d "
              "(2x2, stride 2), ReLU, Flatten, Unflatten first, BatchNorm1d/2d directly after a "
              "Linear or Conv2d, Dropout and Identity (no-ops)")


@dataclass(frozen=True)
class Recipe:
    """How a model is trained and compressed by default.

    ``density`` holds one target density (fraction of weights kept) per Linear layer; the last
    entry is repeated for layers beyond the list.
    """

    epochs: int = 30
    lr: float = 0.05
    batch_size: int = 64
    weight_decay: float = 1e-4
    density: tuple[float, ...] = (0.1,)
    prune_rounds: int = 3
    retrain_epochs: int = 8
    finetune_epochs: int = 6
    # A centroid's gradient sums its whole cluster's, so its step is far larger than a weight's.
    finetune_lr: float = 0.001
    bits: tuple[int, ...] = (4,)


@dataclass(frozen=True)
class _Builtin:
    sizes: tuple[int, ...]
    dataset: str
    recipe: Recipe = field(default_factory=Recipe)
    #: Convolutions before the Linear layers: (out_channels, kernel, pool) each, no ReLU (Caffe's
    #: LeNet-5); ``sizes[0]`` is then the flattened feature count after them.
    convs: tuple[tuple[int, int, str], ...] = ()
    in_shape: tuple[int, ...] = ()


#: Built-in models by name. ``digits-mlp`` (the default) suits scikit-learn's 8x8 digits;
#: ``lenet-300-100`` is the Deep Compression paper's MNIST MLP (LeCun et al. 1998);
#: ``cancer-mlp`` a small MLP for the signed tabular ``breast-cancer`` data set.
BUILTIN_MODELS: dict[str, _Builtin] = {
    "digits-mlp": _Builtin(
        sizes=(64, 256, 256, 10), dataset="digits",
        recipe=Recipe(epochs=60, lr=0.05, batch_size=32, weight_decay=1e-4,
                      density=(0.12, 0.03, 0.4), prune_rounds=4, retrain_epochs=15,
                      finetune_epochs=10, finetune_lr=0.0005, bits=(4,))),
    "lenet-300-100": _Builtin(
        sizes=(784, 300, 100, 10), dataset="mnist",
        recipe=Recipe(epochs=30, lr=0.05, batch_size=64, weight_decay=1e-4,
                      density=(0.05, 0.05, 0.25), prune_rounds=4, retrain_epochs=8,
                      finetune_epochs=6, bits=(4, 4, 5))),
    "cancer-mlp": _Builtin(
        sizes=(30, 32, 16, 2), dataset="breast-cancer",
        recipe=Recipe(epochs=60, lr=0.02, batch_size=32, weight_decay=1e-3,
                      density=(0.3, 0.3, 0.6), prune_rounds=3, retrain_epochs=15,
                      finetune_epochs=10, finetune_lr=0.0005, bits=(4,))),
    # Caffe's LeNet-5 (Deep Compression Table 2, EPR Table 1): conv 20@5x5, max-pool, conv 50@5x5,
    # max-pool, Linear 800-500, ReLU, Linear 500-10; no ReLU after the convolutions. The
    # densities are the paper's (Table 4: 66%, 12%, 8%, 19%).
    "lenet-5": _Builtin(
        sizes=(800, 500, 10), dataset="mnist", convs=((20, 5, "max"), (50, 5, "max")),
        in_shape=(1, 28, 28),
        recipe=Recipe(epochs=20, lr=0.02, batch_size=64, weight_decay=1e-4,
                      density=(0.66, 0.12, 0.08, 0.19), prune_rounds=3, retrain_epochs=5,
                      finetune_epochs=4, bits=(5, 5, 4, 5))),
}


@dataclass(frozen=True)
class LinearSpec:
    """One weighted layer of a supported chain (``linear``: an ``nn.Linear`` or ``nn.Conv2d``,
    with any BatchNorm after it folded in), whether a ReLU follows it and, for a convolution,
    its geometry (A12-A13)."""

    linear: nn.Module
    relu: bool
    name: str
    geometry: ConvGeometry | None = None

    @property
    def in_size(self) -> int:
        """Activations in (``C x H x W`` for a convolution)."""
        return self.geometry.input_size if self.geometry else self.linear.in_features

    @property
    def out_size(self) -> int:
        """Activations out, after pooling."""
        if self.geometry is None:
            return self.linear.out_features
        return self.geometry.output_size(self.linear.out_channels)


def build_builtin(name: str, *, seed: int = 0) -> nn.Sequential:
    """An untrained built-in model, initialised deterministically from ``seed``."""
    if name not in BUILTIN_MODELS:
        raise ValueError(f"model must be one of {', '.join(BUILTIN_MODELS)} or a path to a "
                         f"torch.save()d module, not {name!r}")
    builtin = BUILTIN_MODELS[name]
    sizes = builtin.sizes
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        layers: list[nn.Module] = []
        channels = builtin.in_shape[0] if builtin.convs else 0
        for out_channels, kernel, pool in builtin.convs:
            layers.append(nn.Conv2d(channels, out_channels, kernel))
            layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
            channels = out_channels
        layers.append(nn.Flatten())
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)
    finally:
        torch.random.set_rng_state(generator_state)


def load_model(spec: str | os.PathLike, *, seed: int = 0,
               input_shape: tuple[int, ...] | None = None) -> tuple[nn.Module, bool]:
    """A built-in model by name (untrained) or a ``torch.save()``d module from a path.

    Returns ``(module, is_builtin)``. A loaded module is checked with :func:`linear_chain`
    (``input_shape``: the data's sample shape, which a leading convolution needs).
    """
    spec_str = os.fspath(spec)
    if spec_str in BUILTIN_MODELS:
        return build_builtin(spec_str, seed=seed), True
    path = Path(spec_str)
    if not path.exists():
        raise ValueError(f"model must be one of {', '.join(BUILTIN_MODELS)} or a path to a "
                         f"torch.save()d module, not {spec_str!r} (no such file)")
    try:
        # A whole pickled module (not a state dict): only load files you trust.
        module = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for a bad file
        raise ValueError(f"{path} could not be read as a torch.save()d module: {error}") from None
    if not isinstance(module, nn.Module):
        raise ValueError(f"{path} holds a {type(module).__name__}, not an nn.Module "
                         "(save the whole module with torch.save(model, path), not a state_dict)")
    linear_chain(module, input_shape)
    return module, False


def linear_chain(module: nn.Module,
                 input_shape: tuple[int, ...] | None = None) -> list[LinearSpec]:
    """Reduce a supported network to its weighted layers, each with its ReLU flag and, for a
    convolution, its geometry.

    Parameters
    ----------
    input_shape : tuple of int, optional
        One sample's shape, ``(C, H, W)`` or ``(H, W)`` (one channel), for a network whose first
        layer is a convolution (default: the built-in LeNet-5's ``(1, 28, 28)`` is not assumed;
        such a network without a shape is refused).

    Raises
    ------
    ValueError
        A layer outside the supported set (named, with the set), a ReLU or pooling without a
        layer before it, a network that is not a simple chain, or layers whose sizes do not
        connect.
    """
    if isinstance(module, nn.Sequential):
        items = [(name, m) for name, m in _flatten_sequential(module, "")]
    else:
        items = _trace_chain(module)
    chain = _Chain(_map_shape(input_shape))
    for name, item in items:
        chain.add(name, item)
    return chain.finish()


def _map_shape(input_shape) -> tuple[int, int, int] | None:
    if input_shape is None:
        return None
    shape = tuple(int(v) for v in input_shape)
    if len(shape) == 2:
        shape = (1,) + shape
    return shape if len(shape) == 3 else None


class _Chain:
    """The walk of :func:`linear_chain`: one item at a time, with the activation tensor's shape
    (``(C, H, W)`` while maps flow, ``None`` once flattened or unknown)."""

    def __init__(self, map_shape):
        self.specs: list[LinearSpec] = []
        self.map_shape = map_shape         # the tensor a convolution would read
        self.flat = False                  # a Flatten since the last convolution

    def add(self, name: str, item) -> None:
        if isinstance(item, nn.Linear):
            self._linear(name, item)
        elif isinstance(item, nn.Conv2d):
            self._conv(name, item)
        elif isinstance(item, nn.ReLU) or item == "relu":
            self._relu(name)
        elif isinstance(item, (nn.MaxPool2d, nn.AvgPool2d)) or (
                isinstance(item, tuple) and item[0] in POOLS):
            self._pool(name, item)
        elif isinstance(item, (nn.BatchNorm1d, nn.BatchNorm2d)):
            self._batch_norm(name, item)
        elif isinstance(item, nn.Unflatten):
            self._unflatten(name, item)
        elif isinstance(item, nn.Flatten) or item == "flatten":
            if self.specs and self.specs[-1].geometry is not None:
                self.flat = True
        elif isinstance(item, (nn.Identity, nn.Dropout)):
            return                          # no-ops at inference
        else:
            kind = type(item).__name__ if isinstance(item, nn.Module) else str(item)
            raise ValueError(f"layer {name!r} ({kind}) is not supported; supported layers: "
                             f"{_SUPPORTED}")

    def _linear(self, name: str, item: nn.Linear) -> None:
        if self.specs:
            last = self.specs[-1]
            if last.geometry is not None and not self.flat:
                raise ValueError(f"layer {name!r} (Linear) follows a convolution without a "
                                 "Flatten between them (PyTorch would apply it to the maps' "
                                 "last axis): add nn.Flatten()")
            if last.out_size != item.in_features:
                raise ValueError(f"layer {name!r} takes {item.in_features} inputs but the layer "
                                 f"before it gives {last.out_size}")
        self.specs.append(LinearSpec(item, False, name))
        self.map_shape = None
        self.flat = False

    def _conv(self, name: str, item: nn.Conv2d) -> None:
        problems = []
        if item.groups != 1:
            problems.append(f"groups {item.groups} (only 1)")
        if tuple(item.dilation) != (1, 1):
            problems.append(f"dilation {tuple(item.dilation)} (only 1)")
        if item.padding_mode != "zeros":
            problems.append(f"padding_mode {item.padding_mode!r} (only 'zeros')")
        kh, kw = item.kernel_size
        padding = item.padding
        if padding == "same":
            if kh != kw or kh % 2 == 0:
                problems.append("padding 'same' with an even or non-square kernel")
                padding = (0, 0)
            else:
                padding = ((kh - 1) // 2,) * 2
        elif padding == "valid":
            padding = (0, 0)
        if len(set(padding)) != 1:
            problems.append(f"padding {tuple(padding)} (the same on both axes)")
        if len(set(item.stride)) != 1 or item.stride[0] not in STRIDES:
            problems.append(f"stride {tuple(item.stride)} (1 or 2, the same on both axes)")
        if problems:
            raise ValueError(f"layer {name!r} (Conv2d) has " + ", ".join(problems)
                             + f"; supported layers: {_SUPPORTED}")
        if self.specs and self.specs[-1].geometry is None:
            raise ValueError(f"layer {name!r} (Conv2d) follows a Linear layer; convolutions must "
                             "come before the Linear layers")
        if self.flat:
            raise ValueError(f"layer {name!r} (Conv2d) follows a Flatten; convolutions must come "
                             "before it")
        if self.map_shape is None:
            raise ValueError(f"layer {name!r} (Conv2d) needs the input's shape (C, H, W): give the "
                             "data set's sample shape (images), or start the network with a "
                             "Linear layer")
        channels, height, width = self.map_shape
        if channels != item.in_channels:
            raise ValueError(f"layer {name!r} takes {item.in_channels} channels but its input has "
                             f"{channels} ({channels}x{height}x{width})")
        try:
            geometry = ConvGeometry(channels, height, width, kh, kw, stride=int(item.stride[0]),
                                    padding=int(padding[0]))
        except ValueError as error:
            raise ValueError(f"layer {name!r} (Conv2d): {error}") from None
        self.specs.append(LinearSpec(item, False, name, geometry))
        self.map_shape = (item.out_channels, geometry.out_height, geometry.out_width)

    def _unflatten(self, name: str, item: nn.Unflatten) -> None:
        """An ``Unflatten(1, (C, H, W))`` before the first layer gives the input maps (the
        pipeline's own float networks start with one)."""
        shape = tuple(int(v) for v in item.unflattened_size)
        if self.specs or item.dim != 1 or len(shape) not in (2, 3):
            raise ValueError(f"layer {name!r} (Unflatten) is supported only first, as "
                             "Unflatten(1, (C, H, W)) or Unflatten(1, (H, W))")
        shape = (1,) + shape if len(shape) == 2 else shape
        if self.map_shape is not None and \
                int(np.prod(shape)) != int(np.prod(self.map_shape)):
            raise ValueError(f"layer {name!r} unflattens to {shape}, {int(np.prod(shape))} "
                             f"values, but the input has {int(np.prod(self.map_shape))}")
        self.map_shape = shape

    def _relu(self, name: str) -> None:
        if not self.specs:
            raise ValueError(f"layer {name!r} (ReLU) comes before the first Linear or Conv2d; a "
                             "ReLU must follow a weighted layer")
        last = self.specs[-1]
        if last.relu:
            return                          # ReLU twice is ReLU
        if last.geometry is not None and last.geometry.pool == "avg":
            raise ValueError(f"layer {name!r} (ReLU) follows an AvgPool2d: the integer path "
                             "averages after the ReLU (docs/arithmetic.md A13), and the ReLU of "
                             "an average is another function; put the ReLU before the "
                             "AvgPool2d, or use MaxPool2d, which commutes with it")
        self.specs[-1] = replace(last, relu=True)

    def _pool(self, name: str, item) -> None:
        kind, kernel, stride, extra = _pool_settings(item)
        last = self.specs[-1] if self.specs else None
        if last is None or last.geometry is None or self.flat:
            raise ValueError(f"layer {name!r} ({kind} pooling) must follow a Conv2d (and its "
                             "ReLU, if any)")
        if last.geometry.pool is not None:
            raise ValueError(f"layer {name!r}: one pooling per convolution is supported; "
                             f"{last.name!r} already has one")
        if kernel != 2 or stride != 2 or extra:
            raise ValueError(f"layer {name!r} ({kind} pooling) has kernel {kernel}, stride "
                             f"{stride}{', ' + extra if extra else ''}; only a 2x2 window with "
                             "stride 2, no padding, floor mode is supported (docs/arithmetic.md "
                             "A13)")
        try:
            geometry = replace(last.geometry, pool=kind)
        except ValueError as error:
            raise ValueError(f"layer {name!r}: {error}") from None
        self.specs[-1] = replace(last, geometry=geometry)
        self.map_shape = (last.linear.out_channels, geometry.out_height, geometry.out_width)

    def _batch_norm(self, name: str, item) -> None:
        last = self.specs[-1] if self.specs else None
        pooled = last is not None and last.geometry is not None and last.geometry.pool
        if last is None or last.relu or pooled or self.flat or not isinstance(
                last.linear, nn.Conv2d if isinstance(item, nn.BatchNorm2d) else nn.Linear):
            raise ValueError(f"layer {name!r} ({type(item).__name__}) does not directly follow "
                             f"a {'Conv2d' if isinstance(item, nn.BatchNorm2d) else 'Linear'} "
                             "layer, so it cannot be folded into one; move it there or fold it "
                             "yourself")
        self.specs[-1] = replace(last, linear=_fold_batch_norm(last.linear, item, name))

    def finish(self) -> list[LinearSpec]:
        if not self.specs:
            raise ValueError(f"the model has no Linear or Conv2d layer; supported layers: "
                             f"{_SUPPORTED}")
        return self.specs


def _pool_settings(item) -> tuple[str, int, int, str]:
    """(kind, kernel, stride, what else is unsupported) of a pooling module or traced call."""
    if isinstance(item, tuple):
        kind, kernel, stride, extra = item
    else:
        kind = "max" if isinstance(item, nn.MaxPool2d) else "avg"
        kernel, stride = item.kernel_size, item.stride
        extras = []
        if item.padding not in (0, (0, 0)):
            extras.append(f"padding {item.padding}")
        if item.ceil_mode:
            extras.append("ceil_mode")
        if kind == "max" and item.dilation not in (1, (1, 1)):
            extras.append(f"dilation {item.dilation}")
        if kind == "avg" and item.divisor_override is not None:
            extras.append(f"divisor_override {item.divisor_override}")
        extra = ", ".join(extras)
    kernel = _square(kernel)
    stride = kernel if stride is None or stride == () or stride == [] else _square(stride)
    return kind, kernel, stride, extra


def _square(value):
    if isinstance(value, (tuple, list)):
        return value[0] if len(set(value)) == 1 else tuple(value)
    return value


def _fold_batch_norm(layer: nn.Module, norm, name: str) -> nn.Module:
    """A copy of ``layer`` with the (inference-mode) BatchNorm after it folded in:
    ``w' = w * g / sqrt(var + eps)``, ``b' = (b - mean) * g / sqrt(var + eps) + beta``."""
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError(f"layer {name!r} ({type(norm).__name__}) has no running statistics "
                         "(track_running_stats=False), so it cannot be folded")
    out = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
    if norm.num_features != out:
        raise ValueError(f"layer {name!r} normalizes {norm.num_features} features, the layer "
                         f"before it gives {out}")
    import copy

    folded = copy.deepcopy(layer)
    with torch.no_grad():
        scale = torch.rsqrt(norm.running_var.double() + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight.double()
        shift = -norm.running_mean.double() * scale
        if norm.bias is not None:
            shift = shift + norm.bias.double()
        bias = layer.bias.double() if layer.bias is not None else torch.zeros(out,
                                                                               dtype=torch.float64)
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        folded.weight.copy_((layer.weight.double() * scale.reshape(shape)).float())
        new_bias = (bias * scale + shift).float()
        if folded.bias is None:
            folded.bias = nn.Parameter(new_bias)
        else:
            folded.bias.copy_(new_bias)
    return folded


def _traced_pool(kind: str, node) -> tuple:
    """A traced ``max_pool2d``/``avg_pool2d`` call as ``(kind, kernel, stride, extra)``."""
    names = ("kernel_size", "stride", "padding")
    settings = dict(zip(names, node.args[1:]))
    settings.update({k: v for k, v in node.kwargs.items()})
    extras = [f"{k} {settings[k]}" for k in ("padding", "dilation") if settings.get(k) not in
              (None, 0, 1, (0, 0), (1, 1))]
    extras += [k for k in ("ceil_mode",) if settings.get(k)]
    if settings.get("divisor_override") is not None:
        extras.append("divisor_override")
    return kind, settings.get("kernel_size"), settings.get("stride"), ", ".join(extras)


def _flatten_sequential(seq: nn.Sequential, prefix: str):
    for name, child in seq.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            yield from _flatten_sequential(child, full + ".")
        else:
            yield full, child


def _trace_chain(module: nn.Module) -> list[tuple[str, object]]:
    import torch.fx
    import torch.nn.functional as F

    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception as error:
        raise ValueError(f"{type(module).__name__} is neither an nn.Sequential nor traceable by "
                         f"torch.fx ({error}); supported layers: {_SUPPORTED}") from None
    functions = {torch.relu: "relu", F.relu: "relu", torch.flatten: "flatten"}
    methods = {"relu": "relu", "flatten": "flatten"}
    pools = {F.max_pool2d: "max", torch.max_pool2d: "max", F.avg_pool2d: "avg"}
    modules = dict(module.named_modules())
    items: list[tuple[str, object]] = []
    previous = None
    for node in graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                raise ValueError(f"{type(module).__name__} takes more than one input")
            previous = node
            continue
        if node.op == "output":
            if node.args[0] is not previous:
                raise ValueError(f"{type(module).__name__} is not a simple chain of layers")
            break
        if not node.args or node.args[0] is not previous or any(
                isinstance(a, torch.fx.Node) for a in node.args[1:]):
            raise ValueError(f"{type(module).__name__} is not a simple chain of layers "
                             f"(at {node.name!r}); supported layers: {_SUPPORTED}")
        if node.op == "call_module":
            items.append((str(node.target), modules[node.target]))
        elif node.op == "call_function" and node.target in functions:
            items.append((node.name, functions[node.target]))
        elif node.op == "call_function" and node.target in pools:
            items.append((node.name, _traced_pool(pools[node.target], node)))
        elif node.op == "call_method" and node.target in ("view", "reshape") and \
                len(node.args) == 3 and -1 in node.args[1:] and all(
                    isinstance(a, int) for a in node.args[1:]):
            items.append((node.name, "flatten"))     # x.view(-1, N) or x.view(N, -1)
        elif node.op == "call_method" and node.target in methods:
            items.append((node.name, methods[node.target]))
        else:
            target = getattr(node.target, "__name__", node.target)
            raise ValueError(f"operation {node.name!r} ({target}) is not supported; supported "
                             f"layers: {_SUPPORTED}")
        previous = node
    return items
