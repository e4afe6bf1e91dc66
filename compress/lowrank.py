"""Low-rank layers: TRP (trained rank pruning, Xu et al., IJCAI 2020) and its post-training SVD
baseline.

TRP trains a network towards low rank and then factorizes it with no fine-tuning:

- every ``period`` training steps, each weight matrix ``W`` is replaced by its truncated SVD at
  the smallest rank ``k`` whose singular values hold a fraction ``energy`` of the energy,
  ``sum_{i<=k} s_i^2 >= energy * sum_i s_i^2`` (the public code: 0.99, every step);
- a nuclear-norm regulariser ``nuclear * ||W||_*`` is optimised by its sub-gradient
  ``nuclear * U V^T`` (``W = U S V^T`` over the nonzero singular values; public code: 3e-4),
  refreshed with each projection;
- after training, each layer is decomposed at its final rank: ``Linear(in, out)`` becomes
  ``Linear(in, k)`` (no bias) then ``Linear(k, out)`` with no activation between, only where that
  saves multiply-accumulates, ``k * (in + out) < in * out``. A convolution is taken as its
  matrix ``O x (C kh kw)`` (A12), and decomposed into channels: a ``kh x kw`` convolution to
  ``k`` channels (its stride and padding), then a ``1 x 1`` convolution to the ``O`` outputs
  (the bias, ReLU and pooling), which saves multiply-accumulates under the same condition,
  every output position doing the matrix's work.

The baseline (``svd``) truncates a trained network's SVD at given ranks, then fine-tunes.

- :func:`energy_rank`, :func:`truncate`: the rank for an energy, and the projection;
- :class:`TrainedRankPruning`: the training hooks (a step hook and a loss term for
  :func:`compress.train.train`);
- :func:`factorize`: the decomposed chain, and :class:`LayerRank`, its per-layer report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from core.geometry import ConvGeometry

from .train import matrix

__all__ = ["LOW_RANK_METHODS", "LayerRank", "TrainedRankPruning", "check_settings",
           "energy_rank", "factorize", "truncate"]

#: ``--low-rank`` choices.
LOW_RANK_METHODS = ("none", "trp", "svd")

def _check_energy(energy) -> float:
    if isinstance(energy, bool) or not isinstance(energy, (int, float)) or \
            not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], not {energy!r}")
    return float(energy)


def check_settings(*, energy, nuclear, period) -> None:
    """``ValueError`` naming the first of TRP's settings out of range."""
    _check_energy(energy)
    if isinstance(nuclear, bool) or not isinstance(nuclear, (int, float)) or not nuclear >= 0:
        raise ValueError(f"nuclear must be >= 0, not {nuclear!r}")
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise ValueError(f"trp_period must be >= 1, not {period!r}")


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """The smallest ``k >= 1`` whose ``k`` largest singular values hold ``energy`` of
    ``sum s_i^2`` (``singular_values`` in descending order, as ``torch.linalg.svd`` gives)."""
    energy = _check_energy(energy)
    power = singular_values.double() ** 2
    total = float(power.sum())
    if total == 0.0:
        return 1
    kept = torch.cumsum(power, 0) / total
    # (a small tolerance: the last cumulative sum may round just below 1)
    return int(torch.searchsorted(kept, torch.tensor([energy - 1e-12], dtype=kept.dtype))) + 1


def truncate(weight: torch.Tensor, rank: int) -> torch.Tensor:
    """``weight``'s best rank-``rank`` approximation (truncated SVD)."""
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


class TrainedRankPruning:
    """TRP's training hooks for a list of ``nn.Linear`` layers.

    ``on_step(step)`` (before each step's forward pass) projects every layer to its energy rank
    each ``period`` steps, from step 0, and refreshes the nuclear-norm sub-gradient directions
    ``U V^T``; ``loss()`` is ``nuclear * sum <U V^T, W>`` with ``U V^T`` held fixed, whose
    gradient is the sub-gradient ``nuclear * U V^T``.

    Parameters
    ----------
    linears : sequence of nn.Linear
    energy : float
        In (0, 1].
    nuclear : float
        ``lambda >= 0``; 0 turns the regulariser off.
    period : int
        ``m >= 1``: steps between projections.
    masks : sequence of tensors, optional
        Pruned weights (0) are kept at exactly 0 by the projection.
    """

    def __init__(self, linears: Sequence[nn.Linear], *, energy: float, nuclear: float,
                 period: int, masks: Sequence[torch.Tensor] | None = None):
        check_settings(energy=energy, nuclear=nuclear, period=period)
        self.energy = float(energy)
        self.linears, self.nuclear, self.period = list(linears), float(nuclear), period
        self.masks = list(masks) if masks is not None else [None] * len(self.linears)
        self.ranks = [min(matrix(layer.weight).shape) for layer in self.linears]
        self._directions: list[torch.Tensor | None] = [None] * len(self.linears)

    @torch.no_grad()
    def project(self) -> None:
        """Every layer to its truncated SVD at its energy rank (kept in :attr:`ranks`)."""
        for i, layer in enumerate(self.linears):
            u, s, vh = torch.linalg.svd(matrix(layer.weight), full_matrices=False)
            k = energy_rank(s, self.energy)
            layer.weight.copy_(((u[:, :k] * s[:k]) @ vh[:k]).reshape(layer.weight.shape))
            if self.masks[i] is not None:
                layer.weight.mul_(self.masks[i])
            self.ranks[i] = k
            self._directions[i] = u[:, :k] @ vh[:k]

    def on_step(self, step: int) -> None:
        if step % self.period == 0:
            self.project()

    def loss(self) -> torch.Tensor:
        terms = [(d * matrix(layer.weight)).sum()
                 for d, layer in zip(self._directions, self.linears) if d is not None]
        if not terms or self.nuclear == 0.0:
            return torch.zeros(())
        return self.nuclear * torch.stack(terms).sum()


