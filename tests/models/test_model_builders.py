"""Every builder trains through ``model.fit`` and survives a ``.keras`` round trip."""

import keras
import numpy as np
import pytest

from tfcompress import models

# (id, builder, kwargs): small configurations, 28×28×1 unless stated, and
# 32×32×3 at least once per convolutional family.
CASES = [
    ("mlp", models.mlp, {}),
    ("small_cnn", models.small_cnn, {"filters": (4, 8), "dense": 16}),
    ("resnet8_28x28x1", models.resnet, {"depth": 8, "width": 8}),
    ("resnet14_28x28x1", models.resnet, {"depth": 14, "width": 4}),
    (
        "resnet8_32x32x3",
        models.resnet,
        {"depth": 8, "width": 4, "input_shape": (32, 32, 3)},
    ),
    ("wrn16_1_dropout", models.wide_resnet, {"depth": 16, "k": 1, "dropout": 0.1}),
    (
        "vgg_tiny_32x32x3",
        models.vgg,
        {"config": [8, "M", 16, "M", 16, "M"], "input_shape": (32, 32, 3)},
    ),
    (
        "vgg_tiny_no_bn",
        models.vgg,
        {"config": [8, "M", 8, "M"], "batch_norm": False},
    ),
]


def _data(model, batch=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, *model.input_shape[1:])).astype("float32")
    y = rng.integers(0, model.output_shape[-1], size=(batch,))
    return x, y


@pytest.mark.parametrize(
    "builder, kwargs", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_fit_one_step_then_keras_round_trip(builder, kwargs, tmp_path):
    model = builder(**kwargs)
    assert isinstance(model, keras.Model)
    assert model.layers[-1].name == "head"
    # Logits: the head is linear, no softmax anywhere at the top.
    assert model.get_layer("head").activation is keras.activations.linear

    x, y = _data(model)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    loss = history.history["loss"][0]
    assert np.isfinite(loss)
    after = [w.numpy() for w in model.trainable_weights]
    changed = [not np.array_equal(b, a) for b, a in zip(before, after)]
    # Every trainable weight moved (every layer receives a gradient).
    assert all(changed), [
        w.path for w, c in zip(model.trainable_weights, changed) if not c
    ]

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [layer.name for layer in loaded.layers] == [
        layer.name for layer in model.layers
    ]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
        atol=1e-6,
    )


def test_logits_output_shape_and_num_classes():
    model = models.resnet(depth=8, width=4, num_classes=7)
    assert model.output_shape == (None, 7)
    assert models.mlp(num_classes=3).output_shape == (None, 3)


def test_mlp_is_784_50_20_10():
    model = models.mlp()
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.name for layer in dense] == ["dense1", "dense2", "head"]
    assert [layer.kernel.shape for layer in dense] == [(784, 50), (50, 20), (20, 10)]
    # 784·50+50 + 50·20+20 + 20·10+10
    assert model.count_params() == 39250 + 1020 + 210 == 40480


def test_small_cnn_layers_and_params():
    model = models.small_cnn()
    assert [layer.name for layer in model.layers[1:]] == [
        "conv1", "pool1", "conv2", "pool2", "flatten", "dense1", "head",
    ]  # fmt: skip
    # conv1 3·3·1·32+32, conv2 3·3·32·64+64, dense1 7·7·64·128+128, head 128·10+10
    assert model.count_params() == 320 + 18496 + 401536 + 1290 == 421642


def test_vgg11_on_28x28_skips_the_pool_below_1x1():
    model = models.vgg("vgg11", input_shape=(28, 28, 1))
    pools = [l.name for l in model.layers if isinstance(l, keras.layers.MaxPooling2D)]
    # 28 → 14 → 7 → 3 → 1; the fifth pool would go below 1×1 and is skipped.
    assert pools == ["block1_pool", "block2_pool", "block3_pool", "block4_pool"]
    assert model.get_layer("block5_conv2").output.shape == (None, 1, 1, 512)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(convs) == 8  # VGG-11 = 8 convs + (here one) dense
    assert all(not c.use_bias for c in convs)
    # On 32×32 all five pools apply: 32 → 1.
    model32 = models.vgg("vgg11", input_shape=(32, 32, 3))
    assert model32.get_layer("block5_pool").output.shape == (None, 1, 1, 512)


def test_layer_names_are_deterministic():
    a = models.build("resnet14", width=4)
    b = models.build("resnet14", width=4)
    assert [l.name for l in a.layers] == [l.name for l in b.layers]
    # No auto-generated names (they would change between builds in one process).
    for model in (a, models.wide_resnet(16, 1), models.vgg([8, "M"]), models.mlp()):
        for layer in model.layers:
            assert not any(
                layer.name.startswith(p)
                for p in ("conv2d", "dense_", "batch_normalization", "re_lu", "add_")
            ), layer.name
