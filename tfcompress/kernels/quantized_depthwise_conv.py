"""``QuantizedDepthwiseConv2D``: a DepthwiseConv2D layer on int8 (or packed int4)
weights, computed under XLA."""

import keras

from tfcompress.kernels import _common
from tfcompress.kernels.quantized_conv import _QuantizedConvBase
from tfcompress.kernels.quantized_conv import check_conv_layer


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantizedDepthwiseConv2D(_QuantizedConvBase):
    """Inference DepthwiseConv2D on int8 / packed-int4 weights, computed under XLA.

    Computed as a sum over the kernel taps of strided windows of the (int8-valued)
    input times each tap's int8 weights, in exact integer arithmetic on float32
    (:func:`tfcompress.kernels._conv.depthwise_taps`): XLA's CPU backend runs a
    grouped convolution with one channel per group as a scalar loop nest, several
    times slower even than its float DepthwiseConv2D, which is itself slower than
    this layer (bench/kernels, depthwise table). The kernel is stored HWIO
    ``(kh, kw, 1, channels · depth_multiplier)`` — Keras's depthwise kernel
    ``(kh, kw, channels, depth_multiplier)`` reshaped, output channel ``c · m + k``
    as in TensorFlow — with one scale per output channel; ``bits=4`` packs pairs of
    output channels into one byte.

    Args:
        kernel_size: int or ``(kh, kw)``.
        strides: int or ``(sh, sw)``.
        padding: ``"valid"`` or ``"same"``.
        depth_multiplier: outputs per input channel.
        dilation_rate: int or ``(dh, dw)``.
        activation: activation after the bias.
        use_bias: whether to add a bias.
        bits: weight bits, 8 or 4.
        input_quantization: ``"dynamic"`` (default), ``"static"`` or ``"none"``.
        **kwargs: base ``Layer`` arguments.

    Raises:
        ValueError: on invalid arguments (named in the message).
    """

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1,
                 dilation_rate=1, activation=None, use_bias=True, bits=8,
                 input_quantization="dynamic", **kwargs):
        super().__init__(kernel_size=kernel_size, strides=strides, padding=padding,
                         dilation_rate=dilation_rate, activation=activation,
                         use_bias=use_bias, bits=bits,
                         input_quantization=input_quantization, **kwargs)
        self.depth_multiplier = _common.check_positive_int(depth_multiplier,
                                                           "depth_multiplier")

    def _groups(self, in_channels):
        return in_channels

    def _out_channels(self, in_channels):
        return None if in_channels is None else in_channels * self.depth_multiplier

    def _float_kernel_to_hwio(self, kernel):
        kh, kw, channels, multiplier = kernel.shape
        return kernel.reshape(kh, kw, 1, channels * multiplier)

    @classmethod
    def from_depthwise_conv2d(cls, layer, activations_scale=None, bits=8,
                              input_quantization=None, name=None):
        """Builds a ``QuantizedDepthwiseConv2D`` from a float ``DepthwiseConv2D``.

        Args:
            layer: a built ``keras.layers.DepthwiseConv2D`` (channels_last).
            activations_scale: calibrated per-tensor input scale (static mode).
            bits: weight bits, 8 or 4.
            input_quantization: ``None`` (static if a scale is given, else dynamic),
                ``"dynamic"``, ``"static"`` or ``"none"``.
            name: name of the new layer (defaults to the float layer's name).

        Returns:
            A built ``QuantizedDepthwiseConv2D``.
        """
        check_conv_layer(layer, keras.layers.DepthwiseConv2D)
        return cls._from_float(layer, layer.kernel.shape[2], bits, input_quantization,
                               activations_scale, name,
                               depth_multiplier=layer.depth_multiplier)

    def dequantized_kernel(self):
        """The float kernel in Keras's depthwise layout ``(kh, kw, channels, mult)``."""
        w = super().dequantized_kernel()
        return w.reshape(self.kernel_size + (self.in_channels, self.depth_multiplier))

    def get_config(self):
        return {**super().get_config(), "depth_multiplier": self.depth_multiplier}

