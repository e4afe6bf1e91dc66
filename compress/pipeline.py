"""The compression pipeline: train, prune and retrain, share weights, fine-tune centroids, code.

Deep Compression (Han et al., ICLR 2016) in order: §2 iterative magnitude pruning with
retraining under fixed masks; §3 weight sharing, here by the exactly optimal 1-D clustering of
DP-Net (Yang et al. 2020, arXiv:2003.09615) unless a baseline is asked for, optionally with
DP-Net's clustering-friendly penalty during the last retraining; §3.3 fine-tuning of the shared
centroids; §4 Huffman coding of the relative-index sparse format.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np
import torch
from torch import nn

import sim
from core.artifact import CompressedLayer, CompressedModel
from core.datasets import MAX_SEED, Dataset, load_dataset
from core.integer import quantize_model
from core.levels import unsigned_levels
from core.options import per_layer_message

from .adversarial import Adversary, check_attack, compressed_robustness, robust_accuracy
from .cluster import QUANTIZERS, cluster, sse
from .epr import EntropyPenalizedReparameterization, check_rate_lambda
from .lowrank import (LOW_RANK_METHODS, TrainedRankPruning, check_settings, energy_rank,
                      factorize)
from .lq import (ACTIVATION_QUANTIZERS, WEIGHT_QUANTIZERS, QuantizedLinear, export,
                 quantized_network)
from .models import BUILTIN_MODELS, Recipe, linear_chain, load_model
from .prune import magnitude_mask, round_targets
from .train import (TRAINING_THREADS, SharedLinear, accuracy, canonical_sequential, geometry_of,
                    matrix, torch_threads, train)

__all__ = ["METHODS", "ZERO_RUN_AUTO", "CompressConfig", "CompressionResult", "compress_model"]

#: ``zero_run_bits`` value asking for the smallest stored format, b_z chosen per layer.
ZERO_RUN_AUTO = "auto"

#: Every ``quantizer``: the per-layer codebooks of weight sharing, then LQ-Nets' learned per-row
#: bases and their uniform baseline (``compress.lq``).
ALL_QUANTIZERS = QUANTIZERS + WEIGHT_QUANTIZERS
#: ``method``: Deep Compression's path (prune, share or learn quantizers, fine-tune, Huffman),
#: or entropy-penalized reparameterization (``compress.epr``: latents, range coding).
METHODS = ("deep-compression", "epr")
#: ``bits`` of a per-row quantizer when none is given (the recipes' are for codebooks).
DEFAULT_LEARNED_BITS = 2


@dataclass
class CompressConfig:
    """Every knob of :func:`compress_model`; ``None`` means the model's recipe default.

    Per-layer settings (``density``, ``quality``, ``bits``) are tuples with one value for every
    Linear layer or one value per layer; any other length is refused (``ValueError``) before
    any training.
    """

    model: str = "digits-mlp"
    dataset: str | None = None          # default: the built-in model's data set, else digits
    data_dir: str | None = None
    seed: int = 0
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    weight_decay: float | None = None
    density: tuple[float, ...] | None = None
    quality: tuple[float, ...] | None = None
    prune_rounds: int | None = None
    retrain_epochs: int | None = None
    finetune_epochs: int | None = None
    finetune_lr: float | None = None
    bits: tuple[int, ...] | None = None
    zero_run_bits: int | str = 5        # b_z of the stored format, or "auto": per layer
    quantizer: str = "dp"
    activation_quantizer: str = "none"  # or lq / uniform: A10 thresholds (compress.lq)
    activation_grid_bits: int = 8       # A of a learned activation quantizer's integer grid
    cluster_reg: float = 0.0
    low_rank: str = "none"              # or trp / svd (compress.lowrank), before pruning
    energy: float = 0.99                # TRP's energy, and the SVD ranks' unless ranks given
    nuclear: float = 3e-4               # TRP's nuclear-norm weight lambda
    trp_period: int = 1                 # TRP: steps between low-rank projections
    low_rank_epochs: int | None = None  # TRP training, or fine-tuning after SVD
    ranks: tuple[int, ...] | None = None    # SVD: the rank of every layer (else by energy)
    method: str = "deep-compression"    # or epr: entropy-penalized reparameterization (A11)
    rate_lambda: float = 1.0            # EPR: weight of the bits per parameter in the loss
    epr_epochs: int | None = None       # EPR training epochs (default: the recipe's retraining)
    epr_lr: float = 1e-3                # EPR's Adam rate (steps and model scales: 10x)
    adversarial: str = "none"           # or fgsm / pgd: adversarial training in every step
    epsilon: float = 0.1                # the attack's L-infinity bound
    integer: bool = True                # quantize to integers (docs/arithmetic.md) and check
    weight_bits: int = 8                # B: integer codebook value width
    activation_bits: int = 8            # A; with a learned activation quantizer its code bits K
    calibration_samples: int = 2048     # training samples that set the integer scales
    progress: bool = True

    def check(self) -> None:
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be 0..{MAX_SEED}, not {self.seed!r}")
        if self.quantizer not in ALL_QUANTIZERS:
            raise ValueError(f"quantizer must be one of {', '.join(ALL_QUANTIZERS)}, "
                             f"not {self.quantizer!r}")
        if self.activation_quantizer not in ACTIVATION_QUANTIZERS:
            raise ValueError(f"activation_quantizer must be one of "
                             f"{', '.join(ACTIVATION_QUANTIZERS)}, not "
                             f"{self.activation_quantizer!r}")
        if self.density is not None and self.quality is not None:
            raise ValueError("give either density or quality, not both")
        for d in self.density or ():
            if not 0.0 < d <= 1.0:
                raise ValueError(f"density must be in (0, 1], not {d!r}")
        for q in self.quality or ():
            if not 0.0 <= q < 100.0:
                raise ValueError(f"quality must be in [0, 100), not {q!r}")
        high = 4 if self.quantizer in WEIGHT_QUANTIZERS else 8
        for b in self.bits or ():
            if not 1 <= b <= high:
                raise ValueError(f"bits must be 1..{high}"
                                 f"{' for quantizer ' + self.quantizer if high == 4 else ''}, "
                                 f"not {b!r}")
        if self.zero_run_bits != ZERO_RUN_AUTO and (
                isinstance(self.zero_run_bits, bool) or not isinstance(self.zero_run_bits, int)
                or not 1 <= self.zero_run_bits <= 8):
            raise ValueError(f"zero_run_bits must be 1..8 or {ZERO_RUN_AUTO!r}, not "
                             f"{self.zero_run_bits!r}")
        for name in ("epochs", "retrain_epochs", "finetune_epochs"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, not {value!r}")
        if self.prune_rounds is not None and self.prune_rounds < 1:
            raise ValueError(f"prune_rounds must be >= 1, not {self.prune_rounds!r}")
        if self.cluster_reg < 0:
            raise ValueError(f"cluster_reg must be >= 0, not {self.cluster_reg!r}")
        for name in ("lr", "finetune_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, not {value!r}")
        learned = self.activation_quantizer != "none"
        for name in ("weight_bits", "activation_grid_bits") + (() if learned else
                                                                ("activation_bits",)):
            value = getattr(self, name)
            if not 2 <= value <= 16:
                raise ValueError(f"{name} must be 2..16, not {value!r}")
        if learned and not 1 <= self.activation_bits <= 4:
            raise ValueError(f"activation_bits must be 1..4 for a trained activation quantizer "
                             f"({self.activation_quantizer}: the code bits K), not "
                             f"{self.activation_bits!r}")
        if learned and self.activation_grid_bits < self.activation_bits:
            raise ValueError(f"activation_grid_bits must be >= the code bits K "
                             f"({self.activation_bits}), not {self.activation_grid_bits!r}")
        self._check_low_rank()
        self._check_method()
        check_attack(self.adversarial, self.epsilon, allow_none=True)
        if self.adversarial != "none" and self.activation_quantizer != "none":
            raise ValueError("activation_quantizer must be none with adversarial training: "
                             "learned activation levels have no input gradient, so the attack "
                             "could not measure robustness")
        if self.calibration_samples < 1:
            raise ValueError(f"calibration_samples must be >= 1, not "
                             f"{self.calibration_samples!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {self.batch_size!r}")

    def _check_method(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        check_rate_lambda(self.rate_lambda)
        if self.epr_epochs is not None and self.epr_epochs < 0:
            raise ValueError(f"epr_epochs must be >= 0, not {self.epr_epochs!r}")
        if not (isinstance(self.epr_lr, (int, float)) and self.epr_lr > 0):
            raise ValueError(f"epr_lr must be > 0, not {self.epr_lr!r}")
        if self.method != "epr":
            return
        # EPR prunes and quantizes by itself: the other methods' settings would be ignored.
        given = [name for name, unset in (("density", self.density is None),
                                          ("quality", self.quality is None),
                                          ("bits", self.bits is None),
                                          ("quantizer", self.quantizer == "dp"),
                                          ("activation_quantizer",
                                           self.activation_quantizer == "none"),
                                          ("cluster_reg", self.cluster_reg == 0.0),
                                          ("prune_rounds", self.prune_rounds is None))
                 if not unset]
        if given:
            raise ValueError(f"method epr prunes and quantizes by itself: {', '.join(given)} "
                             "cannot be set with it")
        if self.weight_bits < 8:
            raise ValueError(f"weight_bits must be >= 8 with method epr (its latents reach "
                             f"+-127, docs/arithmetic.md A11), not {self.weight_bits!r}")

    def _check_low_rank(self) -> None:
        if self.low_rank not in LOW_RANK_METHODS:
            raise ValueError(f"low_rank must be one of {', '.join(LOW_RANK_METHODS)}, not "
                             f"{self.low_rank!r}")
        check_settings(energy=self.energy, nuclear=self.nuclear, period=self.trp_period)
        if self.low_rank_epochs is not None and self.low_rank_epochs < 0:
            raise ValueError(f"low_rank_epochs must be >= 0, not {self.low_rank_epochs!r}")
        for r in self.ranks or ():
            if isinstance(r, bool) or not isinstance(r, int) or r < 1:
                raise ValueError(f"ranks must be >= 1, not {r!r}")
        if self.ranks is not None and self.low_rank != "svd":
            raise ValueError(f"ranks must go with low_rank svd (TRP finds its own ranks); "
                             f"low_rank is {self.low_rank!r}")
        if self.low_rank != "none" and self.activation_quantizer != "none":
            raise ValueError(f"activation_quantizer must be none with a low-rank method: a "
                             f"learned activation quantizer needs a ReLU after every hidden "
                             f"layer, and low_rank {self.low_rank} puts a layer with none before "
                             f"each decomposed one")


@dataclass
class CompressionResult:
    model: CompressedModel
    dataset: Dataset
    accuracy_float: float
    accuracy_pruned: float
    accuracy_shared: float                # after weight sharing, before fine-tuning
    accuracy_compressed: float
    sharing_sse: float                    # sum of squared weight errors of the clustering
    pruned_weights: list[np.ndarray]      # float weights after pruning, before sharing (plots)
    timings: dict = field(default_factory=dict)
    accuracy_int: float | None = None     # the integer reference (sim.run), if quantized
    robust: dict | None = None            # robust accuracies (adversarial training)
    low_rank: list | None = None          # compress.lowrank.LayerRank of each original layer
    accuracy_low_rank: float | None = None    # after TRP or SVD (and its fine-tuning)


def _per_layer(values: tuple | None, n: int, name: str, *, factored: bool = False):
    """One value per layer from one value or one per layer. With ``factored`` (a low-rank
    method), a list of another length is kept as a tuple, for the decomposed chain's layers
    (:func:`_factor_settings` checks it)."""
    if values is None:
        return [None] * n
    if len(values) not in (1, n):
        if factored:
            return tuple(values)
        raise ValueError(per_layer_message(name, len(values), n))
    return [values[min(i, len(values) - 1)] for i in range(n)]


def _factor_settings(values, report, name: str) -> list:
    """A per-layer list for the decomposed chain: one value per layer of that chain as given,
    or both factors of a decomposed layer take its value."""
    n = sum(2 if row.decomposed else 1 for row in report)
    if isinstance(values, tuple):
        if len(values) != n:
            raise ValueError(per_layer_message(name, len(values), len(report)) +
                             f" (or, with the low-rank layers, one per each of the {n} layers "
                             f"after decomposition)")
        return list(values)
    return [v for v, row in zip(values, report) for _ in range(2 if row.decomposed else 1)]


def compress_model(config: CompressConfig, *,
                   log: Callable[[str], None] = print) -> CompressionResult:
    """Run the whole pipeline and return the compressed model and its figures.

    All of its PyTorch work runs on one thread (:func:`compress.train.torch_threads`), whatever
    the machine or ``OMP_NUM_THREADS``: torch's CPU kernels sum in an order that depends on the
    thread count, so this is what makes the same seed give the same artifact everywhere.
    """
    with torch_threads(TRAINING_THREADS):
        return _compress_model(config, log=log)


def _compress_model(config: CompressConfig, *, log: Callable[[str], None]) -> CompressionResult:
    config.check()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    builtin = config.model in BUILTIN_MODELS
    recipe = BUILTIN_MODELS[config.model].recipe if builtin else Recipe()
    dataset_name = config.dataset or (BUILTIN_MODELS[config.model].dataset if builtin
                                      else "digits")
    data = load_dataset(dataset_name, data_dir=config.data_dir, seed=config.seed)
    log(f"data: {data.describe()}")
    module, builtin = load_model(config.model, seed=config.seed, input_shape=data.shape or None)

    chain = linear_chain(module, data.shape or None)
    _check_chain(chain, data, config)
    n_layers = len(chain)
    linears = _float_linears(chain)
    relus = [s.relu for s in chain]
    net = canonical_sequential(linears, relus)

    def pick(value, default):
        return default if value is None else value

    epochs = pick(config.epochs, recipe.epochs if builtin else 0)
    lr = pick(config.lr, recipe.lr)
    batch_size = pick(config.batch_size, recipe.batch_size)
    weight_decay = pick(config.weight_decay, recipe.weight_decay)
    rounds = pick(config.prune_rounds, recipe.prune_rounds)
    retrain_epochs = pick(config.retrain_epochs, recipe.retrain_epochs)
    finetune_epochs = pick(config.finetune_epochs, recipe.finetune_epochs)
    learned = config.quantizer in WEIGHT_QUANTIZERS or config.activation_quantizer != "none"
    default_bits = (DEFAULT_LEARNED_BITS,) if config.quantizer in WEIGHT_QUANTIZERS else recipe.bits
    factored = config.low_rank != "none"
    bits = _per_layer(config.bits or default_bits, n_layers, "bits", factored=factored)
    # Every per-layer list is checked here, before any training.
    if config.quality is not None:
        mode, finals = "quality", _per_layer(config.quality, n_layers, "quality",
                                             factored=factored)
    else:
        mode = "density"
        finals = _per_layer(config.density or recipe.density, n_layers, "density",
                            factored=factored)
    ranks = _per_layer(config.ranks, n_layers, "ranks")
    _check_ranks(ranks, linears)

    # 1. Dense training (built-in models; a loaded model is taken as trained).
    if epochs:
        log(f"training {config.model} for {epochs} epochs (seed {config.seed})")
        _fit(net, data, config, epochs=epochs, lr=lr, batch_size=batch_size,
             weight_decay=weight_decay, seed=config.seed, desc="train", progress=config.progress)
    accuracy_float = accuracy(net, data.x_test, data.y_test)
    log(f"float accuracy: {accuracy_float:.4f}")
    robust = _robust_before(net, data, config, log)
    lap("train")

    # 1b. Low rank (TRP, or truncated SVD then fine-tuning): a decomposed layer becomes two,
    # which inherit its per-layer settings.
    rank_report = accuracy_low_rank = None
    if config.low_rank != "none":
        linears, relus, rank_report = _low_rank(
            net, linears, relus, ranks, data, config, lr=lr * 0.5, batch_size=batch_size,
            epochs=pick(config.low_rank_epochs, retrain_epochs), log=log)
        bits = _factor_settings(bits, rank_report, "bits")
        finals = _factor_settings(finals, rank_report, mode)
        net = canonical_sequential(linears, relus)
        accuracy_low_rank = accuracy(net, data.x_test, data.y_test)
        log(f"low-rank accuracy: {accuracy_low_rank:.4f}")
        lap("low_rank")

    if config.method == "epr":
        # 2-4 by EPR: latents, learned steps and models, an entropy penalty (compress/epr.py).
        layers, accuracy_compressed, epr_report = _entropy_penalized(
            net, linears, relus, data, config, batch_size=batch_size,
            epochs=pick(config.epr_epochs, retrain_epochs), log=log)
        accuracy_pruned = accuracy_shared = accuracy_compressed
        sharing_sse, finetune_lr = 0.0, config.epr_lr
        masks = [layer.index != 0 for layer in layers]
        pruned_weights = [layer.weight.copy() for layer in layers]
        lap("epr")
    else:
        # 2. Iterative magnitude pruning with retraining under fixed masks.
        masks = _prune(net, linears, data, config, mode=mode, finals=finals, rounds=rounds,
                       bits=bits, retrain=dict(epochs=retrain_epochs, lr=lr * 0.5,
                                               batch_size=batch_size, weight_decay=weight_decay),
                       log=log)
        accuracy_pruned = accuracy(net, data.x_test, data.y_test)
        log(f"pruned accuracy: {accuracy_pruned:.4f}")
        lap("prune")

        # 3-4. Quantization: weight sharing then trained quantization of the centroids (Deep
        # Compression §3), or LQ-Nets' learned quantizers (per-row bases, activation levels).
        finetune_lr = pick(config.finetune_lr, _finetune_lr(config, recipe, lr, masks, bits))
        pruned_weights = [matrix(layer.weight.detach().numpy()).copy() for layer in linears]
        steps = dict(data=data, config=config, linears=linears, relus=relus, masks=masks,
                     bits=bits, epochs=finetune_epochs, batch_size=batch_size,
                     seed=config.seed + rounds + 1, log=log)
        quantize = _learn_quantizers if learned else _share_weights
        layers, accuracy_shared, accuracy_compressed, sharing_sse = quantize(
            **steps, lr=finetune_lr)
        if config.zero_run_bits == ZERO_RUN_AUTO:
            layers = [_smallest_stream(layer) for layer in layers]
            log("relative-index bits b_z per layer (auto): "
                + ", ".join(str(layer.zero_run_bits) for layer in layers))
        lap("share")
    log(f"compressed accuracy: {accuracy_compressed:.4f}")

    settings = {k: v for k, v in asdict(config).items() if k != "progress"}
    settings.update(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                    prune_rounds=rounds, retrain_epochs=retrain_epochs,
                    finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, bits=bits,
                    dataset=data.name,
                    density_final=[float(m.mean()) for m in masks])
    compressed = CompressedModel(layers, metadata={
        "model": config.model,
        "dataset": data.name,
        "signed_inputs": data.signed,
        "n_classes": data.n_classes,
        "settings": settings,
        "accuracy_float": accuracy_float,
        "accuracy_pruned": accuracy_pruned,
        "accuracy_compressed": accuracy_compressed,
        **({} if rank_report is None else {
            "low_rank": [row.as_dict() for row in rank_report],
            "accuracy_low_rank": accuracy_low_rank}),
        **({"epr": epr_report} if config.method == "epr" else {}),
        "torch_version": torch.__version__,
    })
    lap("code")
    accuracy_int = None
    if config.integer:
        # 5. Integer quantization (docs/arithmetic.md), calibrated on a slice of the training set.
        calibration = data.x_train[:config.calibration_samples]
        width = (config.activation_grid_bits if config.activation_quantizer != "none"
                 else config.activation_bits)
        compressed = quantize_model(compressed, calibration, weight_bits=config.weight_bits,
                                    activation_bits=width, input_signed=data.signed)
        accuracy_int = _integer_accuracy(compressed, data)
        compressed.metadata["accuracy_int"] = accuracy_int
        codes = ("" if config.activation_quantizer == "none" else
                 f" taking {2 ** config.activation_bits} levels")
        log(f"integer accuracy: {accuracy_int:.4f} ({width}-bit activations{codes}, "
            f"{config.weight_bits}-bit codebooks)")
        lap("integer")
    if robust is not None:
        robust.update(compressed_robustness(
            compressed, data, method=config.adversarial, epsilon=config.epsilon,
            seed=config.seed))
        compressed.metadata["robust"] = robust
        log("robust accuracy after compression: " + ", ".join(
            f"{k} {robust[k]:.4f}" for k in ("compressed", "compressed_on_grid", "int")
            if robust.get(k) is not None))
        lap("robust")
    return CompressionResult(compressed, data, accuracy_float, accuracy_pruned, accuracy_shared,
                             accuracy_compressed, sharing_sse, pruned_weights, timings,
                             accuracy_int, robust, rank_report, accuracy_low_rank)


def _low_rank(net, linears, relus, ranks, data, config, *, lr, batch_size, epochs, log):
    """TRP training then factorization at the trained ranks, or truncated SVD at ``ranks`` (or
    the energy ranks) then fine-tuning (``compress.lowrank``). Returns the new chain's linears
    and ReLUs and the per-layer report."""
    common = dict(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=0.0,
                  seed=config.seed + 1000, progress=config.progress)
    if config.low_rank == "trp":
        log(f"TRP: {epochs} epochs, energy {config.energy}, nuclear {config.nuclear:g}, "
            f"projection every {config.trp_period} step{'s' if config.trp_period > 1 else ''}")
        trp = TrainedRankPruning(linears, energy=config.energy, nuclear=config.nuclear,
                                 period=config.trp_period)
        _fit(net, data, config, on_step=trp.on_step, regularizer=trp.loss,
             desc="TRP", **common)
    with torch.no_grad():
        found = [energy_rank(torch.linalg.svdvals(matrix(layer.weight)), config.energy)
                 for layer in linears]
    if config.low_rank == "svd":
        found = [r if r is not None else k for r, k in zip(ranks, found)]
    linears, relus, report = factorize(linears, relus, found)
    for i, row in enumerate(report):
        log(f"  layer {i}: {row.out_features}x{row.in_features} rank {row.rank} "
            f"({row.energy_kept:.2%} of the energy), "
            f"{'decomposed' if row.decomposed else 'kept whole'}: "
            f"{row.macs_before:,} -> {row.macs_after:,} multiply-accumulates")
    if config.low_rank == "svd" and epochs:
        _fit(canonical_sequential(linears, relus), data, config,
             desc="fine-tune factors", **common)
    return linears, relus, report


def _entropy_penalized(net, linears, relus, data, config, *, batch_size, epochs, log):
    """EPR (``compress/epr.py``) on the network's Linear and Conv2d layers: ``epochs`` of Adam
    on the task loss plus ``rate_lambda`` bits per parameter; returns the latent layers (A11),
    their float accuracy and the per-layer report (parameters, nonzero latents, bits under the
    learned models, bits per parameter)."""
    log(f"EPR: rate lambda {config.rate_lambda:g}, {epochs} epochs of Adam at "
        f"{config.epr_lr:g}")
    reparam = EntropyPenalizedReparameterization(net, rate_lambda=config.rate_lambda)
    _fit(net, data, config, epochs=epochs, lr=config.epr_lr, batch_size=batch_size,
         seed=config.seed + 1, regularizer=reparam.regularizer, optimizer="adam",
         lr_scales=reparam.lr_scales(), desc="EPR", progress=config.progress)
    latents, bits = reparam.latents(), reparam.layer_bits()
    reparam.remove()
    layers = [CompressedLayer.from_latents(code, relu=relu, zero_run_bits=_zero_run_bits(config),
                                           geometry=geometry_of(linear))
              for code, relu, linear in zip(latents, relus, linears)]
    accuracy_epr = accuracy(canonical_sequential(linears, relus), data.x_test, data.y_test)
    report = [{"parameters": code.parameters,
               "nonzero_weights": int(np.count_nonzero(code.weight.values)),
               "codebook_entries": int(len(layer.codebook)),
               "weight_step": code.weight.step, "model_bits": round(b, 1),
               "bits_per_parameter": round(b / code.parameters, 4)}
              for code, layer, b in zip(latents, layers, bits)]
    for i, row in enumerate(report):
        log(f"  layer {i}: {row['nonzero_weights']} nonzero latents, "
            f"{row['codebook_entries']} codebook entries, "
            f"{row['bits_per_parameter']:.3f} bits per parameter")
    return layers, accuracy_epr, report


def _fit(net, data, config, **kwargs):
    """:func:`compress.train.train` on the training set; adversarially (``compress.adversarial``)
    when ``config.adversarial`` asks, with examples in the training features' range."""
    adversary = None
    if config.adversarial != "none":
        adversary = Adversary(config.adversarial, config.epsilon, float(data.x_train.min()),
                              float(data.x_train.max()), seed=kwargs["seed"])
    return train(net, data.x_train, data.y_train, adversary=adversary, **kwargs)


