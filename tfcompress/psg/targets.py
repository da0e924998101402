"""Target points of position-based scaled gradient (PSG).

A *target* maps a weight tensor ``w`` to the nearest point ``Q(w)`` of a set of
desired positions (the target :math:`\\bar{x}` of 002 eq. 4.5). PSG scales each
gradient element by ``|w - Q(w)| + eps`` (eq. 4.7), so weights close to a target
point move slowly and weights far from one move fast, and training settles on a
minimum that survives compression.

Two targets are provided (002 §4.2.3):

* :class:`QuantizationGrid` -- the grid of the per-layer uniform symmetric
  quantizer of eq. 4.13, recomputed from the current weights at every step.
* :class:`Zero` -- the single point 0 (sparse training / magnitude pruning).

Targets are small serializable objects; all math is in ``keras.ops`` so they run
on every Keras backend.
"""

import numbers

import keras
from keras import ops

__all__ = ["PSGTarget", "QuantizationGrid", "Zero"]

_MAX_BITS = 8


def _quantize_dequantize():
    # Imported lazily so that ``tfcompress.psg`` never pulls anything but Keras
    # at import time; the quantizer itself lives in ``tfcompress.quantization``.
    from tfcompress.quantization import quantize_dequantize

    return quantize_dequantize


class PSGTarget:
    """Base class of PSG targets: ``Q(w)``, the nearest target point of ``w``.

    Subclasses implement :meth:`__call__` with ``keras.ops`` and
    :meth:`get_config`.
    """

    def __call__(self, w, bits=None, mask=None):
        """Returns the target points ``Q(w)`` (same shape and dtype as ``w``).

        Args:
            w: Weight tensor.
            bits: Optional bit-width overriding the target's own (used for the
                layers that :class:`~tfcompress.psg.ScaledGradient` keeps at
                8 bits). Ignored by targets without a bit-width.
            mask: Optional 0/1 tensor broadcastable to ``w``; when given, ``Q``
                is computed from the active weights ``w * mask`` only (002
                eq. 6.1-6.2). Entries where ``mask == 0`` are returned as the
                target of 0 and are expected to be ignored by the caller.
        """
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _check_bits(bits, arg="bits"):
    if (
        isinstance(bits, bool)
        or not isinstance(bits, numbers.Integral)
        or not 2 <= int(bits) <= _MAX_BITS
    ):
        raise ValueError(
            f"`{arg}` must be an integer in [2, {_MAX_BITS}] (the symmetric "
            "restricted-range grid of eq. 4.13 has 2^(bits-1)-1 positive "
            f"levels, so at least 2 bits are needed). Received: {arg}={bits!r}"
        )
    return int(bits)


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantizationGrid(PSGTarget):
    """The uniform symmetric quantization grid of 002 eq. 4.13.

    ``Q(w) = clip(round(w / Δ), -(2^(n-1)-1), 2^(n-1)-1) · Δ`` with
    ``Δ = max|w| / (2^(n-1)-1)`` (restricted range, per layer), recomputed from
    the current weights each time it is called. With ``per_channel=True``, Δ is
    computed per output channel (the last axis of a Dense/Conv kernel) instead
    -- an extension: the paper uses the per-layer scheme. For a
    ``DepthwiseConv2D`` kernel ``(kh, kw, in, multiplier)`` the last axis is the
    depth multiplier, so keep ``per_channel=False`` there.

    The quantizer itself is ``tfcompress.quantization.quantize_dequantize``
    (symmetric mode), so the PSG targets are exactly the values a post-training
    quantization of the trained model produces.

    Args:
        bits: Integer bit-width ``n`` in ``[2, 8]``.
        per_channel: Bool, one Δ per output channel instead of per tensor.

    Raises:
        ValueError: If ``bits`` is not an integer in ``[2, 8]``.
        TypeError: If ``per_channel`` is not a bool.

    Example:

    >>> import numpy as np
    >>> grid = QuantizationGrid(bits=2)          # levels {-Δ, 0, Δ}, Δ = max|w|
    >>> np.asarray(grid(np.array([0.9, -0.2, 0.6, -1.0], "float32")))
    array([ 1.,  0.,  1., -1.], dtype=float32)
    """

    def __init__(self, bits=4, per_channel=False):
        self.bits = _check_bits(bits)
        if not isinstance(per_channel, bool):
            raise TypeError(
                f"`per_channel` must be a bool. Received: per_channel={per_channel!r}"
            )
        self.per_channel = per_channel

    def __call__(self, w, bits=None, mask=None):
        bits = self.bits if bits is None else _check_bits(bits)
        w = ops.convert_to_tensor(w)
        x = w if mask is None else w * ops.cast(mask, w.dtype)
        axis = None
        if self.per_channel and len(x.shape) >= 2:
            axis = len(x.shape) - 1
        return _quantize_dequantize()(x, bits, symmetric=True, axis=axis)

    def get_config(self):
        return {"bits": self.bits, "per_channel": self.per_channel}


@keras.saving.register_keras_serializable(package="tfcompress")
class Zero(PSGTarget):
    """The single target point 0: PSG for sparse training (002 §4.2.3).

    ``Q(w) = 0``, so the PSG scale is ``|w| + ε`` (eq. 4.7): small weights are
    nearly frozen near zero and large ones move freely, which makes the trained
    model robust to magnitude pruning without fine-tuning (002 Table 4.3).

    Example:

    >>> import numpy as np
    >>> np.asarray(Zero()(np.array([0.5, -2.0], "float32")))
    array([0., 0.], dtype=float32)
    """

    def __call__(self, w, bits=None, mask=None):
        return ops.zeros_like(ops.convert_to_tensor(w))
