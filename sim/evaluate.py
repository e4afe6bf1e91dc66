"""Integer reference against the float shared-weight model on a labelled test set."""

from __future__ import annotations

import time

import numpy as np

from .reference import quantize_input, run

__all__ = ["evaluate"]


def evaluate(model, x_test: np.ndarray, y_test: np.ndarray) -> dict:
    """Integer and float predictions on a test set, with timings."""
    start = time.perf_counter()
    q = quantize_input(model, x_test)
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
    }
