"""Quantization: uniform quantizers, PTQ calibration, QAT and BatchNorm folding.

Pure ``keras.ops`` functions (any Keras backend):

* :func:`quantize_dequantize` — ``Q(x)``; symmetric mode is eq. 4.13 of the
  dissertation (002), ``Δ = max|x| / (2^(n-1) − 1)``, levels ``±(2^(n-1) − 1)``;
  asymmetric mode is the affine min–max grid (survey 003); per-tensor or
  per-channel (``axis`` = the kept axis).
* :func:`fake_quant` — same forward, straight-through gradient (QAT).
* :func:`quantize` / :func:`dequantize` — integers, scale, zero point.
* :func:`compute_range`, :func:`compute_scale`, :func:`check_bits`.

Objects and layers (serializable, ``package="tfcompress"``):
:class:`UniformQuantizer`, :class:`FakeQuantActivation`, :class:`QuantizeWrapper`.

Model transforms (each returns a new model; the original is untouched):
:func:`quantize_weights` (PTQ of kernels, absmax / min–max / MSE / KL calibration),
:func:`quantize_activations` (calibrated activation fake-quantizers),
:func:`fold_batch_norms`, :func:`quantize_aware` (QAT) and :func:`strip_qat`.
Calibration helpers: :func:`calibrate_range`, :func:`mse_range`, :func:`kl_range`.
"""

from tfcompress.quantization.quantizers import RANGE_METHODS
from tfcompress.quantization.quantizers import check_bits
from tfcompress.quantization.quantizers import compute_range
from tfcompress.quantization.quantizers import compute_scale
from tfcompress.quantization.quantizers import dequantize
from tfcompress.quantization.quantizers import fake_quant
from tfcompress.quantization.quantizers import quantize
from tfcompress.quantization.quantizers import quantize_dequantize
from tfcompress.quantization.uniform_quantizer import UniformQuantizer
from tfcompress.quantization.calibration import CALIBRATION_METHODS
from tfcompress.quantization.calibration import calibrate_range
from tfcompress.quantization.calibration import kl_range
from tfcompress.quantization.calibration import mse_range
from tfcompress.quantization._registry import quantizable_layers
from tfcompress.quantization.ptq import quantize_weights
from tfcompress.quantization.fake_quant_activation import FakeQuantActivation
from tfcompress.quantization.activations import quantize_activations
from tfcompress.quantization.bn_folding import fold_batch_norms
from tfcompress.quantization.qat import QuantizeWrapper
from tfcompress.quantization.qat import quantize_aware
from tfcompress.quantization.qat import strip_qat

__all__ = [
    "RANGE_METHODS",
    "CALIBRATION_METHODS",
    "check_bits",
    "compute_range",
    "compute_scale",
    "quantize",
    "dequantize",
    "quantize_dequantize",
    "fake_quant",
    "UniformQuantizer",
    "calibrate_range",
    "mse_range",
    "kl_range",
    "quantizable_layers",
    "quantize_weights",
    "FakeQuantActivation",
    "quantize_activations",
    "fold_batch_norms",
    "QuantizeWrapper",
    "quantize_aware",
    "strip_qat",
]
