"""``shrink(fold="bias_map")``: constants of removed channels that feed a zero-padded
convolution become a fixed per-position bias map (``PositionBias``) instead of a
carrier channel, so exactly the kept channels remain — and the result still equals
``strip``, survives a ``.keras`` round trip and exports to TFLite."""

import keras
import numpy as np
import pytest

from tfcompress import models
from tfcompress.pruning import ConstantSparsity
from tfcompress.pruning import PositionBias
from tfcompress.pruning import prune_model
from tfcompress.pruning import shrink
from tfcompress.pruning import sparsity_report
from tfcompress.pruning import strip
from tfcompress.pruning import update_masks

from pruning_testutil import randomize_batchnorm

RNG = np.random.default_rng(23)
CONVS = lambda l: isinstance(l, keras.layers.Conv2D)  # noqa: E731


def _randomize_bn(model, seed=None):
    return randomize_batchnorm(model, RNG if seed is None else np.random.default_rng(seed))


def _grouped_resnet(input_shape=(9, 9, 3), width=4):
    # Its own seed: the fixture's weights must not depend on which tests ran first.
    model = _randomize_bn(models.resnet(depth=8, width=width, input_shape=input_shape), seed=7)
    pruned = prune_model(model, schedule=ConstantSparsity(0.5), granularity="structured",
                         layers=CONVS, channel_groups="auto")
    update_masks(pruned, force=True)
    return pruned


def _kept(pruned, name):
    """Number of output channels the wrapped conv's mask keeps."""
    mask = pruned.get_layer(f"prune_{name}").full_masks()["kernel"]
    return int(mask.reshape(-1, mask.shape[-1]).any(axis=0).sum())


def _convs(model):
    return [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]


@pytest.fixture(scope="module")
def resnet():
    pruned = _grouped_resnet()
    return pruned, strip(pruned), shrink(pruned)


def test_resnet_exact_with_exactly_the_kept_channels(resnet):
    pruned, reference, small = resnet
    x = RNG.random((6, 9, 9, 3), dtype="float32")  # odd size: asymmetric "same" pads
    np.testing.assert_allclose(small.predict(x, verbose=0), reference.predict(x, verbose=0),
                               atol=1e-4, rtol=1e-5)
    for layer in _convs(small):  # no carrier: every conv keeps exactly its mask
        assert layer.kernel.shape[-1] == _kept(pruned, layer.name), layer.name
    assert small.get_layer("stem_conv").kernel.shape[-1] == 2
    assert small.get_layer("stage3_block1_conv2").kernel.shape[-2:] == (8, 8)
    # the zero-padded 3x3 consumers of nonzero constants got a position bias map
    added = [l for l in small.layers if isinstance(l, PositionBias)]
    assert len(added) >= 3 and all(l.name.endswith("_position_bias") for l in added)
    assert {l.name[: -len("_position_bias")] for l in added} <= {l.name for l in _convs(small)}
    assert sparsity_report(small)["global"]["macs"] < sparsity_report(reference)["global"]["macs"]


def test_bias_map_is_smaller_than_carrier(resnet):
    pruned, reference, small = resnet
    carrier = shrink(pruned, fold="carrier")
    x = RNG.random((4, 9, 9, 3), dtype="float32")
    np.testing.assert_allclose(carrier.predict(x, verbose=0), reference.predict(x, verbose=0),
                               atol=1e-4, rtol=1e-5)
    assert not any(isinstance(l, PositionBias) for l in carrier.layers)
    widths = {l.name: l.kernel.shape[-1] for l in _convs(carrier)}
    assert widths["stem_conv"] > small.get_layer("stem_conv").kernel.shape[-1]
    assert (sparsity_report(small)["global"]["macs"]
            < sparsity_report(carrier)["global"]["macs"])


def test_keras_round_trip_and_tflite(resnet, tmp_keras_path, tmp_path):
    from tfcompress.export import to_tflite

    _, reference, small = resnet
    x = RNG.random((5, 9, 9, 3), dtype="float32")
    small.save(tmp_keras_path)
    loaded = keras.models.load_model(tmp_keras_path)
    assert any(isinstance(l, PositionBias) for l in loaded.layers)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), small.predict(x, verbose=0),
                               atol=1e-6)
    result = to_tflite(loaded, tmp_path / "small.tflite", verify_data=x)
    assert result.max_abs_error < 1e-4
    from tfcompress.export import run_tflite

    np.testing.assert_allclose(run_tflite(result.path, x), reference.predict(x, verbose=0),
                               atol=1e-4)


