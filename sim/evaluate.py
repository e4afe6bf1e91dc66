"""Integer reference against the float shared-weight model on a labelled test set."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from core.artifact import load
from core.datasets import DATASETS, MAX_SEED, load_dataset
from core.options import check_output_path, check_range

from .reference import quantize_input, run

__all__ = ["add_model_arguments", "check_model_arguments", "evaluate", "load_model_and_data"]


def add_model_arguments(parser) -> None:
    """The ``--model``, ``--dataset``, ``--data-dir``, ``--seed`` and ``--json`` options."""
    parser.add_argument("--model", required=True, type=Path,
                        help="artifact with integer data (python -m compress writes "
                             "OUT/model.dcz)")
    parser.add_argument("--dataset", default=None,
                        help=f"{', '.join(DATASETS)} or path to an .npz with x_train, y_train, "
                             "x_test, y_test (default: the data set the artifact was "
                             "compressed on)")
    parser.add_argument("--data-dir", default=None, help="MNIST folder (see python -m compress)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the digits split (default: the artifact's)")
    parser.add_argument("--json", type=Path, help="also write the figures to this path")


def check_model_arguments(parser, args) -> None:
    """``parser.error`` on a bad option of :func:`add_model_arguments`, before any work."""
    check_range(parser, "--seed", args.seed, 0, MAX_SEED)
    if not args.model.exists():
        parser.error(f"--model {args.model} does not exist (python -m compress writes "
                     "OUT/model.dcz)")
    if args.model.is_dir():
        parser.error(f"--model must be an artifact file, not the folder {args.model}")
    check_output_path(parser, "--json", args.json, folder=False)


def load_model_and_data(path, *, dataset=None, data_dir=None, seed=None):
    """An artifact with integer data and its data set (by default the one it was compressed on).

    Raises
    ------
    ValueError
        A missing file, an artifact without integer data, or a data set whose feature count
        differs from the model's.
    """
    if not Path(path).exists():
        raise ValueError(f"{path} does not exist (python -m compress writes OUT/model.dcz)")
    model = load(path)
    if not model.has_integer:
        raise ValueError(f"{path} has no integer data (written by an older version or "
                         "without it): rerun python -m compress")
    settings = model.metadata.get("settings", {})
    dataset = dataset or model.metadata.get("dataset") or "digits"
    seed = seed if seed is not None else int(settings.get("seed", 0))
    data = load_dataset(dataset, data_dir=data_dir, seed=seed)
    if data.n_features != model.in_features:
        raise ValueError(f"data set {data.name!r} has {data.n_features} features, the model "
                         f"takes {model.in_features}")
    return model, data


def evaluate(model, x_test: np.ndarray, y_test: np.ndarray) -> dict:
    """Integer and float predictions on a test set, with timings and ``input_saturation``
    (the input values clamped by A1, :func:`sim.quantize_input`)."""
    start = time.perf_counter()
    q, saturation = quantize_input(model, x_test, return_saturation=True)
    quantized = time.perf_counter()
    logits = run(model, q)
    integer_done = time.perf_counter()
    float_logits = model.forward(x_test)
    float_done = time.perf_counter()
    predicted_int = logits.argmax(axis=1)
    predicted_float = float_logits.argmax(axis=1)
    run_seconds = integer_done - quantized
    return {
        "samples": int(len(y_test)),
        "accuracy_int": float((predicted_int == y_test).mean()),
        "accuracy_compressed": float((predicted_float == y_test).mean()),
        "agreement": float((predicted_int == predicted_float).mean()),
        "timings": {"quantize_input_s": round(quantized - start, 6),
                    "run_int_s": round(run_seconds, 6),
                    "run_float_numpy_s": round(float_done - integer_done, 6)},
        "samples_per_second_int": len(y_test) / run_seconds if run_seconds > 0 else None,
        "input_saturation": saturation,
    }
