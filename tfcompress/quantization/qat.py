"""Quantization-aware training: ``QuantizeWrapper``, ``quantize_aware``, ``strip_qat``."""

import keras
from keras import ops

from tfcompress.quantization import _registry as reg
from tfcompress.quantization import quantizers as q
from tfcompress.quantization.fake_quant_activation import FakeQuantActivation
from tfcompress.quantization.ptq import _unsupported
from tfcompress.quantization.ptq import quantize_kernel_value

__all__ = ["QuantizeWrapper", "quantize_aware", "strip_qat"]


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantizeWrapper(keras.layers.Wrapper):
    """Wraps a Dense / Conv layer for quantization-aware training (QAT, survey 003).

    In every call the wrapped layer's kernel(s) pass through
    :func:`~tfcompress.quantization.fake_quant` — the uniform quantizer of
    eq. 4.13 of 002 (symmetric, restricted range, absmax of the current
    weights, per output channel when ``per_channel``) with the
    straight-through estimator, so ``fit`` trains the float "shadow" weights
    through quantized forward passes. The layer's input passes through a
    :class:`~tfcompress.quantization.FakeQuantActivation` whose range is an EMA
    of the batch min/max kept in non-trainable weights (``activation_bits=None``
    turns it off).

    Activations are quantized at the layer's *input*, so every matmul /
    convolution multiplies ``bits``-bit weights by ``activation_bits``-bit
    activations (the W/A setting of 002's experiments; for a
    conv → BN → ReLU → conv chain this is the ReLU output, where TFMOT also
    places its quantizer).

    The kernel is swapped for its fake-quantized value only for the duration
    of the inner call (the wrapped layer's own ``call`` runs unchanged, so
    strides, padding, groups, bias and activation are exactly the layer's).

    Args:
        layer: a ``Dense``, ``Conv1D/2D/3D``, ``Conv*Transpose``,
            ``DepthwiseConv1D/2D`` or ``SeparableConv1D/2D`` layer.
        bits: kernel bit width, integer in ``[2, 8]``.
        per_channel: one scale per output channel (True) or per tensor.
        symmetric: kernel grid: restricted-range symmetric (eq. 4.13) or affine.
        activation_bits: input bit width, or ``None`` for float inputs.
        activation_symmetric: input grid (affine by default).
        momentum: EMA momentum of the input range.
        **kwargs: base ``Layer`` arguments (``name``...).

    Raises:
        ValueError: unsupported layer type or bad arguments.

    Example:
        >>> layer = QuantizeWrapper(keras.layers.Dense(4), bits=4)
        >>> y = layer(np.ones((2, 3), "float32"), training=True)
        >>> [w.name for w in layer.non_trainable_weights]
        ['range_min', 'range_max', 'initialized']
    """

    def __init__(
        self,
        layer,
        bits=8,
        per_channel=True,
        symmetric=True,
        activation_bits=8,
        activation_symmetric=False,
        momentum=0.99,
        **kwargs,
    ):
        super().__init__(layer, **kwargs)
        if reg.kernel_specs(layer) is None:
            raise ValueError(
                f"QuantizeWrapper supports Dense and convolution layers; received: "
                f"layer={layer.name!r} ({type(layer).__name__})"
            )
        self.bits = q.check_bits(bits)
        if not isinstance(per_channel, bool):
            raise ValueError(f"per_channel must be a bool; received: per_channel={per_channel!r}")
        self.per_channel = per_channel
        self.symmetric = q._check_symmetric(symmetric)
        self.activation_bits = None if activation_bits is None else q.check_bits(activation_bits)
        self.activation_symmetric = q._check_symmetric(activation_symmetric)
        self.momentum = momentum
        self.input_quantizer = None
        if self.activation_bits is not None:
            self.input_quantizer = FakeQuantActivation(
                bits=self.activation_bits,
                symmetric=self.activation_symmetric,
                momentum=momentum,
                name="input_quantizer",
            )

    def build(self, input_shape=None):
        super().build(input_shape)
        if self.input_quantizer is not None and not self.input_quantizer.built:
            self.input_quantizer.build(input_shape)
        self.built = True

    def quantized_kernels(self, fake=True):
        """``{attr: tensor}`` of the wrapped layer's (fake-)quantized kernels."""
        out = {}
        for attr, layout in reg.kernel_specs(self.layer):
            kernel = getattr(self.layer, attr)
            out[attr] = reg.quantize_kernel(
                kernel, layout, self.bits, self.per_channel, self.symmetric, fake=fake
            )
        return out

    def call(self, inputs, training=None):
        x = inputs
        if self.input_quantizer is not None:
            x = self.input_quantizer(x, training=training)
        originals = {}
        try:
            for attr, kernel in self.quantized_kernels().items():
                originals[attr] = getattr(self.layer, attr)
                object.__setattr__(self.layer, attr, ops.cast(kernel, self.layer.compute_dtype))
            return self.layer(x)
        finally:
            for attr, var in originals.items():
                object.__setattr__(self.layer, attr, var)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = {
            "bits": self.bits,
            "per_channel": self.per_channel,
            "symmetric": self.symmetric,
            "activation_bits": self.activation_bits,
            "activation_symmetric": self.activation_symmetric,
            "momentum": self.momentum,
        }
        return {**super().get_config(), **config}


