"""QuantizedConv2D / QuantizedDepthwiseConv2D: match the float layer within the
quantization rounding bound across shapes, strides, paddings, dilation, groups,
batch 1, int8 and packed int4, eager and under XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kernels_testutil import assert_within
from kernels_testutil import fake_quant_input
from kernels_testutil import input_step
from kernels_testutil import rounding_bound
from kernels_testutil import weight_step
from tfcompress.kernels import QuantizedConv2D
from tfcompress.kernels import QuantizedDepthwiseConv2D

CONV_CASES = {  # name: (input shape, Conv2D kwargs)
    "same3x3": ((2, 9, 11, 6), dict(filters=5, kernel_size=3, padding="same")),
    "stride2_batch1": ((1, 10, 7, 4), dict(filters=3, kernel_size=(3, 2), strides=2,
                                           padding="same")),
    "dilated_valid": ((2, 9, 9, 4), dict(filters=4, kernel_size=3, dilation_rate=2)),
    "grouped_1x1": ((1, 5, 6, 4), dict(filters=6, kernel_size=1, groups=2)),
    "odd_5x5_valid": ((2, 7, 8, 3), dict(filters=3, kernel_size=5, strides=(2, 1))),
    # strided 1×1 on >= 16 channels: strided slice + int8 matmul
    "pointwise_stride2_same": ((2, 9, 8, 16), dict(filters=7, kernel_size=1, strides=2,
                                                   padding="same")),
    "pointwise_stride_2x3_batch1": ((1, 7, 11, 20), dict(filters=5, kernel_size=1,
                                                         strides=(2, 3))),
}
PARAMS = [("same3x3", "dynamic", 8), ("same3x3", "static", 4), ("same3x3", "none", 8),
    ("stride2_batch1", "dynamic", 8), ("stride2_batch1", "static", 4),
    ("dilated_valid", "static", 8), ("dilated_valid", "none", 4),
    ("grouped_1x1", "dynamic", 4), ("odd_5x5_valid", "dynamic", 8),
    ("pointwise_stride2_same", "static", 8), ("pointwise_stride2_same", "dynamic", 4),
    ("pointwise_stride_2x3_batch1", "dynamic", 8),
]


def _conv_fn(layer):
    strides = (1,) + tuple(layer.strides) + (1,)
    dilations = (1,) + tuple(layer.dilation_rate) + (1,)
    return lambda a, w: tf.nn.conv2d(tf.constant(a, tf.float64), tf.constant(w, tf.float64),
                                     strides, layer.padding.upper(), dilations=dilations).numpy()


def _weight_step_full(layer, kernel, bits):
    """Δw with the kernel's shape: one step per output channel."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # outputs = (channel, multiplier)
        flat = kernel.reshape(kernel.shape[:2] + (-1,))
        return np.broadcast_to(weight_step(flat, bits), flat.shape).reshape(kernel.shape)
    return np.broadcast_to(weight_step(kernel, bits), kernel.shape)


