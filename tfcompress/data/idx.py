"""Parser for the IDX file format of (Fashion-)MNIST, gzipped or not."""

import gzip
import pathlib

import numpy as np

# IDX type codes (third byte of the magic number) -> numpy dtypes (big-endian).
_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path):
    """Reads an IDX file (``.gz`` or raw) into a numpy array.

    Args:
        path: path of the file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        A numpy array with the shape stored in the file header.

    Raises:
        ValueError: if the header is not a valid IDX header or the payload size
            does not match the shape it declares.
    """
    path = pathlib.Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"Not an IDX file: {path} (magic bytes {raw[:4]!r}).")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header_end = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header_end != expected:
        raise ValueError(
            f"IDX file {path} declares shape {shape} ({expected} bytes) but holds "
            f"{len(raw) - header_end} bytes of data."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape).astype(dtype.newbyteorder("="))