def _zero_run_bits(config) -> int:
    """b_z a layer is first coded with (``auto`` starts from Deep Compression's 5)."""
    return 5 if config.zero_run_bits == ZERO_RUN_AUTO else config.zero_run_bits


def _smallest_stream(layer: CompressedLayer) -> CompressedLayer:
    """``layer`` with the relative-index width b_z (1..8) that stores it in the fewest bits,
    the narrower on a tie. A wider b_z needs fewer padding entries for long zero runs but
    has a larger run alphabet (and Huffman table); the best width follows the density."""
    best = min(range(1, 9), key=lambda b: (
        replace(layer, zero_run_bits=b).size().compressed_bits, b))
    return replace(layer, zero_run_bits=best)


def _float_linears(chain) -> list[nn.Module]:
    """Float32 copies of the chain's weighted layers, each with a bias (zero if it had none);
    a convolution as an ``nn.Conv2d`` carrying its geometry (``.geometry``, A12-A13)."""
    linears = [_float_layer(s) for s in chain]
    with torch.no_grad():
        for new, spec in zip(linears, chain):
            new.weight.copy_(spec.linear.weight.detach().float())
            if spec.linear.bias is not None:
                new.bias.copy_(spec.linear.bias.detach().float())
            else:
                new.bias.zero_()
    return linears


