"""Structured surgery: ``shrink`` removes pruned filters and computes exactly what
``strip`` computes — including the constants pruned channels still emit (bias, BN's
``beta - mean·γ/σ`` through ReLU), folded into biases, per-position bias maps or a
carrier channel."""

import keras
import numpy as np
import pytest

from tfcompress import models
from tfcompress.pruning import ConstantSparsity
from tfcompress.pruning import prune_model
from tfcompress.pruning import shrink
from tfcompress.pruning import sparsity_report
from tfcompress.pruning import strip
from tfcompress.pruning import update_masks

from pruning_testutil import randomize_batchnorm

RNG = np.random.default_rng(5)


def _randomize_bn(model):
    return randomize_batchnorm(model, RNG)


def _structured(model, sparsity=0.5, layers=None, threshold="layer"):
    pruned = prune_model(
        model, schedule=ConstantSparsity(sparsity), granularity="structured",
        threshold=threshold,
        layers=layers or (lambda l: isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))
                          and l.name != "head"),
    )
    update_masks(pruned, force=True)
    return pruned


def _check_equal(reference, small, x):
    np.testing.assert_allclose(small.predict(x, verbose=0), reference.predict(x, verbose=0),
                               atol=1e-5, rtol=1e-5)
    assert small.count_params() < reference.count_params()
    r_ref, r_small = sparsity_report(reference), sparsity_report(small)
    assert r_small["global"]["macs"] < r_ref["global"]["macs"]
    assert r_small["global"]["params"] < r_ref["global"]["params"]


def _in_channels(model, name):
    return model.get_layer(name).kernel.shape[-2]


def _out_channels(model, name):
    return model.get_layer(name).kernel.shape[-1]


def test_small_cnn_flatten_and_bias_constants():
    model = models.small_cnn(input_shape=(8, 8, 1), filters=(6, 8), dense=12, num_classes=3)
    pruned = _structured(model)
    x = RNG.random((8, 8, 8, 1), dtype="float32")
    # wrapped input: masks zero kernels and biases, constants are 0
    _check_equal(strip(pruned), shrink(pruned), x)

    # plain input with pruned filters that keep a bias: constant channels ≠ 0
    plain = strip(pruned)
    for name, value in (("conv1", 0.7), ("conv2", 0.4), ("dense1", 0.9)):
        layer = plain.get_layer(name)
        kernel, bias = layer.get_weights()
        dead = ~kernel.reshape(-1, kernel.shape[-1]).any(axis=0)
        assert 0 < dead.sum() < dead.size, name
        bias[dead] = value * np.arange(1, dead.sum() + 1)
        layer.set_weights([kernel, bias])
    small = shrink(plain)
    _check_equal(plain, small, x)
    dead1 = int((~plain.get_layer("conv1").kernel.numpy().reshape(-1, 6).any(axis=0)).sum())
    # conv2 has "same" padding: ReLU(+bias) constants become a per-position bias map
    # (default), or ride on one carrier channel with fold="carrier"
    assert _in_channels(small, "conv2") == 6 - dead1
    carrier = shrink(plain, fold="carrier")
    _check_equal(plain, carrier, x)
    assert _in_channels(carrier, "conv2") == 6 - dead1 + 1
    # conv2's constants reach dense1 through MaxPooling and Flatten (4 positions per
    # channel), dense1's reach the head: folded into biases, channels fully removed
    assert _out_channels(small, "conv2") < 8 and _out_channels(small, "dense1") < 12
    assert small.get_layer("dense1").kernel.shape[0] == 4 * _out_channels(small, "conv2")


def test_mini_resnet_with_projections_round_trip_and_tflite(tmp_keras_path, tmp_path):
    from tfcompress.export import to_tflite

    model = _randomize_bn(models.resnet(depth=8, width=4, input_shape=(8, 8, 3)))
    pruned = _structured(model)
    x = RNG.random((8, 8, 8, 3), dtype="float32")
    reference, small = strip(pruned), shrink(pruned)
    _check_equal(reference, small, x)
    # inner block channels shrink; residual groups keep the union over the Add branches
    for stage, width in ((1, 4), (2, 8), (3, 16)):
        assert _out_channels(small, f"stage{stage}_block1_conv1") <= width
        assert (_out_channels(small, f"stage{stage}_block1_conv2")
                == small.get_layer(f"stage{stage}_block1_bn2").gamma.shape[0])
    assert _out_channels(small, "stage3_block1_conv1") < 16
    assert (_out_channels(small, "stage2_block1_proj_conv")
            == _out_channels(small, "stage2_block1_conv2"))
    small.save(tmp_keras_path)
    loaded = keras.models.load_model(tmp_keras_path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), small.predict(x, verbose=0),
                               atol=1e-6)
    result = to_tflite(small, tmp_path / "small.tflite", verify_data=x)
    assert result.max_abs_error < 1e-4


def test_depthwise_removes_channels_on_both_sides():
    inp = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.Conv2D(6, 1, name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = _randomize_bn(keras.Model(inp, keras.layers.Dense(3, name="head")(x)))
    plain = strip(_structured(model, layers=["conv", "dw", "pw"]))
    x = RNG.random((4, 6, 6, 3), dtype="float32")
    # a channel whose ReLU(BN) constant is 0 passes the zero-padded depthwise conv
    # as a constant: make bn1's constant negative for half of conv's dead filters
    conv = plain.get_layer("conv").kernel.numpy()
    dead = np.flatnonzero(~conv.reshape(-1, 8).any(axis=0))
    gamma, beta, mean, var = plain.get_layer("bn1").get_weights()
    beta[dead[: max(1, len(dead) // 2)]] = -1.0
    plain.get_layer("bn1").set_weights([gamma, beta, mean, var])
    small = shrink(plain)
    _check_equal(plain, small, x)
    kept = small.get_layer("dw").kernel.shape[-2]
    assert kept < 8
    assert small.get_layer("conv").kernel.shape[-1] == kept == small.get_layer("bn2").gamma.shape[0]
    assert _in_channels(small, "pw") == kept


def test_errors():
    model = models.small_cnn(input_shape=(8, 8, 1), filters=(4, 4), dense=8, num_classes=3)
    unstructured = prune_model(model, schedule=ConstantSparsity(0.5))
    with pytest.raises(ValueError, match="structured"):
        shrink(unstructured)
    with pytest.raises(ValueError, match="no structured sparsity"):
        shrink(model)

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional and Sequential"):
        shrink(Sub())


def test_shrink_dcil_structured_pruned_model():
    from tfcompress.pruning import dcil

    model = _randomize_bn(models.resnet(depth=8, width=4, input_shape=(8, 8, 1)))
    net = dcil(model, schedule=0.5, granularity="structured", threshold="layer")
    update_masks(net, force=True)
    x = RNG.random((4, 8, 8, 1), dtype="float32")
    _check_equal(strip(net.pruned_model), shrink(net.pruned_model), x)
