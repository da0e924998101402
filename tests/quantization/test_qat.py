"""Quantization-aware training: QuantizeWrapper, quantize_aware, strip_qat."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcompress.quantization import FakeQuantActivation
from tfcompress.quantization import QuantizeWrapper
from tfcompress.quantization import quantize_aware
from tfcompress.quantization import quantize_weights
from tfcompress.quantization import strip_qat

LAYERS = [
    (lambda: keras.layers.Dense(5), (3, 4)),
    (lambda: keras.layers.Conv2D(4, 3, padding="same"), (2, 6, 6, 3)),
    (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2), (2, 6, 6, 3)),
    (lambda: keras.layers.SeparableConv2D(4, 3), (2, 6, 6, 3)),
    (lambda: keras.layers.Conv2DTranspose(4, 3, strides=2), (2, 4, 4, 3)),
    (lambda: keras.layers.Conv1D(4, 2), (2, 5, 3)),
]


@pytest.mark.parametrize("make,shape", LAYERS)
def test_wrapper_forward_is_layer_with_quantized_kernel_and_ste_gradient(make, shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32")
    wrapper = QuantizeWrapper(make(), bits=3, per_channel=True, activation_bits=None)
    y = wrapper(x)
    # reference: a plain copy of the layer holding Q(w) (strip_qat's kernels)
    ref = keras.Sequential([keras.Input(shape[1:]), wrapper])
    plain = strip_qat(ref)
    np.testing.assert_allclose(np.asarray(y), np.asarray(plain(x)), rtol=1e-5, atol=1e-5)
    inner = plain.layers[-1]
    assert not any(np.array_equal(a, b) for a, b in zip(inner.get_weights(), wrapper.layer.get_weights()) if a.ndim > 1)
    # STE: d loss / d w of the wrapper == d loss / d w of the plain layer at Q(w)
    r = tf.constant(rng.normal(size=y.shape).astype("float32"))
    with tf.GradientTape() as tape:
        loss_w = tf.reduce_sum(wrapper(x) * r)
    g_wrapper = tape.gradient(loss_w, wrapper.layer.trainable_variables)
    with tf.GradientTape() as tape:
        loss_p = tf.reduce_sum(inner(x) * r)
    g_plain = tape.gradient(loss_p, inner.trainable_variables)
    for gw, gp in zip(g_wrapper, g_plain):
        np.testing.assert_allclose(gw.numpy(), gp.numpy(), rtol=1e-4, atol=1e-5)
    # the wrapped layer's variables are restored after the call
    assert all(isinstance(v, keras.Variable) for v in wrapper.layer.weights)


def test_quantize_aware_fit_keras_round_trip_and_strip(small_cnn, images, tmp_keras_path):
    y = np.random.default_rng(1).normal(size=(16, 4)).astype("float32")
    qat = quantize_aware(small_cnn, bits=4, bits_overrides={"fc2": 8}, skip=["sep"])
    wrapped = [l.name for l in qat.layers if isinstance(l, QuantizeWrapper)]
    assert wrapped == ["quant_conv", "quant_dw", "quant_fc1", "quant_fc2"]
    assert qat.get_layer("quant_fc2").bits == 8 and qat.get_layer("quant_fc2").activation_bits == 8
    assert qat.get_layer("quant_conv").bits == 4 and qat.get_layer("quant_conv").per_channel
    before = qat.get_layer("quant_conv").layer.get_weights()[0].copy()
    qat.compile(keras.optimizers.SGD(0.01), "mse")
    history = qat.fit(images, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert not np.array_equal(before, qat.get_layer("quant_conv").layer.get_weights()[0])
    iq = qat.get_layer("quant_conv").input_quantizer
    assert float(iq.initialized.numpy()) == 1.0
    assert float(iq.range_min.numpy()) < 0 < float(iq.range_max.numpy())
    # .keras round trip: same outputs, same EMA ranges
    qat.save(tmp_keras_path)
    loaded = keras.models.load_model(tmp_keras_path)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), qat.predict(images, verbose=0))
    lq = loaded.get_layer("quant_conv")
    assert isinstance(lq, QuantizeWrapper)
    strip_layer = lambda c: {k: v for k, v in c.items() if k != "layer"}  # noqa: E731
    assert strip_layer(lq.get_config()) == strip_layer(qat.get_layer("quant_conv").get_config())
    assert lq.layer.get_config() == qat.get_layer("quant_conv").layer.get_config()
    assert float(lq.input_quantizer.range_max.numpy()) == float(iq.range_max.numpy())
    # strip with frozen activation quantizers reproduces the QAT inference
    stripped = strip_qat(loaded, keep_activation_quantizers=True)
    assert not any(isinstance(l, QuantizeWrapper) for l in stripped.layers)
    assert sum(isinstance(l, FakeQuantActivation) for l in stripped.layers) == 4
    np.testing.assert_allclose(np.asarray(stripped(images)), np.asarray(qat(images)), atol=1e-5)
    # plain strip: original names, quantized kernels, float activations
    plain = strip_qat(qat)
    assert [l.name for l in plain.layers[1:]] == [l.name for l in small_cnn.layers[1:]]
    k = plain.get_layer("conv").kernel.numpy()
    for c in range(k.shape[-1]):
        assert len(np.unique(k[..., c])) <= 15
    np.testing.assert_array_equal(plain.get_layer("sep").get_weights()[0], qat.get_layer("sep").get_weights()[0])


def test_wrapper_config_covers_constructor_arguments():
    wrapper = QuantizeWrapper(
        keras.layers.Dense(3), bits=5, per_channel=False, symmetric=False,
        activation_bits=6, activation_symmetric=True, momentum=0.9, name="w",
    )
    config = wrapper.get_config()
    for key, value in {"bits": 5, "per_channel": False, "symmetric": False, "activation_bits": 6,
                       "activation_symmetric": True, "momentum": 0.9}.items():
        assert config[key] == value
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(wrapper))
    assert clone.get_config() == config
    assert isinstance(clone.layer, keras.layers.Dense)


def test_activations_off_and_sequential():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    qat = quantize_aware(model, bits=4, activations=False)
    assert isinstance(qat, keras.Sequential)
    assert all(l.input_quantizer is None for l in qat.layers)
    x = np.random.default_rng(2).normal(size=(3, 4)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(qat(x)), np.asarray(quantize_weights(model, 4, per_channel=True)(x)), rtol=1e-5, atol=1e-6
    )


def test_errors():
    with pytest.raises(ValueError, match="QuantizeWrapper supports Dense and convolution layers; received: layer='bn'"):
        QuantizeWrapper(keras.layers.BatchNormalization(name="bn"))
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 8\]; received: bits=0"):
        QuantizeWrapper(keras.layers.Dense(2), bits=0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="activations must be a bool"):
        quantize_aware(model, activations="yes")
    with pytest.raises(ValueError, match="has no QuantizeWrapper layers"):
        strip_qat(model)
