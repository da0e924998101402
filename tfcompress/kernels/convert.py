"""``convert``: a stripped float model → the same model on the execution kernels."""

import warnings

import keras
import numpy as np

from tfcompress._cloning import clone_model
from tfcompress.kernels import _common
from tfcompress.kernels.quantized_conv import QuantizedConv2D
from tfcompress.kernels.quantized_dense import QuantizedDense
from tfcompress.kernels.quantized_depthwise_conv import QuantizedDepthwiseConv2D
from tfcompress.kernels.sparse_dense import SparseDense
from tfcompress.kernels.sparse_dense import check_block_shape
from tfcompress.quantization import fold_batch_norms

QUANTIZE_MODES = {"int8": 8, "int4": 4, None: None}


def _is_functional_or_sequential(model):
    if isinstance(model, keras.Sequential):
        return True
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def _targets(model):
    """Layers of ``model`` (not nested models) that :func:`convert` may replace."""
    kinds = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    return [layer for layer in model.layers if isinstance(layer, kinds)]


def _input_tensors(layer, model):
    """The input tensors of ``layer``'s calls in ``model``'s graph (a layer may also
    have been called in other graphs, e.g. traced by a model transformation)."""
    graph = getattr(model, "_functional", None) or model  # a Sequential wraps one
    own = getattr(graph, "_nodes", None)
    nodes = [node for node in getattr(layer, "_inbound_nodes", None) or []
             if own is None or node in own]
    tensors = []
    for node in nodes:
        flat = keras.tree.flatten(node.input_tensors)
        if flat:
            tensors.append(flat[0])
    return tensors or [layer.input]


def calibrate_input_scales(model, layers, data):
    """Per-tensor int8 scales ``max |x| / 127`` of the inputs of ``layers``.

    Args:
        model: the float functional / Sequential model.
        layers: layers of ``model`` whose inputs are measured.
        data: what ``model.predict`` accepts (array, list of arrays, dataset
            yielding ``x`` or ``(x, y)``); a few hundred representative samples.

    Returns:
        dict ``layer.name -> scale`` (float).
    """
    if not layers:
        return {}
    outputs, owners = [], []
    for layer in layers:
        for tensor in _input_tensors(layer, model):
            outputs.append(tensor)
            owners.append(layer.name)
    probe = keras.Model(model.inputs, outputs)
    values = probe.predict(data, verbose=0)
    if not isinstance(values, (list, tuple)):
        values = [values]
    absmax = {}
    for name, value in zip(owners, values):
        value = np.asarray(value)
        if value.size == 0:
            raise ValueError("activation_calibration_data must hold at least one sample; "
                             "received an empty input")
        absmax[name] = max(absmax.get(name, 0.0), float(np.max(np.abs(value))))
    return {name: (m / _common.ACTIVATION_QMAX if m > 0 else 1.0)
            for name, m in absmax.items()}


def _convert_layer(layer, bits, sparse, block_shape, mode, scale):
    """Returns ``(new_layer, None)`` or ``(None, reason)``."""
    kwargs = {"activations_scale": scale, "input_quantization": mode}
    if getattr(layer, "quantization_mode", None) is not None:
        return None, f"already quantized by Keras (quantization_mode=" \
                     f"{layer.quantization_mode!r})"
    if getattr(layer, "lora_enabled", False):
        return None, "LoRA is enabled"
    if isinstance(layer, keras.layers.Dense):
        if sparse:
            if bits == 4:
                return None, "block-sparse kernels store float or int8 blocks, not int4"
            return SparseDense.from_dense(layer, block_shape=block_shape, bits=bits,
                                          **kwargs), None
        return QuantizedDense.from_dense(layer, bits=bits, **kwargs), None
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        if bits is None:
            return None, "no block-sparse depthwise kernel (use quantize='int8'/'int4')"
        try:
            return QuantizedDepthwiseConv2D.from_depthwise_conv2d(layer, bits=bits,
                                                                  **kwargs), None
        except ValueError as error:
            return None, str(error)
    pointwise = (tuple(layer.kernel_size) == (1, 1) and tuple(layer.strides) == (1, 1)
                 and layer.groups == 1 and layer.data_format == "channels_last"
                 and layer.padding in ("valid", "same"))
    if sparse and pointwise and bits != 4:
        kernel = _common.to_numpy(layer.kernel)
        bias = _common.to_numpy(layer.bias) if layer.use_bias else None
        return SparseDense.from_kernel(
            kernel.reshape(kernel.shape[2], kernel.shape[3]), bias,
            block_shape=block_shape, activation=_common.layer_activation(layer), bits=bits,
            name=layer.name, **kwargs), None
    if bits is None:
        return None, ("block-sparse execution covers Dense and 1×1 stride-1 Conv2D only; "
                      "pass quantize='int8' to quantize this convolution")
    try:
        return QuantizedConv2D.from_conv2d(layer, bits=bits, **kwargs), None
    except ValueError as error:
        return None, str(error)


