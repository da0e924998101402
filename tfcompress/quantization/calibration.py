"""Post-training range calibration: min–max, absmax, MSE and KL (survey 003, PTQ).

The survey (003, "How to calibrate quantized models?") lists three ways to pick
the quantization range of weights and activations: the min–max range, the range
that minimises the mean squared quantization error, and the range that
minimises the KL divergence between the float and the quantized distributions
(TensorRT's entropy calibration, Migacz 2017).

Calibration is an offline step on concrete values (weights, or activations
collected from a representative dataset), so these functions work on NumPy
arrays. The ranges they return are fed to the ``keras.ops`` quantizers through
``value_range`` (:func:`~tfcompress.quantization.quantize_dequantize`).
"""

import numpy as np

from tfcompress.quantization import quantizers as q

__all__ = ["CALIBRATION_METHODS", "calibrate_range", "mse_range", "kl_range"]

#: Calibration methods accepted by :func:`calibrate_range`.
CALIBRATION_METHODS = ("absmax", "minmax", "mse", "kl")


def _check_method(method):
    if method not in CALIBRATION_METHODS:
        raise ValueError(
            f"calibration must be one of {CALIBRATION_METHODS}; received: "
            f"calibration={method!r}"
        )
    return method


def _moved(x, axis):
    """``x`` as a 2-D array ``(channels, values)`` (one row per-tensor)."""
    x = np.asarray(x, dtype=np.float64)
    if axis is None:
        return x.reshape(1, -1)
    axis = q._normalize_axis(axis, x.ndim)
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


def _out(lo, hi, axis):
    lo = np.asarray(lo, dtype=np.float32)
    hi = np.asarray(hi, dtype=np.float32)
    if axis is None:
        return lo.reshape(()), hi.reshape(())
    return lo.reshape(-1), hi.reshape(-1)


def _qdq_rows(rows, lo, hi, bits, symmetric):
    """Quantize-dequantize each row of ``rows`` with its own ``(lo, hi)``."""
    out = q.quantize_dequantize(
        rows.astype(np.float32),
        bits,
        symmetric=symmetric,
        axis=None,
        value_range=(lo.astype(np.float32)[..., None], hi.astype(np.float32)[..., None]),
    )
    return np.asarray(out, dtype=np.float64)