def quantize_aware(
    model,
    bits=8,
    per_channel=True,
    activations=True,
    activation_bits=None,
    symmetric=True,
    activation_symmetric=False,
    skip=None,
    bits_overrides=None,
    momentum=0.99,
):
    """Wraps every quantizable layer of ``model`` in a :class:`QuantizeWrapper` (QAT).

    The result is an ordinary model (the original's weights copied, the
    original untouched): compile it and train with ``fit``; the fake-quant
    forward passes and the straight-through gradients (survey 003, QAT with
    STE) make the float weights robust to ``bits``-bit quantization, and the
    input ranges follow EMAs in non-trainable weights (saved in ``.keras``
    files and checkpoints). :func:`strip_qat` turns it back into a plain model.

    Args:
        model: a built Sequential or Functional model.
        bits: kernel bit width, integer in ``[2, 8]``.
        per_channel: per-output-channel kernel scales.
        activations: quantize the inputs of the wrapped layers.
        activation_bits: their bit width (``None``: same as ``bits``).
        symmetric: kernel grid (eq. 4.13 of 002 when True).
        activation_symmetric: activation grid (affine by default).
        skip: layers left in float (a name, names, or a predicate).
        bits_overrides: ``{layer_name: bits}`` for kernels and inputs of that
            layer (e.g. the first and last layers at 8 bits).
        momentum: EMA momentum of the activation ranges.

    Returns:
        A new model with ``QuantizeWrapper`` layers named ``"quant_<layer>"``.

    Raises:
        ValueError: bad arguments, or a layer holding a kernel of an unsupported
            type (name it in ``skip``).

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
        ...                           keras.layers.Dense(2)])
        >>> qat = quantize_aware(model, bits=4)
        >>> qat.compile("adam", "mse")
        >>> _ = qat.fit(np.ones((8, 4)), np.ones((8, 2)), epochs=1, verbose=0)
        >>> plain = strip_qat(qat)          # quantize-dequantized kernels, no wrappers
    """
    if not isinstance(activations, bool):
        raise ValueError(f"activations must be a bool; received: activations={activations!r}")
    q.check_bits(bits)
    if activation_bits is not None:
        q.check_bits(activation_bits)
    skip_fn, bits_for = reg.resolve_skip(model, skip, bits_overrides, bits)
    skipped = {layer.name for layer in reg.iter_layers(model) if skip_fn(layer)}
    _unsupported(model, skipped, "quantize_aware")
    top = {id(layer) for layer in model.layers}
    for layer in reg.iter_layers(model):
        if reg.kernel_specs(layer) is not None and layer.name not in skipped and id(layer) not in top:
            raise ValueError(
                f"quantize_aware does not reach layer {layer.name!r} inside a nested model; "
                "flatten the model or pass it in skip."
            )
    overrides = dict(bits_overrides or {})

    def clone(layer):
        if reg.kernel_specs(layer) is None or layer.name in skipped:
            return None
        inner = layer.__class__.from_config(layer.get_config())
        layer_bits = bits_for(layer)
        if not activations:
            a_bits = None
        elif layer.name in overrides:
            a_bits = layer_bits
        else:
            a_bits = bits if activation_bits is None else activation_bits
        wrapper = QuantizeWrapper(
            inner,
            bits=layer_bits,
            per_channel=per_channel,
            symmetric=symmetric,
            activation_bits=a_bits,
            activation_symmetric=activation_symmetric,
            momentum=momentum,
            name=f"quant_{layer.name}",
        )
        return wrapper, lambda: inner.set_weights(layer.get_weights())

    return reg.clone_with_weights(model, clone_function=clone)


