"""Deep Compression of small PyTorch networks: pruning, exactly optimal weight sharing (DP),
trained quantization and Huffman coding, written to a versioned, checksummed artifact.

The public API::

    from compress import dp_kmeans, compress_model, CompressConfig, CompressedModel, load

The torch-based parts (``compress_model``, ``CompressConfig``, ``CompressionResult``) load on
first use, so reading an artifact (``sim``, ``accel``) does not import torch.
"""

from .artifact import CompressedLayer, CompressedModel, load
from .cluster import QUANTIZERS, cluster, dp_kmeans, kmeans_1d
from .data import Dataset, load_dataset
from .huffman import HuffmanCode

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
]

_PIPELINE = ("CompressConfig", "CompressionResult", "compress_model")


def __getattr__(name: str):
    if name in _PIPELINE:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
