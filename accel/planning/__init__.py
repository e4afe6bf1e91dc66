"""What the engine is for a model: each PE's memory images (``pack``) and the plan of every
size, width and memory with the cycle model (``plan``). Pure Python and numpy: nothing here
imports Amaranth."""
