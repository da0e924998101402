"""Power-of-two per-channel weight scales for full-integer TFLite files.

TFLite's int8 convolution and fully-connected weights carry one float32 scale per
output channel, and their int32 biases one more (``input scale × weight scale``).
Those scales are arbitrary floats, so gzip cannot shrink them: in a pruned ResNet-20
they are about 6 KB of a 47 KB gzipped file — the largest part of what no sparsity
removes. Rounding every weight scale *up* to a power of two (and requantizing the
int8 weights and int32 biases to it) makes the scale arrays compressible (only the
exponent varies; every bias scale shares the input scale's mantissa) and leaves the
file's format unchanged, so LiteRT and XNNPACK run it as before.

The cost is precision: a channel's scale grows by a factor in ``[1, 2)``, so its
weights keep between 7 and 8 of their 8 bits. Rounding up (never down) keeps every
requantized weight inside ``[-127, 127]``. With ``bits < 8`` the weights are
requantized onto ``bits``-bit integers (still stored as int8): every channel then
draws from the same ``2^bits − 1`` values, which gzip codes in about ``bits`` bits.
"""

import numpy as np

# Ops whose inputs are (activations, int8 weights, optional int32 bias).
_WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def power_of_two_scales(flatbuffer, bits=8):
    """Rewrites a full-integer TFLite model with power-of-two weight scales.

    For each Conv2D, DepthwiseConv2D and FullyConnected op with int8 weights ``q``
    (scales ``s_c``, largest magnitude ``m_c = s_c·max|q_c|``) and an int32 bias
    ``b`` (scales ``x_s·s_c``, ``x_s`` the input scale), with ``n = 2^(bits−1) − 1``:

        s'_c = 2^⌈log2(m_c / n)⌉,   q' = round(q·s_c / s'_c),   b' = round(b·s_c / s'_c),

    so ``|q'| ≤ n``, and the bias scales become ``x_s·s'_c``: the bias stays in the
    accumulator's units, as TFLite's kernels require. An all-zero channel gets
    ``2^⌈log2 s_c⌉``. Rewriting a rewritten model (same ``bits``) changes nothing.

    Args:
        flatbuffer: the ``.tflite`` model as bytes (e.g. ``converter.convert()``).
        bits: weight bit-width, 2..8; below 8 this is weight-only post-training
            quantization of the file onto a ``bits``-bit power-of-two-scaled grid.

    Returns:
        The rewritten model as bytes.

    Raises:
        ValueError: ``bits`` outside 2..8, or ``flatbuffer`` has no op with int8
            weights and int8 inputs (a float, float16, dynamic-range or int16x8
            model).

    Example:
        >>> int8 = pathlib.Path("cnn_int8.tflite").read_bytes()
        >>> pathlib.Path("cnn_pot.tflite").write_bytes(power_of_two_scales(int8))
        >>> # or in one step, verified against Keras:
        >>> to_tflite(model, "cnn_pot.tflite", mode="int8", power_of_two_scales=True,
        ...           representative_data=calibration, verify_data=x_test[:1000])
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer in [2, 8]; received: bits={bits!r}")
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    wanted = {getattr(schema.BuiltinOperator, name) for name in _WEIGHTED_OPS}
    done, rewritten = set(), 0
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) not in wanted:
                continue
            inputs = list(op.inputs) + [-1]
            activations, weights, bias = (subgraph.tensors[i] if i >= 0 else None
                                          for i in inputs[:3])
            if (weights is None or weights.type != schema.TensorType.INT8
                    or activations.type != schema.TensorType.INT8 or id(weights) in done):
                continue
            done.add(id(weights))
            ratio = _rescale_weights(model, weights, 2 ** (bits - 1) - 1)
            if bias is not None and bias.type == schema.TensorType.INT32:
                _rescale_bias(model, bias, ratio, activations.quantization.scale[0],
                              weights.quantization.scale)
            rewritten += 1
    if not rewritten:
        raise ValueError("flatbuffer has no int8 Conv2D/DepthwiseConv2D/FullyConnected "
                         "weights with int8 inputs to rescale (power_of_two_scales needs "
                         "a full-integer int8 model)")
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _rescale_weights(model, tensor, levels):
    """Gives ``tensor`` power-of-two scales with ``|q| ≤ levels`` and requantizes its
    int8 data in place; returns the per-channel ratio ``s / s'`` it applied."""
    quantization = tensor.quantization
    scale = np.asarray(quantization.scale, np.float64)
    buffer = model.buffers[tensor.buffer]
    values = np.frombuffer(bytes(buffer.data), np.int8).reshape(tensor.shape)
    axis = quantization.quantizedDimension  # per-tensor: one scale, any axis broadcasts
    largest = np.abs(np.moveaxis(values, axis, 0).reshape(len(scale), -1).astype(np.int32)).max(1)
    target = np.where(largest > 0, scale * largest / levels, scale)
    positive = target > 0
    new_scale = np.where(positive, np.exp2(np.ceil(np.log2(np.where(positive, target, 1.0)))),
                         scale)
    ratio = np.divide(scale, new_scale, out=np.ones_like(scale), where=new_scale > 0)
    shape = [1] * values.ndim
    shape[axis] = -1
    values = np.clip(np.round(values * ratio.reshape(shape)), -levels, levels).astype(np.int8)
    buffer.data = values.reshape(-1).view(np.uint8)
    quantization.scale = new_scale.astype(np.float32).tolist()
    return ratio


def _rescale_bias(model, tensor, ratio, input_scale, weight_scale):
    """Requantizes an int32 bias to the scales ``input_scale × weight_scale``."""
    buffer = model.buffers[tensor.buffer]
    values = np.frombuffer(bytes(buffer.data), np.int32).astype(np.float64)
    buffer.data = np.round(values * ratio).astype(np.int32).view(np.uint8)
    tensor.quantization.scale = (np.float32(input_scale)
                                 * np.asarray(weight_scale, np.float32)).tolist()
