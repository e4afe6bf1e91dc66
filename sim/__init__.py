"""Bit-exact integer reference of compressed inference (the golden model).

Not implemented yet: issue 3 builds it, with the arithmetic contract in docs/arithmetic.md.
"""
