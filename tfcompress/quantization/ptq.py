"""Post-training weight quantization: ``quantize_weights``."""

import keras
import numpy as np

from tfcompress.quantization import _registry as reg
from tfcompress.quantization import quantizers as q
from tfcompress.quantization.calibration import _check_method
from tfcompress.quantization.calibration import calibrate_range

__all__ = ["quantize_weights"]

SUPPORTED = (
    "Dense, Conv1D/2D/3D, Conv1D/2D/3DTranspose, DepthwiseConv1D/2D, SeparableConv1D/2D"
)


def _unsupported(model, skipped, caller):
    bad = [
        f"{layer.name!r} ({type(layer).__name__})"
        for layer in reg.iter_layers(model)
        if reg.kernel_specs(layer) is None
        and reg.has_kernel_like_weight(layer)
        and layer.name not in skipped
    ]
    if bad:
        raise ValueError(
            f"{caller} does not support layer(s) {', '.join(bad)}: they hold a "
            f"kernel but are not one of {SUPPORTED}. Pass skip=[...their names...] "
            "to leave them in float."
        )


def quantize_kernel_value(kernel, layout, bits, per_channel, symmetric, calibration, **kwargs):
    """Quantize-dequantize one NumPy kernel with a calibrated clipping range."""
    kernel = np.asarray(kernel)
    arr, axis = reg.channel_view(kernel, layout, per_channel)
    lo, hi = calibrate_range(arr, bits, symmetric, axis=axis, method=calibration, **kwargs)
    out = q.quantize_dequantize(
        arr.astype(np.float32), bits, symmetric=symmetric, axis=axis, value_range=(lo, hi)
    )
    return np.asarray(out).reshape(kernel.shape).astype(kernel.dtype)


def quantize_weights(
    model,
    bits=8,
    per_channel=False,
    symmetric=True,
    calibration=None,
    skip=None,
    bits_overrides=None,
    **calibration_kwargs,
):
    """Post-training quantization of the kernels of a model (PTQ, survey 003).

    Returns a clone (``keras.models.clone_model`` + the original weights) whose
    Dense / Conv / DepthwiseConv / SeparableConv kernels are replaced by their
    quantize-dequantized values ``Q(w)`` — float tensors holding at most
    ``2^bits`` distinct values per tensor (per output channel when
    ``per_channel``), ``2^bits − 1`` in symmetric mode (eq. 4.13 of 002).
    Biases, BatchNorm and every other weight are copied unchanged; the original
    model is not modified. The clone is not compiled.

    Calibration of the clipping range (survey 003, "How to calibrate"):

    * ``"absmax"`` (default when symmetric): ``[-max|w|, max|w|]``, eq. 4.13.
    * ``"minmax"`` (default when asymmetric): ``[min w, max w]``.
    * ``"mse"``: the fraction of the absmax / min–max range minimising
      ``‖w − Q(w)‖²`` (grid search, per channel when ``per_channel``); never
      worse than absmax / min–max, whose range is on the grid.
    * ``"kl"``: TensorRT's histogram KL threshold (meant for activations; slow
      per channel).

    Args:
        model: a built Sequential or Functional model (float).
        bits: default bit width, integer in ``[2, 8]``.
        per_channel: one range per output channel (True) or per tensor.
        symmetric: restricted-range symmetric grid (True) or affine (False).
        calibration: ``None``, ``"absmax"``, ``"minmax"``, ``"mse"`` or ``"kl"``.
        skip: layers left in float: a layer name, a collection of names, or a
            predicate ``layer -> bool`` (called on the original model's layers).
        bits_overrides: ``{layer_name: bits}`` per-layer bit widths, e.g. the
            first and last layers at 8 bits (see
            :func:`~tfcompress.quantization.quantizable_layers`).
        **calibration_kwargs: passed to the calibration method
            (``num_candidates`` for MSE, ``num_bins`` for KL).

    Returns:
        A new ``keras.Model`` with quantize-dequantized kernels.

    Raises:
        ValueError: bad ``bits`` / ``symmetric`` / ``calibration`` / ``skip`` /
            ``bits_overrides``, or a layer holding a kernel of an unsupported
            type (name it in ``skip`` to keep it in float).

    Example:
        >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4),
        ...                           keras.layers.Dense(2)])
        >>> names = quantizable_layers(model)
        >>> q_model = quantize_weights(model, bits=4, per_channel=True,
        ...                            calibration="mse", bits_overrides={names[-1]: 8})
        >>> len(np.unique(q_model.layers[0].kernel.numpy()[:, 0])) <= 15
        True
    """
    symmetric = q._check_symmetric(symmetric)
    if calibration is None:
        calibration = "absmax" if symmetric else "minmax"
    _check_method(calibration)
    if not isinstance(per_channel, bool):
        raise ValueError(f"per_channel must be a bool; received: per_channel={per_channel!r}")
    skip_fn, bits_for = reg.resolve_skip(model, skip, bits_overrides, bits)
    skipped = {layer.name for layer in reg.iter_layers(model) if skip_fn(layer)}
    _unsupported(model, skipped, "quantize_weights")
    plan = {
        layer.name: bits_for(layer)
        for layer in reg.iter_layers(model)
        if reg.kernel_specs(layer) is not None and layer.name not in skipped
    }
    clone = reg.clone_with_weights(model)
    for layer in reg.iter_layers(clone):
        if layer.name not in plan:
            continue
        for attr, layout in reg.kernel_specs(layer):
            var = getattr(layer, attr)
            var.assign(
                quantize_kernel_value(
                    keras.ops.convert_to_numpy(var), layout, plan[layer.name], per_channel, symmetric,
                    calibration, **calibration_kwargs,
                )
            )
    return clone
