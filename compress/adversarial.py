"""Adversarial training and robust accuracy (DP-Net's robust models: Yang et al. 2020 compress an
adversarially trained network "with negligible accuracy loss").

Attacks are L-infinity bounded, white-box, on the float network, and stay inside the data's
feature range (``[0, 1]`` for images):

- ``fgsm`` (Goodfellow et al. 2015): one step ``x + epsilon * sign(grad_x loss)``;
- ``pgd`` (Madry et al. 2018): ``PGD_STEPS`` steps of ``2.5 * epsilon / PGD_STEPS`` from a
  random start in the ball, each projected back into it.

Adversarial training (:class:`Adversary`, a hook of :func:`compress.train.train`) replaces each
batch's loss with the mean of the clean and the adversarial loss (Goodfellow et al.'s
``alpha = 0.5``), the adversarial examples made against the network being trained.

Robust accuracy (:func:`robust_accuracy`) is the accuracy on examples attacked with the same
attack and ``epsilon``. The integer model has no gradient: its robust accuracy is measured on the
examples made against the float network of the same stored weights (``compress.to_torch``)
and then quantized to the integer input grid (a transfer from an exact surrogate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

import sim

__all__ = ["ATTACKS", "PGD_STEPS", "Adversary", "adversarial_examples", "attack",
           "check_attack", "compressed_robustness", "robust_accuracy"]

#: ``--adversarial`` choices.
ATTACKS = ("none", "fgsm", "pgd")
#: PGD's steps (training and evaluation).
PGD_STEPS = 10


def check_attack(method: str, epsilon: float, *, allow_none: bool = False) -> None:
    """``ValueError`` for an unknown attack (``none`` only with ``allow_none``) or an
    ``epsilon`` outside (0, 1]."""
    if method not in (ATTACKS if allow_none else ATTACKS[1:]):
        raise ValueError(f"adversarial must be one of {', '.join(ATTACKS)}, not {method!r}")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or \
            not 0.0 < epsilon <= 1.0:
        raise ValueError(f"epsilon must be in (0, 1], not {epsilon!r}")


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), y)
    (gradient,) = torch.autograd.grad(loss, x)
    return gradient


def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, method: str, epsilon: float,
           low: float, high: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial examples for ``x`` (float features) against ``model``, within ``epsilon`` of
    ``x`` in every feature and within ``[low, high]``. ``model``'s mode is left as it was."""
    check_attack(method, epsilon)
    training = model.training
    model.eval()
    try:
        if method == "fgsm":
            adversarial = x + epsilon * _input_gradient(model, x, y).sign()
        else:
            step = 2.5 * epsilon / PGD_STEPS
            noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
            adversarial = (x + epsilon * noise).clamp(low, high)
            for _ in range(PGD_STEPS):
                adversarial = adversarial + step * _input_gradient(model, adversarial, y).sign()
                adversarial = torch.min(torch.max(adversarial, x - epsilon), x + epsilon)
                adversarial = adversarial.clamp(low, high)
        return adversarial.clamp(low, high).detach()
    finally:
        model.train(training)


@dataclass
class Adversary:
    """Adversarial training: ``loss(model, x, y)`` is the mean of the clean and the adversarial
    cross entropy. ``low``/``high`` bound the features (the training set's range)."""

    method: str
    epsilon: float
    low: float
    high: float
    seed: int = 0

    def __post_init__(self):
        check_attack(self.method, self.epsilon)
        self._generator = torch.Generator().manual_seed(self.seed)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        adversarial = attack(model, x, y, method=self.method, epsilon=self.epsilon,
                             low=self.low, high=self.high, generator=self._generator)
        clean = nn.functional.cross_entropy(model(x), y)
        return 0.5 * clean + 0.5 * nn.functional.cross_entropy(model(adversarial), y)


def adversarial_examples(model: nn.Module, x: np.ndarray, y: np.ndarray, *, method: str,
                         epsilon: float, low: float, high: float, seed: int = 0,
                         batch_size: int = 1000) -> np.ndarray:
    """:func:`attack` over a whole float feature matrix, in batches (deterministic for a seed)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(x), batch_size):
        out.append(attack(model, torch.from_numpy(x[start:start + batch_size]),
                          torch.from_numpy(y[start:start + batch_size]), method=method,
                          epsilon=epsilon, low=low, high=high, generator=generator).numpy())
    return np.concatenate(out) if out else x.copy()


def robust_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, *, method: str,
                    epsilon: float, low: float, high: float, seed: int = 0) -> float:
    """Accuracy of ``model`` on ``x`` attacked by ``method`` at ``epsilon``."""
    from .train import accuracy

    return accuracy(model, adversarial_examples(model, x, y, method=method, epsilon=epsilon,
                                                low=low, high=high, seed=seed), y)


def compressed_robustness(model, data, *, method: str, epsilon: float, seed: int = 0) -> dict:
    """Robust accuracies of a ``CompressedModel`` on ``data``'s test set: ``compressed`` (its
    float weights, attacked white-box), and, when it has integer data, ``int`` (the integer
    model on those examples rounded to its input grid: it has no gradient) and
    ``compressed_on_grid`` (the float weights on the same rounded examples, which separates
    the rounding of the inputs, large for an attacked example near a decision boundary, from
    the integer arithmetic's own effect)."""
    from .torch_model import to_torch
    from .train import predict

    surrogate = to_torch(model)
    x = adversarial_examples(surrogate, data.x_test, data.y_test, method=method,
                             epsilon=epsilon, low=float(data.x_train.min()),
                             high=float(data.x_train.max()), seed=seed)
    found = {"compressed": float((predict(surrogate, x) == data.y_test).mean()),
             "compressed_on_grid": None, "int": None}
    if model.has_integer:
        q = sim.quantize_input(model, x)
        on_grid = (q * model.layers[0].integer.input_scale).astype(np.float32)
        found["compressed_on_grid"] = float((predict(surrogate, on_grid) == data.y_test).mean())
        found["int"] = float((sim.run(model, q).argmax(axis=1) == data.y_test).mean())
    return found
