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


@pytest.mark.parametrize("momentum", [0, 0.0, -0.1, 1.5, True, "0.1", float("nan")])
def test_bad_range_momentum(momentum):
    with pytest.raises(ValueError, match="range_momentum"):
        QuantizationGrid(4, range_momentum=momentum)


def test_running_range_first_call_is_the_current_range():
    grid = QuantizationGrid(2, range_momentum=0.1)
    w = np.array([[0.3, -0.8], [0.5, 0.1]], "float32")
    lo, hi = grid.update_range((np.float32(0), np.float32(0)), w)
    assert (float(lo), float(hi)) == pytest.approx((-0.8, 0.5))
    # With that range the grid is eq. 4.13 of w itself.
    np.testing.assert_allclose(np.asarray(grid(w, value_range=(lo, hi))), ref_grid(w, 2))


def test_single_outlier_step_moves_delta_by_the_momentum_fraction():
    """A weight jumping far out changes Δ by m·(jump), not to the new max."""
    bits, m = 3, 0.1
    levels = 2 ** (bits - 1) - 1
    grid = QuantizationGrid(bits, range_momentum=m)
    w = np.linspace(-1.0, 1.0, 9).astype("float32")
    running = grid.update_range((np.float32(0), np.float32(0)), w)
    np.testing.assert_allclose([float(running[0]), float(running[1])], [-1.0, 1.0])
    outlier = w.copy()
    outlier[-1] = 5.0  # one step of momentum overshoot
    lo, hi = grid.update_range(running, outlier)
    np.testing.assert_allclose([float(lo), float(hi)], [-1.0, m * 5.0 + (1 - m) * 1.0], rtol=1e-6)
    delta = max(-float(lo), float(hi)) / levels
    exact_delta = 5.0 / levels
    assert delta == pytest.approx(1.4 / levels)
    assert delta < 0.3 * exact_delta
    # The grid (and the PSG scale |w - Q(w)|) uses the running Δ: the other
    # weights keep (almost) their targets, the outlier is clipped to the
    # outermost point and gets a large scale instead of sitting on the grid.
    q = np.asarray(grid(outlier, value_range=(lo, hi)))
    np.testing.assert_allclose(q[-1], levels * delta, rtol=1e-6)
    assert abs(outlier[-1] - q[-1]) > 3.0
    q_exact = np.asarray(QuantizationGrid(bits)(outlier))
    assert q_exact[-1] == pytest.approx(5.0)  # per-step range: frozen on the new max
    # Without momentum, update_range is the current range.
    lo2, hi2 = QuantizationGrid(bits).update_range(running, outlier)
    assert (float(lo2), float(hi2)) == pytest.approx((-1.0, 5.0))


def test_running_range_per_channel():
    grid = QuantizationGrid(2, per_channel=True, range_momentum=0.5)
    assert grid.range_shape((4, 3)) == (3,)
    w = np.array([[1.0, -2.0, 0.0], [-0.5, 1.0, 0.0]], "float32")
    lo, hi = grid.update_range((np.zeros(3, "float32"), np.zeros(3, "float32")), w)
    np.testing.assert_allclose(np.asarray(lo), [-0.5, -2.0, 0.0])
    np.testing.assert_allclose(np.asarray(hi), [1.0, 1.0, 0.0])
    lo, hi = grid.update_range((lo, hi), 2 * w)
    np.testing.assert_allclose(np.asarray(lo), [-0.75, -3.0, 0.0])
    np.testing.assert_allclose(np.asarray(hi), [1.5, 1.5, 0.0])


def test_range_momentum_serializes_and_old_configs_load():
    grid = QuantizationGrid(3, range_momentum=0.1)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(grid))
    assert restored == grid and restored.range_momentum == 0.1 and restored.tracks_range
    old = QuantizationGrid.from_config({"bits": 3, "per_channel": False})
    assert old.range_momentum is None and not old.tracks_range