def _plain_with_bias_constants(model, names, value=0.6):
    """Strip after structured pruning, then give the dead filters a nonzero bias."""
    pruned = prune_model(model, schedule=ConstantSparsity(0.5), granularity="structured",
                         layers=names)
    update_masks(pruned, force=True)
    plain = strip(pruned)
    for name in names:
        layer = plain.get_layer(name)
        kernel, bias = layer.get_weights()
        dead = ~kernel.reshape(-1, kernel.shape[-1]).any(axis=0)
        assert 0 < dead.sum() < dead.size, name
        bias[dead] = value * np.linspace(-1, 2, int(dead.sum()))
        layer.set_weights([kernel, bias])
    return plain


def test_strides_dilation_fused_activation_and_conv1d_causal():
    inp = keras.Input((11, 10, 2))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="a")(inp)
    x = keras.layers.Conv2D(8, 5, strides=2, padding="same", activation="elu", name="b")(x)
    x = keras.layers.Conv2D(6, 3, dilation_rate=2, padding="same", activation="tanh",
                            name="c")(x)
    x = keras.layers.Conv2D(4, (2, 3), strides=(2, 1), padding="same", name="d")(x)
    x = keras.layers.Flatten()(x)
    model2d = keras.Model(inp, keras.layers.Dense(3, name="head")(x))
    plain = _plain_with_bias_constants(model2d, ["a", "b", "c"])
    small = shrink(plain)
    x2 = RNG.random((4, 11, 10, 2), dtype="float32")
    np.testing.assert_allclose(small.predict(x2, verbose=0), plain.predict(x2, verbose=0),
                               atol=1e-5, rtol=1e-5)
    # the fused activation runs after the map: it moved into the PositionBias layer
    assert small.get_layer("b").get_config()["activation"] == "linear"
    assert small.get_layer("b_position_bias").get_config()["activation"] == "elu"
    assert small.get_layer("b").kernel.shape[-2] < 8

    inp = keras.Input((13, 3))
    y = keras.layers.Conv1D(6, 3, padding="causal", name="p")(inp)
    y = keras.layers.Conv1D(6, 3, padding="causal", dilation_rate=2, name="q")(y)
    y = keras.layers.Conv1D(4, 4, padding="same", strides=3, name="r")(y)
    y = keras.layers.GlobalAveragePooling1D()(y)
    model1d = keras.Model(inp, keras.layers.Dense(2, name="head")(y))
    plain = _plain_with_bias_constants(model1d, ["p", "q"])
    small = shrink(plain)
    x1 = RNG.random((4, 13, 3), dtype="float32")
    np.testing.assert_allclose(small.predict(x1, verbose=0), plain.predict(x1, verbose=0),
                               atol=1e-5, rtol=1e-5)
    assert small.get_layer("q").kernel.shape[-2] == 3 and small.get_layer("r").kernel.shape[-2] == 3


def test_dynamic_spatial_size_falls_back_to_a_carrier():
    inp = keras.Input((None, None, 2))
    x = keras.layers.Conv2D(6, 3, padding="same", name="a")(inp)
    x = keras.layers.Conv2D(4, 3, padding="same", name="b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(3, name="head")(x))
    plain = _plain_with_bias_constants(model, ["a"])
    small = shrink(plain)  # default fold="bias_map", but no static size to build a map
    assert not any(isinstance(l, PositionBias) for l in small.layers)
    kept = int(plain.get_layer("a").kernel.numpy().reshape(-1, 6).any(axis=0).sum())
    assert small.get_layer("b").kernel.shape[-2] == kept + 1  # one carrier
    for size in ((7, 7), (5, 9)):
        x = RNG.random((3, *size, 2), dtype="float32")
        np.testing.assert_allclose(small.predict(x, verbose=0), plain.predict(x, verbose=0),
                                   atol=1e-5, rtol=1e-5)


def test_position_bias_layer_config_and_errors():
    layer = PositionBias((3, 4, 2), activation="relu", name="pb")
    x = RNG.normal(size=(2, 3, 4, 2)).astype("float32")
    layer(x)
    bias_map = RNG.normal(size=(3, 4, 2)).astype("float32")
    layer.bias_map.assign(bias_map)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)),
                               np.maximum(x + bias_map, 0), atol=1e-6)
    assert not layer.trainable_weights and len(layer.non_trainable_weights) == 1
    config = layer.get_config()
    assert config["shape"] == [3, 4, 2] and config["activation"] == "relu"
    clone = PositionBias.from_config(config)
    assert clone.map_shape == (3, 4, 2) and clone.name == "pb"
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, PositionBias) and restored.get_config() == config

    with pytest.raises(ValueError, match="shape must be"):
        PositionBias((3, 0))
    with pytest.raises(ValueError, match="shape must be"):
        PositionBias(())
    with pytest.raises(ValueError, match="input shape"):
        PositionBias((3, 4, 2))(np.zeros((1, 4, 3, 2), "float32"))
    with pytest.raises(ValueError, match="fold must be one of"):
        shrink(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), fold="bias")
