"""Export: TFLite modes run in the LiteRT interpreter close to Keras; writes are atomic."""

import os

import keras
import numpy as np
import pytest

import tfcompress
from tfcompress import data, export


@pytest.fixture(scope="module")
def trained_digits_cnn():
    keras.utils.set_random_seed(0)
    (x, y), (xt, yt) = data.load_digits()
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(10)(h)
    model = keras.Model(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=25, batch_size=32, verbose=0)
    assert model.evaluate(xt, yt, verbose=0)[1] > 0.9
    return model, x, xt


def test_float_export_matches_keras(trained_digits_cnn, tmp_path):
    model, _, xt = trained_digits_cnn
    result = export.to_tflite(model, tmp_path / "m.tflite", verify_data=xt[:200])
    assert result.max_abs_error < 1e-4 and result.top1_agreement == 1.0
    assert os.path.getsize(tmp_path / "m.tflite") == result.size_bytes > 0


@pytest.mark.parametrize("mode", ["dynamic", "int8", "float16"])
def test_quantized_exports_agree_on_top1(trained_digits_cnn, tmp_path, mode):
    model, x, xt = trained_digits_cnn
    float_size = export.to_tflite(model, tmp_path / "f.tflite").size_bytes
    result = export.to_tflite(
        model, tmp_path / f"{mode}.tflite", mode=mode,
        representative_data=data.representative_dataset(x, 100), verify_data=xt)
    assert result.top1_agreement >= 0.97
    assert result.size_bytes < float_size


def test_int8_needs_representative_data(trained_digits_cnn, tmp_path):
    model, _, _ = trained_digits_cnn
    with pytest.raises(ValueError, match="representative_data"):
        export.to_tflite(model, tmp_path / "q.tflite", mode="int8")
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="mode='int3'"):
        export.to_tflite(model, tmp_path / "q.tflite", mode="int3")


def test_failed_verification_leaves_no_file(trained_digits_cnn, tmp_path):
    model, _, xt = trained_digits_cnn
    with pytest.raises(export.ExportVerificationError, match="top-1 agreement"):
        export.to_tflite(model, tmp_path / "m.tflite", mode="dynamic", verify_data=xt[:50],
                         min_top1_agreement=1.01)
    assert not list(tmp_path.iterdir())