def _float_layer(spec) -> nn.Module:
    g = spec.geometry
    if g is None:
        return nn.Linear(spec.linear.in_features, spec.linear.out_features)
    conv = nn.Conv2d(g.in_channels, spec.linear.out_channels,
                     (g.kernel_height, g.kernel_width), stride=g.stride, padding=g.padding)
    conv.geometry = g
    return conv


#: Weights a shared centroid may gather at the recipe's fine-tuning rate (see _finetune_lr).
CLUSTER_SIZE_AT_RECIPE_RATE = 1000


def _finetune_lr(config, recipe, lr: float, masks, bits) -> float:
    """The default fine-tuning rate: latent weights (``lq``, ``uniform``) learn at the
    retraining rate, half the training rate. A shared centroid's step sums its whole cluster's
    gradients (Deep Compression §3.3), so beyond :data:`CLUSTER_SIZE_AT_RECIPE_RATE` weights a
    cluster (the recipes' pruned layers have up to about 800) the recipe's rate is divided by
    the largest mean cluster size over that: dense 2-bit LeNet-300-100 (78,400 weights a
    cluster) diverged to chance at 2.5e-4 and reached 93.7% at 5e-5 after two epochs."""
    if config.quantizer in WEIGHT_QUANTIZERS:
        return lr * 0.5
    largest = max(float(mask.sum()) / (2 ** b - 1) for mask, b in zip(masks, bits))
    return recipe.finetune_lr * min(1.0, CLUSTER_SIZE_AT_RECIPE_RATE / max(largest, 1.0))


