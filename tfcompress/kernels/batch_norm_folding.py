"""Folding an inference BatchNormalization into the weights of the layer before it.

For a Dense / Conv2D / DepthwiseConv2D output ``z = W·x + b`` normalized by
``y = γ·(z − μ)/√(σ² + ε) + β`` with the moving statistics, per output channel

    ``a = γ / √(σ² + ε)``,  ``W' = a·W``,  ``b' = a·(b − μ) + β``,  ``y = W'·x + b'``

(Ioffe & Szegedy 2015, §3.2: at inference the normalization is a fixed affine map;
Jacob et al. 2018, §3.2: fold it into the weights before quantizing them). The
per-output-channel weight scales of the kernel layers absorb ``a`` exactly, and the
converted model loses one elementwise pass per folded layer: on XLA the
normalization after an int8 layer was not fused into its rescaling (ResNet-8 at
batch 1: 1.15 → 1.00 of the float model's time, bench/kernels models table).
"""

import keras
import numpy as np

from tfcompress.kernels import _common

FOLDABLE = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


@keras.saving.register_keras_serializable(package="tfcompress")
class FoldedBatchNormalization(keras.layers.Layer):
    """Identity left where a BatchNormalization was folded into the previous layer.

    It keeps the folded layer's name in the graph (``model.summary()`` shows where
    the normalization went) and holds no weights.
    """

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def _linear(layer):
    return _common.layer_activation(layer) is None


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def foldable_pairs(model, producers):
    """``{id(producer): bn}`` for each BatchNormalization of ``model`` that can be
    folded into the layer feeding it.

    A pair folds when the producer is one of ``producers`` (Dense / Conv2D /
    DepthwiseConv2D), has no activation, is called once, and its output feeds only
    that BatchNormalization (called once, normalizing the channel axis) and is not
    a model output.
    """
    producers = {id(layer) for layer in producers if isinstance(layer, FOLDABLE)}
    model_outputs = {id(t) for t in keras.tree.flatten(model.outputs)}
    pairs = {}
    for bn in model.layers:
        if not isinstance(bn, keras.layers.BatchNormalization) or len(bn._inbound_nodes) != 1:
            continue
        inputs = keras.tree.flatten(bn._inbound_nodes[0].input_tensors)
        if len(inputs) != 1 or id(inputs[0]) in model_outputs:
            continue
        tensor = inputs[0]
        producer = tensor._keras_history.operation
        if (id(producer) not in producers or not _linear(producer)
                or not _channels_last(producer) or len(producer._inbound_nodes) != 1
                or len(producer._outbound_nodes) != 1):
            continue
        if bn.axis not in (-1, len(tensor.shape) - 1):
            continue
        pairs[id(producer)] = bn
    return pairs


def _affine(bn):
    """``(a, c)`` with ``bn(z) = a·z + c`` at inference (numpy, per channel)."""
    variance = _common.to_numpy(bn.moving_variance).astype(np.float64)
    mean = _common.to_numpy(bn.moving_mean).astype(np.float64)
    gamma = _common.to_numpy(bn.gamma).astype(np.float64) if bn.scale else 1.0
    beta = _common.to_numpy(bn.beta).astype(np.float64) if bn.center else 0.0
    a = gamma / np.sqrt(variance + bn.epsilon)
    return a, beta - a * mean


def folded_copy(layer, bn):
    """A new float layer equal to ``bn(layer(x))`` at inference: ``layer``'s config
    with a bias, built, holding the folded kernel and bias."""
    a, c = _affine(bn)
    kernel = _common.to_numpy(layer.kernel).astype(np.float64)
    bias = _common.to_numpy(layer.bias).astype(np.float64) if layer.use_bias else 0.0
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        # kernel (kh, kw, C, m): output channel c·m + k is kernel[..., c, k]
        kernel = kernel * a.reshape(kernel.shape[2:])
    else:
        kernel = kernel * a
    config = dict(layer.get_config(), use_bias=True)
    new = layer.__class__.from_config(config)
    new.build(layer.input.shape)
    new.kernel.assign(kernel.astype("float32"))
    new.bias.assign((a * bias + c).astype("float32"))
    return new
