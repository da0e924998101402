"""The int8 convolution core shared by ``QuantizedConv2D`` and
``QuantizedDepthwiseConv2D``.

Formulation (chosen by measurement, see ``bench/kernels.py``): the input is quantized
to int8 and convolved with the int8 kernel by one XLA ``convolution`` with int32
accumulation (``XlaConvV2`` with ``preferred_element_type=int32``, NHWC × HWIO),
then rescaled once (``input_scale · kernel_scale``). On this CPU, im2col
formulations (shifted slices concatenated along channels, or one int8 matmul per
kernel tap) lose to it: materializing the ``kh·kw``-times larger patch matrix costs
more than the int8 matmul saves. Two exceptions: XLA runs a grouped convolution
with one channel per group as a scalar loop nest, so depthwise layers are computed
as a sum over kernel taps (:func:`depthwise_taps`); and a strided 1×1 convolution
is a strided slice and one int8 matmul (:func:`strided_pointwise`).
"""

import functools

from tfcompress.kernels import _common
from tfcompress.kernels.packing import unpack_int4_graph


def same_padding(size, kernel, stride, dilation):
    """TensorFlow's ``"same"`` padding ``(lo, hi)`` for one spatial axis.

    ``size`` may be a Python int or a scalar int32 tensor (computed in the graph from
    the static shape; XLA folds it to a constant).
    """
    effective = (kernel - 1) * dilation + 1
    out = (size + stride - 1) // stride
    total = (out - 1) * stride + effective - size
    if isinstance(total, int):
        total = max(total, 0)
    else:
        total = _common.tf().maximum(total, 0)
    return total // 2, total - total // 2


def explicit_padding(x, kernel_size, strides, dilation, padding):
    """``[[lo, hi], [lo, hi]]`` for the two spatial axes of an NHWC tensor."""
    if padding == "valid":
        return [[0, 0], [0, 0]]
    tf = _common.tf()
    dims = []
    for axis in (1, 2):
        size = x.shape[axis]
        size = int(size) if size is not None else tf.shape(x)[axis]
        dims.append(list(same_padding(size, kernel_size[axis - 1], strides[axis - 1],
                                      dilation[axis - 1])))
    if all(isinstance(v, int) for pair in dims for v in pair):
        return dims
    return tf.stack([tf.stack([tf.convert_to_tensor(v) for v in pair]) for pair in dims])


def _dimension_numbers():
    from tensorflow.compiler.tf2xla.python import xla as tfxla

    d = tfxla.xla_data_pb2.ConvolutionDimensionNumbers()
    d.input_batch_dimension = 0
    d.input_feature_dimension = 3
    d.input_spatial_dimensions.extend([1, 2])
    d.kernel_spatial_dimensions.extend([0, 1])
    d.kernel_input_feature_dimension = 2
    d.kernel_output_feature_dimension = 3
    d.output_batch_dimension = 0
    d.output_feature_dimension = 3
    d.output_spatial_dimensions.extend([1, 2])
    return d


def xla_conv(x, w, strides, pads, dilation, groups, preferred_element_type):
    """One XLA convolution NHWC × HWIO -> NHWC (no TF op has int8 × int8 → int32)."""
    from tensorflow.compiler.tf2xla.python import xla as tfxla

    return tfxla.conv(x, w, window_strides=list(strides), padding=pads,
                      lhs_dilation=[1, 1], rhs_dilation=list(dilation),
                      dimension_numbers=_dimension_numbers(), feature_group_count=groups,
                      preferred_element_type=preferred_element_type, use_v2=True)


# XLA's CPU int8 convolution is fast only for some channel counts (bench/kernels,
# table 'by channel count'): input channels that are not a multiple of 4 (an RGB or
# grayscale first layer) made it up to 2x slower than float, and fewer than 32
# filters on fewer than 32 input channels up to 5x slower. Zero channels and zero
# filters change no output, so the ungrouped int8 convolution is padded to 4·k input
# channels and, on fewer than 32 input channels, to at least 32 filters, the extra
# outputs sliced off. With 32 or more input channels the extra filters cost more
# than they save (same table).
INT8_CHANNEL_MULTIPLE = 4
INT8_MIN_FILTERS = 32
INT8_FILTER_PADDING_BELOW_INPUTS = 32


def channel_padding(in_channels, out_channels, groups):
    """``(extra input channels, extra filters)`` for the int8 convolution, as
    described above (none for a grouped convolution)."""
    if groups != 1:
        return 0, 0
    extra_out = 0
    if in_channels < INT8_FILTER_PADDING_BELOW_INPUTS:
        extra_out = max(INT8_MIN_FILTERS - out_channels, 0)
    return -in_channels % INT8_CHANNEL_MULTIPLE, extra_out


def pad_channels(x_q, w, extra_in, extra_out):
    """Zero-pads ``x_q`` (NHWC) with ``extra_in`` channels and ``w`` (HWIO) with
    ``extra_in`` input channels and ``extra_out`` filters.

    The amounts are static (:func:`channel_padding` of the layer's channel counts):
    the traced shapes of the shared compiled core may be relaxed to unknown.
    """
    tf = _common.tf()
    if extra_in:
        x_q = tf.pad(x_q, [[0, 0], [0, 0], [0, 0], [0, extra_in]])
    if extra_in or extra_out:
        w = tf.pad(w, [[0, 0], [0, 0], [0, extra_in], [0, extra_out]])
    return x_q, w


