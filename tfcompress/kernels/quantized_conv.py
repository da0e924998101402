"""``QuantizedConv2D``: a Conv2D layer that stores int8 (or packed int4) weights and
computes on them under XLA."""

import math

import keras
import numpy as np

from tfcompress.kernels import _common
from tfcompress.kernels import _conv
from tfcompress.kernels.packing import pack_int4
from tfcompress.kernels.packing import unpack_int4

PADDINGS = ("valid", "same")


def check_padding(padding):
    value = padding.lower() if isinstance(padding, str) else padding
    if value not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}; received: padding={padding!r}")
    return value


def check_conv_layer(layer, expected_type):
    """Raises ``ValueError`` for a float conv layer the kernels cannot reproduce."""
    if not isinstance(layer, expected_type) or not layer.built:
        raise ValueError(f"layer must be a built keras.layers.{expected_type.__name__}; "
                         f"received: layer={layer!r}")
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise ValueError(f"{layer.name}: only data_format='channels_last' is supported; "
                         f"received: data_format={layer.data_format!r}")
    if layer.padding not in PADDINGS:
        raise ValueError(f"{layer.name}: padding must be one of {PADDINGS}; received: "
                         f"padding={layer.padding!r}")


class _QuantizedConvBase(keras.layers.Layer):
    """Shared weights, compute and config of the quantized 2-D convolutions."""

    def __init__(self, kernel_size, strides=1, padding="valid", dilation_rate=1,
                 activation=None, use_bias=True, bits=8, input_quantization="dynamic",
                 **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = _common.check_tuple(kernel_size, 2, "kernel_size")
        self.strides = _common.check_tuple(strides, 2, "strides")
        self.padding = check_padding(padding)
        self.dilation_rate = _common.check_tuple(dilation_rate, 2, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError("strides > 1 cannot be combined with dilation_rate > 1; "
                             f"received: strides={self.strides}, "
                             f"dilation_rate={self.dilation_rate}")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.bits = _common.check_bits(bits)
        self.input_quantization = _common.check_input_quantization(input_quantization)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    # subclasses define: _groups(in_channels), _out_channels(in_channels),
    # _kernel_in(in_channels) (HWIO "I" dimension), _float_kernel_to_hwio(kernel)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name}: the channel dimension must be known; received: "
                             f"input_shape={tuple(input_shape)}")
        self.in_channels = int(channels)
        self.groups_ = self._groups(self.in_channels)
        self.out_channels = self._out_channels(self.in_channels)
        self.in_per_group = self.in_channels // self.groups_
        stored_out = self.out_channels if self.bits == 8 else math.ceil(self.out_channels / 2)
        self.kernel = self.add_weight(
            name="kernel", shape=self.kernel_size + (self.in_per_group, stored_out),
            dtype="int8", initializer="zeros", trainable=False)
        _common.add_output_weights(self, self.out_channels)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: self.in_channels})

    @classmethod
    def _from_float(cls, layer, in_channels, bits, input_quantization, activations_scale,
                    name, **shape_args):
        """Builds one of these layers from a checked float convolution and fills it.

        ``shape_args`` are the constructor arguments particular to the subclass
        (``filters``/``groups``, ``depth_multiplier``); the rest are read off ``layer``.
        """
        bits = _common.check_bits(bits)
        mode, scale = _common.resolve_input_quantization(input_quantization,
                                                         activations_scale)
        new = cls(kernel_size=layer.kernel_size, strides=layer.strides, padding=layer.padding,
                  dilation_rate=layer.dilation_rate,
                  activation=_common.layer_activation(layer), use_bias=layer.use_bias,
                  bits=bits, input_quantization=mode, name=name or layer.name, **shape_args)
        new.build((None, None, None, in_channels))
        bias = _common.to_numpy(layer.bias) if layer.use_bias else None
        new.set_float_weights(_common.to_numpy(layer.kernel), bias, scale)
        return new

    def set_float_weights(self, kernel, bias=None, activations_scale=None):
        """Quantizes a float kernel (the float layer's layout) into this built layer."""
        kernel = self._float_kernel_to_hwio(np.asarray(kernel, dtype=np.float32))
        expected = self.kernel_size + (self.in_per_group, self.out_channels)
        if kernel.shape != expected:
            raise ValueError(f"{self.name}: kernel must have HWIO shape {expected}; "
                             f"received: kernel.shape={kernel.shape}")
        w_q, scale = _common.quantize_per_channel(kernel, self.bits, axis=-1)
        if self.bits == 4:
            w_q = pack_int4(w_q, axis=3)
        self.kernel.assign(w_q)
        _common.assign_output_weights(self, self.out_channels, scale, bias,
                                      activations_scale)

    def dequantized_kernel(self):
        """The float HWIO kernel this layer computes with (numpy)."""
        w = _common.to_numpy(self.kernel)
        if self.bits == 4:
            w = unpack_int4(w, self.out_channels, axis=3)
        return w.astype(np.float32) * _common.to_numpy(self.kernel_scale)

    def call(self, inputs):
        x = _common.as_float32(inputs)
        core = _common.compiled(
            _conv.conv_core, bits=self.bits, in_channels=self.in_channels,
            out_channels=self.out_channels, kernel_size=self.kernel_size,
            strides=self.strides, padding=self.padding, dilation=self.dilation_rate,
            groups=self.groups_, mode=self.input_quantization)
        y = core(x, _common.read(self.kernel), _common.read(self.kernel_scale),
                 _common.read(self.input_scale))
        return _common.finish_output(self, y)

    def compute_output_shape(self, input_shape):
        spatial = [_conv.conv_output_length(input_shape[1 + i], self.kernel_size[i],
                                            self.strides[i], self.dilation_rate[i],
                                            self.padding) for i in range(2)]
        return (input_shape[0], *spatial, self._out_channels(input_shape[-1]))

    def get_config(self):
        config = {
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "bits": self.bits,
            "input_quantization": self.input_quantization,
        }
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantizedConv2D(_QuantizedConvBase):
    """Inference Conv2D on int8 / packed-int4 weights, computed under XLA.

    Per-output-channel symmetric weight scales; unless ``input_quantization="none"``
    the input is quantized to int8 (one scale per example when dynamic, the stored
    calibrated scale when static) and convolved by one XLA int8 × int8 → int32
    convolution, then rescaled, biased and activated. ``"same"`` padding pads with
    int8 zeros, which is exact because the grid is symmetric (0 ↦ 0).

    The kernel is stored HWIO ``(kh, kw, in / groups, filters)`` as ``int8`` (for
    ``bits=4``: pairs of output channels packed into one byte, last axis
    ``ceil(filters / 2)``). Only ``channels_last`` is supported.
    All weights are non-trainable and created in :meth:`build`.

    Args:
        filters: number of output channels.
        kernel_size: int or ``(kh, kw)``.
        strides: int or ``(sh, sw)``.
        padding: ``"valid"`` or ``"same"`` (TensorFlow's definition).
        dilation_rate: int or ``(dh, dw)``; cannot be combined with strides > 1.
        groups: grouped convolution (``in`` and ``filters`` divisible by it).
        activation: activation after the bias.
        use_bias: whether to add a bias.
        bits: weight bits, 8 or 4.
        input_quantization: ``"dynamic"`` (default), ``"static"`` or ``"none"``
            (weight-only; float convolution with the dequantized kernel).
        **kwargs: base ``Layer`` arguments.

    Raises:
        ValueError: on invalid arguments (named in the message).

    Example:
        >>> q = QuantizedConv2D.from_conv2d(conv_layer, activations_scale=0.03)
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation_rate=1,
                 groups=1, activation=None, use_bias=True, bits=8,
                 input_quantization="dynamic", **kwargs):
        super().__init__(kernel_size=kernel_size, strides=strides, padding=padding,
                         dilation_rate=dilation_rate, activation=activation,
                         use_bias=use_bias, bits=bits,
                         input_quantization=input_quantization, **kwargs)
        self.filters = _common.check_positive_int(filters, "filters")
        self.groups = _common.check_positive_int(groups, "groups")
        if self.filters % self.groups:
            raise ValueError(f"filters must be divisible by groups; received: "
                             f"filters={self.filters}, groups={self.groups}")

    def _groups(self, in_channels):
        if in_channels % self.groups:
            raise ValueError(f"{self.name}: input channels must be divisible by groups; "
                             f"received: channels={in_channels}, groups={self.groups}")
        return self.groups

    def _out_channels(self, in_channels):
        return self.filters

    def _float_kernel_to_hwio(self, kernel):
        return kernel

    @classmethod
    def from_conv2d(cls, layer, activations_scale=None, bits=8, input_quantization=None,
                    name=None):
        """Builds a ``QuantizedConv2D`` equal (up to quantization) to a float Conv2D.

        Args:
            layer: a built ``keras.layers.Conv2D`` (channels_last; masks baked in).
            activations_scale: calibrated per-tensor scale of the layer's inputs;
                implies static input quantization.
            bits: weight bits, 8 or 4.
            input_quantization: ``None`` (static if ``activations_scale`` is given,
                else dynamic), ``"dynamic"``, ``"static"`` or ``"none"``.
            name: name of the new layer (defaults to the float layer's name).

        Returns:
            A built ``QuantizedConv2D``.

        Raises:
            ValueError: for an unsupported layer (``channels_first``, causal padding)
                or bad arguments.
        """
        check_conv_layer(layer, keras.layers.Conv2D)
        if isinstance(layer, (keras.layers.Conv2DTranspose, keras.layers.DepthwiseConv2D,
                              keras.layers.SeparableConv2D)):
            raise ValueError(f"{layer.name}: only plain Conv2D layers are supported; "
                             f"received: {type(layer).__name__}")
        return cls._from_float(layer, layer.kernel.shape[2] * layer.groups, bits,
                               input_quantization, activations_scale, name,
                               filters=layer.filters, groups=layer.groups)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "groups": self.groups}
