"""``FakeQuantActivation``: activation fake-quantization with a stored range."""

import keras
from keras import ops

from tfcompress.quantization import quantizers as q

__all__ = ["FakeQuantActivation"]


@keras.saving.register_keras_serializable(package="tfcompress")
class FakeQuantActivation(keras.layers.Layer):
    """Fake-quantizes activations on a per-tensor range kept in non-trainable weights.

    The range ``[range_min, range_max]`` lives in non-trainable weights (saved
    with the model and in checkpoints), with a flag ``initialized``:

    * **Calibrated / frozen** (PTQ): :meth:`set_range` stores a range computed on
      a representative dataset (see
      :func:`~tfcompress.quantization.quantize_activations`) and sets
      ``initialized``.
    * **Training** (QAT, ``training=True`` and ``ema=True``): the range follows an
      exponential moving average of the batch min/max
      (``r ← momentum·r + (1 − momentum)·r_batch``; the first batch sets it),
      as in TFMOT's moving-average quantizer. With ``ema=False`` the stored
      range is never updated by training (a calibrated PTQ range stays frozen).
    * **Not yet initialized**: the batch's own range is used (dynamic
      quantization), so the output is always on a ``bits``-bit grid.

    The forward value is :func:`~tfcompress.quantization.quantize_dequantize`
    of the input on that range; the gradient is the straight-through estimator
    of :func:`~tfcompress.quantization.fake_quant` (identity inside the range,
    zero where the value saturates), survey 003 (QAT with STE). Symmetric mode
    is eq. 4.13 of 002; asymmetric (the default for activations) uses the affine
    grid with a zero point, which suits non-negative post-ReLU values.

    Args:
        bits: bit width, integer in ``[2, 8]``.
        symmetric: restricted-range symmetric grid (True) or affine (False).
        momentum: EMA momentum in ``[0, 1)`` for training-time range updates.
        ema: whether ``training=True`` calls update the range.
        **kwargs: base ``Layer`` arguments (``name``, ``dtype``...).

    Example:
        >>> layer = FakeQuantActivation(bits=4)
        >>> y = layer(np.linspace(0, 1, 8, dtype="float32")[None])
        >>> len(np.unique(np.asarray(y))) <= 16
        True
        >>> layer.set_range(0.0, 0.5)            # e.g. from calibration
        >>> float(np.asarray(layer(np.array([[2.0]], "float32")))[0, 0])
        0.5
    """

    def __init__(self, bits=8, symmetric=False, momentum=0.99, ema=True, **kwargs):
        super().__init__(**kwargs)
        self.bits = q.check_bits(bits)
        self.symmetric = q._check_symmetric(symmetric)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); received: momentum={momentum!r}")
        self.momentum = float(momentum)
        if not isinstance(ema, bool):
            raise ValueError(f"ema must be a bool; received: ema={ema!r}")
        self.ema = ema
        self.supports_masking = True

    def build(self, input_shape=None):
        self.range_min = self.add_weight(
            name="range_min", shape=(), initializer="zeros", trainable=False
        )
        self.range_max = self.add_weight(
            name="range_max", shape=(), initializer="zeros", trainable=False
        )
        self.initialized = self.add_weight(
            name="initialized", shape=(), initializer="zeros", trainable=False
        )
        self.built = True

    def set_range(self, range_min, range_max):
        """Stores a calibrated range and marks the quantizer initialized."""
        if not self.built:
            self.build()
        lo, hi = float(range_min), float(range_max)
        if not lo <= hi:
            raise ValueError(
                f"range_min must be <= range_max; received: range_min={lo}, range_max={hi}"
            )
        self.range_min.assign(lo)
        self.range_max.assign(hi)
        self.initialized.assign(1.0)

    def call(self, inputs, training=None):
        x = inputs
        xs = ops.stop_gradient(ops.cast(x, "float32"))
        batch_min = ops.min(xs)
        batch_max = ops.max(xs)
        range_min = ops.convert_to_tensor(self.range_min)
        range_max = ops.convert_to_tensor(self.range_max)
        init = ops.convert_to_tensor(self.initialized) > 0.5
        if training and self.ema:
            m = self.momentum
            lo = ops.where(init, m * range_min + (1 - m) * batch_min, batch_min)
            hi = ops.where(init, m * range_max + (1 - m) * batch_max, batch_max)
            self.range_min.assign(lo)
            self.range_max.assign(hi)
            self.initialized.assign(1.0)
        else:
            lo = ops.where(init, range_min, batch_min)
            hi = ops.where(init, range_max, batch_max)
        lo = ops.cast(lo, x.dtype)
        hi = ops.cast(hi, x.dtype)
        return q.fake_quant(x, self.bits, symmetric=self.symmetric, value_range=(lo, hi))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {
            "bits": self.bits,
            "symmetric": self.symmetric,
            "momentum": self.momentum,
            "ema": self.ema,
        }
        return {**super().get_config(), **config}
