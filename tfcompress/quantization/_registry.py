"""Which layers hold quantizable kernels, and model-graph helpers (internal).

A quantizable layer exposes one or more kernel variables; each comes with the
way its output channels are laid out, so per-channel quantization keeps the
right axis:

* ``Dense`` ``(in, out)`` and ``Conv1D/2D/3D`` ``(..., in, out)``: axis ``-1``.
* ``Conv*Transpose`` ``(..., out, in)``: axis ``-2``.
* ``DepthwiseConv1D/2D`` ``(..., in, multiplier)``: output channel
  ``c·multiplier + m``, i.e. the last two axes flattened.
* ``SeparableConv1D/2D``: a depthwise kernel (as above) and a pointwise kernel
  (axis ``-1``).
"""

import keras
from keras import ops

from tfcompress._cloning import clone_model
from tfcompress.quantization import quantizers as q

# (kernel name, layout); layout: "out_last" / "out_second_last" / "depthwise"
# (last two axes flattened into channels).
_DENSE = (("kernel", "out_last"),)
_CONV = (("kernel", "out_last"),)
_CONV_T = (("kernel", "out_second_last"),)
_DEPTHWISE = (("kernel", "depthwise"),)
_SEPARABLE = (("depthwise_kernel", "depthwise"), ("pointwise_kernel", "out_last"))


def _variable_attr(layer, name):
    """Attribute holding the variable: ``_kernel`` when ``kernel`` is a property
    (Keras's Dense and Conv expose ``kernel`` as a LoRA-aware property over
    ``_kernel``), else the name itself."""
    if isinstance(getattr(type(layer), name, None), property):
        return "_" + name
    return name


def kernel_specs(layer):
    """``((attr, layout), ...)`` for a quantizable layer, else ``None``.

    ``attr`` names the attribute holding the kernel variable."""
    L = keras.layers
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        specs = _CONV_T
    elif isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        specs = _SEPARABLE
    elif isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        specs = _DEPTHWISE
    elif isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        specs = _CONV
    elif isinstance(layer, L.Dense):
        specs = _DENSE
    else:
        return None
    if getattr(layer, "quantization_mode", None):
        raise ValueError(
            f"Layer {layer.name!r} is already quantized by Keras "
            f"(quantization_mode={layer.quantization_mode!r}); pass a float model."
        )
    return tuple((_variable_attr(layer, name), layout) for name, layout in specs)


def has_kernel_like_weight(layer):
    """True if ``layer`` (not a container) owns a weight that looks like a kernel."""
    if isinstance(layer, keras.Model):
        return False
    return any("kernel" in w.name for w in layer.weights)


def iter_layers(model):
    """Layers of ``model`` in order, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)
        else:
            yield layer


def quantize_kernel(kernel, layout, bits, per_channel, symmetric, value_range=None, fake=False):
    """Quantize-dequantize (or fake-quantize) one kernel along its channel layout."""
    fn = q.fake_quant if fake else q.quantize_dequantize
    if not per_channel:
        return fn(kernel, bits, symmetric=symmetric, axis=None, value_range=value_range)
    if layout == "depthwise":
        shape = tuple(kernel.shape)
        flat = ops.reshape(kernel, shape[:-2] + (shape[-2] * shape[-1],))
        out = fn(flat, bits, symmetric=symmetric, axis=-1, value_range=value_range)
        return ops.reshape(out, shape)
    axis = -1 if layout == "out_last" else -2
    return fn(kernel, bits, symmetric=symmetric, axis=axis, value_range=value_range)


def channel_view(kernel, layout, per_channel):
    """NumPy ``(array, axis)`` view used to calibrate a kernel's range."""
    import numpy as np

    kernel = np.asarray(kernel)
    if not per_channel:
        return kernel, None
    if layout == "depthwise":
        return kernel.reshape(kernel.shape[:-2] + (-1,)), -1
    return kernel, (-1 if layout == "out_last" else -2)


