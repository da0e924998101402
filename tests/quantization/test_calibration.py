"""Range calibration: absmax / min-max / MSE / KL (survey 003, PTQ)."""

import numpy as np
import pytest

from tfcompress.quantization import calibrate_range
from tfcompress.quantization import kl_range
from tfcompress.quantization import mse_range
from tfcompress.quantization import quantize_dequantize


def _sse(x, bits, symmetric, axis, value_range=None):
    y = np.asarray(
        quantize_dequantize(x, bits, symmetric=symmetric, axis=axis, value_range=value_range)
    )
    return float(((y - x) ** 2).sum())


@pytest.mark.parametrize("symmetric", [True, False])
def test_mse_never_worse_than_full_range(symmetric):
    rng = np.random.default_rng(0)
    for bits in (2, 3, 4, 8):
        for shape, axis in [((200,), None), ((3, 3, 4, 6), -1), ((5, 40), 0)]:
            x = rng.standard_t(4, size=shape).astype("float32")
            lo, hi = mse_range(x, bits, symmetric=symmetric, axis=axis, num_candidates=40)
            if axis is not None:
                assert lo.shape == hi.shape == (x.shape[axis],)
            assert _sse(x, bits, symmetric, axis, (lo, hi)) <= _sse(x, bits, symmetric, axis) * (1 + 1e-6)


def test_mse_clips_heavy_tails_at_low_bits():
    x = np.random.default_rng(1).standard_t(4, size=5000).astype("float32")
    lo, hi = mse_range(x, 3)
    assert 0 < hi < 0.7 * np.abs(x).max() and lo == -hi
    assert _sse(x, 3, True, None, (lo, hi)) < 0.7 * _sse(x, 3, True, None)


def test_kl_threshold_clips_outliers_of_relu_activations():
    rng = np.random.default_rng(2)
    acts = np.maximum(rng.normal(size=20000), 0.0)
    acts[:3] = 40.0  # a few outliers
    lo, hi = kl_range(acts, 8, symmetric=False)
    assert float(lo) == 0.0 and 1.0 < float(hi) < 20.0
    lo_s, hi_s = kl_range(acts, 8, symmetric=True)
    assert float(lo_s) == -float(hi_s) and 1.0 < float(hi_s) < 20.0
    # per-channel KL gives one range per channel, never above the data range
    x = rng.normal(size=(300, 3)) * np.array([1.0, 2.0, 3.0])
    lo, hi = kl_range(x, 8, axis=-1, num_bins=256)
    assert hi.shape == (3,) and np.all(hi <= np.abs(x).max(0) + 1e-6)


def test_kl_all_zero_gives_zero_range():
    lo, hi = kl_range(np.zeros(10), 8)
    assert float(lo) == 0.0 and float(hi) == 0.0


def test_calibrate_range_dispatch():
    w = np.array([[-1.0, 0.5], [3.0, -0.25]])
    lo, hi = calibrate_range(w, 8, axis=-1, method="absmax")
    np.testing.assert_allclose(hi, [3.0, 0.5])
    np.testing.assert_allclose(lo, [-3.0, -0.5])
    lo, hi = calibrate_range(w, 8, method="minmax")
    assert (float(lo), float(hi)) == (-1.0, 3.0)
    lo, hi = calibrate_range(w, 8, method="mse", num_candidates=5)
    assert float(hi) <= 3.0


def test_calibration_errors():
    x = np.ones(4)
    with pytest.raises(ValueError, match="calibration must be one of .*received: calibration='l1'"):
        calibrate_range(x, 8, method="l1")
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 8\]; received: bits=9"):
        mse_range(x, 9)
    with pytest.raises(ValueError, match="num_candidates"):
        mse_range(x, 8, num_candidates=0)
    with pytest.raises(ValueError, match="num_bins"):
        kl_range(x, 8, num_bins=10)
    with pytest.raises(ValueError, match="received: axis=1"):
        calibrate_range(x, 8, axis=1)
