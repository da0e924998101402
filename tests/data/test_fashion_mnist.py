"""Offline data loaders: real Fashion-MNIST from the Debian files, errors, pipelines."""

import gzip
import subprocess
import sys

import numpy as np
import pytest

from tfcompress import data
from tfcompress.data.fashion_mnist import SHARED_MNIST_DIR as SHARED_MNIST


def test_real_fashion_mnist_shapes_ranges_and_labels():
    (x, y), (xt, yt) = data.load_fashion_mnist_arrays()
    assert x.shape == (60000, 28, 28, 1) and xt.shape == (10000, 28, 28, 1)
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert 0.0 == x.min() and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10))
    # Fashion-MNIST is balanced: 6000 training images per class.
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 6000))
    # Known statistic of the real dataset (not MNIST: MNIST's mean is ~0.1307).
    assert abs(float(x.mean()) - 0.2860) < 1e-3


def test_subset_is_deterministic_and_standardize_centres():
    (a, ya), _ = data.load_fashion_mnist_arrays(subset=500, seed=3)
    (b, yb), _ = data.load_fashion_mnist_arrays(subset=500, seed=3)
    (c, _), _ = data.load_fashion_mnist_arrays(subset=500, seed=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a, c)
    (s, _), _ = data.load_fashion_mnist_arrays(normalization="standardize")
    assert abs(float(s.mean())) < 1e-2 and abs(float(s.std()) - 1.0) < 1e-2


def test_missing_files_error_names_the_debian_package(tmp_path):
    with pytest.raises(data.DataNotFoundError) as info:
        data.load_fashion_mnist_arrays(data_dir=tmp_path)
    message = str(info.value)
    assert "apt-get install -y dataset-fashion-mnist" in message
    assert str(tmp_path) in message and "train-images-idx3-ubyte.gz" in message


def test_env_var_points_the_loader(tmp_path, monkeypatch):
    monkeypatch.setenv("TFCOMPRESS_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataNotFoundError, match=str(tmp_path)):
        data.load_fashion_mnist_arrays()


@pytest.mark.parametrize(
    "kwargs, name",
    [({"subset": 0}, "subset"), ({"subset": 2.5}, "subset"),
     ({"test_subset": -1}, "test_subset"), ({"normalization": "zscore"}, "normalization")],
)
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=f"{name}="):
        data.load_fashion_mnist_arrays(**kwargs)


def test_loading_works_with_the_network_disabled():
    code = (
        "import socket\n"
        "def _no_network(*a, **k):\n"
        "    raise RuntimeError('network access attempted')\n"
        "socket.socket.connect = _no_network\n"
        "socket.create_connection = _no_network\n"
        "socket.getaddrinfo = _no_network\n"
        "from tfcompress import data\n"
        "train, test = data.load_fashion_mnist(batch_size=256, subset=1024, test_subset=512)\n"
        "x, y = next(iter(train))\n"
        "assert tuple(x.shape) == (256, 28, 28, 1), x.shape\n"
        "assert sum(int(b[0].shape[0]) for b in test) == 512\n"
        "print('offline-ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "offline-ok" in result.stdout


def test_tf_data_pipeline_batches_and_shuffles():
    train, test = data.load_fashion_mnist(batch_size=100, subset=300, test_subset=250, seed=1)
    sizes = [int(x.shape[0]) for x, _ in train]
    assert sizes == [100, 100, 100]
    assert [int(x.shape[0]) for x, _ in test] == [100, 100, 50]
    first = np.concatenate([y.numpy() for _, y in train])
    second = np.concatenate([y.numpy() for _, y in train])
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)
    with pytest.raises(ValueError, match="batch_size=0"):
        data.load_fashion_mnist(batch_size=0)


def test_representative_dataset_yields_single_samples():
    _, test = data.load_fashion_mnist(batch_size=32, test_subset=100)
    samples = list(data.representative_dataset(test, n=40)())
    assert len(samples) == 40
    assert all(s[0].shape == (1, 28, 28, 1) and s[0].dtype == np.float32 for s in samples)
    array_samples = list(data.representative_dataset(np.zeros((5, 4, 4, 1)), n=10)())
    assert len(array_samples) == 5
    with pytest.raises(ValueError, match="n=0"):
        data.representative_dataset(test, n=0)


def test_digits():
    (x, y), (xt, yt) = data.load_digits(test_fraction=0.25)
    assert x.shape[1:] == (8, 8, 1) and len(x) + len(xt) == 1797
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_mnist_test_split_missing_folder_is_reported(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="MNIST test-split files not found"):
        data.load_mnist_test_split(data_dir=tmp_path)


@pytest.mark.skipif(not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="the project's shared/data/mnist folder is not beside this checkout")
def test_mnist_test_split():
    (mx, my), (mxt, myt) = data.load_mnist_test_split(train_size=8000)
    assert mx.shape == (8000, 28, 28, 1) and mxt.shape == (2000, 28, 28, 1)
    assert abs(float(np.concatenate([mx, mxt]).mean()) - 0.1325) < 5e-3  # MNIST test mean


def test_read_idx_rejects_garbage(tmp_path):
    bad = tmp_path / "bad-idx1-ubyte.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x01\x02\x03\x04garbage")
    with pytest.raises(ValueError, match="Not an IDX file"):
        data.read_idx(bad)
    truncated = tmp_path / "short-idx1-ubyte"
    truncated.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02")
    with pytest.raises(ValueError, match="declares shape"):
        data.read_idx(truncated)
