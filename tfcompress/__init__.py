"""tfcompress: model compression for Keras 3 on TensorFlow.

Wrap layers with :func:`prune_layer` (or a whole model with :func:`prune_model`),
add the callbacks and the :class:`ScaledGradient` optimizer wrapper, train with the
ordinary ``model.fit``, then :func:`strip` and export.

``import tfcompress`` never imports ``tf_keras`` or TFMOT (they switch TensorFlow
into Keras-2 mode); only ``bench/`` touches them, in processes of its own.
"""

__version__ = "0.1.0"

from tfcompress import data
from tfcompress import models
from tfcompress import quantization

# Re-exports, one block per subpackage (each subpackage owner edits only its block).
# --- pruning ---
from tfcompress import pruning
from tfcompress.pruning import ConstantSparsity
from tfcompress.pruning import PolynomialDecay
from tfcompress.pruning import PruneWrapper
from tfcompress.pruning import PruningSummary
from tfcompress.pruning import UpdateMasks
from tfcompress.pruning import dcil
from tfcompress.pruning import dpf
from tfcompress.pruning import prune_layer
from tfcompress.pruning import prune_model
from tfcompress.pruning import shrink
from tfcompress.pruning import sparsity_report
from tfcompress.pruning import strip
# --- psg ---
from tfcompress import psg
from tfcompress.psg import QuantizationGrid
from tfcompress.psg import ScaledGradient
from tfcompress.psg import ScaledGradientSchedule
from tfcompress.psg import Zero
# --- quantization ---
from tfcompress.quantization import fold_batch_norms
from tfcompress.quantization import quantize_aware
from tfcompress.quantization import quantize_weights
# --- distillation ---
from tfcompress import distillation
from tfcompress.distillation import FactorTransfer
from tfcompress.distillation import Paraphraser
from tfcompress.distillation import ParaphraserTraining
# --- lowrank ---
from tfcompress import lowrank
from tfcompress.lowrank import factorize
# --- kernels --- (TensorFlow/XLA inference layers; TensorFlow imported lazily)
from tfcompress import kernels
from tfcompress.kernels import convert
# --- export --- (imports TensorFlow lazily, inside its functions)
from tfcompress import export
from tfcompress.export import report