def _check(float_layer, q, x, mode, static, bits, linear):
    kernel = float_layer.kernel.numpy()
    dx = input_step(x, mode, static, axes=(1, 2, 3))
    dw = _weight_step_full(float_layer, kernel, bits)
    bound = rounding_bound(linear, x, kernel, dx, dw)
    bias = float_layer.bias.numpy()
    reference = linear(x, kernel) + bias
    simulated = linear(fake_quant_input(x, dx), q.dequantized_kernel()) + bias
    eager = q(x).numpy()
    xla = tf.function(q, jit_compile=True)(tf.constant(x)).numpy()
    assert eager.shape == reference.shape == tuple(q.compute_output_shape(x.shape))
    np.testing.assert_allclose(eager, simulated, rtol=1e-4, atol=1e-4)
    assert_within(eager, reference, bound)
    np.testing.assert_allclose(xla, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case,mode,bits", PARAMS)
def test_conv_matches_float_within_rounding_bound(case, mode, bits):
    rng = np.random.default_rng(0)
    shape, kwargs = CONV_CASES[case]
    x = rng.standard_normal(shape).astype("float32")
    conv = keras.layers.Conv2D(**kwargs)
    conv.build(shape)
    conv.bias.assign(rng.standard_normal(conv.filters).astype("float32") * 0.1)
    static = float(np.abs(x).max() / 127) if mode == "static" else None
    q = QuantizedConv2D.from_conv2d(conv, activations_scale=static, bits=bits,
                                    input_quantization=mode)
    np.testing.assert_allclose(conv(x).numpy(), _conv_fn(conv)(x, conv.kernel.numpy())
                               + conv.bias.numpy(), atol=1e-5)
    _check(conv, q, x, mode, static, bits, _conv_fn(conv))


@pytest.mark.parametrize("mode,bits,kwargs", [
    ("dynamic", 8, dict(kernel_size=3, padding="same", depth_multiplier=2)),
    ("static", 4, dict(kernel_size=(3, 5), strides=2, padding="valid")),
    ("none", 8, dict(kernel_size=3, padding="same", dilation_rate=2, depth_multiplier=3)),
    ("static", 8, dict(kernel_size=(2, 3), strides=2, padding="same")),
])
def test_depthwise_matches_float_within_rounding_bound(mode, bits, kwargs):
    """Depthwise layers run as a sum over kernel taps (conv_core); exact integer
    arithmetic in float, so the same bound as the int8 × int8 → int32 path."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 9, 10, 3)).astype("float32")
    layer = keras.layers.DepthwiseConv2D(**kwargs)
    layer.build(x.shape)
    layer.bias.assign(rng.standard_normal(layer.bias.shape).astype("float32") * 0.1)
    static = float(np.abs(x).max() / 127) if mode == "static" else None
    q = QuantizedDepthwiseConv2D.from_depthwise_conv2d(
        layer, activations_scale=static, bits=bits, input_quantization=mode)
    strides = (1,) + tuple(layer.strides) + (1,)

    def linear(a, w):
        return tf.nn.depthwise_conv2d(tf.constant(a, tf.float64), tf.constant(w, tf.float64),
                                      strides, layer.padding.upper(),
                                      dilations=layer.dilation_rate).numpy()

    np.testing.assert_allclose(layer(x).numpy(),
                               linear(x, layer.kernel.numpy()) + layer.bias.numpy(),
                               atol=1e-5)
    _check(layer, q, x, mode, static, bits, linear)


def test_conv_keras_roundtrip(tmp_keras_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 8, 8, 4)).astype("float32")
    inp = keras.Input((8, 8, 4))
    conv = keras.layers.Conv2D(6, 3, padding="same", activation="relu")
    conv(inp)
    depthwise = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)
    depthwise(keras.Input((8, 8, 6)))
    h = QuantizedConv2D.from_conv2d(conv, bits=4, name="qc")(inp)
    out = QuantizedDepthwiseConv2D.from_depthwise_conv2d(
        depthwise, activations_scale=0.02, name="qd")(h)
    model = keras.Model(inp, out)
    model.save(tmp_keras_path)
    loaded = keras.models.load_model(tmp_keras_path)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    assert tuple(loaded.get_layer("qc").kernel.shape) == (3, 3, 4, 3)  # int4: 6 → 3 bytes
    assert loaded.get_layer("qd").input_quantization == "static"


@pytest.mark.parametrize("kwargs,needle", [
    (dict(filters=2, kernel_size=3, bits=3), "bits=3"),
    (dict(filters=2, kernel_size=0), "kernel_size"),
    (dict(filters=2, kernel_size=3, padding="causal"), "padding='causal'"),
    (dict(filters=2, kernel_size=3, strides=2, dilation_rate=2), "dilation_rate"),
    (dict(filters=3, kernel_size=3, groups=2), "groups=2"),
])
def test_conv_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        QuantizedConv2D(**kwargs)


def test_channels_first_rejected():
    conv = keras.layers.Conv2D(2, 3, data_format="channels_first")
    conv.build((None, 3, 8, 8))
    with pytest.raises(ValueError, match="data_format='channels_first'"):
        QuantizedConv2D.from_conv2d(conv)


def test_int8_channels_padded_for_xla():
    """XLA's int8 convolution runs up to 5× slower than float unless the input
    channels are a multiple of 4 and, on fewer than 32 input channels, there are at
    least 32 filters, so the layer zero-pads both (and slices the extra outputs off)
    — also once the shared compiled core has been retraced with relaxed (unknown)
    shapes by layers of other widths. With 32 or more input channels the extra
    filters cost more than they save: none are added."""
    rng = np.random.default_rng(7)
    layers = {}
    for channels in (3, 5, 1, 32, 34):
        conv = keras.layers.Conv2D(4, 3, padding="same")
        conv.build((None, 6, 6, channels))
        layers[channels] = QuantizedConv2D.from_conv2d(conv, activations_scale=0.02)
        layers[channels](rng.standard_normal((2, 6, 6, channels)).astype("float32"))
    for channels, padded, filters in ((3, 4, 32), (5, 8, 32), (1, 4, 32), (32, 32, 4),
                                      (34, 36, 4)):
        fn = tf.function(layers[channels], jit_compile=True)
        x = tf.constant(rng.standard_normal((2, 6, 6, channels)).astype("float32"))
        hlo = fn.experimental_get_compiler_ir(x)(stage="optimized_hlo")
        convolutions = [line for line in hlo.splitlines() if " convolution(" in line]
        assert len(convolutions) == 1 and f"s32[2,6,6,{filters}]" in convolutions[0]
        assert f"s8[2,6,6,{padded}]" in hlo, convolutions[0]
        np.testing.assert_allclose(fn(x).numpy(), layers[channels](x).numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_strided_pointwise_is_one_int8_matmul():
    """A strided 1×1 convolution on 16+ channels runs as a strided slice and one
    int8 matmul, no XLA convolution (which ran it at up to 1.2× float), also with a
    relaxed (unknown-shape) trace."""
    rng = np.random.default_rng(11)
    conv = keras.layers.Conv2D(8, 1, strides=2, padding="same")
    conv.build((None, None, None, 16))
    q = QuantizedConv2D.from_conv2d(conv, activations_scale=0.03)
    for shape in ((2, 9, 9, 16), (1, 8, 6, 16), (3, 5, 7, 16), (1, 11, 4, 16)):
        x = rng.standard_normal(shape).astype("float32")
        np.testing.assert_allclose(q(x).numpy(), conv(x).numpy(),
                                   atol=0.03 * np.abs(conv(x).numpy()).max())
    fn = tf.function(q, jit_compile=True)
    x = tf.constant(rng.standard_normal((2, 9, 9, 16)).astype("float32"))
    hlo = fn.experimental_get_compiler_ir(x)(stage="optimized_hlo")
    assert " convolution(" not in hlo and "s32[50,8]" in hlo, hlo


def test_depthwise_taps_with_varying_input_sizes():
    """The shared compiled core is retraced with unknown spatial sizes after a few
    shapes: the tap sum then slices with sizes computed in the graph."""
    rng = np.random.default_rng(9)
    layer = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)
    layer.build((None, None, None, 3))
    q = QuantizedDepthwiseConv2D.from_depthwise_conv2d(layer, input_quantization="none")
    for shape in ((1, 9, 9, 3), (2, 7, 8, 3), (1, 12, 5, 3), (3, 6, 6, 3), (1, 5, 11, 3)):
        x = rng.standard_normal(shape).astype("float32")
        reference = layer(x).numpy()
        np.testing.assert_allclose(q(x).numpy(), reference,
                                   atol=0.02 * np.abs(reference).max())