def test_unwritable_path_fails_clearly_and_leaves_nothing(trained_digits_cnn, tmp_path, monkeypatch):
    model, _, _ = trained_digits_cnn
    missing = tmp_path / "no" / "such" / "dir" / "m.tflite"
    with pytest.raises(FileNotFoundError, match="path="):
        export.to_tflite(model, missing)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export.to_tflite(model, not_a_folder / "m.tflite")
    # Permission bits do not stop root (CI), so simulate the read-only folder.
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(PermissionError, match="not writable"):
        export.to_tflite(model, tmp_path / "m.tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_conversion_failure_midway_leaves_no_file(trained_digits_cnn, tmp_path, monkeypatch):
    model, _, xt = trained_digits_cnn
    from tfcompress.export import tflite

    def broken_run(*args, **kwargs):
        raise RuntimeError("interpreter crashed")

    monkeypatch.setattr(tflite, "run_tflite", broken_run)
    with pytest.raises(RuntimeError, match="interpreter crashed"):
        export.to_tflite(model, tmp_path / "m.tflite", verify_data=xt[:4])
    assert not list(tmp_path.iterdir())


def test_saved_model_round_trip(trained_digits_cnn, tmp_path):
    model, _, xt = trained_digits_cnn
    path = export.to_saved_model(model, tmp_path / "sm", verify_data=xt[:32])
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    assert [p.name for p in tmp_path.iterdir()] == ["sm"]


def test_sparse_int8_export_runs_in_litert(trained_digits_cnn, tmp_path):
    # XNNPACK rejects sparse int8 fully-connected layers; run_tflite falls back to
    # the built-in kernels instead of failing.
    model, x, xt = trained_digits_cnn
    import tfcompress

    pruned = tfcompress.prune_model(model, schedule=tfcompress.ConstantSparsity(0.8))
    tfcompress.pruning.update_masks(pruned, force=True)
    stripped = tfcompress.strip(pruned)
    result = export.to_tflite(stripped, tmp_path / "s.tflite", mode="int8", sparsity=True,
                              representative_data=data.representative_dataset(x, 100),
                              verify_data=xt[:200], min_top1_agreement=0.9)
    assert result.top1_agreement >= 0.9


def _int8_weight_channels(path):
    """Rows (one per quantized channel) of every int8 weight tensor of a .tflite file."""
    from tensorflow.lite.python.schema_py_generated import TensorType
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    for tensor in model.subgraphs[0].tensors:
        data_ = model.buffers[tensor.buffer].data
        if tensor.type == TensorType.INT8 and len(tensor.shape) in (2, 4) and data_ is not None and len(data_):
            values = np.frombuffer(bytes(data_), np.int8).reshape(tensor.shape)
            values = np.moveaxis(values, tensor.quantization.quantizedDimension, 0)
            yield from values.reshape(len(values), -1)


def _values_per_channel(path):
    return [len(np.unique(row)) for row in _int8_weight_channels(path)]


def test_weight_grid_survives_int8_export_and_bn_folding(tmp_path):
    """quantize_weights(bits=4) before an int8 export leaves ≤ 15 int8 values per
    channel in the file (the converter's per-channel scale maps the grid's top level
    to ±127, BN folding rescales whole channels) — the README's gzip lever."""
    keras.utils.set_random_seed(0)
    (x, y), (xt, _) = data.load_digits()
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Flatten()(keras.layers.MaxPooling2D()(h))
    model = keras.Model(inputs, keras.layers.Dense(10)(h))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    calibration = data.representative_dataset(x, 100)

    export.to_tflite(model, tmp_path / "w8.tflite", mode="int8",
                     representative_data=calibration, verify_data=xt[:200])
    four_bit = tfcompress.quantize_weights(model, bits=4, per_channel=True)
    export.to_tflite(four_bit, tmp_path / "w4.tflite", mode="int8",
                     representative_data=calibration, verify_data=xt[:200])

    assert max(_values_per_channel(tmp_path / "w8.tflite")) > 15  # a lost grid would show
    four_bit_counts = _values_per_channel(tmp_path / "w4.tflite")
    assert len(four_bit_counts) == 8 + 10 and max(four_bit_counts) <= 15


def test_power_of_two_scales_rejects_what_it_cannot_rewrite(trained_digits_cnn, tmp_path):
    model, x, _ = trained_digits_cnn
    for kwargs in ({"mode": "dynamic"}, {"mode": "int8", "sparsity": True}):
        with pytest.raises(ValueError, match="power_of_two_scales=True needs mode='int8'"):
            export.to_tflite(model, tmp_path / "p.tflite", power_of_two_scales=True,
                             representative_data=data.representative_dataset(x, 10), **kwargs)
    assert not list(tmp_path.iterdir())
    float_file = export.to_tflite(model, tmp_path / "f.tflite").path
    with pytest.raises(ValueError, match="full-integer int8 model"):
        export.power_of_two_scales(open(float_file, "rb").read())


def test_power_of_two_scales_is_idempotent(trained_digits_cnn, tmp_path):
    model, x, xt = trained_digits_cnn
    path = export.to_tflite(model, tmp_path / "p.tflite", mode="int8",
                            representative_data=data.representative_dataset(x, 100),
                            verify_data=xt, power_of_two_scales=True).path
    once = open(path, "rb").read()
    assert export.power_of_two_scales(once) == once


def test_power_of_two_scales_on_a_coarser_grid(trained_digits_cnn, tmp_path):
    """bits=4 leaves every weight in [-7, 7] on power-of-two scales, and the file still
    runs close to the int8 one; bits outside 2..8 is refused by name."""
    model, x, xt = trained_digits_cnn
    path = export.to_tflite(model, tmp_path / "q.tflite", mode="int8",
                            representative_data=data.representative_dataset(x, 100)).path
    original = open(path, "rb").read()
    four_bit = tmp_path / "q4.tflite"
    four_bit.write_bytes(export.power_of_two_scales(original, bits=4))
    rows = list(_int8_weight_channels(four_bit))
    assert len(rows) == 8 + 10
    assert max(np.abs(row.astype(int)).max() for row in rows) <= 7
    assert min(np.abs(row.astype(int)).max() for row in rows) >= 4  # scale rounded up < 2×
    agreement = np.mean(export.run_tflite(four_bit, xt).argmax(-1)
                        == export.run_tflite(path, xt).argmax(-1))
    assert agreement >= 0.9
    assert export.power_of_two_scales(four_bit.read_bytes(), bits=4) == four_bit.read_bytes()
    with pytest.raises(ValueError, match="bits=9"):
        export.power_of_two_scales(original, bits=9)
