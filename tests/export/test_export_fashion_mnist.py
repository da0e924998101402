"""Every TFLite mode on a CNN trained on real Fashion-MNIST, checked in LiteRT on
1000 test images (issue 6's acceptance): top-1 agreement with Keras ≥ 99 % for
every quantized mode, exact-ish (max |Δ| < 1e-4, 100 % agreement) for float."""

import keras
import numpy as np
import pytest

from tfcompress import data, export

VERIFY_IMAGES = 1000


@pytest.fixture(scope="module")
def fashion_cnn():
    keras.utils.set_random_seed(0)
    (x, y), (xt, _) = data.load_fashion_mnist_arrays(subset=8000, test_subset=VERIFY_IMAGES)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(10)(h)
    model = keras.Model(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    return model, x, xt


def test_float_file_is_exact_ish_on_1000_test_images(fashion_cnn, tmp_path):
    model, _, xt = fashion_cnn
    assert len(xt) == VERIFY_IMAGES
    result = export.to_tflite(model, tmp_path / "float.tflite", verify_data=xt,
                              max_abs_error=1e-4, min_top1_agreement=1.0)
    assert result.max_abs_error < 1e-4 and result.top1_agreement == 1.0


@pytest.mark.parametrize("mode", ["float16", "dynamic", "int8", "int16x8"])
def test_quantized_files_agree_on_99_percent(fashion_cnn, tmp_path, mode):
    model, x, xt = fashion_cnn
    path = tmp_path / f"{mode}.tflite"
    result = export.to_tflite(model, path, mode=mode, verify_data=xt,
                              representative_data=data.representative_dataset(x, 200),
                              min_top1_agreement=0.99)
    assert result.top1_agreement >= 0.99, (mode, result.top1_agreement)
    # Independent check through the interpreter (not the export's own verification).
    logits = export.run_tflite(path, xt)
    agreement = float(np.mean(np.argmax(logits, -1) == np.argmax(model.predict(xt, verbose=0), -1)))
    assert agreement >= 0.99, (mode, agreement)
