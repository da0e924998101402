"""Uniform quantizers as pure ``keras.ops`` functions.

Two schemes (survey 003, "Quantization" — uniform symmetric / asymmetric
quantization, per-tensor / per-channel granularity):

* **Symmetric, restricted range** — exactly eq. 4.13 of the dissertation (002)::

      Δ   = max(-min_x, max_x) / (2^(n-1) - 1)
      x_Q = clip(round(x / Δ), -(2^(n-1) - 1), 2^(n-1) - 1)
      x̄   = x_Q · Δ

  The integer grid is symmetric (``-127..127`` at 8 bits, ``2^n - 1`` levels), so
  zero maps to exactly zero.

* **Asymmetric (affine)** — min–max range ``[lo, hi]`` widened to include 0,
  ``Δ = (hi - lo) / (2^n - 1)``, integer zero point ``z = round(-lo / Δ)``,
  ``x_Q = clip(round(x / Δ) + z, 0, 2^n - 1)``, ``x̄ = (x_Q - z) · Δ``. Zero is
  exactly representable (``x_Q = z``).

Per-channel quantization computes one ``Δ`` (and ``z``) per index of ``axis`` —
the axis that is *kept*, e.g. ``axis=-1`` for the output channels of a Dense or
Conv2D kernel — reducing over all other axes.

All math is ``keras.ops`` (no TensorFlow import), so it runs on every Keras
backend. :func:`quantize_dequantize` has the plain (zero almost everywhere)
gradient of ``round``; :func:`fake_quant` has the straight-through estimator.
"""

import math

import keras
import numpy as np
from keras import ops

__all__ = [
    "RANGE_METHODS",
    "check_bits",
    "compute_range",
    "compute_scale",
    "quantize",
    "dequantize",
    "quantize_dequantize",
    "fake_quant",
]

#: Range methods understood by :func:`compute_range` (statistics of the tensor itself).
#: Calibrated thresholds (``"mse"``, ``"kl"``) live in :mod:`tfcompress.quantization.calibration`
#: and are passed in through ``value_range``.
RANGE_METHODS = ("absmax", "minmax")


# --------------------------------------------------------------------------- validation
def check_bits(bits):
    """Validates a bit width: an integer in ``[2, 8]``.

    Args:
        bits: the candidate bit width.

    Returns:
        ``bits`` as a Python ``int``.

    Raises:
        ValueError: if ``bits`` is not an integer in ``[2, 8]`` (``bool`` and
            non-integral floats such as ``2.5`` are rejected).

    Example:
        >>> check_bits(4)
        4
        >>> check_bits(9)
        Traceback (most recent call last):
        ...
        ValueError: bits must be an integer in [2, 8]; received: bits=9
    """
    ok = (
        isinstance(bits, (int, np.integer))
        and not isinstance(bits, (bool, np.bool_))
        and 2 <= int(bits) <= 8
    )
    if not ok:
        raise ValueError(f"bits must be an integer in [2, 8]; received: bits={bits!r}")
    return int(bits)


def _check_symmetric(symmetric):
    if not isinstance(symmetric, (bool, np.bool_)):
        raise ValueError(
            f"symmetric must be a bool (True: eq. 4.13 restricted-range, False: "
            f"affine min-max); received: symmetric={symmetric!r}"
        )
    return bool(symmetric)


def _check_range_method(range_method, symmetric=True):
    if range_method is None:
        return "absmax" if symmetric else "minmax"
    if range_method not in RANGE_METHODS:
        raise ValueError(
            f"range_method must be one of {RANGE_METHODS}; received: "
            f"range_method={range_method!r}"
        )
    return range_method


def _normalize_axis(axis, rank):
    """Returns ``axis`` as a non-negative int (or ``None``), validated for ``rank``."""
    if axis is None:
        return None
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise ValueError(
            f"axis must be an int or None; received: axis={axis!r}"
        )
    axis = int(axis)
    if not -rank <= axis < rank:
        raise ValueError(
            f"axis must be in [-{rank}, {rank}) for a tensor of rank {rank}; "
            f"received: axis={axis}"
        )
    return axis % rank


