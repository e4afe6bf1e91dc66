"""Entropy-penalized reparameterization (EPR, Oktay, Ballé, Singh & Shrivastava, ICLR 2020).

Each Linear (and Conv2d) layer's weight and bias are represented by latents: a float tensor in
the layer's own units and a learned step size per tensor (``log_step``); the forward pass uses
``round(latent / step) * step`` with a straight-through gradient, the integer
``round(latent / step)`` clamped to ``±LATENT_LIMIT`` (``docs/arithmetic.md`` A11: at most 254
nonzero values and zero, so a layer's codebook fits 8 index bits). A learned probability model
per tensor, a logistic of scale ``exp(log_scale)`` centred on 0 and discretized to the integers
(the public code's noisy logistic), gives the bits of the rounded latents; the training loss is
the task loss plus ``rate_lambda`` times the total bits divided by the parameter count (as the
public implementation, TensorFlow Model Optimization's ``epr.py``, normalises it). During
training the rate is that of the latents plus uniform noise in ``[-1/2, 1/2)``, a
differentiable stand-in for rounding; the model's parameters (latents, steps, scales) train
together.

- :func:`check_rate_lambda`: the one check of ``--rate-lambda``;
- :func:`logistic_bits`: ``-log2`` of the discretized logistic's probability;
- :class:`LatentTensor`: the parametrization of one tensor (``torch.nn.utils.parametrize``),
  with its step and its probability model;
- :class:`EntropyPenalizedReparameterization`: attaches them to every Linear and Conv2d layer
  of a network (a kernel's latents in the same scalar latent space as a matrix's: the paper's
  DFT of conv kernels is not used, so every latent is a weight and a zero latent a pruned one,
  A11-A12), gives the loss term for :func:`compress.train.train`, the per-layer bits and the
  integer latents, and removes itself (the rounded weights stay).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from core.latents import LATENT_LIMIT, LatentCode, LayerLatents

__all__ = ["MODEL_LR_SCALE", "EntropyPenalizedReparameterization", "LatentTensor",
           "check_rate_lambda", "logistic_bits"]

#: Smallest probability the rate term takes (the public code's likelihood bound, 1e-9): a
#: latent far in the tail costs about 30 bits, not infinity.
_LIKELIHOOD_BOUND = 1e-9
#: Factor of the learning rate for the steps' and the models' logarithms: they must move by
#: units where a weight moves by hundredths (with the weights' rate they barely leave their
#: initial values in a few epochs, and the model then prices a zero latent at 5 bits).
MODEL_LR_SCALE = 10.0
#: Initial ``log_step`` and ``log_scale`` (the public code's -4 and 2.5).
LOG_STEP_INIT = -4.0
LOG_SCALE_INIT = 2.5


def check_rate_lambda(value) -> float:
    """``rate_lambda`` as a float; ``ValueError`` unless a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value < 0:
        raise ValueError(f"rate_lambda must be a finite number >= 0, not {value!r}")
    return float(value)