def _shared_layers(linears, masks, bits, config):
    """Weight sharing: each layer's surviving weights clustered (``config.quantizer``) into
    ``2**bits - 1`` values; index 0 is the pruned zero. Returns the layers and the sum of
    squared errors."""
    shared, total = [], 0.0
    for i, layer in enumerate(linears):
        weight = layer.weight.detach().numpy()
        values = weight[masks[i]]
        centroids, assignment = cluster(values, 2 ** bits[i] - 1, method=config.quantizer,
                                        seed=config.seed)
        total += sse(values, centroids, assignment)
        index = np.zeros(weight.shape, dtype=np.int64)
        index[masks[i]] = assignment + 1
        shared.append(SharedLinear(torch.from_numpy(index), torch.from_numpy(centroids).float(),
                                   layer.bias.detach(), geometry_of(layer)))
    return shared, total


def _codebook_layer(layer: SharedLinear, relu: bool, bits: int, config,
                    activation_levels=None) -> CompressedLayer:
    codebook, index = _sorted_codebook(layer.centroids.detach().numpy(), layer.index.numpy())
    index = matrix(index)       # A12: a kernel (O, C, kh, kw) is stored as (O, C kh kw)
    return CompressedLayer(codebook=codebook, index=index.astype(np.uint8),
                           bias=layer.bias.detach().numpy(), relu=relu, index_bits=bits,
                           zero_run_bits=_zero_run_bits(config),
                           activation_levels=activation_levels, geometry=layer.geometry)


