"""Amaranth HDL generator of the EIE-style codebook-decoding sparse MAC engine.

In progress (issue 4): :mod:`accel.pack` builds the processing elements' memory images from a
quantized artifact (``docs/accelerator.md``); the Amaranth engine and its cocotb verification
follow.
"""
