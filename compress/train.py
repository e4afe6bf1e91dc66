"""Deterministic training loops for the dense, pruned and weight-shared networks.

One loop serves every phase: plain training, retraining with fixed pruning masks (Han et al.
2015, "Learning both Weights and Connections"), and fine-tuning of shared centroids (Deep
Compression §3.3). Same seed, same data: same weights, on any number of threads, because
:func:`compress.compress_model` trains inside :func:`torch_threads` (one thread).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from .progress import progress_bar

__all__ = ["TRAINING_THREADS", "SharedLinear", "accuracy", "canonical_sequential", "conv_forward",
           "geometry_of", "matrix", "predict", "torch_threads", "train"]

#: Threads of torch's CPU kernels while compressing. PyTorch's reductions (the matrix
#: products' sums, the loss's mean) add in an order that depends on how the work is split
#: between threads, so training on 1 and on 2 threads gave artifacts that differ in the last
#: bits of the weights (and then in pruning and sharing decisions). One thread gives one order
#: everywhere. On this project's 2-core machine the default digits job was no slower for it
#: (issue 20: 14.8 s of CPU on one thread before the change, 203 s on two sharing busy cores).
TRAINING_THREADS = 1


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(n)``; the previous count is restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _CodebookLookup(torch.autograd.Function):
    """``codebook[index]`` whose backward sums each entry's gradients in a fixed order.

    Autograd's own backward of indexing accumulates in parallel in no fixed order, so the same
    seed could give centroids that differ in the last bit; ``bincount`` is sequential.
    """

    @staticmethod
    def forward(ctx, codebook: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.size = codebook.shape[0]
        return codebook[index]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        summed = torch.bincount(index.reshape(-1), weights=grad.reshape(-1).double(),
                                minlength=ctx.size)
        return summed.to(grad.dtype), None


class SharedLinear(nn.Module):
    """A Linear (or Conv2d) layer whose weights are ``codebook[index]`` with ``codebook[0] == 0``
    fixed.

    Only the nonzero centroids (``centroids``) and the bias are trainable. Because the weight is
    gathered from the centroids, autograd sums the gradients of every weight of a cluster into its
    centroid: exactly the update of Deep Compression §3.3 (Han et al. 2016, Fig. 3). Masks and
    assignments stay fixed, so a pruned weight (index 0) stays exactly zero. With a
    :class:`~core.geometry.ConvGeometry` the layer is a convolution (``index`` of shape
    ``(O, C, kh, kw)``; A12).
    """

    def __init__(self, index: torch.Tensor, centroids: torch.Tensor, bias: torch.Tensor,
                 geometry=None):
        super().__init__()
        self.register_buffer("index", index.to(torch.long))
        self.centroids = nn.Parameter(centroids.detach().clone().to(torch.float32))
        self.bias = nn.Parameter(bias.detach().clone().to(torch.float32))
        self.geometry = geometry

    @property
    def codebook(self) -> torch.Tensor:
        return torch.cat([self.centroids.new_zeros(1), self.centroids])

    @property
    def weight(self) -> torch.Tensor:
        return _CodebookLookup.apply(self.codebook, self.index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.geometry is not None:
            return conv_forward(x, self.weight, self.bias, self.geometry)
        return nn.functional.linear(x, self.weight, self.bias)


def conv_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 geometry) -> torch.Tensor:
    """A12 in float: ``conv2d`` of the ``(n, C, H, W)`` maps with the geometry's stride and
    zero padding; ``weight`` of shape ``(O, C, kh, kw)`` or ``(O, C kh kw)``."""
    g = geometry
    weight = weight.reshape(weight.shape[0], g.in_channels, g.kernel_height, g.kernel_width)
    return nn.functional.conv2d(x, weight, bias, stride=g.stride, padding=g.padding)


def matrix(weight):
    """A layer's weight (a tensor or an array) as its matrix: ``(out, in)``, or a kernel's
    ``(O, C kh kw)`` (A12)."""
    return weight.reshape(len(weight), -1)


def geometry_of(layer: nn.Module):
    """The :class:`~core.geometry.ConvGeometry` of a weighted layer, ``None`` for a Linear
    one (an ``nn.Conv2d`` carries it as ``.geometry``, set by the pipeline)."""
    return getattr(layer, "geometry", None)


def canonical_sequential(linears: Sequence[nn.Module], relus: Sequence[bool]) -> nn.Sequential:
    """Each layer, with a ``ReLU`` after those flagged and its pooling (A13) after a
    convolution; an ``Unflatten`` to the first convolution's input maps and a ``Flatten`` after
    the last, so the network takes and gives 2-D feature matrices."""
    geometries = [geometry_of(layer) for layer in linears]
    first = geometries[0] if geometries else None
    layers: list[nn.Module] = [
        nn.Flatten() if first is None else
        nn.Unflatten(1, (first.in_channels, first.in_height, first.in_width))]
    last_conv = max((i for i, g in enumerate(geometries) if g is not None), default=-1)
    for i, (layer, relu, geometry) in enumerate(zip(linears, relus, geometries)):
        layers.append(layer)
        if relu:
            layers.append(nn.ReLU())
        if geometry is not None and geometry.pool is not None:
            layers.append(nn.MaxPool2d(2) if geometry.pool == "max" else nn.AvgPool2d(2))
        if i == last_conv:
            layers.append(nn.Flatten())
    return nn.Sequential(*layers)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Class predictions (argmax of the logits) for a float feature matrix."""
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        out.append(model(torch.from_numpy(x[start:start + batch_size])).argmax(1).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of samples classified correctly."""
    return float((predict(model, x) == y).mean())


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float,
          batch_size: int, seed: int, weight_decay: float = 0.0,
          masks: dict[nn.Parameter, torch.Tensor] | None = None,
          regularizer: Callable[[], torch.Tensor] | None = None,
          on_epoch: Callable[[int], None] | None = None,
          on_step: Callable[[int], None] | None = None,
          adversary=None, optimizer: str = "sgd", lr_scales: dict | None = None,
          desc: str = "train", progress: bool = True) -> list[float]:
    """Train with SGD (Nesterov momentum 0.9), or Adam, and a cosine learning-rate schedule.

    Parameters
    ----------
    masks : dict, optional
        Parameter to 0/1 tensor of its shape. Masked entries get no gradient and are set back to
        exactly zero after every step, so pruned weights stay zero.
    regularizer : callable, optional
        Returns an extra loss term, added to the cross entropy (DP-Net's clustering penalty).
    on_epoch : callable, optional
        Called with the epoch number before each epoch (e.g. to re-cluster).
    on_step : callable, optional
        Called with the step number (from 0, over all epochs) before each step's forward pass
        (TRP's low-rank projection).
    adversary : compress.adversarial.Adversary, optional
        Adversarial training: its ``loss(model, x, y)`` replaces the cross entropy.
    optimizer : str
        ``"sgd"`` (the default) or ``"adam"`` (EPR; ``weight_decay`` then as Adam's).
    lr_scales : dict, optional
        Parameter to a factor of ``lr`` for it (EPR's steps and model scales).

    Returns
    -------
    list of float
        Mean training loss per epoch.
    """
    if epochs <= 0:
        return []
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be sgd or adam, not {optimizer!r}")
    lr_scales = lr_scales or {}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = {}
    for p in params:
        groups.setdefault(float(lr_scales.get(p, 1.0)), []).append(p)
    groups = [{"params": ps, "lr": lr * scale} for scale, ps in groups.items()]
    if optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True,
                                    weight_decay=weight_decay)
    else:
        optimizer = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, -(-len(x) // batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    masks = masks or {}
    history = []
    step = 0
    bar = progress_bar(range(epochs), desc=desc, unit="epoch", enabled=progress)
    for epoch in bar:
        if on_epoch is not None:
            on_epoch(epoch)
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            if on_step is not None:
                on_step(step)
            step += 1
            if adversary is None:
                loss = loss_fn(model(x_t[batch]), y_t[batch])
            else:
                loss = adversary.loss(model, x_t[batch], y_t[batch])
            if regularizer is not None:
                loss = loss + regularizer()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for param, mask in masks.items():
                if param.grad is not None:
                    param.grad.mul_(mask)
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                for param, mask in masks.items():
                    param.mul_(mask)
            total += loss.item() * len(batch)
        history.append(total / len(x))
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    model.eval()
    return history
