"""Deep Compression of small PyTorch networks: pruning, exactly optimal weight sharing (DP),
trained quantization and Huffman coding, written to a versioned, checksummed artifact.

The public API::

    from compress import dp_kmeans, compress_model, CompressConfig, CompressedModel, load
"""

from .artifact import CompressedLayer, CompressedModel, load
from .cluster import QUANTIZERS, cluster, dp_kmeans, kmeans_1d
from .data import Dataset, load_dataset
from .huffman import HuffmanCode
from .pipeline import CompressConfig, CompressionResult, compress_model

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
