"""Tiny models shared by the quantization tests."""

import keras
import numpy as np
import pytest


def build_small_cnn(randomize_bn=True, seed=0):
    """conv(bias)-BN-ReLU, depthwise(x2)-BN, separable, GAP, dense-BN, dense."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.SeparableConv2D(5, 3, padding="same", name="sep")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(7, name="fc1")(x)
    x = keras.layers.BatchNormalization(name="bn3")(x)
    x = keras.layers.Dense(4, name="fc2")(x)
    model = keras.Model(inputs, x, name="small_cnn")
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if randomize_bn and isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 2.0, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n), rng.uniform(0.2, 3.0, n)]
            )
        elif layer.weights:
            # non-zero biases so "biases untouched" is meaningful
            layer.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in layer.get_weights()])
    return model


@pytest.fixture
def small_cnn():
    return build_small_cnn()


@pytest.fixture
def images():
    return np.random.default_rng(7).normal(size=(16, 8, 8, 3)).astype("float32")


@pytest.fixture
def build_cnn():
    """The :func:`build_small_cnn` builder (tests that need options or two copies)."""
    return build_small_cnn
