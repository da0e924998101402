"""BatchNormalization folding: ``fold_batch_norms``."""

import keras
import numpy as np

from tfcompress.quantization import _registry as reg

__all__ = ["fold_batch_norms"]

_FOLDABLE = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
)
_NOT_FOLDABLE = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)


def _tensors(structure):
    return [t for t in keras.tree.flatten(structure) if isinstance(t, keras.KerasTensor)]


def _channel_axis(layer, rank):
    if isinstance(layer, keras.layers.Dense):
        return rank - 1
    return rank - 1 if layer.data_format == "channels_last" else 1


def _bn_axes(bn, rank):
    axes = bn.axis if isinstance(bn.axis, (list, tuple)) else [bn.axis]
    return sorted(a % rank for a in axes)


def _folded_weights(conv, bn):
    """Kernel and bias of ``conv`` with ``bn`` (inference statistics) folded in."""
    weights = {w.name: keras.ops.convert_to_numpy(w).astype(np.float64) for w in bn.weights}
    mean, var = weights["moving_mean"], weights["moving_variance"]
    gamma = weights.get("gamma", np.ones_like(mean))
    beta = weights.get("beta", np.zeros_like(mean))
    scale = gamma / np.sqrt(var + bn.epsilon)
    depthwise = isinstance(conv, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D))
    (attr, _), = reg.kernel_specs(conv)
    kernel_var = getattr(conv, attr)
    kernel = keras.ops.convert_to_numpy(kernel_var).astype(np.float64)
    if depthwise:
        kernel = kernel * scale.reshape(kernel.shape[-2:])
    else:
        kernel = kernel * scale
    bias = keras.ops.convert_to_numpy(conv.bias).astype(np.float64) if conv.use_bias else np.zeros_like(mean)
    bias = (bias - mean) * scale + beta
    dtype = kernel_var.dtype
    return kernel.astype(dtype), bias.astype(dtype)


def fold_batch_norms(model):
    """Folds BatchNormalization layers into the preceding Conv / Dense layer.

    For a linear layer ``y = W x + b`` followed directly by a BatchNormalization
    with inference statistics ``(μ, σ², γ, β, ε)``, the pair equals one linear
    layer with ``W' = W · s`` (per output channel) and ``b' = (b − μ) · s + β``,
    ``s = γ / √(σ² + ε)`` (survey 003, "Folding Batch Normalization Layers";
    Jacob et al. 2018). Folding before quantization quantizes the weights that
    inference actually uses.

    A BatchNormalization is folded when all of these hold (otherwise it is
    kept, unchanged):

    * its input is the output of a ``Dense``, ``Conv1D/2D/3D`` or
      ``DepthwiseConv1D/2D`` layer with ``activation="linear"``;
    * that output has no other consumer and is not a model output, and both
      layers are called once;
    * it normalizes the producer's channel axis only (last axis, or axis 1 for
      ``channels_first`` convolutions).

    The result is a new functional model (the original is untouched) without
    those BatchNormalization layers; folded layers get ``use_bias=True``. Only
    the top-level graph is folded (nested models are copied as they are). The
    folded model matches the original in inference mode up to float32 rounding
    (the tests assert ``atol=1e-4`` on a conv–BN–ReLU net with randomized BN
    statistics); training-mode behaviour (batch statistics) is not preserved.

    Args:
        model: a built Sequential or Functional model.

    Returns:
        A new ``keras.Model`` with the BatchNormalization layers folded.

    Raises:
        ValueError: ``model`` is not a Sequential or Functional model.

    Example:
        >>> inputs = keras.Input((8, 8, 3))
        >>> x = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
        >>> x = keras.layers.BatchNormalization()(x)
        >>> model = keras.Model(inputs, keras.layers.ReLU()(x))
        >>> folded = fold_batch_norms(model)
        >>> any(isinstance(l, keras.layers.BatchNormalization) for l in folded.layers)
        False
    """
    functional = reg.as_functional(model)

    # Every call of the graph, read from its nodes (calling the layers again would
    # add nodes to the caller's model).
    calls = [(node.operation, _tensors(node.input_tensors), _tensors(node.output_tensors))
             for nodes in functional._nodes_by_depth.values() for node in nodes
             if not node.is_input]
    producer, consumers, call_count = {}, {}, {}
    for layer, ins, outs in calls:
        call_count[id(layer)] = call_count.get(id(layer), 0) + 1
        for t in outs:
            producer[id(t)] = layer
        for t in ins:
            consumers[id(t)] = consumers.get(id(t), 0) + 1
    model_outputs = {id(t) for t in _tensors(functional.outputs)}

    pairs = {}  # id(bn) -> conv
    folded_convs = {}  # id(conv) -> bn
    for layer, ins, outs in calls:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(ins) != 1:
            continue
        t = ins[0]
        conv = producer.get(id(t))
        if not isinstance(conv, _FOLDABLE) or isinstance(conv, _NOT_FOLDABLE):
            continue
        if keras.activations.serialize(conv.activation) != "linear":
            continue
        if consumers.get(id(t)) != 1 or id(t) in model_outputs:
            continue
        if call_count[id(conv)] != 1 or call_count[id(layer)] != 1:
            continue
        rank = len(t.shape)
        if _bn_axes(layer, rank) != [_channel_axis(conv, rank)]:
            continue
        pairs[id(layer)] = conv
        folded_convs[id(conv)] = layer
    skipped_bns = set()

    def clone(layer):
        if id(layer) in folded_convs:
            bn = folded_convs[id(layer)]
            config = layer.get_config()
            config["use_bias"] = True
            new = layer.__class__.from_config(config)

            def setter():
                new.set_weights(list(_folded_weights(layer, bn)))

            return new, setter
        if id(layer) in pairs:
            new = layer.__class__.from_config(layer.get_config())
            skipped_bns.add(id(new))
            return new, lambda: None
        return None

    def call(layer, *args, **kwargs):
        if id(layer) in skipped_bns:
            return args[0]
        return layer(*args, **kwargs)

    return reg.clone_with_weights(functional, clone_function=clone, call_function=call)

