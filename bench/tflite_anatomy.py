"""Where the bytes of a pruned int8 ``.tflite`` file go, and what coarser weight grids buy.

Two rewrites of a full-int8 TFLite file's constant weight tensors (Conv2D,
DepthwiseConv2D and FullyConnected filters: int8, rank 2 or 4), done on the
flatbuffer with TensorFlow's own ``flatbuffer_utils``:

* ``zero_weights``: every weight byte set to 0. The gzipped size of that file is
  the *fixed part* — int32 biases, per-channel scales and zero points, the graph —
  which no sparsity removes and which caps the gzip ratio of small models.
* ``regrid``: every weight moved onto a ``bits``-bit symmetric grid per
  quantization channel (absmax: step ``max|q| / (2^(bits-1) − 1)`` in int8 units,
  002 eq. 4.13) and rounded back to int8. The file keeps its format and scales —
  LiteRT runs it unchanged — but holds at most ``2^bits − 1`` distinct values per
  channel, the same set in every channel, so gzip's Huffman stage codes a nonzero
  weight in about ``bits`` bits. This is weight-only post-training quantization
  of the BN-folded weights, without retraining.
"""

import pathlib

import numpy as np

def _read(path):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.read_model(str(path))


def _write(model, path):
    from tensorflow.lite.tools import flatbuffer_utils

    flatbuffer_utils.write_model(model, str(path))
    return pathlib.Path(path)


def weight_tensors(model):
    """``(tensor, buffer)`` of every constant int8 weight tensor of rank 2 or 4."""
    from tensorflow.lite.python.schema_py_generated import TensorType

    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            buffer = model.buffers[tensor.buffer]
            if (tensor.type == TensorType.INT8 and len(tensor.shape) in (2, 4)
                    and buffer.data is not None and len(buffer.data)):
                yield tensor, buffer


def _channels_first(tensor, buffer):
    """The weights as a ``(channels, -1)`` array (channels: the quantized dimension)."""
    values = np.frombuffer(bytes(buffer.data), np.int8).reshape(tensor.shape)
    axis = tensor.quantization.quantizedDimension if tensor.quantization else 0
    return np.moveaxis(values, axis, 0), axis


def regrid_values(q, bits):
    """Snaps int8 rows ``q`` (one per channel) onto a symmetric ``bits``-bit grid.

    Args:
        q: int8 array ``(channels, n)``.
        bits: grid width, 2..8 (8 returns ``q`` unchanged).

    Returns:
        int8 array of ``q``'s shape with at most ``2^bits − 1`` values per row.
    """
    rows, step = _rows_and_steps(q, bits)
    snapped = np.round(np.round(rows / step) * step)
    return np.clip(snapped, -127, 127).astype(np.int8).reshape(q.shape)


def _rows_and_steps(q, bits):
    """``q`` as float rows (one per channel) and each row's grid step ``Δ`` in int8
    units: ``max|q| / (2^(bits-1) − 1)`` (1 for an all-zero row)."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in [2, 8], got {bits!r}")
    rows = q.reshape(len(q), -1).astype(np.float32)
    step = np.abs(rows).max(axis=1, keepdims=True) / (2 ** (bits - 1) - 1)
    step[step == 0] = 1.0
    return rows, step


def regrid(path, out, bits):
    """Writes ``path`` with its weights on a ``bits``-bit grid to ``out``."""
    model = _read(path)
    for tensor, buffer in weight_tensors(model):
        q, axis = _channels_first(tensor, buffer)
        buffer.data = np.moveaxis(regrid_values(q, bits), 0, axis).reshape(-1).view(np.uint8)
    return _write(model, out)


def grid_distance(path, bits):
    """Mean distance of the nonzero weights of ``path`` to their channel's ``bits``-bit
    grid, in units of the grid step ``Δ`` (0: on the grid; 0.25: uniform between
    grid points) — how far training has pulled the weights onto the grid (PSG)."""
    total, count = 0.0, 0
    for tensor, buffer in weight_tensors(_read(path)):
        rows, step = _rows_and_steps(_channels_first(tensor, buffer)[0], bits)
        units = (rows / step)[rows != 0]
        total += float(np.abs(units - np.round(units)).sum())
        count += units.size
    return total / count if count else 0.0


def zero_weights(path, out):
    """Writes ``path`` with every weight byte zeroed to ``out`` (the fixed part)."""
    model = _read(path)
    for _, buffer in weight_tensors(model):
        buffer.data = np.zeros(len(buffer.data), np.uint8)
    return _write(model, out)
