"""convert(): float model → kernel layers, outputs within the stated tolerance,
.keras round trip equal, unsupported layers reported by name, clear errors."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from kernels_testutil import block_sparse_kernel
from tfcompress.kernels import QuantizedConv2D
from tfcompress.kernels import QuantizedDense
from tfcompress.kernels import QuantizedDepthwiseConv2D
from tfcompress.kernels import SparseDense
from tfcompress import convert  # the top-level name of kernels.convert

# whole-model tolerance stated in convert()'s docstring: max |Δlogit| / max |logit|
TOLERANCE = {"int8": 0.03, "int4": 0.3, None: 1e-5}


def _cnn():
    inp = keras.Input((10, 10, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(h)
    h = keras.layers.Conv2D(16, 1, activation="relu")(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(24, activation="relu")(h)
    model = keras.Model(inp, keras.layers.Dense(5)(h), name="cnn")
    bn = model.layers[4]
    rng = np.random.default_rng(0)
    bn.moving_mean.assign(rng.standard_normal(16).astype("float32") * 0.1)
    bn.moving_variance.assign(rng.uniform(0.5, 2, 16).astype("float32"))
    return model


def _relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("quantize,sparse,calibrate,expected_types", [
    ("int8", False, False, [QuantizedConv2D, QuantizedDepthwiseConv2D, QuantizedConv2D,
                            QuantizedDense, QuantizedDense]),
    ("int8", True, True, [QuantizedConv2D, QuantizedDepthwiseConv2D, SparseDense,
                          SparseDense, SparseDense]),
])
def test_convert_cnn(tmp_keras_path, quantize, sparse, calibrate, expected_types):
    model = _cnn()
    x = np.random.default_rng(1).standard_normal((8, 10, 10, 3)).astype("float32")
    converted = convert(model, quantize=quantize, sparse=sparse,
                        activation_calibration_data=x if calibrate else None)
    kinds = [type(layer) for layer in converted.layers
             if not isinstance(layer, (keras.layers.InputLayer,
                                       keras.layers.BatchNormalization,
                                       keras.layers.GlobalAveragePooling2D))]
    if expected_types:
        assert kinds == expected_types
    if calibrate:
        assert all(layer.input_quantization == "static" for layer in converted.layers
                   if hasattr(layer, "input_quantization"))
    bn_old, bn_new = model.layers[4], converted.layers[4]
    np.testing.assert_array_equal(bn_new.moving_mean.numpy(), bn_old.moving_mean.numpy())
    expected = model(x).numpy()
    eager = converted(x).numpy()
    assert _relative_error(eager, expected) <= TOLERANCE[quantize]
    if not calibrate:  # one whole-model XLA compile is enough (the layers test both)
        xla = tf.function(converted, jit_compile=True)(tf.constant(x)).numpy()
        np.testing.assert_allclose(xla, eager, rtol=1e-5, atol=1e-5)
    converted.save(tmp_keras_path)
    loaded = keras.models.load_model(tmp_keras_path)
    np.testing.assert_array_equal(loaded(x).numpy(), eager)


def _randomize_statistics(bn, rng):
    n = bn.moving_mean.shape[0]
    bn.moving_mean.assign(rng.standard_normal(n).astype("float32") * 0.3)
    bn.moving_variance.assign(rng.uniform(0.3, 3, n).astype("float32"))
    bn.gamma.assign(rng.uniform(0.5, 2, n).astype("float32"))
    bn.beta.assign(rng.standard_normal(n).astype("float32") * 0.3)


def _bn_model():
    inp = keras.Input((10, 10, 3), name="input")
    h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    h = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(h)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    side = keras.layers.Conv2D(16, 1)(h)          # also feeds the Add: stays
    h = keras.layers.Add()([keras.layers.BatchNormalization()(side), side])
    h = keras.layers.Conv2D(16, 1, activation="relu")(h)  # activation first: stays
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.BatchNormalization()(h))
    h = keras.layers.Dense(12)(h)
    h = keras.layers.BatchNormalization()(h)
    model = keras.Model(inp, keras.layers.Dense(5)(keras.layers.ReLU()(h)), name="bn")
    rng = np.random.default_rng(4)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            _randomize_statistics(layer, rng)
    return model


@pytest.mark.parametrize("quantize,sparse,calibrate", [("int8", False, False),
                                                        ("int8", False, True),
                                                        (None, True, False)])
def test_convert_folds_batch_norm(tmp_keras_path, quantize, sparse, calibrate):
    """BatchNormalization after a linear layer (conv, depthwise, Dense) folds into
    it; after an activation, or on a tensor with another consumer, it
    stays. The folded model stays within convert's tolerance of the float model
    (also calibrated) and round-trips through .keras."""
    model = _bn_model()
    x = np.random.default_rng(5).standard_normal((8, 10, 10, 3)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sparse: the k×k convolutions stay float
        calibration = dict(activation_calibration_data=x) if calibrate else {}
        converted = convert(model, quantize=quantize, sparse=sparse, **calibration)
        kept = convert(model, quantize=quantize, sparse=sparse, fold_batch_norm=False,
                       **calibration)
    bn_names = [layer.name for layer in model.layers
                if isinstance(layer, keras.layers.BatchNormalization)]
    left = {layer.name for layer in converted.layers
            if isinstance(layer, keras.layers.BatchNormalization)}
    # folded after the 3×3 conv, the depthwise and the Dense (also where sparse=True
    # leaves the convolutions float); kept after the 1×1 conv that also feeds the
    # Add and after the conv with a ReLU
    assert [name in left for name in bn_names] == [False, False, True, True, False]
    assert {layer.name for layer in kept.layers} >= set(bn_names)
    reference = model(x).numpy()
    folded = converted(x).numpy()
    assert _relative_error(folded, reference) <= TOLERANCE[quantize]
    assert _relative_error(kept(x).numpy(), reference) <= TOLERANCE[quantize]
    converted.save(tmp_keras_path)
    loaded = keras.models.load_model(tmp_keras_path)
    np.testing.assert_array_equal(loaded(x).numpy(), folded)


def test_calibration_reads_the_models_own_graph():
    """Layers shared with another graph (here a second model built on the same
    layer objects) have more than one call; calibration measures the inputs of the converted model's
    own calls only."""
    model = _bn_model()
    keras.models.clone_model(model, clone_function=lambda layer: layer)  # shares them
    x = np.random.default_rng(6).standard_normal((8, 10, 10, 3)).astype("float32")
    converted = convert(model, quantize="int8", activation_calibration_data=x,
                        fold_batch_norm=False)
    assert _relative_error(converted(x).numpy(), model(x).numpy()) <= TOLERANCE["int8"]


def test_int4_mlp_within_tolerance():
    rng = np.random.default_rng(3)
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(20, activation="relu"),
                              keras.layers.Dense(6)])
    converted = convert(model, quantize="int4")
    assert [layer.bits for layer in converted.layers] == [4, 4]
    x = rng.standard_normal((4, 30)).astype("float32")
    assert _relative_error(converted(x).numpy(), model(x).numpy()) <= TOLERANCE["int4"]


def test_sparse_float_mlp_is_exact_and_block_sparse(tmp_keras_path):
    rng = np.random.default_rng(2)
    model = keras.Sequential([keras.Input((40,)), keras.layers.Dense(36, activation="relu"),
                              keras.layers.Dense(7)])
    kernel, kept = block_sparse_kernel(rng, (40, 36), (8, 8), 0.6)
    model.layers[0].kernel.assign(kernel)
    converted = convert(model, quantize=None, sparse=True, block_shape=(8, 8))
    assert isinstance(converted, keras.Sequential)
    first = converted.layers[0]
    assert isinstance(first, SparseDense) and first.num_blocks == kept
    x = rng.standard_normal((3, 40)).astype("float32")
    assert _relative_error(converted(x).numpy(), model(x).numpy()) <= TOLERANCE[None]
    converted.save(tmp_keras_path)
    np.testing.assert_array_equal(keras.models.load_model(tmp_keras_path)(x).numpy(),
                                  converted(x).numpy())


def test_unconvertible_layers_are_reported_by_name():
    model = _cnn()
    with pytest.warns(UserWarning, match=r"conv2d.*\(Conv2D\).*1×1"):
        converted = convert(model, quantize=None, sparse=True)
    assert type(converted.layers[1]) is keras.layers.Conv2D
    np.testing.assert_array_equal(converted.layers[1].kernel.numpy(),
                                  model.layers[1].kernel.numpy())
    with pytest.raises(ValueError, match="depthwise_conv2d"):
        convert(model, quantize=None, sparse=True, strict=True)


def test_bad_arguments():
    model = _cnn()
    cases = [
        (dict(quantize="int3"), "quantize='int3'"),
        (dict(sparse="yes"), "sparse='yes'"),
        (dict(sparse=True, block_shape=(0, 32)), "block_shape"),
        (dict(quantize=None), "nothing to convert"),
        (dict(quantize="int4", sparse=True), "quantize='int4', sparse=True"),
        (dict(input_quantization="static"), "activation_calibration_data"),
        (dict(input_quantization="fp8"), "input_quantization='fp8'"),
        (dict(fold_batch_norm="yes"), "fold_batch_norm='yes'"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(ValueError, match=needle):
            convert(model, **kwargs)


def test_rejects_subclassed_and_wrapped_models():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    sub = Sub()
    sub(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="functional or Sequential"):
        convert(sub)
    inp = keras.Input((4, 3))
    wrapped = keras.Model(inp, keras.layers.TimeDistributed(keras.layers.Dense(2))(inp))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="strip the model first"):
            convert(wrapped)


def test_saved_model_export_runs_the_kernels(tmp_path):
    rng = np.random.default_rng(4)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"),
                              keras.layers.Dense(3)])
    converted = convert(model, quantize="int8")
    converted.export(str(tmp_path / "saved"), verbose=False)
    restored = tf.saved_model.load(str(tmp_path / "saved"))
    x = rng.standard_normal((2, 6)).astype("float32")
    np.testing.assert_allclose(restored.serve(x).numpy(), converted(x).numpy(), atol=1e-6)
