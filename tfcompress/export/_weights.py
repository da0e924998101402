"""What a model stores: one row per weight tensor, for :func:`tfcompress.report`.

Each row is a dict ``name, shape, dtype, bits, params, nonzeros, kind, encoding``:

* ``params``: the weight's *logical* element count (a packed int4 kernel counts its
  unpacked values, a block-sparse or TFLite-sparse kernel its dense shape);
* ``nonzeros``: how many of those are nonzero (quantized weights: nonzero codes);
* ``bits``: the stored element width (dtype-based; 4 for packed int4 kernels);
* ``kind``: ``"weight"`` (counted as a parameter), ``"metadata"`` (sparse
  indices, shape and axis constants) or ``"duplicate"`` (a second copy of a
  weight): stored, but not parameters;
* ``encoding``: ``"dense"``, ``"int4-packed"``, ``"block-sparse"`` or
  ``"tflite-sparse"``.
"""

import numpy as np

_DTYPE_BITS = {"bfloat16": 16, "bool": 8, "float8_e4m3fn": 8, "float8_e5m2": 8,
               "int4": 4, "uint4": 4}


def dtype_bits(dtype):
    """Bits per element of a dtype name (``"float32"`` → 32, ``"int8"`` → 8)."""
    name = str(getattr(dtype, "name", dtype))
    if name in _DTYPE_BITS:
        return _DTYPE_BITS[name]
    return np.dtype(name).itemsize * 8


def _row(name, shape, dtype, bits, params, nonzeros, kind="weight", encoding="dense",
         index=None):
    row = {"name": name, "shape": [int(d) for d in shape], "dtype": str(dtype),
           "bits": int(bits), "params": int(params), "nonzeros": int(nonzeros),
           "kind": kind, "encoding": encoding}
    if index is not None:
        row["index"] = int(index)
    return row


# ----------------------------------------------------------------------------- Keras
def _quantized_rows(layer, claimed):
    """Rows for a ``tfcompress.kernels`` layer that stores quantized or sparse
    weights; ``claimed`` collects the ids of the variables these rows describe."""
    rows = []
    if hasattr(layer, "dequantized_kernel") and hasattr(layer, "kernel"):
        logical = layer.dequantized_kernel()
        var = layer.kernel
        claimed.add(id(var))
        rows.append(_row(var.path, logical.shape, var.dtype, layer.bits, logical.size,
                         np.count_nonzero(logical),
                         encoding="int4-packed" if layer.bits == 4 else "dense"))
    elif hasattr(layer, "dense_kernel") and hasattr(layer, "blocks"):
        logical_shape = (layer.in_features, layer.units)
        var = layer.blocks
        claimed.add(id(var))
        rows.append(_row(var.path, logical_shape, var.dtype, 8 if layer.bits else 32,
                         np.prod(logical_shape), np.count_nonzero(np.asarray(var.numpy())),
                         encoding="block-sparse"))
        for var in (layer.block_rows, layer.block_cols):
            claimed.add(id(var))
            rows.append(_row(var.path, var.shape, var.dtype, dtype_bits(var.dtype),
                             np.prod(var.shape), np.count_nonzero(var.numpy()), kind="metadata"))
    return rows


def keras_weight_rows(model):
    """One row per variable of a (stripped) Keras model, kernel layers decoded."""
    rows, claimed = [], set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if layer.built:
            rows.extend(_quantized_rows(layer, claimed))
    seen = set(claimed)
    for var in model.weights:
        if id(var) in seen:
            continue
        seen.add(id(var))
        value = np.asarray(var.numpy())
        rows.append(_row(var.path, value.shape, var.dtype, dtype_bits(var.dtype), value.size,
                         np.count_nonzero(value)))
    return rows


def keras_weight_arrays(model):
    """Every variable of ``model`` as a numpy array, in its stored dtype."""
    seen, arrays = set(), []
    for var in model.weights:
        if id(var) not in seen:
            seen.add(id(var))
            arrays.append(np.asarray(var.numpy()))
    return arrays


# ----------------------------------------------------------------------------- TFLite
def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _tflite_numpy_dtypes(schema):
    t = schema.TensorType
    return {t.FLOAT32: "float32", t.FLOAT16: "float16", t.FLOAT64: "float64",
            t.INT8: "int8", t.UINT8: "uint8", t.INT16: "int16", t.UINT16: "uint16",
            t.INT32: "int32", t.UINT32: "uint32", t.INT64: "int64", t.UINT64: "uint64",
            t.BOOL: "bool", t.INT4: "int4", t.UINT4: "uint4"}


def _unpack_nibbles(raw, signed):
    low, high = raw & 0x0F, raw >> 4
    values = np.stack([low, high], axis=-1).reshape(-1).astype(np.int8)
    return np.where(values > 7, values - 16, values) if signed else values


def _decode(data, dtype):
    """Buffer bytes → flat numpy values (int4 unpacked)."""
    raw = np.frombuffer(bytes(data), dtype=np.uint8)
    if dtype in ("int4", "uint4"):
        return _unpack_nibbles(raw, signed=dtype == "int4")
    if dtype == "bool":
        return raw.astype(bool)
    return raw.view(np.dtype(dtype))


