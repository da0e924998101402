"""Executes the tutorial notebooks in quick mode and checks the numbers they compute.

Each notebook reads ``TFCOMPRESS_TUTORIAL_QUICK=1`` (tiny subsets and epochs) and its
last cell prints a ``RESULTS`` dict as JSON; the assertions below are on those values,
so a notebook that runs but computes nonsense fails. The kernel is checked to be this
interpreter (the venv's), not whatever ``python`` is first on ``PATH``.
"""

import json
import os
import pathlib
import sys

import pytest

TUTORIALS = pathlib.Path(__file__).resolve().parents[1] / "tutorials"
_KERNEL_PROBE = "import sys; print('KERNEL_EXECUTABLE=' + sys.executable)"


def _require_data():
    # Checked without importing tfcompress (and TensorFlow) into the test process.
    folder = pathlib.Path(
        os.environ.get("TFCOMPRESS_DATA_DIR") or "/usr/share/datasets/fashion-mnist")
    if not (folder / "train-images-idx3-ubyte.gz").is_file():  # pragma: no cover
        pytest.skip(f"Fashion-MNIST not found in {folder} (apt-get install dataset-fashion-mnist)")


def _stdout(cell):
    return "".join(
        out.get("text", "") for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out.get("name") == "stdout"
    )


