"""TFLite / LiteRT export with verification in the LiteRT interpreter.

The converted file is run in ``ai_edge_litert``'s interpreter on sample inputs and
compared with the Keras model (max abs error, top-1 agreement); beyond tolerance
the export fails loudly and no file is left behind.
"""

import contextlib
import dataclasses
import io
import pathlib

import numpy as np

from tfcompress.export.atomic import atomic_output
from tfcompress.export.tflite_scales import power_of_two_scales as _power_of_two_scales

MODES = ("float", "float16", "dynamic", "int8", "int16x8")
# Default verification bars per mode: (max abs error on outputs, min top-1 agreement).
DEFAULT_TOLERANCE = {
    "float": (1e-3, 1.0),
    "float16": (None, 0.99),
    "dynamic": (None, 0.97),
    "int8": (None, 0.95),
    "int16x8": (None, 0.97),
}


class ExportVerificationError(RuntimeError):
    """The exported file's outputs disagree with the Keras model beyond tolerance."""


@dataclasses.dataclass
class ExportResult:
    """What an export wrote and how closely it matches the Keras model."""

    path: str
    mode: str
    size_bytes: int
    max_abs_error: float
    top1_agreement: float
    samples: int


def _converter(model, mode, representative_data, sparsity):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = []
    if mode != "float":
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparsity:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode in ("int8", "int16x8"):
        if representative_data is None:
            raise ValueError(
                f"representative_data is required for mode={mode!r} (activation ranges "
                "are calibrated on it); received: representative_data=None")
        converter.representative_dataset = representative_data
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if mode == "int8" else
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return converter


def _interpreter(model_path_or_bytes, num_threads, op_resolver_type=None):
    from ai_edge_litert.interpreter import Interpreter

    kwargs = {"num_threads": num_threads}
    if op_resolver_type is not None:
        kwargs["experimental_op_resolver_type"] = op_resolver_type
    if isinstance(model_path_or_bytes, (bytes, bytearray)):
        return Interpreter(model_content=bytes(model_path_or_bytes), **kwargs)
    return Interpreter(model_path=str(model_path_or_bytes), **kwargs)


def _invoke_all(interpreter, inputs):
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    outputs = []
    for sample in np.asarray(inputs, dtype="float32"):
        value = sample[None]
        if inp["dtype"] != np.float32:
            value = np.round(value / in_scale + in_zero).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], value)
        interpreter.invoke()
        result = interpreter.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            result = (result.astype("float32") - out_zero) * out_scale
        outputs.append(result[0])
    return np.stack(outputs)


def run_tflite(model_path_or_bytes, inputs, num_threads=1):
    """Runs a TFLite model in the LiteRT interpreter on a batch, one sample at a time.

    The default XNNPACK delegate is used when it can run the model; some models it
    rejects (e.g. sparse int8 fully-connected layers) run on the built-in kernels.

    Args:
        model_path_or_bytes: a ``.tflite`` path or the flatbuffer bytes.
        inputs: numpy array, first axis = samples.
        num_threads: interpreter threads.

    Returns:
        numpy array of outputs (float32; int8 outputs are dequantized).
    """
    from ai_edge_litert.interpreter import OpResolverType

    try:
        return _invoke_all(_interpreter(model_path_or_bytes, num_threads), inputs)
    except RuntimeError:
        fallback = _interpreter(model_path_or_bytes, num_threads,
                                OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        return _invoke_all(fallback, inputs)


def to_tflite(model, path, mode="float", representative_data=None, sparsity=False,
              verify_data=None, max_abs_error=None, min_top1_agreement=None,
              power_of_two_scales=False):
    """Converts a Keras model to a ``.tflite`` file, verified in the LiteRT interpreter.

    Args:
        model: a stripped Keras 3 model (no training wrappers).
        path: output file path; written atomically.
        mode: ``"float"``, ``"float16"``, ``"dynamic"`` (int8 weights, float
            activations), ``"int8"`` (full integer, needs ``representative_data``)
            or ``"int16x8"``.
        representative_data: calibration generator factory, see
            :func:`tfcompress.data.representative_dataset`.
        sparsity: also apply TFLite's sparse weight encoding
            (``Optimize.EXPERIMENTAL_SPARSITY``).
        verify_data: numpy inputs to compare Keras and LiteRT on; ``None`` skips
            verification (not recommended).
        max_abs_error: tolerance on the largest output difference (default per mode).
        min_top1_agreement: tolerance on argmax agreement (default per mode).
        power_of_two_scales: ``mode="int8"`` only: round every per-channel weight
            scale up to a power of two and requantize the weights and biases to it
            (:func:`tfcompress.export.tflite_scales.power_of_two_scales`): a smaller
            gzipped file (the scales compress) for at most one bit of weight
            precision. Verified like any export.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ValueError: unknown ``mode``, missing ``representative_data``, or
            ``power_of_two_scales`` with a mode other than ``"int8"`` or with
            ``sparsity``.
        ExportVerificationError: outputs beyond tolerance (no file is left).

    Example:
        >>> result = to_tflite(model, "cnn.tflite", mode="int8",
        ...                    representative_data=representative_dataset(test_ds, 200),
        ...                    verify_data=x_test[:1000])
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; received: mode={mode!r}")
    if power_of_two_scales and (mode != "int8" or sparsity):
        raise ValueError(
            "power_of_two_scales=True needs mode='int8' without sparsity (sparse-encoded "
            "weights are stored without their channel layout); received: "
            f"mode={mode!r}, sparsity={sparsity!r}")
    default_err, default_top1 = DEFAULT_TOLERANCE[mode]
    max_abs_error = default_err if max_abs_error is None else max_abs_error
    min_top1_agreement = default_top1 if min_top1_agreement is None else min_top1_agreement
    with atomic_output(path) as tmp:
        # The converter re-exports the model and prints its endpoints; keep stdout clean.
        with contextlib.redirect_stdout(io.StringIO()):
            flatbuffer = _converter(model, mode, representative_data, sparsity).convert()
        if power_of_two_scales:
            flatbuffer = _power_of_two_scales(flatbuffer)
        tmp.write_bytes(flatbuffer)
        error, agreement, samples = float("nan"), float("nan"), 0
        if verify_data is not None:
            expected = np.asarray(model.predict(verify_data, verbose=0, batch_size=256))
            got = run_tflite(tmp, verify_data)
            error = float(np.max(np.abs(expected - got)))
            agreement = float(np.mean(expected.argmax(-1) == got.argmax(-1)))
            samples = len(verify_data)
            too_far = max_abs_error is not None and error > max_abs_error
            if too_far or agreement < min_top1_agreement:
                raise ExportVerificationError(
                    f"LiteRT output of the {mode!r} export disagrees with Keras on "
                    f"{samples} samples: max abs error {error:.3g} (tolerance "
                    f"{max_abs_error}), top-1 agreement {agreement:.4f} (minimum "
                    f"{min_top1_agreement}); no file was written to {str(path)!r}.")
    return ExportResult(str(path), mode, pathlib.Path(path).stat().st_size, error, agreement, samples)