def convert(model, quantize="int8", sparse=False, block_shape=(32, 32),
            activation_calibration_data=None, input_quantization=None, strict=False,
            fold_batch_norm=True):
    """Clones a stripped float model onto the XLA execution kernels.

    Dense → :class:`QuantizedDense` (``quantize``) or :class:`SparseDense`
    (``sparse=True``; int8 blocks if ``quantize="int8"``); Conv2D →
    :class:`QuantizedConv2D` (1×1 stride-1 Conv2D → :class:`SparseDense` when
    ``sparse=True``); DepthwiseConv2D → :class:`QuantizedDepthwiseConv2D`. Every
    other layer is cloned with its weights copied. Layers of those three kinds that
    cannot be converted (e.g. ``channels_first``, a k×k convolution with
    ``sparse=True, quantize=None``) stay float and are reported by name in a
    warning (or a ``ValueError`` with ``strict=True``). First, as TFLite's
    converter does, every inference BatchNormalization right after a Dense / Conv
    layer without activation is folded into that layer's weights
    (:func:`tfcompress.quantization.fold_batch_norms`), so the quantized weights
    are the ones inference uses and the normalization pass is gone: XLA did not
    fuse it into the int8 layers' rescaling (``bench/kernels``, models table).

    Tolerance (measured in ``tests/kernels``): each converted layer stays within
    the rounding bound of its quantization steps — per output,
    ``Σ|x|·Δw/2 + Σ|w|·Δx/2 + K·Δx·Δw/4`` before the activation, with ``Δw`` the
    per-channel weight step and ``Δx`` the int8 input step. On the small MLP/CNN
    models of the test suite the whole-model logits differ from the float model by
    ≲ 3 % of their range at int8 and ≲ 30 % at int4 (a 4-bit model normally needs
    quantization-aware training); ``quantize=None, sparse=True`` is exact up to
    float summation order (~1e-5).

    Speed (CPU, under XLA; ``bench/kernels``): XLA runs the int8 GEMM and
    convolution on YNNPACK's AVX-512BW kernel (int8 widened to 16 bits, not VNNI:
    ``bench/int8_dot_kernels``), so what int8 gains over float depends on the CPU
    and the layer's shape. The int8 convolution is padded to a
    multiple of 4 input channels and, on fewer than 32 input channels, at least
    32 filters, the shapes XLA runs fast (unpadded, a 16-filter convolution on 16
    channels took 5.35× the float time at batch 64 on the AMD EPYC of the last run;
    padded 1.03-1.13×); a strided 1×1 convolution is a strided slice and one int8
    matmul; depthwise layers run as a sum over kernel taps, 0.04-0.38 of XLA's
    float DepthwiseConv2D. Converted whole models ran at 0.74-0.96 of the float
    model's time at batch 1 and 0.73-0.81 at batch 64 there (small CNN, ResNet-8,
    ResNet-20; the ResNets 1.00-1.09 and 0.75-0.84 without BatchNormalization
    folding): small layers gain little, so time the converted model where it will
    serve; ``input_quantization="none"`` keeps the int8 storage with float
    compute.

    Args:
        model: a functional or Sequential Keras model whose pruning masks are
            already baked in (``tfcompress.strip``); wrappers are rejected.
        quantize: ``"int8"``, ``"int4"`` or ``None`` (no quantization).
        sparse: store Dense (and 1×1 Conv2D) kernels block-sparse.
        block_shape: ``(bk, bn)`` blocks of the sparse kernels.
        activation_calibration_data: input data (what ``model.predict`` accepts) to
            calibrate one static int8 scale per layer input (``max |x| / 127``).
            Without it, inputs are quantized dynamically (per example / row).
        input_quantization: override: ``"dynamic"``, ``"static"`` (needs
            calibration data) or ``"none"`` (weight-only). Default: static with
            calibration data, else dynamic.
        strict: raise instead of warning when a Dense/Conv layer stays float.
        fold_batch_norm: fold inference BatchNormalization layers into the
            layer before them (default); ``False`` keeps them.

    Returns:
        A new Keras model: functional, or Sequential for a Sequential ``model``
        without BatchNormalization to fold.

    Raises:
        ValueError: on bad arguments (named with the value received), for a
            subclassed model, a model holding wrapper layers, or (``strict``) for a
            layer that cannot be converted.

    Example:
        >>> fast = tfcompress.kernels.convert(stripped, quantize="int8",
        ...                                   activation_calibration_data=x[:256])
        >>> fast_fn = tf.function(fast, jit_compile=True)
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {tuple(QUANTIZE_MODES)}; received: "
                         f"quantize={quantize!r}")
    if not isinstance(sparse, (bool, np.bool_)):
        raise ValueError(f"sparse must be a bool; received: sparse={sparse!r}")
    if not isinstance(fold_batch_norm, (bool, np.bool_)):
        raise ValueError("fold_batch_norm must be a bool; received: "
                         f"fold_batch_norm={fold_batch_norm!r}")
    block_shape = check_block_shape(block_shape)
    bits = QUANTIZE_MODES[quantize]
    if bits is None and not sparse:
        raise ValueError("nothing to convert: pass quantize='int8'/'int4' and/or "
                         "sparse=True; received: quantize=None, sparse=False")
    if bits == 4 and sparse:
        raise ValueError("block-sparse kernels store float or int8 blocks; received: "
                         "quantize='int4', sparse=True")
    if input_quantization is not None:
        _common.check_input_quantization(input_quantization)
        if bits is None and input_quantization != "none":
            raise ValueError("input_quantization needs quantize='int8'/'int4'; "
                             f"received: quantize=None, input_quantization="
                             f"{input_quantization!r}")
        if input_quantization == "static" and activation_calibration_data is None:
            raise ValueError("input_quantization='static' needs "
                             "activation_calibration_data; received: None")
    if not isinstance(model, keras.Model) or not _is_functional_or_sequential(model):
        raise ValueError("model must be a functional or Sequential keras.Model; "
                         f"received: {type(model).__name__}")
    if not model.built:
        raise ValueError(f"model must be built; received: unbuilt model {model.name!r}")
    for layer in model.layers:
        if isinstance(layer, keras.layers.Wrapper):
            raise ValueError(f"model holds the wrapper layer {layer.name!r} "
                             f"({type(layer).__name__}); strip the model first "
                             "(tfcompress.strip) so that masks are baked in")

    if fold_batch_norm and any(isinstance(layer, keras.layers.BatchNormalization)
                               for layer in model.layers):
        model = fold_batch_norms(model)
    if bits is None:
        mode = None
    elif input_quantization is not None:
        mode = input_quantization
    else:
        mode = "static" if activation_calibration_data is not None else "dynamic"
    scales = {}
    if mode == "static":
        scales = calibrate_input_scales(model, _targets(model), activation_calibration_data)

    skipped, copies = [], []

    def clone(layer):
        if isinstance(layer, keras.Model):
            if activation_calibration_data is not None and mode == "static":
                warnings.warn(f"nested model {layer.name!r}: its layers use dynamic input "
                              "quantization (calibration covers top-level layers only)",
                              stacklevel=3)
            return convert(layer, quantize=quantize, sparse=sparse,
                           block_shape=block_shape,
                           input_quantization=("dynamic" if mode == "static" else
                                               input_quantization),
                           strict=strict, fold_batch_norm=fold_batch_norm)
        if id(layer) in targets:
            scale = scales.get(layer.name) if mode == "static" else None
            new, reason = _convert_layer(layer, bits, sparse, block_shape, mode, scale)
            if new is not None:
                return new
            skipped.append(f"{layer.name} ({type(layer).__name__}): {reason}")
        new = layer.__class__.from_config(layer.get_config())
        copies.append((layer, new))
        return new

    targets = {id(layer) for layer in _targets(model)}
    converted = clone_model(model, clone_function=clone)
    for old, new in copies:
        if len(old.weights) != len(new.weights):
            raise ValueError(f"could not copy the weights of layer {old.name!r} "
                             f"({type(old).__name__}) into its clone")
        for source, target in zip(old.weights, new.weights):
            target.assign(source.value)
    if skipped:
        message = ("tfcompress.kernels.convert left these layers in float: "
                   + "; ".join(skipped))
        if strict:
            raise ValueError(message)
        warnings.warn(message, stacklevel=2)
    return converted
