"""``python -m compress``: train (built-in models), prune, share, fine-tune and code a network.

Writes the artifact (``OUT/model.dcz``), ``OUT/report.json``, ``OUT/weights.png`` and
``OUT/density.png``, and prints a table of the per-layer sizes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.datasets import DATASETS
from core.options import check_output_path, fail

from .adversarial import ATTACKS
from .lowrank import LOW_RANK_METHODS
from .lq import ACTIVATION_QUANTIZERS
from .models import BUILTIN_MODELS
from .pipeline import (ALL_QUANTIZERS, DEFAULT_LEARNED_BITS, METHODS, ZERO_RUN_AUTO,
                       CompressConfig, compress_model)
from .report import build_report, format_table, write_plots


def _number_list(kind):
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a {kind.__name__} or comma-separated {kind.__name__}s (one per layer), "
                f"not {text!r}") from None
    return parse


def _zero_run_bits(text: str) -> int | str:
    if text == ZERO_RUN_AUTO:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 1..8 or {ZERO_RUN_AUTO!r}, not {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m compress",
        description="Compress a network the Deep Compression way: magnitude pruning with "
                    "retraining, exactly optimal weight sharing (DP), trained quantization, "
                    "Huffman coding.")
    parser.add_argument("--model", default="digits-mlp",
                        help=f"built-in model ({', '.join(BUILTIN_MODELS)}) or path to a "
                             "torch.save()d module of Linear/ReLU/Flatten (default: digits-mlp)")
    parser.add_argument("--dataset", default=None,
                        help=f"{', '.join(DATASETS)} or path to an .npz with x_train, y_train, "
                             "x_test, y_test (default: the built-in model's, else digits)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the four MNIST IDX .gz files (default: ../shared/data/"
                             "mnist beside the checkout, or $MNIST_DIR)")
    parser.add_argument("--out", default="out/compress", type=Path,
                        help="output folder (default: out/compress)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="dense training epochs (built-in models)")
    parser.add_argument("--lr", type=float, help="learning rate of dense training")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--weight-decay", type=float)
    prune = parser.add_mutually_exclusive_group()
    prune.add_argument("--density", type=_number_list(float),
                       help="final fraction of weights kept, one value or one per layer")
    prune.add_argument("--quality", type=_number_list(float),
                       help="prune |w| < quality x std(w) instead, one value or one per layer")
    parser.add_argument("--prune-rounds", type=int, help="iterative prune/retrain rounds")
    parser.add_argument("--retrain-epochs", type=int, help="epochs of retraining per round")
    parser.add_argument("--finetune-epochs", type=int, help="epochs of centroid fine-tuning")
    parser.add_argument("--finetune-lr", type=float,
                        help="learning rate of centroid fine-tuning (default: the recipe's)")
    parser.add_argument("--bits", type=_number_list(int),
                        help="codebook index bits b_w (1..8), one value or one per layer; a "
                             "layer gets 2**bits - 1 shared values plus the zero. With "
                             "--quantizer lq or uniform: the basis bits K (1..4, default "
                             f"{DEFAULT_LEARNED_BITS}), 2**K levels per row plus the zero")
    parser.add_argument("--zero-run-bits", type=_zero_run_bits, default=5,
                        help="relative-index bits b_z of the stored sparse format, 1..8 "
                             "(default: 5, as Deep Compression's fully connected layers), or "
                             "'auto': per layer, the width that stores it in the fewest bytes")
    parser.add_argument("--quantizer", default="dp", choices=ALL_QUANTIZERS,
                        help="weight-sharing clustering: dp (exactly optimal, default) or a "
                             "Deep Compression k-means baseline; or a per-row basis trained "
                             "with the network: lq (LQ-Nets, learned) or uniform (fixed)")
    parser.add_argument("--activation-quantizer", default="none", choices=ACTIVATION_QUANTIZERS,
                        help="none (default: uniform --activation-bits-wide integers, "
                             "calibrated after training) or a quantizer of every hidden ReLU "
                             "output trained with the network: lq (LQ-Nets, learned levels) or "
                             "uniform (fixed levels); the hardware compares with thresholds "
                             "(docs/arithmetic.md A10)")
    parser.add_argument("--cluster-reg", type=float, default=0.0,
                        help="DP-Net clustering-friendly penalty weight during the last "
                             "retraining (default: 0, off)")
    parser.add_argument("--low-rank", default="none", choices=LOW_RANK_METHODS,
                        help="before pruning: trp (trained rank pruning: training with low-rank "
                             "projections and a nuclear-norm penalty, then each layer "
                             "factorized at its trained rank) or svd (truncated SVD of the "
                             "trained layers, then fine-tuning); a factorized Linear(in, out) "
                             "becomes Linear(in, r) then Linear(r, out), where that saves "
                             "multiply-accumulates (default: none)")
    parser.add_argument("--energy", type=float, default=0.99,
                        help="fraction of the squared singular values each low-rank layer "
                             "keeps, in (0, 1] (default: 0.99, TRP's public code)")
    parser.add_argument("--nuclear", type=float, default=3e-4,
                        help="TRP's nuclear-norm penalty weight lambda (default: 3e-4)")
    parser.add_argument("--trp-period", type=int, default=1,
                        help="TRP: training steps between low-rank projections (default: 1)")
    parser.add_argument("--low-rank-epochs", type=int,
                        help="epochs of TRP training, or of fine-tuning after svd (default: "
                             "the recipe's retraining epochs)")
    parser.add_argument("--ranks", type=_number_list(int),
                        help="with --low-rank svd: the rank of each layer, one value or one "
                             "per layer (default: by --energy)")
    parser.add_argument("--method", default="deep-compression", choices=METHODS,
                        help="deep-compression (prune, share or learn quantizers, fine-tune, "
                             "Huffman; the default) or epr (entropy-penalized "
                             "reparameterization: latents with learned steps and probability "
                             "models, a rate penalty, range coding; docs/compression.md)")
    parser.add_argument("--rate-lambda", type=float, default=1.0,
                        help="with --method epr: weight of the bits per parameter in the loss, "
                             "a finite number >= 0 (default: 1)")
    parser.add_argument("--epr-epochs", type=int,
                        help="with --method epr: training epochs (default: the recipe's "
                             "retraining epochs)")
    parser.add_argument("--epr-lr", type=float, default=1e-3,
                        help="with --method epr: Adam's learning rate for the latents "
                             "(steps and model scales take 10x; default: 1e-3)")
    parser.add_argument("--adversarial", default="none", choices=ATTACKS,
                        help="adversarial training in every training step (dense training, "
                             "retraining, fine-tuning): fgsm or pgd (10 steps) examples within "
                             "--epsilon, half of each batch's loss; the report gives the robust "
                             "accuracy (same attack) before and after compression, float and "
                             "integer (default: none)")
    parser.add_argument("--epsilon", type=float, default=0.1,
                        help="the attack's L-infinity bound on the features, in (0, 1] "
                             "(default: 0.1)")
    parser.add_argument("--weight-bits", type=int, default=8,
                        help="width B of the integer codebook values, 2..16 (default: 8; "
                             "docs/arithmetic.md)")
    parser.add_argument("--activation-bits", type=int, default=8,
                        help="width A of the integer activations, 2..16 (default: 8); with "
                             "--activation-quantizer lq or uniform, the code bits K, 1..4 (a "
                             "hidden activation takes 2**K levels)")
    parser.add_argument("--activation-grid-bits", type=int, default=8,
                        help="with --activation-quantizer lq or uniform: width A of the integer "
                             "grid the levels are rounded to, 2..16 (default: 8)")
    parser.add_argument("--calibration-samples", type=int, default=2048,
                        help="training samples that set the integer scales (default: 2048)")
    parser.add_argument("--no-integer", action="store_true",
                        help="skip integer quantization (the artifact then has no data for "
                             "sim and accel)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress (a bar on a terminal, plain lines in a log)")
    parser.add_argument("--json", type=Path, help="also write the report to this path")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = CompressConfig(
        model=args.model, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed,
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        weight_decay=args.weight_decay, density=args.density, quality=args.quality,
        prune_rounds=args.prune_rounds, retrain_epochs=args.retrain_epochs,
        finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr, bits=args.bits,
        zero_run_bits=args.zero_run_bits,
        quantizer=args.quantizer, activation_quantizer=args.activation_quantizer,
        activation_grid_bits=args.activation_grid_bits,
        cluster_reg=args.cluster_reg, low_rank=args.low_rank, energy=args.energy,
        nuclear=args.nuclear, trp_period=args.trp_period, low_rank_epochs=args.low_rank_epochs,
        ranks=args.ranks, method=args.method, rate_lambda=args.rate_lambda,
        epr_epochs=args.epr_epochs, epr_lr=args.epr_lr,
        adversarial=args.adversarial, epsilon=args.epsilon,
        integer=not args.no_integer,
        weight_bits=args.weight_bits, activation_bits=args.activation_bits,
        calibration_samples=args.calibration_samples, progress=not args.quiet)
    # Every option is checked before any work (the per-layer lists' lengths, which need the
    # model's layer count, before its training): messages name the flags.
    check_output_path(parser, "--out", args.out, folder=True)
    check_output_path(parser, "--json", args.json, folder=False)
    try:
        config.check()
        result = compress_model(config)
    except ValueError as error:
        fail(parser, error)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    artifact = result.model.save(out / "model.dcz")
    report = build_report(result.model, artifact=artifact,
                          accuracy_float=result.accuracy_float,
                          accuracy_pruned=result.accuracy_pruned,
                          accuracy_compressed=result.accuracy_compressed,
                          accuracy_int=result.accuracy_int,
                          timings=result.timings)
    if not args.no_plots:
        report["plots"] = [str(p) for p in write_plots(result.model, result.pruned_weights, out)]
    text = json.dumps(report, indent=2)
    (out / "report.json").write_text(text + "\n")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print()
    print(format_table(report))
    print(f"artifact: {artifact} ({report['artifact_file_bytes']:,} bytes on disk); "
          f"report: {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