def _share_weights(*, data, config, linears, relus, masks, bits, epochs, lr, batch_size, seed,
                   log):
    """Deep Compression §3: weight sharing, then fine-tuning of the centroids (gradients summed
    per cluster) and biases. Returns ``(layers, accuracy before and after fine-tuning, SSE)``."""
    shared, sharing_sse = _shared_layers(linears, masks, bits, config)
    shared_net = canonical_sequential(shared, relus)
    accuracy_shared = accuracy(shared_net, data.x_test, data.y_test)
    log(f"weight sharing ({config.quantizer}): squared error {sharing_sse:.6g}, accuracy "
        f"{accuracy_shared:.4f} before fine-tuning")
    _fit(shared_net, data, config, epochs=epochs, lr=lr, batch_size=batch_size,
         weight_decay=0.0, seed=seed, desc="fine-tune centroids", progress=config.progress)
    layers = [_codebook_layer(layer, relus[i], bits[i], config) for i, layer in enumerate(shared)]
    return layers, accuracy_shared, accuracy(shared_net, data.x_test, data.y_test), sharing_sse


def _learn_quantizers(*, data, config, linears, relus, masks, bits, epochs, lr, batch_size,
                      seed, log):
    """LQ-Nets (``compress.lq``): per-row learned (``lq``) or uniform bases for the weights, or
    a codebook from weight sharing, and learned or uniform activation levels after every hidden
    ReLU, fine-tuned together with straight-through gradients. Returns ``(layers, accuracy
    before and after fine-tuning, SSE of the weights' first quantization)``."""
    per_row = config.quantizer in WEIGHT_QUANTIZERS
    sharing_sse = 0.0
    if not per_row:
        linears, sharing_sse = _shared_layers(linears, masks, bits, config)
    net, quantized, activations = quantized_network(
        linears, relus, masks, data.x_train[:config.calibration_samples],
        weight=config.quantizer if per_row else None, bits=bits,
        activation=config.activation_quantizer, activation_bits=config.activation_bits)
    if per_row:
        with torch.no_grad():
            for layer in quantized:
                weights = matrix(layer.weight)
                error = layer.quantizer(weights) - weights * layer.quantizer.mask
                sharing_sse += float(error.double().pow(2).sum())
    accuracy_shared = accuracy(net, data.x_test, data.y_test)
    log(f"quantizers ({config.quantizer} {'/'.join(map(str, bits))}-bit weights, "
        f"{config.activation_quantizer} activations"
        f"{'' if config.activation_quantizer == 'none' else f' of {config.activation_bits} bits'})"
        f": squared weight error {sharing_sse:.6g}, accuracy {accuracy_shared:.4f} before "
        "fine-tuning")
    _fit(net, data, config, epochs=epochs, lr=lr, batch_size=batch_size,
         weight_decay=0.0, seed=seed,
         masks={layer.weight: layer.quantizer.mask.reshape(layer.weight.shape)
                for layer in quantized},
         desc="fine-tune quantizers", progress=config.progress)
    levels = [unsigned_levels(q.basis.numpy()) for q in activations]
    levels += [None] * (len(relus) - len(levels))        # the logits, or no quantizers
    layers = []
    weighted = [m for m in net if isinstance(m, (QuantizedLinear, SharedLinear))]
    for i, layer in enumerate(weighted):
        if isinstance(layer, QuantizedLinear):
            index, basis = export(layer)
            layers.append(CompressedLayer(
                codebook=None, basis=basis, index=index.astype(np.uint8),
                bias=layer.bias.detach().numpy(), relu=relus[i], index_bits=bits[i] + 1,
                zero_run_bits=_zero_run_bits(config), activation_levels=levels[i],
                geometry=layer.geometry))
        else:
            layers.append(_codebook_layer(layer, relus[i], bits[i], config, levels[i]))
    # The accuracy of what is stored (the basis in float16, the levels as exported).
    stored = CompressedModel(layers).forward(data.x_test).argmax(axis=1)
    accuracy_compressed = float((stored == data.y_test).mean())
    return layers, accuracy_shared, accuracy_compressed, sharing_sse


