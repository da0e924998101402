"""Export to SavedModel and TFLite/LiteRT, verified against the Keras model; report
size, sparsity, bit-width and latency of a model or an exported file."""

from tfcompress.export.atomic import atomic_output
from tfcompress.export.model_report import ModelReport
from tfcompress.export.model_report import report
from tfcompress.export.saved_model import to_saved_model
from tfcompress.export.tflite import ExportResult
from tfcompress.export.tflite import ExportVerificationError
from tfcompress.export.tflite import run_tflite
from tfcompress.export.tflite import to_tflite
from tfcompress.export.tflite_scales import power_of_two_scales

__all__ = ["ExportResult", "ExportVerificationError", "ModelReport", "atomic_output",
           "power_of_two_scales", "report", "run_tflite", "to_saved_model", "to_tflite"]
