"""BatchNormalization folding (survey 003, "Folding Batch Normalization Layers")."""

import keras
import numpy as np

from tfcompress.quantization import fold_batch_norms
from tfcompress.quantization import quantize_weights

ATOL = 1e-4  # documented tolerance of fold_batch_norms (float32 rounding)


def _bns(model):
    return [l.name for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]


def test_fold_conv_depthwise_dense_matches_within_tolerance(images, build_cnn):
    model = build_cnn(randomize_bn=True)
    folded = fold_batch_norms(model)
    assert _bns(folded) == []
    assert folded.get_layer("dw").use_bias  # folded layers gain a bias
    np.testing.assert_allclose(folded(images), model(images), atol=ATOL)
    np.testing.assert_allclose(
        folded.predict(images, verbose=0), model.predict(images, verbose=0), atol=ATOL
    )
    # the original keeps its BNs and weights, and its layers were not called again
    assert _bns(model) == ["bn1", "bn2", "bn3"]
    assert all(len(layer._inbound_nodes) == 1 for layer in model.layers)
    # fold, then quantize: the quantized weights are the folded ones
    qm = quantize_weights(folded, 8, per_channel=True)
    np.testing.assert_allclose(qm(images), model(images), atol=0.1)


def test_sequential_conv_bn_relu():
    rng = np.random.default_rng(3)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, use_bias=False),
            keras.layers.BatchNormalization(center=False),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
            keras.layers.BatchNormalization(scale=False, epsilon=1e-2),
        ]
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            ws = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2, w.shape) if i == len(ws) - 1 else rng.normal(size=w.shape) for i, w in enumerate(ws)])
    x = rng.normal(size=(5, 6, 6, 2)).astype("float32")
    folded = fold_batch_norms(model)
    assert _bns(folded) == []
    np.testing.assert_allclose(folded(x), model(x), atol=ATOL)
    # the Sequential's layers were not called again (one node each, its own)
    assert all(len(layer._inbound_nodes) == 1 for layer in model.layers)


def test_unfoldable_patterns_are_kept():
    rng = np.random.default_rng(4)
    inputs = keras.Input((5, 5, 2))
    a = keras.layers.Conv2D(3, 3, activation="relu", name="conv_relu")(inputs)
    a = keras.layers.BatchNormalization(name="bn_after_relu")(a)  # activation in between
    b = keras.layers.Conv2D(3, 3, name="conv_shared_out")(inputs)
    b1 = keras.layers.BatchNormalization(name="bn_branch")(b)  # b also feeds Add
    c = keras.layers.Add()([a, b1, b])
    d = keras.layers.Conv2D(3, 1, name="conv_ok")(c)
    d = keras.layers.BatchNormalization(name="bn_ok")(d)
    model = keras.Model(inputs, d)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2, 3), rng.normal(size=3), rng.normal(size=3), rng.uniform(0.5, 2, 3)])
    folded = fold_batch_norms(model)
    assert _bns(folded) == ["bn_after_relu", "bn_branch"]
    x = rng.normal(size=(2, 5, 5, 2)).astype("float32")
    np.testing.assert_allclose(folded(x), model(x), atol=ATOL)