def _prune(net, linears, data, config, *, mode, finals, rounds, bits, retrain, log):
    """Magnitude pruning in ``rounds`` rounds, each followed by retraining under the masks
    (the last with the clustering penalty when ``config.cluster_reg``); returns the masks."""
    if mode == "quality":
        stds = [float(layer.weight.detach().std()) for layer in linears]
    schedules = [round_targets(final, rounds, mode) for final in finals]
    masks = [np.ones(tuple(layer.weight.shape), dtype=bool) for layer in linears]
    for r in range(rounds):
        for i, layer in enumerate(linears):
            weight = layer.weight.detach().numpy()
            if mode == "density":
                masks[i] = magnitude_mask(weight, previous=masks[i], density=schedules[i][r])
            else:
                masks[i] = magnitude_mask(weight, previous=masks[i],
                                          threshold=schedules[i][r] * stds[i])
            with torch.no_grad():
                layer.weight.mul_(torch.from_numpy(masks[i]).float())
        kept = ", ".join(f"{m.mean():.3f}" for m in masks)
        log(f"prune round {r + 1}/{rounds}: density per layer {kept}")
        last_round = r == rounds - 1
        regularizer = on_epoch = None
        if last_round and config.cluster_reg > 0:
            regularizer, on_epoch = _clustering_penalty(linears, masks, bits, config)
        _fit(net, data, config, **retrain, seed=config.seed + r + 1,
             masks={layer.weight: torch.from_numpy(m).float() for layer, m in
                    zip(linears, masks)},
             regularizer=regularizer, on_epoch=on_epoch,
             desc=f"retrain {r + 1}/{rounds}", progress=config.progress)
    return masks