@dataclass(frozen=True)
class LayerRank:
    """One layer's low-rank decision (the report's row)."""

    in_features: int
    out_features: int
    rank: int                   # of the trained (TRP) or truncated (SVD) weights
    energy_kept: float          # sum of the kept s_i^2 over the layer's before truncation
    decomposed: bool            # factorized: rank * (in + out) < in * out

    @property
    def macs_before(self) -> int:
        return self.in_features * self.out_features

    @property
    def macs_after(self) -> int:
        if self.decomposed:
            return self.rank * (self.in_features + self.out_features)
        return self.macs_before

    def as_dict(self) -> dict:
        return {"shape": [self.out_features, self.in_features], "rank": self.rank,
                "energy_kept": self.energy_kept, "decomposed": self.decomposed,
                "macs_before": self.macs_before, "macs_after": self.macs_after}


@torch.no_grad()
def factorize(linears: Sequence[nn.Module], relus: Sequence[bool], ranks: Sequence[int],
              energy_reference: Sequence[torch.Tensor] | None = None):
    """Decompose each layer at its rank where that saves multiply-accumulates.

    ``Linear(in, out)`` with weight ``W ~ U_k S_k V_k^T`` becomes ``Linear(in, k)`` with weight
    ``S_k^(1/2) V_k^T`` and a zero bias (stored as one) and no ReLU, then ``Linear(k, out)``
    with weight ``U_k S_k^(1/2)`` and the layer's bias and ReLU: the two factors share the
    singular values evenly, so both quantize alike. A convolution (a layer with a
    ``.geometry``) becomes a ``kh x kw`` convolution to ``k`` channels, unpooled, then a ``1 x
    1`` convolution with the layer's bias, ReLU and pooling. ``energy_reference`` (the weights
    before training or truncation, default the layers') gives the reported energy kept.

    Returns ``(linears, relus, [LayerRank])``.
    """
    out_linears, out_relus, report = [], [], []
    for i, (layer, relu, k) in enumerate(zip(linears, relus, ranks)):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"rank must be >= 1, not {k!r} (layer {i})")
        weight = matrix(layer.weight)
        out_features, in_features = weight.shape
        if k > min(in_features, out_features):
            raise ValueError(f"layer {i} ({out_features}x{in_features}) has rank at most "
                             f"{min(in_features, out_features)}, not {k}")
        reference = weight if energy_reference is None else matrix(energy_reference[i])
        power = torch.linalg.svdvals(reference.double()) ** 2
        energy = float(power[:k].sum() / power.sum()) if float(power.sum()) > 0 else 1.0
        decomposed = k * (in_features + out_features) < in_features * out_features
        report.append(LayerRank(in_features, out_features, k, energy, decomposed))
        if not decomposed:
            out_linears.append(layer)
            out_relus.append(relu)
            continue
        u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
        root = s[:k].sqrt()
        first, second = _factors(layer, k)
        first.weight.copy_((root[:, None] * vh[:k]).float().reshape(first.weight.shape))
        first.bias.zero_()
        second.weight.copy_((u[:, :k] * root).float().reshape(second.weight.shape))
        second.bias.copy_(layer.bias)
        out_linears += [first, second]
        out_relus += [False, relu]
    return out_linears, out_relus, report


def _factors(layer: nn.Module, k: int) -> tuple[nn.Module, nn.Module]:
    """The two empty layers a rank-``k`` decomposition of ``layer`` fills."""
    geometry: ConvGeometry | None = getattr(layer, "geometry", None)
    if geometry is None:
        out_features, in_features = layer.weight.shape
        return nn.Linear(in_features, k), nn.Linear(k, out_features)
    g = geometry
    first = nn.Conv2d(g.in_channels, k, (g.kernel_height, g.kernel_width), stride=g.stride,
                      padding=g.padding)
    first.geometry = ConvGeometry(g.in_channels, g.in_height, g.in_width, g.kernel_height,
                                  g.kernel_width, stride=g.stride, padding=g.padding)
    second = nn.Conv2d(k, len(layer.weight), 1)
    second.geometry = ConvGeometry(k, g.conv_height, g.conv_width, 1, 1, pool=g.pool)
    return first, second
