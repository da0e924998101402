"""Which weights of which layers can be pruned (after TFMOT's ``prune_registry.py``).

A class → weight-spec registry for Keras's built-in layers, plus a protocol for
custom layers: a layer that defines ``get_prunable_weights()`` (returning a list of
its ``keras.Variable`` s) is prunable. Nothing is monkeypatched.

Each :class:`WeightSpec` names the weight attribute and its axes:

* ``out_axes`` — the output-channel axes; structured pruning keeps one mask entry per
  output channel (a filter of a Conv, a unit of a Dense).
* ``in_axes`` — the reduction (input) axes along which an N:M pattern is laid out.
* ``positions`` — how many times each weight element is used per example, for the
  MAC count of ``sparsity_report``: ``"input"`` (positions of the input, e.g. the
  tokens of a Dense on sequences; transposed convolutions), ``"output"``
  (convolutions) or ``"none"`` (lookups).

Custom layers get ``out_axes=(-1,)`` and ``in_axes=(0,)`` (2-D weights) or ``(-2,)``;
they can override this with a ``get_prunable_weight_axes()`` method returning, per
weight, a ``(out_axes, in_axes)`` pair.
"""

import dataclasses

import keras


@dataclasses.dataclass(frozen=True)
class WeightSpec:
    attr: str
    out_axes: tuple
    in_axes: tuple
    positions: str = "output"


def _conv(attr="kernel"):
    return WeightSpec(attr, (-1,), (-2,), "output")


# class -> (weight specs, name of the weight whose output channels the bias follows)
_REGISTRY = {
    keras.layers.Dense: ((WeightSpec("kernel", (-1,), (0,), "input"),), "kernel"),
    keras.layers.Conv1D: ((_conv(),), "kernel"),
    keras.layers.Conv2D: ((_conv(),), "kernel"),
    keras.layers.Conv3D: ((_conv(),), "kernel"),
    keras.layers.Conv1DTranspose: ((WeightSpec("kernel", (-2,), (-1,), "input"),), "kernel"),
    keras.layers.Conv2DTranspose: ((WeightSpec("kernel", (-2,), (-1,), "input"),), "kernel"),
    keras.layers.Conv3DTranspose: ((WeightSpec("kernel", (-2,), (-1,), "input"),), "kernel"),
    keras.layers.DepthwiseConv1D: ((WeightSpec("kernel", (-2, -1), (0,), "output"),), "kernel"),
    keras.layers.DepthwiseConv2D: (
        (WeightSpec("kernel", (-2, -1), (0, 1), "output"),),
        "kernel",
    ),
    keras.layers.SeparableConv1D: (
        (
            WeightSpec("depthwise_kernel", (-2, -1), (0,), "output"),
            WeightSpec("pointwise_kernel", (-1,), (-2,), "output"),
        ),
        "pointwise_kernel",
    ),
    keras.layers.SeparableConv2D: (
        (
            WeightSpec("depthwise_kernel", (-2, -1), (0, 1), "output"),
            WeightSpec("pointwise_kernel", (-1,), (-2,), "output"),
        ),
        "pointwise_kernel",
    ),
    keras.layers.Embedding: ((WeightSpec("embeddings", (-1,), (0,), "none"),), None),
}


def register(layer_class, specs, bias_follows=None):
    """Registers a layer class (and its subclasses) as prunable.

    Args:
        layer_class: a ``keras.layers.Layer`` subclass.
        specs: list of :class:`WeightSpec`.
        bias_follows: name of the spec whose output channels the layer's ``bias``
            follows (structured pruning then zeroes the bias of pruned channels too),
            or ``None``.
    """
    _REGISTRY[layer_class] = (tuple(specs), bias_follows)


def _lookup(layer):
    for klass in type(layer).__mro__:
        if klass in _REGISTRY:
            return _REGISTRY[klass]
    return None


def supports(layer):
    """Whether ``layer`` is prunable (registered class or ``get_prunable_weights``)."""
    if hasattr(layer, "get_prunable_weights") and callable(layer.get_prunable_weights):
        return True
    return _lookup(layer) is not None


def _resolve(layer, attr):
    var = getattr(layer, attr, None)
    if not isinstance(var, keras.Variable):
        var = getattr(layer, "_" + attr, None)
    if not isinstance(var, keras.Variable):
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) has no variable "
            f"{attr!r} to prune."
        )
    return var


def _attr_name(layer, var):
    for key, value in vars(layer).items():
        if value is var and not key.startswith("_"):
            return key
    return None


def _default_axes(var):
    return (-1,), ((0,) if len(var.shape) == 2 else (-2,))


def prunable_weights(layer):
    """Returns ``(entries, bias)`` for a built layer.

    ``entries`` is a list of ``(name, variable, WeightSpec)``; ``bias`` is
    ``(variable, index of the entry it follows)`` or ``None``.

    Raises:
        ValueError: if the layer is not prunable, is LoRA-enabled or quantized.
    """
    if getattr(layer, "lora_enabled", False):
        raise ValueError(
            f"Layer {layer.name!r} has LoRA enabled; pruning a LoRA layer is not "
            "supported. Prune before enabling LoRA."
        )
    policy = getattr(layer, "dtype_policy", None)
    if policy is not None and getattr(policy, "quantization_mode", None):
        raise ValueError(
            f"Layer {layer.name!r} is quantized ({policy.name}); prune the float "
            "model before quantizing it."
        )
    if hasattr(layer, "get_prunable_weights") and callable(layer.get_prunable_weights):
        variables = list(layer.get_prunable_weights())
        axes = None
        if hasattr(layer, "get_prunable_weight_axes"):
            axes = list(layer.get_prunable_weight_axes())
        entries = []
        for i, var in enumerate(variables):
            if not isinstance(var, keras.Variable):
                raise ValueError(
                    f"{type(layer).__name__}.get_prunable_weights() must return "
                    f"keras.Variable objects; received: {var!r}"
                )
            out_axes, in_axes = axes[i] if axes else _default_axes(var)
            name = _attr_name(layer, var) or var.name.split("/")[-1]
            if name in [e[0] for e in entries]:
                name = f"{name}_{i}"
            entries.append((name, var, WeightSpec(name, tuple(out_axes), tuple(in_axes), "input")))
        return entries, None
    found = _lookup(layer)
    if found is None:
        raise ValueError(
            f"Layer {layer.name!r} of type {type(layer).__name__} cannot be pruned: "
            "it is not in the prune registry and has no get_prunable_weights() method."
        )
    specs, bias_follows = found
    entries = [(s.attr, _resolve(layer, s.attr), s) for s in specs]
    bias = None
    bias_var = getattr(layer, "bias", None)
    if bias_follows is not None and isinstance(bias_var, keras.Variable):
        idx = [e[0] for e in entries].index(bias_follows)
        bias = (bias_var, idx)
    return entries, bias