# XLA's int8 convolution ran a strided 1×1 kernel (a ResNet projection) at up to 1.2×
# the float time; slicing the strided pixels before quantizing them and one int8
# matmul ran at 0.4-1.0 of float with 16-128 input channels (bench/kernels, strided
# 1×1 table). With 3 input channels the convolution was as fast.
INT8_STRIDED_POINTWISE_MIN_INPUTS = 16


def strided_pointwise(x, w, strides, in_channels, out_channels, mode, input_scale):
    """A 1×1 convolution with strides > 1 of float ``x`` (NHWC) and int8 ``w``
    (``(1, 1, in, out)``): the strided pixels are sliced, quantized (a dynamic
    scale still covers all of ``x``) and multiplied by one int8 × int8 → int32
    matmul. Valid and same padding agree for a 1×1 kernel: ``ceil(n / s)`` outputs,
    no padding. The channel counts are static (the traced shapes may be relaxed).

    Returns:
        ``(acc, scale)``: the int32 NHWC accumulator and its input scale.
    """
    tf = _common.tf()
    pixels = x[:, ::strides[0], ::strides[1], :]
    x_q, scale = _common.quantize_inputs(pixels, mode, input_scale, axes=(1, 2, 3),
                                         scale_from=x)
    shape = tf.shape(x_q)
    acc = tf.linalg.matmul(tf.reshape(x_q, (-1, in_channels)),
                           tf.reshape(w, (in_channels, out_channels)), output_type=tf.int32)
    return tf.reshape(acc, tf.concat([shape[:3], [out_channels]], axis=0)), scale


def depthwise_taps(x, w, kernel_size, strides, pads, dilation, multiplier):
    """A depthwise convolution as a sum over kernel taps of strided windows of ``x``
    times that tap's per-channel weights (``w`` HWIO ``(kh, kw, 1, C·m)``).

    XLA's CPU backend runs a grouped convolution with one channel per group as a
    scalar loop nest, float or int8 (bench/kernels, depthwise table); this sum is
    one elementwise loop vectorized over channels.
    Called with integer-valued float tensors it is exact: every partial sum of
    int8 × int8 products stays below 2^24 for kernels up to 32×32 taps.
    """
    tf = _common.tf()
    x = tf.pad(x, tf.concat([[[0, 0]], pads, [[0, 0]]], axis=0))
    if multiplier > 1:  # output channel c·m + k reads input channel c
        x = tf.repeat(x, multiplier, axis=-1)
    shape = tf.shape(x)
    spans = []
    for axis in (0, 1):
        effective = (kernel_size[axis] - 1) * dilation[axis] + 1
        out = (shape[1 + axis] - effective) // strides[axis] + 1
        spans.append((out - 1) * strides[axis] + 1)
    y = None
    for i in range(kernel_size[0]):
        for j in range(kernel_size[1]):
            top, left = i * dilation[0], j * dilation[1]
            window = x[:, top:top + spans[0]:strides[0], left:left + spans[1]:strides[1], :]
            term = window * w[i, j, 0]
            y = term if y is None else y + term
    return y


def conv_core(x, kernel, kernel_scale, input_scale, *, bits, in_channels, out_channels,
              kernel_size, strides, padding, dilation, groups, mode):
    """``x`` NHWC float32 -> NHWC float32, without bias or activation.

    ``kernel`` is HWIO int8 (for ``bits=4``: packed along the output-channel axis).
    A depthwise layer (one input channel per group) takes :func:`depthwise_taps`,
    on the quantized input's integer values when the inputs are quantized.
    """
    tf = _common.tf()
    w = kernel if bits == 8 else unpack_int4_graph(kernel, out_channels, axis=3)
    pads = explicit_padding(x, kernel_size, strides, dilation, padding)
    if groups > 1 and groups == in_channels:
        taps = functools.partial(depthwise_taps, kernel_size=kernel_size, strides=strides,
                                 pads=pads, dilation=dilation,
                                 multiplier=out_channels // in_channels)
        if mode == "none":
            return taps(x, tf.cast(w, tf.float32) * kernel_scale)
        x_q, scale = _common.quantize_inputs(x, mode, input_scale, axes=(1, 2, 3))
        acc = taps(tf.cast(x_q, tf.float32), tf.cast(w, tf.float32))
        return acc * (scale * kernel_scale)
    if mode == "none":
        # Weight-only: dequantize the (small) kernel, convolve in float.
        w_float = tf.cast(w, tf.float32) * kernel_scale
        return xla_conv(x, w_float, strides, pads, dilation, groups, tf.float32)
    if (tuple(kernel_size) == (1, 1) and tuple(strides) != (1, 1) and groups == 1
            and in_channels >= INT8_STRIDED_POINTWISE_MIN_INPUTS):
        acc, scale = strided_pointwise(x, w, strides, in_channels, out_channels, mode,
                                       input_scale)
        return tf.cast(acc, tf.float32) * (scale * kernel_scale)
    x_q, scale = _common.quantize_inputs(x, mode, input_scale, axes=(1, 2, 3))
    extra_in, extra_out = channel_padding(in_channels, out_channels, groups)
    x_q, w = pad_channels(x_q, w, extra_in, extra_out)
    acc = xla_conv(x_q, w, strides, pads, dilation, groups, tf.int32)
    if extra_out:
        acc = acc[..., :out_channels]
    return tf.cast(acc, tf.float32) * (scale * kernel_scale)


def conv_output_length(size, kernel, stride, dilation, padding):
    if size is None:
        return None
    if padding == "same":
        return (size + stride - 1) // stride
    effective = (kernel - 1) * dilation + 1
    return (size - effective) // stride + 1
