"""Bit-exact integer reference of compressed inference: the golden model.

It implements ``docs/arithmetic.md`` (rules A1-A13) in vectorized numpy with no floating point on
the integer path; the hardware (``accel``) must equal it bit for bit. The public API::

    import compress, sim
    model = compress.load("out/compress/model.dcz")     # an artifact with integer data
    q = sim.quantize_input(model, x_float)              # A1, the host's float -> int step
    q, saturated = sim.quantize_input(model, x_float, return_saturation=True)  # + clamp count
    logits = sim.run(model, q)                          # int64 (n, classes)
    hidden = sim.run_layer(model, 0, q)                 # one layer, for hardware tests
    every = sim.trace(model, q)                         # every layer's output
    figures = sim.evaluate(model, x_test, y_test)       # accuracy_int, agreement, ...
"""

from .evaluate import add_model_arguments, check_model_arguments, evaluate, load_model_and_data
from .reference import (SATURATION_WARNING_FRACTION, pool, quantize_input, requantize, run,
                        run_layer, saturation_warning, threshold_activation, trace)

__all__ = ["SATURATION_WARNING_FRACTION", "add_model_arguments", "check_model_arguments",
           "evaluate", "load_model_and_data", "pool", "quantize_input", "requantize", "run",
           "run_layer",
           "saturation_warning", "threshold_activation", "trace"]