def logistic_bits(y: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """``-log2 P(y)`` elementwise, ``P(y)`` the mass of ``[y - 1/2, y + 1/2]`` under a logistic
    of scale ``exp(log_scale)`` centred on 0, at least :data:`_LIKELIHOOD_BOUND`.

    Computed on ``-|y|`` (the logistic is symmetric): both sigmoids are then in the lower
    tail, where their difference keeps its precision.
    """
    scale = torch.exp(log_scale)
    a = -torch.abs(y)
    p = torch.sigmoid((a + 0.5) / scale) - torch.sigmoid((a - 0.5) / scale)
    return -torch.log2(torch.clamp(p, min=_LIKELIHOOD_BOUND))


class _RoundStraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class LatentTensor(nn.Module):
    """The parametrization of one weight or bias tensor: latent -> ``q * step``.

    ``q = clamp(round(latent / step), -LATENT_LIMIT, LATENT_LIMIT)``, rounding with a
    straight-through gradient. Parameters: ``log_step`` (the step's logarithm) and
    ``log_scale`` (the probability model's), one each per tensor.
    """

    def __init__(self, log_step: float = LOG_STEP_INIT, log_scale: float = LOG_SCALE_INIT):
        super().__init__()
        self.log_step = nn.Parameter(torch.tensor(float(log_step)))
        self.log_scale = nn.Parameter(torch.tensor(float(log_scale)))

    def scaled(self, latent: torch.Tensor) -> torch.Tensor:
        """``latent / step``, clamped to the latent range (no gradient beyond it)."""
        y = latent / torch.exp(self.log_step)
        return torch.clamp(y, -LATENT_LIMIT, LATENT_LIMIT)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        # The step in float32 as stored, so the weights are exactly the artifact's q * step.
        return _RoundStraightThrough.apply(self.scaled(latent)) * torch.exp(self.log_step)

    def bits(self, latent: torch.Tensor, *, noisy: bool) -> torch.Tensor:
        """Total bits of the tensor's latents: with ``noisy``, of ``latent / step`` plus uniform
        noise (training), else of the rounded integers (their code length under the model)."""
        y = self.scaled(latent)
        if noisy:
            y = y + torch.rand_like(y) - 0.5
        else:
            y = torch.round(y)
        return logistic_bits(y, self.log_scale).sum()

    def integers(self, latent: torch.Tensor) -> np.ndarray:
        """The rounded latents ``q`` (int64)."""
        with torch.no_grad():
            return torch.round(self.scaled(latent)).to(torch.int64).numpy()


class EntropyPenalizedReparameterization:
    """EPR on every ``nn.Linear`` and ``nn.Conv2d`` of ``model`` (in place).

    Parameters
    ----------
    model : nn.Module
        Its Linear and Conv2d layers get a :class:`LatentTensor` on ``weight`` and ``bias``
        (the latents start at the trained weights); the new parameters are the model's, so an
        optimizer built from ``model.parameters()`` trains them.
    rate_lambda : float
        Weight of the rate term, in bits per parameter (:func:`check_rate_lambda`).
    """

    def __init__(self, model: nn.Module, *, rate_lambda: float):
        self.rate_lambda = check_rate_lambda(rate_lambda)
        self.model = model
        self.linears = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        if not self.linears:
            raise ValueError("the model has no Linear or Conv2d layer for EPR")
        if any(m.bias is None for m in self.linears):
            raise ValueError("EPR needs a bias on every Linear and Conv2d layer (a zero one "
                             "will do)")
        self.parameter_count = sum(m.weight.numel() + m.bias.numel() for m in self.linears)
        for m in self.linears:
            for name in ("weight", "bias"):
                parametrize.register_parametrization(m, name, LatentTensor())

    @staticmethod
    def _parts(linear):
        p = linear.parametrizations
        return ((p.weight[0], p.weight.original), (p.bias[0], p.bias.original))

    def rate_bits(self, *, noisy: bool = True) -> torch.Tensor:
        """Total bits of every layer's latents under their models."""
        return sum(t.bits(latent, noisy=noisy) for m in self.linears
                   for t, latent in self._parts(m))

    def lr_scales(self, scale: float = MODEL_LR_SCALE) -> dict:
        """Learning-rate factors for :func:`compress.train.train`: ``scale`` for every
        ``log_step`` and ``log_scale``."""
        return {p: scale for m in self.linears for t, _ in self._parts(m)
                for p in (t.log_step, t.log_scale)}

    def regularizer(self) -> torch.Tensor:
        """The loss term: ``rate_lambda * bits / parameters`` (noisy latents)."""
        return self.rate_lambda * self.rate_bits(noisy=True) / self.parameter_count

    def latents(self) -> list[LayerLatents]:
        """Each layer's integer latents with their steps and model scales (float32, as
        stored); a kernel's as its matrix ``(O, C kh kw)`` (A12)."""
        def code(t, latent):
            values = t.integers(latent)
            if values.ndim > 2:
                values = values.reshape(len(values), -1)
            return LatentCode(values, float(np.float32(torch.exp(t.log_step).item())),
                              float(np.float32(t.log_scale.item())))

        out = []
        for m in self.linears:
            (wt, w), (bt, b) = self._parts(m)
            out.append(LayerLatents(weight=code(wt, w), bias=code(bt, b)))
        return out

    def layer_bits(self) -> list[float]:
        """Each layer's bits (weights and bias) under its learned models, rounded latents."""
        with torch.no_grad():
            return [float(sum(t.bits(latent, noisy=False) for t, latent in self._parts(m)))
                    for m in self.linears]

    def remove(self) -> None:
        """Leave the rounded weights (``q * step``) in the layers and drop the latents."""
        for m in self.linears:
            for name in ("weight", "bias"):
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