def _check_chain(chain, data: Dataset, config) -> None:
    """The model's chain against the data set and the activation quantizer."""
    if chain[0].in_size != data.n_features:
        raise ValueError(f"model {config.model!r} takes {chain[0].in_size} inputs but "
                         f"data set {data.name!r} has {data.n_features} features")
    if chain[-1].out_size < data.n_classes:
        raise ValueError(f"model {config.model!r} has {chain[-1].out_size} outputs but "
                         f"data set {data.name!r} has {data.n_classes} classes")
    relus = [s.relu for s in chain]
    if config.activation_quantizer != "none" and not all(relus[:-1]):
        raise ValueError(f"a trained activation quantizer ({config.activation_quantizer}) needs a "
                         f"ReLU after every hidden layer (its levels start at 0, "
                         f"docs/arithmetic.md A10), and layer {relus.index(False)} has none: use "
                         f"none (uniform integer activations) for this model")


def _check_ranks(ranks, linears) -> None:
    for i, (rank, layer) in enumerate(zip(ranks, linears)):
        rows, columns = matrix(layer.weight).shape
        if rank is not None and rank > min(rows, columns):
            raise ValueError(f"ranks must be at most a layer's smaller side: layer {i} "
                             f"({rows}x{columns}) has rank at most {min(rows, columns)}, "
                             f"not {rank}")


