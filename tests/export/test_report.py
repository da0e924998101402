"""report(): parameters, nonzeros, bits, sizes and latency of models and exported files."""

import json

import keras
import numpy as np
import pytest

import tfcompress
from tfcompress import data, export, kernels, pruning


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


@pytest.fixture(scope="module")
def cnn(digits):
    keras.utils.set_random_seed(0)
    (x, y), _ = digits
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(64, activation="relu", name="hidden")(h)
    outputs = keras.layers.Dense(10, name="head")(h)
    model = keras.Model(inputs, outputs, name="tiny_cnn")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def pruned(cnn):
    wrapped = pruning.prune_model(cnn, schedule=pruning.ConstantSparsity(0.9))
    pruning.update_masks(wrapped, force=True)
    return wrapped, pruning.strip(wrapped)


@pytest.fixture(scope="module")
def tflite_files(cnn, pruned, digits, tmp_path_factory):
    (x, _), _ = digits
    folder = tmp_path_factory.mktemp("report")
    calibration = data.representative_dataset(x, 50)
    paths = {}
    for name, model, mode, sparsity in [("float", cnn, "float", False),
                                        ("int8", cnn, "int8", False),
                                        ("pruned_int8", pruned[1], "int8", False),
                                        ("sparse_int8", pruned[1], "int8", True)]:
        paths[name] = export.to_tflite(model, folder / f"{name}.tflite", mode=mode,
                                       sparsity=sparsity,
                                       representative_data=calibration).path
    return paths


def _nonzero_weights(model):
    return sum(int(np.count_nonzero(w)) for w in model.get_weights())


def test_pruned_stripped_model_nonzeros_equal_nonzero_weights(pruned):
    wrapped, stripped = pruned
    r = tfcompress.report(stripped, latency=False)
    assert r.format == "keras"
    assert r.parameters == stripped.count_params()
    assert r.nonzeros == _nonzero_weights(stripped)
    assert r.sparsity > 0.8
    assert r.bits == {32: stripped.count_params()}
    assert r.bits_per_weight == 32.0
    # A model still holding wrappers is reported as its stripped copy.
    r_wrapped = tfcompress.report(wrapped, latency=False)
    assert r_wrapped.nonzeros == r.nonzeros and r_wrapped.parameters == r.parameters
    assert any("strip" in note for note in r_wrapped.notes)


def test_gzip_is_smaller_than_raw_for_a_sparse_model(cnn, pruned, tflite_files):
    dense = tfcompress.report(cnn, latency=False)
    sparse = tfcompress.report(pruned[1], latency=False)
    assert sparse.size_bytes == pytest.approx(dense.size_bytes, rel=0.01)
    assert sparse.gzip_bytes < 0.5 * sparse.size_bytes
    assert sparse.gzip_bytes < 0.5 * dense.gzip_bytes
    pruned_file = tfcompress.report(tflite_files["pruned_int8"], latency=False)
    int8_file = tfcompress.report(tflite_files["int8"], latency=False)
    assert pruned_file.gzip_bytes < 0.5 * pruned_file.size_bytes
    assert pruned_file.gzip_bytes < 0.5 * int8_file.gzip_bytes


def test_tflite_report_matches_the_interpreter(cnn, tflite_files):
    from ai_edge_litert.interpreter import Interpreter

    for name in ("float", "int8"):
        r = tfcompress.report(tflite_files[name], latency=False)
        assert r.format == "tflite" and r.parameters == cnn.count_params()
        interpreter = Interpreter(model_path=tflite_files[name])
        interpreter.allocate_tensors()
        details = {d["index"]: d for d in interpreter.get_tensor_details()}
        for row in r.weights:
            detail = details[row["index"]]
            value = interpreter.get_tensor(row["index"])
            assert list(detail["shape"]) == row["shape"], row["name"]
            assert np.dtype(detail["dtype"]).name == row["dtype"], row["name"]
            assert value.size == row["params"]
            assert np.count_nonzero(value) == row["nonzeros"], row["name"]
    int8 = tfcompress.report(tflite_files["int8"], latency=False)
    kernels_params = sum(w.size for w in cnn.get_weights() if w.ndim > 1)
    assert int8.bits[8] == kernels_params
    assert int8.bits[32] == cnn.count_params() - kernels_params  # int32 biases
    assert int8.size_bytes < 0.5 * tfcompress.report(tflite_files["float"],
                                                     latency=False).size_bytes


