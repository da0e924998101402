"""Every supported layer × every granularity: masks, forward and strip agree."""

import keras
import numpy as np
import pytest

from tfcompress.pruning import Block
from tfcompress.pruning import ConstantSparsity
from tfcompress.pruning import prune_layer
from tfcompress.pruning import strip_layer
from tfcompress.pruning import update_masks

LAYERS = {
    "dense": (lambda: keras.layers.Dense(8), (3, 8)),
    "conv1d": (lambda: keras.layers.Conv1D(8, 3), (3, 10, 8)),
    "conv2d": (lambda: keras.layers.Conv2D(8, 3), (3, 6, 6, 8)),
    "conv3d": (lambda: keras.layers.Conv3D(4, 2), (3, 4, 4, 4, 4)),
    "conv2d_transpose": (lambda: keras.layers.Conv2DTranspose(4, 3), (3, 5, 5, 8)),
    "depthwise2d": (lambda: keras.layers.DepthwiseConv2D(2, depth_multiplier=2), (3, 6, 6, 4)),
    "separable2d": (lambda: keras.layers.SeparableConv2D(8, 2), (3, 6, 6, 4)),
    "embedding": (lambda: keras.layers.Embedding(12, 8), None),
}
GRANULARITIES = ["unstructured", "structured", "2:4", Block((4, 4))]


def _input(shape):
    if shape is None:
        return np.random.default_rng(0).integers(0, 12, (3, 5)).astype("int32")
    return np.random.default_rng(0).normal(size=shape).astype("float32")


@pytest.mark.parametrize("granularity", GRANULARITIES, ids=str)
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_layer_granularity(kind, granularity):
    make, shape = LAYERS[kind]
    x = _input(shape)
    w = prune_layer(make(), schedule=ConstantSparsity(0.5, frequency=1), granularity=granularity,
                    mode="feedback")
    w(x)
    if kind != "embedding":
        w.layer.bias.assign(np.ones(tuple(w.layer.bias.shape), "float32"))
    update_masks(w, force=True)
    for name, var, spec, mask in w.targets:
        full = w.full_masks()[name]
        assert full.shape == tuple(var.shape)
        if int(np.prod(mask.shape)) >= 2:  # (a weight smaller than one block has 1 unit)
            assert 0.3 <= 1 - full.mean() <= 0.7, (name, 1 - full.mean())
    plain = strip_layer(w)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(plain(x)), keras.ops.convert_to_numpy(w(x)), atol=1e-5
    )
