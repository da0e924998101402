"""PSG targets: the eq. 4.13 grid and zero."""

import keras
import numpy as np
import pytest
from psg_testutil import ref_grid

from tfcompress.psg import QuantizationGrid, Zero
from tfcompress.quantization import quantize_dequantize


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_grid_is_eq_4_13(bits):
    w = np.random.default_rng(bits).normal(size=(5, 7)).astype("float32")
    q = np.asarray(QuantizationGrid(bits)(w))
    np.testing.assert_allclose(q, ref_grid(w, bits), rtol=1e-6, atol=1e-7)
    # It is the library quantizer, not a copy of it.
    np.testing.assert_array_equal(q, np.asarray(quantize_dequantize(w, bits)))
    # At most 2^n − 1 distinct levels, symmetric around 0.
    assert len(np.unique(q)) <= 2**bits - 1
    np.testing.assert_allclose(np.abs(q).max(), np.abs(w).max(), rtol=1e-6)


def test_grid_per_channel():
    w = np.random.default_rng(0).normal(size=(6, 3)).astype("float32") * [1, 10, 100]
    q = np.asarray(QuantizationGrid(3, per_channel=True)(w))
    np.testing.assert_allclose(q, ref_grid(w, 3, axis=-1), rtol=1e-5, atol=1e-6)


def test_grid_bits_override_and_mask():
    w = np.array([0.1, -0.35, 0.5, 4.0], "float32")
    grid = QuantizationGrid(2)
    np.testing.assert_allclose(np.asarray(grid(w, bits=8)), ref_grid(w, 8), rtol=1e-6)
    # With the large weight pruned, Δ comes from the active weights only.
    mask = np.array([1, 1, 1, 0], "float32")
    q = np.asarray(grid(w, mask=mask))
    np.testing.assert_allclose(q[:3], ref_grid(w[:3], 2), rtol=1e-6)


def test_zero_target():
    w = np.array([[0.5, -2.0]], "float32")
    np.testing.assert_array_equal(np.asarray(Zero()(w)), np.zeros_like(w))


@pytest.mark.parametrize("bits", [0, 1, 9, 2.5, True, "4", None])
def test_bad_bits(bits):
    with pytest.raises(ValueError, match=f"bits={bits!r}"):
        QuantizationGrid(bits)


def test_bad_per_channel():
    with pytest.raises(TypeError, match="per_channel='yes'"):
        QuantizationGrid(4, per_channel="yes")


@pytest.mark.parametrize("target", [QuantizationGrid(3, per_channel=True), Zero()])
def test_target_serialization(target):
    config = keras.saving.serialize_keras_object(target)
    assert config["registered_name"].startswith("tfcompress>")
    restored = keras.saving.deserialize_keras_object(config)
    assert restored == target and type(restored) is type(target)