def _as_float(x):
    x = ops.convert_to_tensor(x)
    if not keras.backend.is_float_dtype(x.dtype):
        x = ops.cast(x, "float32")
    return x


def _levels(bits, symmetric):
    """Integer range ``(qmin, qmax)`` of the grid."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        return -qmax, qmax
    return 0, 2**bits - 1


def _reduce_axes(rank, axis):
    if axis is None:
        return tuple(range(rank))
    return tuple(i for i in range(rank) if i != axis)


# --------------------------------------------------------------------------- ranges
def compute_range(x, axis=None, range_method="absmax"):
    """Range ``(lo, hi)`` of ``x``, per tensor or per channel.

    Args:
        x: tensor (or array).
        axis: ``None`` for one range for the whole tensor, or the axis kept for
            per-channel ranges (negative allowed).
        range_method: ``"absmax"`` gives the symmetric range ``[-max|x|, max|x|]``;
            ``"minmax"`` gives ``[min x, max x]``.

    Returns:
        ``(lo, hi)`` tensors with ``keepdims`` shapes (broadcastable against ``x``:
        all ones for per-tensor, ``C`` on ``axis`` for per-channel).

    Raises:
        ValueError: unknown ``range_method`` or ``axis`` out of range.

    Example:
        >>> lo, hi = compute_range(np.array([[-1.0, 2.0], [0.5, -3.0]]), axis=-1)
        >>> np.asarray(hi).ravel().tolist()
        [1.0, 3.0]
    """
    _check_range_method(range_method)
    x = _as_float(x)
    rank = len(x.shape)
    axis = _normalize_axis(axis, rank)
    red = _reduce_axes(rank, axis)
    if range_method == "absmax":
        hi = ops.max(ops.abs(x), axis=red, keepdims=True) if red else ops.abs(x)
        return -hi, hi
    if not red:
        return x, x
    return ops.min(x, axis=red, keepdims=True), ops.max(x, axis=red, keepdims=True)


def compute_scale(lo, hi, bits, symmetric=True):
    """Step size ``Δ`` and integer zero point of the grid covering ``[lo, hi]``.

    Symmetric (eq. 4.13 of 002): ``Δ = max(-lo, hi) / (2^(n-1) - 1)``, zero
    point 0. Asymmetric: the range is widened to include 0,
    ``Δ = (hi - lo) / (2^n - 1)``, ``z = clip(round(-lo / Δ), 0, 2^n - 1)``.

    A zero range (all-zero tensor) gives ``Δ = 1`` instead of 0, so
    quantization returns exact zeros and never NaN.

    Args:
        lo: lower end of the range (tensor, broadcastable).
        hi: upper end of the range.
        bits: bit width, integer in ``[2, 8]``.
        symmetric: restricted-range symmetric grid (True) or affine (False).

    Returns:
        ``(scale, zero_point)``: float tensors of the shape of ``lo``/``hi``;
        ``zero_point`` holds integral values.

    Example:
        >>> s, z = compute_scale(-2.0, 2.0, bits=8)
        >>> round(float(s) * 127, 6), float(z)
        (2.0, 0.0)
    """
    bits = check_bits(bits)
    symmetric = _check_symmetric(symmetric)
    lo = _as_float(lo)
    hi = ops.cast(_as_float(hi), lo.dtype)
    qmin, qmax = _levels(bits, symmetric)
    if symmetric:
        absmax = ops.maximum(-lo, hi)
        absmax = ops.maximum(absmax, ops.zeros_like(absmax))
        scale = absmax / float(qmax)
        zero_point = ops.zeros_like(scale)
    else:
        lo = ops.minimum(lo, ops.zeros_like(lo))
        hi = ops.maximum(hi, ops.zeros_like(hi))
        scale = (hi - lo) / float(qmax - qmin)
        safe = ops.where(scale > 0, scale, ops.ones_like(scale))
        zero_point = ops.clip(ops.round(-lo / safe), float(qmin), float(qmax))
    scale = ops.where(scale > 0, scale, ops.ones_like(scale))
    return scale, zero_point


def _prepare(x, bits, symmetric, axis, range_method, value_range):
    """Validates arguments; returns x, rank, axis, scale, zero point (keepdims), levels."""
    bits = check_bits(bits)
    symmetric = _check_symmetric(symmetric)
    range_method = _check_range_method(range_method, symmetric)
    x = _as_float(x)
    rank = len(x.shape)
    axis = _normalize_axis(axis, rank)
    if value_range is None:
        lo, hi = compute_range(x, axis=axis, range_method=range_method)
    else:
        lo, hi = value_range
        lo = _broadcast_param(ops.cast(_as_float(lo), x.dtype), rank, axis)
        hi = _broadcast_param(ops.cast(_as_float(hi), x.dtype), rank, axis)
    scale, zero_point = compute_scale(lo, hi, bits, symmetric)
    qmin, qmax = _levels(bits, symmetric)
    return x, rank, axis, scale, zero_point, float(qmin), float(qmax)


def _broadcast_param(p, rank, axis):
    """Reshapes a per-channel vector ``(C,)`` to broadcast along ``axis``."""
    if axis is None or len(p.shape) != 1 or rank <= 1:
        return p
    shape = [1] * rank
    shape[axis] = -1
    return ops.reshape(p, shape)


def _squeeze_param(p, rank, axis):
    if axis is None:
        return ops.reshape(p, ())
    return ops.reshape(p, (-1,))


# --------------------------------------------------------------------------- quantizers
def quantize(x, bits, symmetric=True, axis=None, range_method=None, value_range=None):
    """Quantizes ``x`` to integers on a uniform grid.

    Args:
        x: float tensor.
        bits: bit width, integer in ``[2, 8]``.
        symmetric: eq. 4.13 (002) restricted-range symmetric grid if True, affine
            min–max grid with a zero point if False.
        axis: ``None`` for per-tensor; the kept (channel) axis for per-channel.
        range_method: ``"absmax"`` or ``"minmax"``; ``None`` (default) picks
            ``"absmax"`` for symmetric and ``"minmax"`` for asymmetric mode
            (ignored when ``value_range`` is given, except for validation).
        value_range: optional ``(lo, hi)`` clipping range (scalars, per-channel
            vectors of length ``C`` or broadcastable tensors), e.g. a calibrated
            threshold; values outside saturate.

    Returns:
        ``(q, scale, zero_point)`` with ``q`` of dtype ``int8`` (symmetric) or
        ``uint8`` (asymmetric) and the shape of ``x``; ``scale`` (float) and
        ``zero_point`` (``int32``) are scalars per-tensor or vectors of length
        ``C = x.shape[axis]`` per-channel.

    Raises:
        ValueError: bad ``bits``, ``symmetric``, ``range_method`` or ``axis``.

    Example:
        >>> q, s, z = quantize(np.array([-1.0, 0.0, 0.5, 1.0]), bits=8)
        >>> np.asarray(q).tolist()
        [-127, 0, 64, 127]
    """
    x, rank, axis, scale, zp, qmin, qmax = _prepare(
        x, bits, symmetric, axis, range_method, value_range
    )
    q = ops.clip(ops.round(x / scale) + zp, qmin, qmax)
    q = ops.cast(q, "int8" if symmetric else "uint8")
    return q, _squeeze_param(scale, rank, axis), ops.cast(_squeeze_param(zp, rank, axis), "int32")


def dequantize(q, scale, zero_point=0, axis=None):
    """Maps integers back to floats: ``x̄ = (q - z) · Δ``.

    Args:
        q: integer tensor from :func:`quantize`.
        scale: scalar, or a vector of length ``q.shape[axis]`` (per-channel).
        zero_point: scalar or vector like ``scale``.
        axis: the channel axis of a per-channel ``scale``; ``None`` per-tensor.

    Returns:
        float32 tensor of the shape of ``q``.

    Example:
        >>> q, s, z = quantize(np.array([[1.0, -4.0]]), bits=4, axis=-1)
        >>> np.asarray(dequantize(q, s, z, axis=-1)).tolist()
        [[1.0, -4.0]]
    """
    q = ops.convert_to_tensor(q)
    rank = len(q.shape)
    axis = _normalize_axis(axis, rank)
    scale = _as_float(scale)
    zero_point = ops.cast(ops.convert_to_tensor(zero_point), scale.dtype)
    scale = _broadcast_param(scale, rank, axis)
    zero_point = _broadcast_param(zero_point, rank, axis)
    return (ops.cast(q, scale.dtype) - zero_point) * scale


def _qdq(x, scale, zp, qmin, qmax):
    t = ops.round(x / scale) + zp
    qc = ops.clip(t, qmin, qmax)
    return (qc - zp) * scale, t


def quantize_dequantize(
    x, bits, symmetric=True, axis=None, range_method=None, value_range=None
):
    """Quantize-dequantize (``Q(x)``): the float value of the nearest grid point.

    Symmetric mode is exactly eq. 4.13 of 002 (``Δ = max|x| / (2^(n-1) - 1)``,
    levels ``±(2^(n-1) - 1)``); asymmetric mode is the affine min–max scheme of
    the survey (003). No special gradient (``round`` has zero gradient almost
    everywhere); use :func:`fake_quant` for training.

    Args:
        x: float tensor.
        bits: bit width, integer in ``[2, 8]``.
        symmetric: restricted-range symmetric (True) or affine (False).
        axis: ``None`` for per-tensor, or the kept axis for per-channel (e.g.
            ``-1`` for the output channels of a Dense/Conv2D kernel).
        range_method: ``"absmax"`` or ``"minmax"``; ``None`` (default) picks
            ``"absmax"`` for symmetric and ``"minmax"`` for asymmetric mode.
        value_range: optional calibrated ``(lo, hi)`` clipping range.

    Returns:
        Tensor of the shape and dtype of ``x`` with values on the grid. An
        all-zero tensor (``Δ = 0``) returns zeros.

    Raises:
        ValueError: bad ``bits``, ``symmetric``, ``range_method`` or ``axis``.

    Example:
        >>> w = np.array([[0.3, -1.5], [0.05, 2.0]], "float32")
        >>> np.asarray(quantize_dequantize(w, bits=2)).tolist()
        [[0.0, -2.0], [0.0, 2.0]]
    """
    x, _, _, scale, zp, qmin, qmax = _prepare(x, bits, symmetric, axis, range_method, value_range)
    return _qdq(x, scale, zp, qmin, qmax)[0]


def fake_quant(x, bits, symmetric=True, axis=None, range_method=None, value_range=None):
    """Quantize-dequantize with the straight-through estimator (STE).

    Forward: :func:`quantize_dequantize`. Backward (survey 003, QAT with STE):
    the gradient is the identity where the clip is inactive
    (``qmin ≤ round(x/Δ) + z ≤ qmax``, i.e. inside the clipping range up to half
    a step) and zero where the value saturates. Written as
    ``x·m + stop_gradient(Q(x) - x·m)`` with the clip mask ``m``; no gradient
    flows into the range (absmax/min–max statistics or ``value_range``).

    Args:
        x: float tensor.
        bits: bit width, integer in ``[2, 8]``.
        symmetric: restricted-range symmetric (True) or affine (False).
        axis: ``None`` for per-tensor, or the kept axis for per-channel.
        range_method: ``"absmax"`` or ``"minmax"``; ``None`` (default) picks
            ``"absmax"`` for symmetric and ``"minmax"`` for asymmetric mode.
        value_range: optional ``(lo, hi)`` clipping range (e.g. EMA activation
            ranges); values outside it get zero gradient.

    Returns:
        Tensor equal to ``quantize_dequantize(x, ...)``.

    Example:
        >>> y = fake_quant(np.array([0.1, 0.9, 3.0], "float32"), bits=8,
        ...                value_range=(-1.0, 1.0))
        >>> [round(v, 4) for v in np.asarray(y).tolist()]
        [0.1024, 0.8976, 1.0]
    """
    x, _, _, scale, zp, qmin, qmax = _prepare(x, bits, symmetric, axis, range_method, value_range)
    scale = ops.stop_gradient(scale)
    zp = ops.stop_gradient(zp)
    q, t = _qdq(x, scale, zp, qmin, qmax)
    mask = ops.cast(ops.logical_and(t >= qmin, t <= qmax), x.dtype)
    mask = ops.stop_gradient(mask)
    xm = x * mask
    return xm + ops.stop_gradient(q - xm)
