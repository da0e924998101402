"""Fashion-MNIST, MNIST and digits loaders that work with the network disabled.

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist``; the loader
parses its IDX files directly, so neither Keras's downloader nor TFDS is involved.
The numpy loaders import no TensorFlow (they also feed Keras-on-JAX runs); only
:func:`load_fashion_mnist` builds ``tf.data`` pipelines.
"""

import os
import pathlib

import numpy as np

from tfcompress.data.idx import read_idx

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEFAULT_FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
DATA_DIR_ENV = "TFCOMPRESS_DATA_DIR"
_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# Real MNIST test split shipped in the project's shared folder (002 fig. 4.6 data).
SHARED_MNIST_DIR = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


class DataNotFoundError(FileNotFoundError):
    """Raised when the offline dataset files are missing, saying how to get them."""


def _resolve_dir(data_dir):
    if data_dir is not None:
        return pathlib.Path(data_dir)
    if os.environ.get(DATA_DIR_ENV):
        return pathlib.Path(os.environ[DATA_DIR_ENV])
    return DEFAULT_FASHION_MNIST_DIR


def _check_subset(subset, available, name="subset"):
    if subset is None:
        return available
    if isinstance(subset, bool) or not isinstance(subset, (int, np.integer)) or subset <= 0:
        raise ValueError(f"{name} must be a positive integer or None; received: {name}={subset!r}")
    return min(int(subset), available)


def _normalize(images, normalization):
    x = images.astype("float32")[..., None] / 255.0
    if normalization == "unit":
        return x
    if normalization == "standardize":
        # Fashion-MNIST training-set statistics.
        return (x - 0.2860) / 0.3530
    raise ValueError(
        "normalization must be 'unit' or 'standardize'; "
        f"received: normalization={normalization!r}"
    )


def load_fashion_mnist_arrays(data_dir=None, subset=None, test_subset=None,
                              normalization="unit", seed=0):
    """Loads Fashion-MNIST as numpy arrays, offline.

    Args:
        data_dir: folder holding the four ``*-ubyte.gz`` files. Defaults to
            ``$TFCOMPRESS_DATA_DIR`` or ``/usr/share/datasets/fashion-mnist``.
        subset: optional number of training images to keep (a random subset drawn
            with ``seed``, the same for every call with the same arguments).
        test_subset: optional number of test images to keep (the first ones).
        normalization: ``"unit"`` scales pixels to [0, 1]; ``"standardize"``
            subtracts the training mean and divides by the training std.
        seed: seed of the training subset draw.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: float32 images of shape
        ``(N, 28, 28, 1)`` and int32 labels.

    Raises:
        DataNotFoundError: if a file is missing; the message names the Debian
            package to install.
        ValueError: for a bad ``subset``/``test_subset``/``normalization``.

    Example:
        >>> (x, y), (xt, yt) = load_fashion_mnist_arrays(subset=1000)
        >>> x.shape
        (1000, 28, 28, 1)
    """
    folder = _resolve_dir(data_dir)
    missing = [name for name in _FILES.values() if not (folder / name).is_file()]
    if missing:
        raise DataNotFoundError(
            f"Fashion-MNIST files not found in {folder} (missing: {', '.join(missing)}). "
            f"tfcompress reads the dataset offline from the Debian package "
            f"'{DEBIAN_PACKAGE}': run `apt-get update && apt-get install -y "
            f"{DEBIAN_PACKAGE}` as root, or set {DATA_DIR_ENV} to a folder holding "
            f"{', '.join(_FILES.values())}."
        )
    arrays = {key: read_idx(folder / name) for key, name in _FILES.items()}
    x_train = _normalize(arrays["train_images"], normalization)
    y_train = arrays["train_labels"].astype("int32")
    x_test = _normalize(arrays["test_images"], normalization)
    y_test = arrays["test_labels"].astype("int32")
    n_train = _check_subset(subset, len(x_train))
    if n_train < len(x_train):
        idx = np.random.default_rng(seed).permutation(len(x_train))[:n_train]
        x_train, y_train = x_train[idx], y_train[idx]
    n_test = _check_subset(test_subset, len(x_test), "test_subset")
    return (x_train, y_train), (x_test[:n_test], y_test[:n_test])