def _robust_before(net, data: Dataset, config, log) -> dict | None:
    """With adversarial training, the trained float network's robust accuracy (the report's
    ``robust``, completed after compression), else None."""
    if config.adversarial == "none":
        return None
    found = robust_accuracy(net, data.x_test, data.y_test, method=config.adversarial,
                            epsilon=config.epsilon, low=float(data.x_train.min()),
                            high=float(data.x_train.max()), seed=config.seed)
    log(f"robust accuracy ({config.adversarial}, epsilon {config.epsilon:g}): {found:.4f}")
    return {"attack": config.adversarial, "epsilon": config.epsilon, "float": found}


def _integer_accuracy(model: CompressedModel, data: Dataset) -> float:
    """Test accuracy of the integer reference (``sim``, the golden model the hardware equals)."""
    logits = sim.run(model, sim.quantize_input(model, data.x_test))
    return float((logits.argmax(axis=1) == data.y_test).mean())


def _sorted_codebook(centroids: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codebook ``[0, ascending centroids]`` and the index remapped to it.

    Fine-tuning can move centroids past each other; sorting keeps the stored codebook canonical.
    """
    order = np.argsort(centroids, kind="stable")
    remap = np.zeros(len(centroids) + 1, dtype=np.int64)
    remap[order + 1] = np.arange(1, len(centroids) + 1)
    codebook = np.concatenate([[0.0], centroids[order]]).astype(np.float32)
    return codebook, remap[index]


def _clustering_penalty(linears, masks, bits, config):
    """DP-Net's clustering-friendly penalty: ``lambda * mean((w - c(w))^2)`` per layer.

    ``c(w)`` is the weight's centroid in the optimal clustering of the layer's surviving weights,
    recomputed at the start of every epoch, so retraining pulls weights toward few values and the
    later weight sharing loses less.
    """
    targets: list[torch.Tensor] = [torch.zeros_like(layer.weight) for layer in linears]
    mask_tensors = [torch.from_numpy(m) for m in masks]

    def on_epoch(_epoch: int) -> None:
        for i, layer in enumerate(linears):
            weight = layer.weight.detach().numpy()
            centroids, assignment = cluster(weight[masks[i]], 2 ** bits[i] - 1,
                                            method=config.quantizer, seed=config.seed)
            target = np.zeros_like(weight)
            target[masks[i]] = centroids[assignment]
            targets[i] = torch.from_numpy(target)

    def penalty() -> torch.Tensor:
        total = linears[0].weight.new_zeros(())
        for layer, target, mask in zip(linears, targets, mask_tensors):
            diff = (layer.weight - target)[mask]
            total = total + diff.pow(2).mean()
        return config.cluster_reg * total

    return penalty, on_epoch
