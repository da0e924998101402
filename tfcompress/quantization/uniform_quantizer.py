"""``UniformQuantizer``: a serializable uniform quantizer object."""

import keras

from tfcompress.quantization import quantizers as q

__all__ = ["UniformQuantizer"]


@keras.saving.register_keras_serializable(package="tfcompress")
class UniformQuantizer(keras.quantizers.Quantizer):
    """Uniform quantizer (symmetric eq. 4.13 of 002, or affine), as an object.

    Calling it fake-quantizes with the straight-through estimator
    (:func:`~tfcompress.quantization.fake_quant`); :meth:`quantize` returns the
    integers, scale and zero point; :meth:`dequantize` maps them back. Symmetric
    mode uses the restricted range ``±(2^(n-1) - 1)`` with
    ``Δ = max|x| / (2^(n-1) - 1)``; asymmetric mode the min–max affine grid of
    the survey (003) with levels ``0..2^n - 1`` and an integer zero point.

    Args:
        bits: bit width, integer in ``[2, 8]``.
        symmetric: restricted-range symmetric grid (True) or affine (False).
        per_channel: one scale per index of ``axis`` (True) or one per tensor.
        axis: the channel axis kept in per-channel mode (``-1``: output channels
            of a Dense/Conv2D kernel; ``-2`` for a DepthwiseConv2D kernel
            ``(kh, kw, C, multiplier)`` with multiplier 1). Ignored per-tensor.
        range_method: ``"absmax"`` or ``"minmax"``; ``None`` (default):
            ``"absmax"`` if symmetric, ``"minmax"`` otherwise.

    Raises:
        ValueError: bad ``bits``, ``symmetric``, ``range_method`` or ``axis``.

    Example:
        >>> quantizer = UniformQuantizer(bits=4, per_channel=True)
        >>> w = np.random.default_rng(0).normal(size=(3, 3, 8, 16)).astype("float32")
        >>> w_q = quantizer(w)                 # fake-quantized, STE gradient
        >>> ints, scale, zp = quantizer.quantize(w)
        >>> tuple(scale.shape), keras.backend.standardize_dtype(ints.dtype)
        ((16,), 'int8')
        >>> bool(np.allclose(quantizer.dequantize(ints, scale, zp), w_q))
        True
    """

    def __init__(
        self, bits=8, symmetric=True, per_channel=False, axis=-1, range_method=None
    ):
        self.bits = q.check_bits(bits)
        self.symmetric = q._check_symmetric(symmetric)
        if not isinstance(per_channel, bool):
            raise ValueError(
                f"per_channel must be a bool; received: per_channel={per_channel!r}"
            )
        self.per_channel = per_channel
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"axis must be an int; received: axis={axis!r}")
        self.axis = axis
        q._check_range_method(range_method)
        self.range_method = range_method
        super().__init__(output_dtype="int8" if self.symmetric else "uint8")

    @property
    def _axis(self):
        return self.axis if self.per_channel else None

    def __call__(self, x, value_range=None):
        """Fake-quantizes ``x`` (forward ``Q(x)``, straight-through gradient)."""
        return q.fake_quant(
            x, self.bits, self.symmetric, self._axis, self.range_method, value_range
        )

    def quantize_dequantize(self, x, value_range=None):
        """``Q(x)`` without the straight-through gradient."""
        return q.quantize_dequantize(
            x, self.bits, self.symmetric, self._axis, self.range_method, value_range
        )

    def quantize(self, x, value_range=None):
        """Returns ``(int_values, scale, zero_point)``; see :func:`~tfcompress.quantization.quantize`."""
        return q.quantize(
            x, self.bits, self.symmetric, self._axis, self.range_method, value_range
        )

    def dequantize(self, int_values, scale, zero_point=0):
        """Maps integers from :meth:`quantize` back to floats."""
        return q.dequantize(int_values, scale, zero_point, self._axis)

    def get_config(self):
        return {
            "bits": self.bits,
            "symmetric": self.symmetric,
            "per_channel": self.per_channel,
            "axis": self.axis,
            "range_method": self.range_method,
        }

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"UniformQuantizer({args})"