def _run_notebook(name, workdir, monkeypatch):
    """Runs ``tutorials/<name>`` in ``workdir`` in quick mode; returns its RESULTS dict."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    _require_data()

    nb = nbformat.read(TUTORIALS / name, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(_KERNEL_PROBE))
    monkeypatch.setenv("TFCOMPRESS_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    # jupyter_client launches the "python3" kernelspec (argv[0] "python") with the
    # current interpreter, so the kernel sees the same venv and tfcompress as the test.
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=600,
        resources={"metadata": {"path": str(workdir)}})
    client.execute()

    probe = _stdout(nb.cells[0]).strip()
    executable = probe.split("KERNEL_EXECUTABLE=", 1)[-1]
    assert os.path.realpath(executable) == os.path.realpath(sys.executable), (
        f"the notebook kernel ran {executable!r}, not this interpreter {sys.executable!r}")
    for cell in nb.cells:  # no cell may have raised (nbclient raises too; belt and braces)
        assert not any(o.get("output_type") == "error" for o in cell.get("outputs", []))
    last = nb.cells[-1]
    assert "RESULTS" in last.source, "the last cell must print the RESULTS dict"
    results = json.loads(_stdout(last))
    assert results["quick"] is True
    return results


@pytest.mark.slow
def test_tutorial_01_prune_and_export(tmp_path, monkeypatch):
    r = _run_notebook("01_prune_and_export.ipynb", tmp_path, monkeypatch)
    # Target sparsity reached; the global threshold left the small layers denser.
    assert abs(r["global_sparsity"] - r["target_sparsity"]) < 0.005
    layers = r["layer_sparsity"]
    assert layers["prune_dense1"] > r["target_sparsity"] > layers["prune_conv1"]
    # Trained beyond chance (quick mode: 2k images, one epoch each).
    assert r["dense_accuracy"] > 0.6 and r["pruned_accuracy"] > 0.5
    # The exported files behave like the Keras model.
    assert r["float_top1_agreement"] == 1.0 and r["float_max_abs_error"] < 1e-3
    assert r["int8_top1_agreement"] >= 0.95
    assert abs(r["tflite_accuracy"]["pruned_float.tflite"] - r["pruned_accuracy"]) < 2e-3
    assert r["tflite_agreement_with_keras"]["pruned_int8.tflite"] >= 0.95
    # Sizes: pruning shows after gzip or in the sparse format; int8 is ~4x smaller.
    sizes = r["sizes_raw_gzip_bytes"]
    dense_raw, dense_gz = sizes["dense_float.tflite"]
    pruned_raw, pruned_gz = sizes["pruned_float.tflite"]
    assert abs(pruned_raw - dense_raw) < 0.01 * dense_raw
    assert pruned_gz < 0.4 * dense_gz
    assert sizes["pruned_float_sparse.tflite"][0] < 0.4 * dense_raw
    assert sizes["pruned_int8.tflite"][0] < 0.3 * dense_raw
    assert sizes["pruned_int8.tflite"][1] < pruned_gz
    assert sizes["pruned_int8_grid5.tflite"][1] < 0.95 * sizes["pruned_int8.tflite"][1]
    assert (r["tflite_accuracy"]["pruned_int8_grid5.tflite"]
            > r["tflite_accuracy"]["pruned_int8.tflite"] - 0.03)
    assert (tmp_path / "tutorial01_out" / "pruned_saved_model" / "saved_model.pb").is_file()
    # The int8 XLA model (kernels.convert) predicts like the float one and round-trips.
    assert r["xla_int8_agreement"] >= 0.95
    assert abs(r["xla_int8_accuracy"] - r["pruned_accuracy"]) < 0.03
    assert r["xla_int8_roundtrip_equal"] is True
    assert (tmp_path / "tutorial01_out" / "pruned_int8_xla.keras").is_file()


@pytest.mark.slow
def test_tutorial_02_psg_quantization(tmp_path, monkeypatch):
    r = _run_notebook("02_psg_quantization.ipynb", tmp_path, monkeypatch)
    sgd, psg = r["ptq_accuracy"]["SGD"], r["ptq_accuracy"]["PSGD"]
    # Both float models learned something.
    assert sgd["float"] > 0.65 and psg["float"] > 0.6
    # 8-bit PTQ is harmless; at the PSG target bit-width (2) PSGD keeps its accuracy
    # while plain SGD collapses.
    assert abs(sgd["8"] - sgd["float"]) < 0.02 and abs(psg["8"] - psg["float"]) < 0.02
    assert psg["2"] > sgd["2"] + 0.15
    assert psg["float"] - psg["2"] < 0.25
    # PSGD's weights sit near the 2-bit grid: a smaller quantization error in every layer.
    errors = r["quantization_error"]
    assert set(errors["PSGD"]) == {"dense1", "dense2", "head"}
    for layer, sgd_error in errors["SGD"].items():
        assert errors["PSGD"][layer] < 0.8 * sgd_error, layer
    # Zero target: PSGD-trained weights survive one-shot magnitude pruning better.
    pruned = r["pruning_accuracy"]
    assert pruned["PSGD (zero)"]["0.7"] > pruned["SGD"]["0.7"]
    # QAT improves on plain 2-bit PTQ of the SGD model; BN folding is exact.
    assert r["qat_accuracy"] > sgd["2"] + 0.1
    assert r["qat_distinct_values_per_layer"] <= 3
    assert r["bn_folding"]["batchnorm_layers_after"] == 0
    assert r["bn_folding"]["max_abs_diff"] < 1e-4


@pytest.mark.slow
def test_tutorial_03_dcil_dynamic_pruning(tmp_path, monkeypatch):
    r = _run_notebook("03_dcil_dynamic_pruning.ipynb", tmp_path, monkeypatch)
    # Both dynamic methods trained beyond chance and reached the global target.
    assert r["dpf_accuracy"] > 0.2 and r["dcil_accuracy"] > 0.2
    assert abs(r["dcil_sparsity"] - r["target_sparsity"]) < 0.005
    assert r["curve_points"] >= 4 and r["dcil_late_std"] >= 0.0
    # The sparse TFLite file is smaller than the float one and scores like Keras.
    assert r["tflite_sparse_bytes"] < 0.5 * r["tflite_float_bytes"]
    assert abs(r["tflite_sparse_accuracy"] - r["dcil_accuracy"]) < 0.01
    # shrink: exact, and really smaller (50 % of the conv filters masked).
    assert r["shrink_max_abs_difference"] < 1e-4
    assert r["params_shrunk"] < 0.8 * r["params_stripped"]
    assert r["macs_shrunk"] < 0.8 * r["macs_stripped"]


@pytest.mark.slow
def test_tutorial_04_factor_transfer(tmp_path, monkeypatch):
    r = _run_notebook("04_factor_transfer.ipynb", tmp_path, monkeypatch)
    # Trained beyond chance (quick mode: 2k images, two epochs each).
    # (FT's test accuracy is left out: after 32 steps its BatchNorm moving averages still
    # lag; its training accuracy shows it learned.)
    assert r["teacher_accuracy"] > 0.2
    assert r["accuracies"]["scratch"] > 0.2 and r["accuracies"]["kd"] > 0.2
    assert r["ft_train_accuracy"][-1] > 0.3
    # The paraphraser's factor: teacher's 7×7 map, 0.5 × 64 channels; FT loss was computed.
    assert r["factor_shape"] == [7, 7, 32]
    assert r["reconstruction_loss"][-1] > 0 and r["ft_loss"][-1] > 0
    # The exported student has no extra weight, and its int8 file agrees with Keras.
    assert r["student_params"] == r["scratch_params"]
    assert r["int8_top1_agreement"] >= 0.95
    assert abs(r["tflite_accuracy"] - r["accuracies"]["ft"]) < 0.03


@pytest.mark.slow
def test_tutorial_05_lowrank_factorization(tmp_path, monkeypatch):
    r = _run_notebook("05_lowrank_factorization.ipynb", tmp_path, monkeypatch)
    assert r["cnn_accuracy"] > 0.6
    # Each ratio bounds the factorized kernels: the CNN (95 % in dense1) shrinks with it.
    for ratio, result in r["cnn"].items():
        assert result["params"] < (float(ratio) + 0.05) * r["cnn_params"], ratio
        assert result["after"] > 0.5, ratio
    # BatchNorm recalibration alone lifts the factorized ResNet (no training).
    for method in ("tucker", "cp"):
        assert r["resnet"][method]["params"] < 0.6 * r["resnet_params"]
        assert r["resnet"][method]["calibrated"] >= r["resnet"][method]["raw"] - 0.02, method
    # The factorized file is smaller and computes what Keras computes.
    assert r["tflite_bytes"]["factorized"] < 0.4 * r["tflite_bytes"]["original"]
    assert r["tflite_top1_agreement"] == 1.0 and r["tflite_max_abs_error"] < 1e-3
