"""Target points of position-based scaled gradient (PSG).

A *target* maps a weight tensor ``w`` to the nearest point ``Q(w)`` of a set of
desired positions (the target :math:`\\bar{x}` of 002 eq. 4.5). PSG scales each
gradient element by ``|w - Q(w)| + eps`` (eq. 4.7), so weights close to a target
point move slowly and weights far from one move fast, and training settles on a
minimum that survives compression.

Two targets are provided (002 §4.2.3):

* :class:`QuantizationGrid` -- the grid of the per-layer uniform symmetric
  quantizer of eq. 4.13, recomputed from the current weights at every step, or
  from a moving average of the weight range (``range_momentum``, as in the
  authors' code).
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

    #: Whether the target keeps a running weight range that the optimizer
    #: must store (see :meth:`QuantizationGrid.update_range`).
    tracks_range = False

    def __call__(self, w, bits=None, mask=None, value_range=None):
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
            value_range: Optional ``(lo, hi)`` range defining the grid step
                instead of the range of ``w`` (the running range of
                :meth:`QuantizationGrid.update_range`). Ignored by targets
                without a grid.
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
    ``Δ = max(-min w, max w) / (2^(n-1)-1)`` (restricted range, per layer). At
    2 bits the grid is ``{-Δ, 0, Δ}`` with ``Δ = max|w|``, as in the authors'
    code. With ``per_channel=True``, Δ is computed per output channel (the last
    axis of a Dense/Conv kernel) instead -- an extension: the paper uses the
    per-layer scheme. For a ``DepthwiseConv2D`` kernel ``(kh, kw, in,
    multiplier)`` the last axis is the depth multiplier, so keep
    ``per_channel=False`` there.

    **Range.** With ``range_momentum=None`` (default) the range is recomputed
    from the current weights every time the grid is used, the literal reading
    of eq. 4.13. With a momentum ``m`` in ``(0, 1]`` the grid step comes from
    a running range instead, as in the authors' PyTorch code (PSG-pytorch,
    ``quant_module.post_training_weight``, momentum 0.1): the statistics
    ``lo = min(0, min w)`` and ``hi = max(0, max w)`` are each smoothed as
    ``r ← m·r_now + (1 − m)·r`` (the first call takes ``r_now``), and
    ``Δ = max(-lo, hi) / (2^(n-1)-1)``. The running range is optimizer state,
    kept by :class:`~tfcompress.psg.ScaledGradient` (one pair per scoped
    kernel, or per output channel) and saved with it. It damps a failure mode
    of the per-step range under momentum SGD: a weight that overshoots the
    current maximum becomes the new maximum, sits exactly on the outermost
    grid point (PSG scale ~0, so it is frozen there) and rescales the whole
    layer's grid in one step. With a running range, the overshooting weight
    lies beyond the outermost point for a while, keeps a large scale
    ``|w − Q(w)|`` and can move back, and Δ changes only by the momentum
    fraction per step. Post-training quantization (and the accuracy of the
    quantized model) always uses the exact range of the final weights.
    Caveat: weights beyond a lagging range get a scale that grows with their
    distance from it (positive feedback), so the range can run away when it
    moves fast -- training the 784-50-20-10 MLP *from scratch* at a high LR,
    ``range_momentum=0.1`` was less stable than the per-step range
    (``bench/psg_quant.py``). It suits the authors' setting: PSG fine-tuning
    of a trained model at a decayed LR, where the range is nearly stationary.

    The quantizer itself is ``tfcompress.quantization.quantize_dequantize``
    (symmetric mode), so the PSG targets are exactly the values a post-training
    quantization of the trained model produces.

    Args:
        bits: Integer bit-width ``n`` in ``[2, 8]``.
        per_channel: Bool, one Δ per output channel instead of per tensor.
        range_momentum: ``None`` (the exact range each step) or a float in
            ``(0, 1]``, the weight of the newest range in the running range
            (0.1 in the authors' code; 1.0 is the exact range).

    Raises:
        ValueError: If ``bits`` is not an integer in ``[2, 8]`` or
            ``range_momentum`` is not ``None`` or a number in ``(0, 1]``.
        TypeError: If ``per_channel`` is not a bool.

    Example:

    >>> import numpy as np
    >>> grid = QuantizationGrid(bits=2)          # levels {-Δ, 0, Δ}, Δ = max|w|
    >>> np.asarray(grid(np.array([0.9, -0.2, 0.6, -1.0], "float32")))
    array([ 1.,  0.,  1., -1.], dtype=float32)
    """

    def __init__(self, bits=4, per_channel=False, range_momentum=None):
        self.bits = _check_bits(bits)
        if not isinstance(per_channel, bool):
            raise TypeError(
                f"`per_channel` must be a bool. Received: per_channel={per_channel!r}"
            )
        self.per_channel = per_channel
        if range_momentum is not None and (
            isinstance(range_momentum, bool)
            or not isinstance(range_momentum, numbers.Real)
            or not 0.0 < float(range_momentum) <= 1.0
        ):
            raise ValueError(
                "`range_momentum` must be None (the exact weight range at every "
                "step) or a number in (0, 1] (the weight of the newest range in "
                f"the running range). Received: range_momentum={range_momentum!r}"
            )
        self.range_momentum = None if range_momentum is None else float(range_momentum)

    @property
    def tracks_range(self):
        return self.range_momentum is not None

    def _axis(self, x):
        if self.per_channel and len(x.shape) >= 2:
            return len(x.shape) - 1
        return None

    def range_shape(self, shape):
        """Shape of the running ``lo``/``hi`` of a weight of ``shape``: ``()`` or ``(C,)``."""
        if self.per_channel and len(shape) >= 2:
            return (int(shape[-1]),)
        return ()

    def current_range(self, w, mask=None):
        """``(min(0, min w), max(0, max w))`` of the (active) weights, per tensor or channel.

        Args:
            w: Weight tensor.
            mask: Optional 0/1 mask; only active weights count.

        Returns:
            ``(lo, hi)`` tensors of shape :meth:`range_shape`.
        """
        w = ops.convert_to_tensor(w)
        x = w if mask is None else w * ops.cast(mask, w.dtype)
        axis = self._axis(x)
        red = None if axis is None else tuple(range(len(x.shape) - 1))
        lo = ops.minimum(ops.min(x, axis=red), 0.0)
        hi = ops.maximum(ops.max(x, axis=red), 0.0)
        return lo, hi

    def update_range(self, running, w, mask=None):
        """One step of the running range (authors' ``update_range``).

        Args:
            running: ``(lo, hi)`` running range so far; an entry with
                ``lo == hi == 0`` is uninitialised and takes the current range.
            w: Current weight tensor.
            mask: Optional 0/1 mask of the active weights.

        Returns:
            The new ``(lo, hi)``: ``m·current + (1 − m)·running``. Without a
            momentum (``range_momentum=None``) the current range.
        """
        lo_now, hi_now = self.current_range(w, mask)
        if self.range_momentum is None:
            return lo_now, hi_now
        lo, hi = running
        lo = ops.cast(lo, lo_now.dtype)
        hi = ops.cast(hi, hi_now.dtype)
        fresh = ops.logical_and(ops.equal(lo, 0.0), ops.equal(hi, 0.0))
        m = self.range_momentum
        lo_new = ops.where(fresh, lo_now, m * lo_now + (1.0 - m) * lo)
        hi_new = ops.where(fresh, hi_now, m * hi_now + (1.0 - m) * hi)
        return lo_new, hi_new

    def __call__(self, w, bits=None, mask=None, value_range=None):
        bits = self.bits if bits is None else _check_bits(bits)
        w = ops.convert_to_tensor(w)
        x = w if mask is None else w * ops.cast(mask, w.dtype)
        return _quantize_dequantize()(
            x, bits, symmetric=True, axis=self._axis(x), value_range=value_range
        )

    def get_config(self):
        return {
            "bits": self.bits,
            "per_channel": self.per_channel,
            "range_momentum": self.range_momentum,
        }


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

    def __call__(self, w, bits=None, mask=None, value_range=None):
        return ops.zeros_like(ops.convert_to_tensor(w))
