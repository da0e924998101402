"""FakeQuantActivation and post-training activation calibration."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcompress.quantization import FakeQuantActivation
from tfcompress.quantization import quantize_activations
from tfcompress.quantization import quantize_dequantize
from tfcompress.quantization import quantize_weights


def test_fake_quant_activation_states():
    layer = FakeQuantActivation(bits=4, symmetric=False, momentum=0.5)
    x = np.linspace(-1.0, 3.0, 12, dtype="float32")[None]
    # not initialized: dynamic range of the batch
    y = np.asarray(layer(x))
    np.testing.assert_allclose(y, np.asarray(quantize_dequantize(x, 4, symmetric=False)), rtol=1e-6)
    assert float(layer.initialized.numpy()) == 0.0
    # training: the first batch sets the range, then an EMA
    layer(x, training=True)
    assert (float(layer.range_min.numpy()), float(layer.range_max.numpy())) == (-1.0, 3.0)
    layer(2 * x, training=True)
    np.testing.assert_allclose([layer.range_min.numpy(), layer.range_max.numpy()], [-1.5, 4.5])
    # inference uses the stored range; values beyond saturate
    layer.set_range(0.0, 1.0)
    y = np.asarray(layer(np.array([[-2.0, 0.5, 5.0]], "float32")))
    np.testing.assert_allclose(y, [[0.0, 0.4666667, 1.0]], atol=1e-6)
    # STE through the stored range
    v = tf.Variable([[-2.0, 0.5, 5.0]])
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(layer(v))
    np.testing.assert_array_equal(tape.gradient(out, v).numpy(), [[0.0, 1.0, 0.0]])
    # ema=False: training never moves a calibrated range
    frozen = FakeQuantActivation(bits=8, ema=False)
    frozen.set_range(-1.0, 1.0)
    frozen(5 * x, training=True)
    assert float(frozen.range_max.numpy()) == 1.0


def test_fake_quant_activation_config_and_keras_round_trip(tmp_keras_path):
    layer = FakeQuantActivation(bits=3, symmetric=True, momentum=0.9, ema=False, name="fq")
    config = layer.get_config()
    assert {"bits", "symmetric", "momentum", "ema"} <= set(config)
    clone = FakeQuantActivation.from_config(config)
    assert clone.get_config() == config
    model = keras.Sequential([keras.Input((5,)), layer])
    layer.set_range(-0.5, 2.0)
    model.save(tmp_keras_path)
    loaded = keras.models.load_model(tmp_keras_path)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    fq = loaded.layers[-1]
    assert isinstance(fq, FakeQuantActivation)
    assert (float(fq.range_min.numpy()), float(fq.range_max.numpy())) == (-0.5, 2.0)
    assert len(fq.trainable_weights) == 0 and len(fq.non_trainable_weights) == 3


def test_fake_quant_activation_errors():
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 8\]; received: bits=16"):
        FakeQuantActivation(bits=16)
    with pytest.raises(ValueError, match="momentum must be in"):
        FakeQuantActivation(momentum=1.0)
    with pytest.raises(ValueError, match="range_min must be <= range_max"):
        FakeQuantActivation().set_range(1.0, 0.0)


@pytest.mark.parametrize("calibration", ["minmax", "absmax", "mse", "kl"])
def test_quantize_activations_calibrates_layer_inputs(small_cnn, images, calibration):
    kwargs = {"num_bins": 256} if calibration == "kl" else {}
    qa = quantize_activations(small_cnn, images, bits=4, calibration=calibration, batch_size=8, **kwargs)
    fqs = {l.name: l for l in qa.layers if isinstance(l, FakeQuantActivation)}
    assert sorted(fqs) == sorted(f"{n}_input_quant" for n in ["conv", "dw", "sep", "fc1", "fc2"])
    # the conv input is the image batch: min-max range of the data
    lo, hi = float(fqs["conv_input_quant"].range_min.numpy()), float(fqs["conv_input_quant"].range_max.numpy())
    if calibration == "minmax":
        assert (lo, hi) == (float(images.min()), float(images.max()))
    elif calibration == "absmax":
        assert hi == -lo == float(np.abs(images).max())
    else:
        assert images.min() <= lo <= 0.0 <= hi <= images.max()
    # post-ReLU input: non-negative range
    assert float(fqs["dw_input_quant"].range_min.numpy()) >= (0.0 if calibration != "absmax" else -np.inf)
    assert all(float(f.initialized.numpy()) == 1.0 and not f.ema for f in fqs.values())
    out = np.asarray(qa(images))
    assert out.shape == (16, 4) and np.all(np.isfinite(out))
    # the original is untouched and 4-bit activations perturb the outputs
    assert not any(isinstance(l, FakeQuantActivation) for l in small_cnn.layers)
    assert not np.allclose(out, np.asarray(small_cnn(images)), atol=1e-5)


def test_w_a_pipeline_and_dataset_inputs(images, tmp_keras_path):
    # Explicit names: auto-generated ones depend on what else ran in this process.
    model = keras.Sequential([keras.Input((8, 8, 3)),
                              keras.layers.Conv2D(4, 3, activation="relu", name="conv2d"),
                              keras.layers.Flatten(), keras.layers.Dense(3, name="dense")])
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(16))).batch(4)
    w4a8 = quantize_activations(quantize_weights(model, 4), ds, bits=8, num_batches=2, skip=["dense"])
    assert [l.name for l in w4a8.layers if isinstance(l, FakeQuantActivation)] == ["conv2d_input_quant"]
    # inputs of the conv after quantization lie on an 8-bit grid
    fq = w4a8.get_layer("conv2d_input_quant")
    q = np.asarray(fq(images))
    assert len(np.unique(q)) <= 256
    w4a8.save(tmp_keras_path)
    loaded = keras.models.load_model(tmp_keras_path)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), w4a8.predict(images, verbose=0))


def test_quantize_activations_errors(small_cnn, images):
    with pytest.raises(ValueError, match="calibration must be one of"):
        quantize_activations(small_cnn, images, calibration="entropy")
    with pytest.raises(ValueError, match="dataset yielded no batches"):
        quantize_activations(small_cnn, images[:0])
    with pytest.raises(ValueError, match=r"skip names layers that are not in the model: \['x'\]"):
        quantize_activations(small_cnn, images, skip=["x"])
