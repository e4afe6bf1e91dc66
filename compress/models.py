"""Built-in models, model loading, and the check that a network is one the project can compress.

A supported network is a chain of ``Linear``, ``ReLU`` and ``Flatten``: an ``nn.Sequential`` (nested
ones are flattened) or any module ``torch.fx`` can trace to such a chain. It is reduced to a list
of :class:`LinearSpec`, each a ``Linear`` with a flag saying whether a ReLU follows it; ``Flatten``
is a no-op on the 2-D feature matrices the project feeds (see ``compress.data``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

__all__ = ["BUILTIN_MODELS", "LinearSpec", "Recipe", "build_builtin", "linear_chain", "load_model"]

_SUPPORTED = "Linear, ReLU, Flatten"


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
}


@dataclass(frozen=True)
class LinearSpec:
    """One ``Linear`` layer of a supported chain and whether a ReLU follows it."""

    linear: nn.Linear
    relu: bool
    name: str


def build_builtin(name: str, *, seed: int = 0) -> nn.Sequential:
    """An untrained built-in model, initialised deterministically from ``seed``."""
    if name not in BUILTIN_MODELS:
        raise ValueError(f"model must be one of {', '.join(BUILTIN_MODELS)} or a path to a "
                         f"torch.save()d module, not {name!r}")
    sizes = BUILTIN_MODELS[name].sizes
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)
    finally:
        torch.random.set_rng_state(generator_state)


def load_model(spec: str | os.PathLike, *, seed: int = 0) -> tuple[nn.Module, bool]:
    """A built-in model by name (untrained) or a ``torch.save()``d module from a path.

    Returns ``(module, is_builtin)``. A loaded module is checked with :func:`linear_chain`.
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
    linear_chain(module)
    return module, False


def linear_chain(module: nn.Module) -> list[LinearSpec]:
    """Reduce a supported network to its Linear layers, each with its ReLU flag.

    Raises
    ------
    ValueError
        A layer outside {Linear, ReLU, Flatten}, a ReLU before the first Linear, a network that is
        not a simple chain, or Linear layers whose sizes do not connect.
    """
    if isinstance(module, nn.Sequential):
        items = [(name, m) for name, m in _flatten_sequential(module, "")]
    else:
        items = _trace_chain(module)
    specs: list[LinearSpec] = []
    for name, item in items:
        if isinstance(item, nn.Linear):
            if specs and specs[-1].linear.out_features != item.in_features:
                raise ValueError(f"layer {name!r} takes {item.in_features} inputs but the layer "
                                 f"before it gives {specs[-1].linear.out_features}")
            specs.append(LinearSpec(item, False, name))
        elif isinstance(item, nn.ReLU) or item == "relu":
            if not specs:
                raise ValueError(f"layer {name!r} (ReLU) comes before the first Linear; "
                                 "a ReLU must follow a Linear layer")
            last = specs[-1]
            specs[-1] = LinearSpec(last.linear, True, last.name)
        elif isinstance(item, nn.Flatten) or item == "flatten":
            if specs:
                # After a Linear the activations are already (batch, features).
                continue
        else:
            kind = type(item).__name__ if isinstance(item, nn.Module) else str(item)
            raise ValueError(f"layer {name!r} ({kind}) is not supported; supported layers: "
                             f"{_SUPPORTED}")
    if not specs:
        raise ValueError(f"the model has no Linear layer; supported layers: {_SUPPORTED}")
    return specs


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
        elif node.op == "call_method" and node.target in methods:
            items.append((node.name, methods[node.target]))
        else:
            target = getattr(node.target, "__name__", node.target)
            raise ValueError(f"operation {node.name!r} ({target}) is not supported; supported "
                             f"layers: {_SUPPORTED}")
        previous = node
    return items