def strip_qat(model, keep_activation_quantizers=False):
    """Replaces every :class:`QuantizeWrapper` by its layer with quantized kernels.

    Each wrapper becomes a copy of its wrapped layer (original name) whose
    kernels hold ``Q(w)`` — the quantize-dequantized values the QAT forward
    pass used (same bits, granularity and grid) — so the stripped model's
    weights are ready for integer export. With ``keep_activation_quantizers``
    the input quantizers stay as frozen
    :class:`~tfcompress.quantization.FakeQuantActivation` layers (trained EMA
    ranges, ``ema=False``) in front of the layers, so the stripped model
    reproduces the QAT model's inference outputs.

    Args:
        model: a model returned by :func:`quantize_aware` (possibly trained or
            reloaded from a ``.keras`` file).
        keep_activation_quantizers: keep the activation fake-quantizers.

    Returns:
        A new model without ``QuantizeWrapper`` layers.

    Raises:
        ValueError: ``model`` has no ``QuantizeWrapper`` layer.

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
        >>> plain = strip_qat(quantize_aware(model, bits=2))
        >>> [l.name for l in plain.layers], len(np.unique(plain.layers[0].kernel.numpy()[:, 0])) <= 3
        (['fc'], True)
    """
    wrappers = [l for l in reg.iter_layers(model) if isinstance(l, QuantizeWrapper)]
    if not wrappers:
        raise ValueError(f"Model {model.name!r} has no QuantizeWrapper layers; nothing to strip.")

    sources = {}  # id(stripped layer) -> the wrapper's input quantizer

    def clone(layer):
        if not isinstance(layer, QuantizeWrapper):
            return None
        inner = layer.layer
        new = inner.__class__.from_config(inner.get_config())

        def setter():
            new.set_weights(inner.get_weights())
            for attr, layout in reg.kernel_specs(new):
                var = getattr(new, attr)
                var.assign(
                    quantize_kernel_value(
                        ops.convert_to_numpy(var), layout, layer.bits, layer.per_channel, layer.symmetric,
                        "absmax" if layer.symmetric else "minmax",
                    )
                )

        if keep_activation_quantizers and layer.input_quantizer is not None:
            sources[id(new)] = layer.input_quantizer
        return new, setter

    call_function = None
    quantizers = []
    if keep_activation_quantizers:

        def call_function(layer, *args, **kwargs):
            src = sources.get(id(layer))
            if src is not None:
                fq = FakeQuantActivation(
                    bits=src.bits, symmetric=src.symmetric, momentum=src.momentum,
                    ema=False, name=f"{layer.name}_input_quant",
                )
                quantizers.append((fq, src))
                args = (fq(args[0]),) + args[1:]
            return layer(*args, **kwargs)

    stripped = reg.clone_with_weights(model, clone_function=clone, call_function=call_function)
    for fq, src in quantizers:
        fq.set_weights(src.get_weights())
    return stripped