def _zero_points(tensor):
    q = tensor.quantization
    if q is None or q.zeroPoint is None:
        return None
    zp = np.asarray(q.zeroPoint)
    return zp if zp.size and np.any(zp != 0) else None


def _count_nonzero(values, tensor, dense_shape):
    """Nonzero *real* values: quantized codes equal to the zero point are zeros."""
    zp = _zero_points(tensor)
    if zp is None:
        return int(np.count_nonzero(values))
    if zp.size == 1:
        return int(np.count_nonzero(values != zp[0]))
    if values.size != int(np.prod(dense_shape)):  # sparse storage: zero points per
        return int(np.count_nonzero(values))     # channel cannot be lined up; rare
    axis = tensor.quantization.quantizedDimension
    shape = [1] * len(dense_shape)
    shape[axis] = zp.size
    return int(np.count_nonzero(values.reshape(dense_shape) != zp.reshape(shape)))


def _is_parameter(tensor, dtype):
    """Weights are float or quantized constants; unquantized integer constants are
    shapes, axes, paddings (metadata)."""
    quantized = tensor.quantization is not None and tensor.quantization.scale is not None \
        and len(tensor.quantization.scale) > 0
    return dtype.startswith(("float", "bfloat")) or quantized


def _sparsity_index_count(sparsity):
    """Elements of the sparse index arrays (segments + indices) of a sparse tensor."""
    count = 0
    for dim in sparsity.dimMetadata or []:
        for vector in (dim.arraySegments, dim.arrayIndices):
            values = getattr(vector, "values", None) if vector is not None else None
            count += 0 if values is None else len(values)
    return count


def tflite_weight_rows(flatbuffer):
    """One row per constant tensor of the main subgraph of a ``.tflite`` flatbuffer.

    Args:
        flatbuffer: the file's bytes.

    Returns:
        Rows as described in this module's docstring, each with ``index``: the
        tensor's index in the interpreter (``get_tensor_details()``). A sparse
        tensor (``Optimize.EXPERIMENTAL_SPARSITY``) also yields a ``"metadata"`` row
        for its segment/index arrays. Buffers shared by several tensors are
        counted once.
    """
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    dtypes = _tflite_numpy_dtypes(schema)
    rows, seen_buffers = [], set()
    for index, tensor in enumerate(model.subgraphs[0].tensors or []):
        buffer = model.buffers[tensor.buffer] if tensor.buffer else None
        if buffer is None or buffer.data is None or len(buffer.data) == 0:
            continue
        if tensor.buffer in seen_buffers:
            continue
        seen_buffers.add(tensor.buffer)
        dtype = dtypes.get(tensor.type, f"tflite_type_{tensor.type}")
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
        shape = [] if tensor.shape is None else list(tensor.shape)
        values = _decode(buffer.data, dtype)
        kind = "weight" if _is_parameter(tensor, dtype) else "metadata"
        bits = dtype_bits(dtype)
        if tensor.sparsity is not None:
            dense_size = int(np.prod(shape))
            rows.append(_row(name, shape, dtype, bits, dense_size, _count_nonzero(
                values, tensor, shape), kind, "tflite-sparse", index))
            rows.append(_row(f"{name} (sparse indices)", [_sparsity_index_count(
                tensor.sparsity)], "int32", 32, _sparsity_index_count(tensor.sparsity), 0,
                "metadata", "tflite-sparse", index))
            continue
        values = values[:int(np.prod(shape))] if shape else values[:1]
        rows.append(_row(name, shape, dtype, bits, values.size,
                         _count_nonzero(values, tensor, shape or [1]), kind, "dense", index))
    return rows


# ----------------------------------------------------------------------------- SavedModel
def saved_model_weight_rows(path):
    """One row per variable in a SavedModel's checkpoint (``variables/``).

    A Keras export saves every variable twice (under ``variables/`` and
    ``_all_variables/``); a variable equal in dtype, shape and value to an earlier
    one gets ``kind="duplicate"`` (stored, not counted as parameters).
    """
    import hashlib

    import tensorflow as tf

    prefix = f"{path}/variables/variables"
    if not tf.io.gfile.exists(prefix + ".index"):
        return []
    reader = tf.train.load_checkpoint(prefix)
    rows, seen = [], set()
    for key, dtype in sorted(reader.get_variable_to_dtype_map().items()):
        if key.startswith("_CHECKPOINTABLE_OBJECT_GRAPH"):
            continue
        value = np.asarray(reader.get_tensor(key))
        digest = (dtype.name, value.shape, hashlib.sha1(value.tobytes()).hexdigest())
        kind = "duplicate" if digest in seen else "weight"
        seen.add(digest)
        rows.append(_row(key.replace("/.ATTRIBUTES/VARIABLE_VALUE", ""), value.shape,
                         dtype.name, dtype_bits(dtype.name), value.size,
                         np.count_nonzero(value), kind=kind))
    return rows
