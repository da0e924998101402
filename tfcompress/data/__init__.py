"""Offline dataset loaders.

Fashion-MNIST is read from the Debian package ``dataset-fashion-mnist`` (IDX files
under ``/usr/share/datasets/fashion-mnist``); no loader here ever touches the network.
"""

from tfcompress.data.fashion_mnist import DataNotFoundError
from tfcompress.data.fashion_mnist import load_fashion_mnist
from tfcompress.data.fashion_mnist import load_fashion_mnist_arrays
from tfcompress.data.fashion_mnist import load_mnist_test_split
from tfcompress.data.fashion_mnist import load_digits
from tfcompress.data.fashion_mnist import representative_dataset
from tfcompress.data.idx import read_idx

__all__ = [
    "DataNotFoundError",
    "load_digits",
    "load_fashion_mnist",
    "load_fashion_mnist_arrays",
    "load_mnist_test_split",
    "read_idx",
    "representative_dataset",
]