def resolve_skip(model, skip, bits_overrides, bits):
    """Validates ``skip`` / ``bits_overrides``; returns ``(is_skipped, bits_for)``."""
    names = {layer.name for layer in iter_layers(model)}
    if skip is None:
        skip_fn = lambda layer: False  # noqa: E731
    elif callable(skip):
        skip_fn = skip
    elif isinstance(skip, (str, list, tuple, set, frozenset)):
        skip_names = {skip} if isinstance(skip, str) else set(skip)
        unknown = sorted(skip_names - names)
        if unknown:
            raise ValueError(
                f"skip names layers that are not in the model: {unknown}; "
                f"received: skip={skip!r}"
            )
        skip_fn = lambda layer: layer.name in skip_names  # noqa: E731
    else:
        raise ValueError(
            "skip must be None, a layer name, a collection of layer names or a "
            f"predicate layer -> bool; received: skip={skip!r}"
        )
    if not isinstance(bits_overrides, (dict, type(None))):
        raise ValueError(
            f"bits_overrides must be a dict {{layer_name: bits}}; received: "
            f"bits_overrides={bits_overrides!r}"
        )
    overrides = dict(bits_overrides or {})
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(
            f"bits_overrides names layers that are not in the model: {unknown}; "
            f"received: bits_overrides={bits_overrides!r}"
        )
    for name, b in overrides.items():
        try:
            q.check_bits(b)
        except ValueError:
            raise ValueError(
                f"bits must be an integer in [2, 8]; received: bits_overrides[{name!r}]={b!r}"
            ) from None
    bits = q.check_bits(bits)
    return skip_fn, lambda layer: overrides.get(layer.name, bits)


def quantizable_layers(model):
    """Names of the layers whose kernels tfcompress quantizes, in model order.

    Useful to keep the first and last layers at 8 bits
    (``bits_overrides={n: 8 for n in (names[0], names[-1])}``), as the
    dissertation's reference code does below 4 bits.

    Args:
        model: a built Keras model.

    Returns:
        List of layer names (Dense, Conv1D/2D/3D, their transposes,
        DepthwiseConv1D/2D, SeparableConv1D/2D).

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="a"),
        ...                           keras.layers.ReLU(), keras.layers.Dense(2, name="b")])
        >>> quantizable_layers(model)
        ['a', 'b']
    """
    return [layer.name for layer in iter_layers(model) if kernel_specs(layer) is not None]


def as_functional(model):
    """A functional model sharing ``model``'s layers (Sequential → Functional).

    A built Sequential already holds the graph of its layers (``model.inputs`` /
    ``model.outputs``); the functional model reads that graph instead of calling
    the layers again, which would add a node to each of them.
    """
    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise ValueError(
                f"Model {model.name!r} must be built with a known input shape "
                "(start it with keras.Input(...)) before it can be transformed."
            )
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if not getattr(model, "_is_graph_network", hasattr(model, "_nodes_by_depth")):
        raise ValueError(
            f"Model {model.name!r} ({type(model).__name__}) is not a Sequential or "
            "Functional model; only those can be transformed."
        )
    return model


def named_inputs(model):
    """Fresh ``keras.Input`` tensors keeping the input layers' names (functional only)."""
    if isinstance(model, keras.Sequential):
        return None

    def fresh(t):
        return keras.Input(
            batch_shape=t.shape, dtype=t.dtype, sparse=t.sparse, name=t._keras_history.operation.name
        )

    return keras.tree.map_structure(fresh, model.input)


def clone_with_weights(model, clone_function=None, call_function=None):
    """``clone_model`` then copy every original layer's weights by layer name.

    ``clone_function`` may return ``(new_layer, setter)`` where ``setter()`` is
    called after the clone is built, instead of copying weights by name.
    """
    setters = []

    def _clone(layer):
        if clone_function is not None:
            out = clone_function(layer)
            if isinstance(out, tuple):
                new, setter = out
                setters.append(setter)
                return new
            if out is not None:
                return out
        new = layer.__class__.from_config(layer.get_config())
        setters.append(lambda: new.set_weights(layer.get_weights()))
        return new

    if call_function is not None:
        model = as_functional(model)
    clone = clone_model(
        model,
        input_tensors=named_inputs(model),
        clone_function=_clone,
        call_function=call_function,
    )
    for setter in setters:
        setter()
    return clone