def load_fashion_mnist(batch_size=128, data_dir=None, subset=None, test_subset=None,
                       normalization="unit", shuffle=True, seed=0):
    """Loads Fashion-MNIST as batched ``tf.data.Dataset`` pipelines, offline.

    Args:
        batch_size: batch size of both datasets.
        data_dir: see :func:`load_fashion_mnist_arrays`.
        subset: optional number of training images.
        test_subset: optional number of test images.
        normalization: ``"unit"`` or ``"standardize"``.
        shuffle: reshuffle the training set each epoch.
        seed: seed of the subset draw and of the shuffling.

    Returns:
        ``(train_ds, test_ds)`` yielding ``(images, labels)`` batches with images of
        shape ``(batch, 28, 28, 1)`` in float32 and int32 labels.

    Example:
        >>> train_ds, test_ds = load_fashion_mnist(batch_size=64, subset=2048)
        >>> model.fit(train_ds, validation_data=test_ds, epochs=1)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer; received: batch_size={batch_size!r}")
    import tensorflow as tf  # Lazy: the numpy loaders must work without TensorFlow.

    (x, y), (xt, yt) = load_fashion_mnist_arrays(
        data_dir=data_dir, subset=subset, test_subset=test_subset,
        normalization=normalization, seed=seed)
    train = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        train = train.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    train = train.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    test = tf.data.Dataset.from_tensor_slices((xt, yt)).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return train, test


def load_mnist_test_split(data_dir=None, train_size=8000):
    """Loads the real MNIST *test* split and divides it into train/test parts.

    The project ships only MNIST's 10k test images (``shared/data/mnist``), the data
    of 002's toy experiment (fig. 4.6). Results using it must say so.

    Args:
        data_dir: folder with ``t10k-images-idx3-ubyte.gz`` and
            ``t10k-labels-idx1-ubyte.gz``; defaults to the shared folder.
        train_size: images of the first part (the rest is the second part).

    Returns:
        ``((x_train, y_train), (x_test, y_test))`` as float32 in [0, 1] and int32.
    """
    folder = pathlib.Path(data_dir) if data_dir is not None else SHARED_MNIST_DIR
    paths = [folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"]
    if not all(p.is_file() for p in paths):
        raise DataNotFoundError(f"MNIST test-split files not found in {folder}: expected {paths}.")
    images = read_idx(paths[0]).astype("float32")[..., None] / 255.0
    labels = read_idx(paths[1]).astype("int32")
    if not 0 < train_size < len(images):
        raise ValueError(
            f"train_size must be in (0, {len(images)}); received: train_size={train_size!r}")
    return (images[:train_size], labels[:train_size]), (images[train_size:], labels[train_size:])


def load_digits(test_fraction=0.25, seed=0):
    """Loads scikit-learn's 8x8 handwritten digits (ships with scikit-learn) for tiny tests.

    Args:
        test_fraction: fraction of the 1797 images held out as a test split.
        seed: seed of the split.

    Returns:
        ``((x_train, y_train), (x_test, y_test))`` with float32 images of shape
        ``(N, 8, 8, 1)`` in [0, 1] and int32 labels.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); received: test_fraction={test_fraction!r}")
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (bunch.images.astype("float32") / 16.0)[..., None]
    y = bunch.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test_idx, train_idx = order[:n_test], order[n_test:]
    return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])


def representative_dataset(data, n=100):
    """Builds a TFLite calibration generator from a dataset or an array.

    Args:
        data: a ``tf.data.Dataset`` yielding ``images`` or ``(images, labels)``
            batches, or a numpy array of images (first axis = samples).
        n: number of single-image samples to yield.

    Returns:
        A zero-argument callable returning a generator of ``[image[None]]`` lists,
        as ``tf.lite.TFLiteConverter.representative_dataset`` expects.

    Example:
        >>> converter.representative_dataset = representative_dataset(test_ds, 200)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive integer; received: n={n!r}")

    def _samples():
        if isinstance(data, np.ndarray):
            batches = [data]
        else:
            batches = (b[0] if isinstance(b, (tuple, list)) else b for b in data)
        count = 0
        for batch in batches:
            for image in np.asarray(batch):
                yield [image[None].astype("float32")]
                count += 1
                if count >= n:
                    return

    return _samples
