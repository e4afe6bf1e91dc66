"""What every stage shares, at the bottom of the imports: the files the project reads and writes
and the conventions of its command lines.

- The artifact (``docs/artifact-format.md``): :mod:`core.artifact` (``CompressedModel``,
  ``load``) and what a layer stores: the relative-index sparse stream (:mod:`core.sparse`), its
  Huffman code (:mod:`core.huffman`), EPR's range-coded latents (:mod:`core.latents`,
  :mod:`core.range_coding`), learned levels (:mod:`core.levels`), the integer data of
  ``docs/arithmetic.md`` (:mod:`core.integer`, :mod:`core.layer_fields`) and a convolution's
  geometry (:mod:`core.geometry`).
- The data sets (:mod:`core.datasets`: digits, breast-cancer, MNIST's IDX files, ``.npz``).
- The command lines' option checks and error messages (:mod:`core.options`).

It imports no other package of the project and no torch: ``compress`` writes what it defines,
``sim`` and ``accel`` read it.
"""
