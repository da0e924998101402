"""The demo recipe behind `make demo`, on a small training subset."""

import os

import numpy as np
import pytest

from tfcompress import export
from tfcompress.recipes.demo import run_demo


@pytest.mark.slow
def test_demo_trains_prunes_exports_and_reports(tmp_path, capsys):
    result = run_demo(out_dir=tmp_path, subset=2048, sparsity=0.8, verbose=0)
    assert abs(result["global_sparsity"] - 0.8) < 0.005
    assert result["nonzero_parameters"] < 0.21 * result["parameters"]
    # Trained beyond chance, and the exported files behave like the Keras model.
    assert result["dense_accuracy"] > 0.6 and result["pruned_accuracy"] > 0.5
    assert abs(result["float_tflite_accuracy"] - result["pruned_accuracy"]) < 1e-3
    assert result["int8_top1_agreement"] >= 0.95
    assert result["int8_tflite_gzip_bytes"] < result["float_tflite_gzip_bytes"] / 2
    assert sorted(os.listdir(tmp_path)) == ["model_float.tflite", "model_int8.tflite", "saved_model"]
    report = capsys.readouterr().out
    assert "global sparsity" in report and "model_int8.tflite" in report
    out = export.run_tflite(tmp_path / "model_float.tflite", np.zeros((2, 28, 28, 1), "float32"))
    assert out.shape == (2, 10)
