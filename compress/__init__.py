"""Deep Compression of small PyTorch networks: pruning, exactly optimal weight sharing (DP),
trained quantization and Huffman coding, written to a versioned, checksummed artifact.

The public API::

    from compress import dp_kmeans, compress_model, CompressConfig, CompressedModel, load

The artifact, its parts and the data sets are the bottom package ``core``, re-exported here.
The torch-based parts (``compress_model``, ``CompressConfig``, ``CompressionResult``,
``to_torch``) load on first use, so reading an artifact (``sim``, ``accel``) does not import
torch.
"""

import importlib

from core.artifact import CompressedLayer, CompressedModel, load
from core.datasets import Dataset, load_dataset
from core.huffman import HuffmanCode

from .cluster import QUANTIZERS, cluster, dp_kmeans, kmeans_1d

__all__ = [
    "QUANTIZERS",
    "CompressConfig",
    "CompressedLayer",
    "CompressedModel",
    "CompressionResult",
    "Dataset",
    "HuffmanCode",
    "cluster",
    "compress_model",
    "dp_kmeans",
    "kmeans_1d",
    "load",
    "load_dataset",
    "to_torch",
]

# The torch-based names, by the module that defines them (imported on first use).
_LAZY = {"CompressConfig": "pipeline", "CompressionResult": "pipeline",
         "compress_model": "pipeline", "to_torch": "torch_model"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
