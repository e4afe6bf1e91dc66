"""Amaranth HDL generator of the EIE-style codebook-decoding sparse MAC engine.

Not implemented yet: issue 4 builds it.
"""