def test_sparse_tflite_counts_dense_shape_and_indices(pruned, tflite_files):
    dense_enc = tfcompress.report(tflite_files["pruned_int8"], latency=False)
    sparse_enc = tfcompress.report(tflite_files["sparse_int8"], latency=False)
    assert sparse_enc.parameters == dense_enc.parameters == pruned[1].count_params()
    assert sparse_enc.nonzeros == dense_enc.nonzeros <= _nonzero_weights(pruned[1])
    encodings = {(w["kind"], w["encoding"]) for w in sparse_enc.weights}
    assert ("weight", "tflite-sparse") in encodings
    assert ("metadata", "tflite-sparse") in encodings
    assert sparse_enc.size_bytes < 0.5 * dense_enc.size_bytes


def test_tflite_latency_with_fixed_threads(tflite_files, digits):
    _, (xt, _) = digits
    r = tfcompress.report(tflite_files["float"], threads=1, repeats=5, warmup=1)
    assert r.latency_ms["litert"] > 0 and r.latency_settings["threads"] == 1
    assert r.latency_settings["batch"] == 1 and "XNNPACK" in r.latency_settings["litert"]
    batch = tfcompress.report(tflite_files["int8"], sample_input=xt[:4], repeats=3)
    assert batch.latency_settings["batch"] == 4
    # XNNPACK rejects sparse int8 fully-connected layers: timed on the built-in kernels.
    sparse = tfcompress.report(tflite_files["sparse_int8"], repeats=3)
    assert sparse.latency_ms["litert"] > 0


def test_keras_latency_summary_and_dict(cnn):
    r = tfcompress.report(cnn, repeats=3, warmup=1)
    assert r.latency_ms["keras_xla"] > 0
    assert "jit_compile=True" in r.latency_settings["keras_xla"]
    text = str(r)
    assert "parameters" in text and "gzipped" in text and "hidden" in text
    as_dict = json.loads(json.dumps(r.to_dict()))
    assert as_dict["parameters"] == cnn.count_params()
    assert as_dict["bits_per_weight"] == 32.0 and "sparsity" in as_dict


def test_kernel_layers_report_their_bits(cnn):
    int4 = kernels.convert(cnn, quantize="int4")
    r = tfcompress.report(int4, latency=False)
    kernel_params = sum(w.size for w in cnn.get_weights() if w.ndim > 1)
    assert r.bits[4] == kernel_params
    assert r.parameters > kernel_params  # + float scales and biases
    assert r.size_bytes < 0.25 * tfcompress.report(cnn, latency=False).size_bytes


def test_saved_model_report(cnn, tmp_path):
    path = export.to_saved_model(cnn, tmp_path / "sm")
    r = tfcompress.report(path, repeats=3, warmup=1)
    assert r.format == "saved_model"
    assert r.parameters == cnn.count_params()  # the second copy Keras saves is not counted
    assert r.latency_ms["saved_model"] > 0


def test_bad_input_errors_name_the_argument(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_or_file=.*no such file"):
        tfcompress.report(tmp_path / "missing.tflite")
    text = tmp_path / "notes.tflite"
    text.write_text("not a flatbuffer")
    with pytest.raises(ValueError, match="TFL3"):
        tfcompress.report(text)
    with pytest.raises(ValueError, match="saved_model.pb"):
        tfcompress.report(tmp_path)
    with pytest.raises(ValueError, match="model_or_file=42"):
        tfcompress.report(42)
    with pytest.raises(ValueError, match="threads=0"):
        tfcompress.report(text, threads=0)
    with pytest.raises(ValueError, match="repeats=2.5"):
        tfcompress.report(text, repeats=2.5)


def test_subclassed_model_needs_sample_input_for_latency():
    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    model = Tiny()
    model(np.zeros((1, 5), "float32"))
    with pytest.raises(ValueError, match="sample_input=None"):
        tfcompress.report(model)
    r = tfcompress.report(model, sample_input=np.ones((2, 5), "float32"), repeats=3)
    assert r.parameters == 18 and r.latency_settings["batch"] == 2