def mse_range(x, bits, symmetric=True, axis=None, num_candidates=100):
    """Clipping range minimising ``‖x − Q(x)‖²`` (survey 003, PTQ calibration).

    Searches a grid of ``num_candidates`` fractions ``f ∈ (0, 1]`` of the full
    range (absmax ``[-f·a, f·a]`` when symmetric, min–max ``[f·lo, f·hi]`` when
    not), independently per channel. The grid contains ``f = 1`` (the absmax /
    min–max range itself), so the MSE range is never worse than it.

    Args:
        x: array of values (a kernel, or collected activations).
        bits: bit width, integer in ``[2, 8]``.
        symmetric: grid type, as in :func:`~tfcompress.quantization.quantize`.
        axis: ``None`` per-tensor, or the kept channel axis.
        num_candidates: number of fractions tried (at least 1).

    Returns:
        ``(lo, hi)`` float32 arrays: scalars per-tensor, length ``C`` per-channel.

    Example:
        >>> x = np.random.default_rng(0).standard_t(3, size=4096)
        >>> lo, hi = mse_range(x, bits=4)
        >>> bool(hi < np.abs(x).max())    # heavy tails: clipping pays off
        True
    """
    bits = q.check_bits(bits)
    symmetric = q._check_symmetric(symmetric)
    if not isinstance(num_candidates, int) or num_candidates < 1:
        raise ValueError(
            f"num_candidates must be a positive int; received: num_candidates={num_candidates!r}"
        )
    rows = _moved(x, axis)
    if symmetric:
        a = np.abs(rows).max(axis=1)
        lo0, hi0 = -a, a
    else:
        lo0, hi0 = np.minimum(rows.min(axis=1), 0.0), np.maximum(rows.max(axis=1), 0.0)
    fractions = np.linspace(1.0, 0.0, num_candidates, endpoint=False)  # 1.0 first
    best_err = np.full(rows.shape[0], np.inf)
    best_f = np.ones(rows.shape[0])
    # Evaluate candidates in chunks: one (chunk, channels, values) tensor per call.
    chunk = max(1, min(num_candidates, int(4e6 // max(rows.size, 1))))
    for start in range(0, num_candidates, chunk):
        f = fractions[start : start + chunk][:, None]  # (k, 1)
        lo, hi = f * lo0[None], f * hi0[None]  # (k, C)
        stacked = np.broadcast_to(rows, (f.shape[0],) + rows.shape)
        err = ((_qdq_rows(stacked, lo, hi, bits, symmetric) - rows[None]) ** 2).sum(-1)
        for k in range(f.shape[0]):
            better = err[k] < best_err  # strict: ties keep the larger range
            best_err = np.where(better, err[k], best_err)
            best_f = np.where(better, f[k, 0], best_f)
    return _out(best_f * lo0, best_f * hi0, axis)


def _kl_threshold(values, num_quant_bins, num_bins):
    """TensorRT entropy calibration on non-negative ``values``; returns the threshold."""
    top = float(values.max()) if values.size else 0.0
    if top <= 0.0:
        return 0.0
    num_bins = max(int(num_bins), num_quant_bins)
    hist, edges = np.histogram(values, bins=num_bins, range=(0.0, top))
    hist = hist.astype(np.float64)
    total = hist.sum()
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = hist[i:].sum()
    best_kl, best_i = np.inf, num_bins
    for i in range(num_quant_bins, num_bins + 1):
        sliced = hist[:i]
        p = sliced.copy()
        p[-1] += tail[i]  # outliers clipped into the last bin
        nonzero = sliced > 0
        # merge the i bins into num_quant_bins groups, then expand back over
        # the non-empty bins of each group
        bounds = (np.arange(num_quant_bins) * i) // num_quant_bins
        group = np.repeat(np.arange(num_quant_bins), np.diff(np.append(bounds, i)))
        q_sum = np.bincount(group, weights=sliced, minlength=num_quant_bins)
        q_cnt = np.bincount(group, weights=nonzero, minlength=num_quant_bins)
        qv = np.where(nonzero, q_sum[group] / np.maximum(q_cnt[group], 1), 0.0)
        p = p / total
        qs = qv.sum()
        if qs <= 0:
            continue
        qv = qv / qs
        mask = p > 0
        kl = np.sum(p[mask] * np.log(p[mask] / np.maximum(qv[mask], 1e-12)))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(edges[best_i])


def kl_range(x, bits, symmetric=True, axis=None, num_bins=2048):
    """Range minimising KL(P‖Q) of the value histogram (TensorRT entropy calibration).

    The histogram of ``|x|`` (``num_bins`` bins over ``[0, max|x|]``) is the
    reference distribution ``P``; for every candidate threshold (bin ``i``,
    from the number of quantization bins up to ``num_bins``) the clipped
    histogram is merged into ``2^(n-1)`` quantization bins (``2^n`` for
    non-negative data in asymmetric mode, e.g. after a ReLU) and expanded back
    over the non-empty bins to form ``Q``; the threshold with the smallest
    ``KL(P‖Q)`` wins. Mostly useful for activations (survey 003, PTQ
    calibration). Signed data in asymmetric mode uses the ``|x|`` threshold
    ``T`` as ``[max(min x, −T), min(max x, T)]``.

    Args:
        x: array of values (typically activations collected on calibration data).
        bits: bit width, integer in ``[2, 8]``.
        symmetric: grid type.
        axis: ``None`` per-tensor, or the kept channel axis (one search per channel).
        num_bins: histogram resolution (2048 in TensorRT).

    Returns:
        ``(lo, hi)`` float32 arrays: scalars per-tensor, length ``C`` per-channel.

    Example:
        >>> acts = np.maximum(np.random.default_rng(0).normal(size=20000), 0)
        >>> lo, hi = kl_range(acts, bits=8, symmetric=False)
        >>> float(lo), bool(0 < hi <= acts.max())
        (0.0, True)
    """
    bits = q.check_bits(bits)
    symmetric = q._check_symmetric(symmetric)
    if not isinstance(num_bins, int) or num_bins < 2 ** (bits - 1):
        raise ValueError(
            f"num_bins must be an int >= 2**(bits-1); received: num_bins={num_bins!r}"
        )
    rows = _moved(x, axis)
    los, his = [], []
    for row in rows:
        mn, mx = (float(row.min()), float(row.max())) if row.size else (0.0, 0.0)
        if not symmetric and mn >= 0.0:
            t = _kl_threshold(row, 2**bits, num_bins)
            los.append(0.0)
            his.append(t)
            continue
        t = _kl_threshold(np.abs(row), 2 ** (bits - 1), num_bins)
        if symmetric:
            los.append(-t)
            his.append(t)
        else:
            los.append(max(mn, -t))
            his.append(min(mx, t))
    return _out(np.array(los), np.array(his), axis)


def calibrate_range(x, bits, symmetric=True, axis=None, method="absmax", **kwargs):
    """Clipping range of ``x`` by a calibration method.

    Args:
        x: array of values.
        bits: bit width, integer in ``[2, 8]``.
        symmetric: grid type (restricted-range symmetric, eq. 4.13 of 002, or affine).
        axis: ``None`` per-tensor, or the kept channel axis.
        method: ``"absmax"`` (``[-max|x|, max|x|]``), ``"minmax"``
            (``[min x, max x]``), ``"mse"`` (:func:`mse_range`) or ``"kl"``
            (:func:`kl_range`).
        **kwargs: passed to :func:`mse_range` / :func:`kl_range`.

    Returns:
        ``(lo, hi)`` float32 arrays: scalars per-tensor, length ``C`` per-channel.

    Raises:
        ValueError: unknown ``method``, bad ``bits``/``symmetric``/``axis``.

    Example:
        >>> w = np.array([[-1.0, 0.5], [3.0, -0.25]])
        >>> lo, hi = calibrate_range(w, bits=8, axis=-1, method="minmax")
        >>> lo.tolist(), hi.tolist()
        ([-1.0, -0.25], [3.0, 0.5])
    """
    _check_method(method)
    bits = q.check_bits(bits)
    symmetric = q._check_symmetric(symmetric)
    if method == "mse":
        return mse_range(x, bits, symmetric, axis, **kwargs)
    if method == "kl":
        return kl_range(x, bits, symmetric, axis, **kwargs)
    rows = _moved(x, axis)
    if method == "absmax":
        a = np.abs(rows).max(axis=1)
        return _out(-a, a, axis)
    return _out(rows.min(axis=1), rows.max(axis=1), axis)
