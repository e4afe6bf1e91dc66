"""Figures of a compression run: ``report.json``, the printed table and the PNG plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.artifact import CompressedModel

__all__ = ["build_report", "format_table", "write_plots"]


def build_report(model: CompressedModel, *, artifact: Path, accuracy_float: float,
                 accuracy_pruned: float, accuracy_compressed: float,
                 accuracy_int: float | None = None, timings: dict | None = None) -> dict:
    """The machine-readable report (``report.json``); every size is in bytes."""
    layers = []
    sizes = model.sizes()
    for i, (layer, size) in enumerate(zip(model.layers, sizes)):
        layers.append({
            "name": f"{layer.kind}{i + 1}",
            "shape": layer.shape,
            **({} if layer.geometry is None else {"geometry": layer.geometry.as_dict()}),
            "relu": layer.relu,
            "params": layer.index.size + layer.out_features,
            "weights": layer.index.size,
            "nonzero": layer.nonzero,
            "density": layer.density,
            "index_bits": layer.index_bits,
            "zero_run_bits": layer.zero_run_bits,
            "codebook_size": layer.codebook.shape[-1] - 1,
            "codebook_kind": ("per row, basis" if layer.basis is not None else
                              "per row" if layer.per_row else "per layer"),
            "activation_levels": (None if layer.activation_levels is None
                                  else layer.activation_levels.tolist()),
            "entries": size.entries,
            "padding_entries": size.padding,
            "bits_per_nonzero": (size.index_bits + size.zero_run_bits) / max(layer.nonzero, 1),
            "original_bytes": size.dense_bytes,
            "index_bytes": size.index_bits / 8,
            "zero_run_bytes": size.zero_run_bits / 8,
            "codebook_bytes": size.codebook_bits / 8,
            "table_bytes": size.table_bits / 8,
            "bias_bytes": size.bias_bits / 8,
            "compressed_bytes": size.compressed_bytes,
            "compression_ratio": size.dense_bytes / size.compressed_bytes,
        })
        if layer.integer is not None:
            layers[-1]["integer"] = {name: getattr(layer.integer, name) for name in (
                "weight_bits", "activation_bits", "input_signed", "accumulator_bits",
                "multiplier", "shift", "logits")}
            if layer.integer.levels is not None:                   # A10
                layers[-1]["integer"].update(thresholds=layer.integer.thresholds.tolist(),
                                             levels=layer.integer.levels.tolist())
    original = sum(s.dense_bytes for s in sizes)
    if model.metadata.get("low_rank"):
        # Against the network before its low-rank factorization (32-bit weights and biases).
        original = sum(4 * (row["macs_before"] + row["shape"][0])
                       for row in model.metadata["low_rank"])
    compressed = sum(s.compressed_bytes for s in sizes)
    return {
        "artifact": str(artifact),
        "artifact_file_bytes": artifact.stat().st_size if artifact.exists() else None,
        "model": model.metadata.get("model"),
        "dataset": model.metadata.get("dataset"),
        "compression_ratio": original / compressed,
        "original_bytes": original,
        "compressed_bytes": compressed,
        "accuracy_float": accuracy_float,
        "accuracy_pruned": accuracy_pruned,
        "accuracy_compressed": accuracy_compressed,
        "accuracy_drop_points": 100.0 * (accuracy_float - accuracy_compressed),
        "accuracy_int": accuracy_int,
        "params": sum(layer["params"] for layer in layers),
        "nonzero_params": sum(layer["nonzero"] + layer["shape"][0] for layer in layers),
        "nonzero_weights": sum(layer["nonzero"] for layer in layers),
        "layers": layers,
        # Multiply-accumulates per inference of the stored chain: every weight, and the nonzero
        # ones (what the sparse engine does).
        "macs": sum(layer["weights"] for layer in layers),
        "nonzero_macs": sum(layer["nonzero"] for layer in layers),
        "robust": model.metadata.get("robust"),
        "low_rank": model.metadata.get("low_rank"),
        "accuracy_low_rank": model.metadata.get("accuracy_low_rank"),
        "epr": model.metadata.get("epr"),
        "settings": model.metadata.get("settings", {}),
        "timings_s": timings or {},
    }


def format_table(report: dict) -> str:
    """A readable table: per layer shape, density, bits, original and compressed bytes."""
    head = (f"{'layer':<6} {'shape':>11} {'density':>8} {'bits':>4} {'bits/nz':>8} "
            f"{'original B':>11} {'compressed B':>13} {'ratio':>7}")
    rows = [head, "-" * len(head)]
    for layer in report["layers"]:
        shape = "x".join(str(s) for s in layer["shape"])
        rows.append(f"{layer['name']:<6} {shape:>11} {layer['density']:>8.2%} "
                    f"{layer['index_bits']:>4} {layer['bits_per_nonzero']:>8.2f} "
                    f"{layer['original_bytes']:>11,} {layer['compressed_bytes']:>13,} "
                    f"{layer['compression_ratio']:>6.1f}x")
    rows.append("-" * len(head))
    density = report["nonzero_weights"] / sum(layer["weights"] for layer in report["layers"])
    rows.append(f"{'total':<6} {'':>11} {density:>8.2%} {'':>4} {'':>8} "
                f"{report['original_bytes']:>11,} {report['compressed_bytes']:>13,} "
                f"{report['compression_ratio']:>6.1f}x")
    if report.get("low_rank"):
        method = report["settings"].get("low_rank", "low rank")
        for i, row in enumerate(report["low_rank"]):
            shape = "x".join(str(s) for s in row["shape"])
            rows.append(f"{method} layer {i + 1}: {shape} rank {row['rank']} "
                        f"({row['energy_kept']:.2%} of the energy), "
                        f"{'decomposed' if row['decomposed'] else 'kept whole'}, "
                        f"{row['macs_before']:,} -> {row['macs_after']:,} multiply-accumulates")
        before = sum(row["macs_before"] for row in report["low_rank"])
        rows.append(f"multiply-accumulates per inference: {before:,} dense -> {report['macs']:,} "
                    f"after {method} -> {report['nonzero_macs']:,} nonzero "
                    f"(accuracy after {method}: {report['accuracy_low_rank']:.2%})")
    if report.get("epr"):
        for i, row in enumerate(report["epr"]):
            rows.append(f"EPR layer {i + 1}: {row['nonzero_weights']:,} nonzero latents, "
                        f"{row['codebook_entries']} codebook entries, step "
                        f"{row['weight_step']:.4g}, {row['bits_per_parameter']:.3f} bits per "
                        "parameter under the learned model")
        rows.append(f"accuracy: float {report['accuracy_float']:.2%}, after EPR "
                    f"{report['accuracy_compressed']:.2%} "
                    f"(drop {report['accuracy_drop_points']:+.2f} points)")
    else:
        rows.append(f"accuracy: float {report['accuracy_float']:.2%}, pruned "
                    f"{report['accuracy_pruned']:.2%}, compressed "
                    f"{report['accuracy_compressed']:.2%} "
                    f"(drop {report['accuracy_drop_points']:+.2f} points)")
    if report.get("accuracy_int") is not None:
        widths = ", ".join(str(layer["integer"]["accumulator_bits"])
                           for layer in report["layers"])
        first = report["layers"][0]["integer"]
        rows.append(f"integer reference: accuracy {report['accuracy_int']:.2%} "
                    f"({'int' if first['input_signed'] else 'uint'}{first['activation_bits']} "
                    f"inputs, {first['activation_bits']}-bit activations, "
                    f"int{first['weight_bits']} codebooks, accumulators {widths} bits; "
                    "docs/arithmetic.md)")
    robust = report.get("robust")
    if robust:
        after = ", ".join(f"{what} {robust[key]:.2%}" for what, key in (
            ("float", "compressed"), ("float on the input grid", "compressed_on_grid"),
            ("integer", "int")) if robust.get(key) is not None)
        rows.append(f"robust accuracy ({robust['attack']}, epsilon {robust['epsilon']:g}): "
                    f"float {robust['float']:.2%}; after compression: {after} (attacks on the "
                    "compressed float weights; the integer model gets them rounded to its input "
                    "grid)")
    return "\n".join(rows)


def write_plots(model: CompressedModel, pruned_weights: list[np.ndarray] | None,
                out_dir: Path) -> list[Path]:
    """Per-layer weight histograms with the codebook centroids, and density per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    n = len(model.layers)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for i, (ax, layer) in enumerate(zip(axes[0], model.layers)):
        source = pruned_weights[i] if pruned_weights is not None else layer.weight
        surviving = source[layer.index != 0]
        ax.hist(surviving, bins=80, color="#4c72b0", alpha=0.85)
        codebook, what = layer.codebook, "centroids"
        if layer.per_row:               # one row's levels: the row with the most weights
            row = int(np.argmax((layer.index != 0).sum(axis=1)))
            codebook, what = codebook[row], f"levels of row {row}"
        for c in codebook[1:]:
            ax.axvline(c, color="#c44e52", linewidth=0.9)
        ax.set_title(f"{layer.kind}{i + 1} {'x'.join(map(str, layer.shape))}: "
                     f"{len(codebook) - 1} {what}")
        ax.set_xlabel("weight (nonzero, before sharing)")
        ax.set_ylabel("count")
    fig.suptitle("weight distribution and shared values (red)")
    fig.tight_layout()
    paths.append(out_dir / "weights.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(1.4 * n + 2.5, 3.2))
    names = [f"{layer.kind}{i + 1}" for i, layer in enumerate(model.layers)]
    densities = [layer.density * 100 for layer in model.layers]
    bars = ax.bar(names, densities, color="#55a868")
    ax.bar_label(bars, labels=[f"{d:.1f}%" for d in densities])
    ax.set_ylabel("nonzero weights (%)")
    ax.set_ylim(0, max(densities) * 1.25 + 1)
    ax.set_title("density per layer after pruning")
    fig.tight_layout()
    paths.append(out_dir / "density.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
