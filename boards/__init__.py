"""Registry of supported open FPGA boards (amaranth-boards platforms).

Not implemented yet: issue 5 builds it.
"""
