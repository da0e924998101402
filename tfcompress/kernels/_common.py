"""Shared pieces of the execution kernels: validation, host-side weight
quantization (numpy) and the in-graph input quantizers (TensorFlow).

TensorFlow is imported lazily (:func:`tf`), so ``import tfcompress`` works on a
machine without TensorFlow; the kernel layers themselves need the TensorFlow
backend because they compute with XLA-only operations.

Quantization scheme (survey 003, "uniform symmetric quantization"; the same grid as
eq. 4.13 of the dissertation 002): symmetric, restricted range, zero maps to zero.

* Weights: one scale per output channel, ``Δ_j = max_i |w_ij| / qmax`` with
  ``qmax = 2^(bits-1) - 1`` (127 at 8 bits, 7 at 4 bits),
  ``w_q = clip(round(w / Δ_j), -qmax, qmax)``.
* Activations (inputs of a layer), always 8 bits (``-127..127``):
  ``"static"`` — one calibrated per-tensor scale stored in the layer;
  ``"dynamic"`` — one scale per row (per example, per pixel for convolutions)
  computed on the fly from ``max |x|``; ``"none"`` — weight-only: float inputs,
  the int weights are dequantized inside the compiled computation.
"""

import functools
import math

import keras
import numpy as np

INPUT_QUANTIZATION_MODES = ("dynamic", "static", "none")
WEIGHT_BITS = (8, 4)
ACTIVATION_QMAX = 127.0


def tf():
    """Imports TensorFlow on first use and checks the Keras backend."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "tfcompress.kernels layers compute with XLA through TensorFlow and need "
            "the TensorFlow Keras backend; received: KERAS_BACKEND="
            f"{keras.backend.backend()!r}")
    import tensorflow

    return tensorflow


_COMPILED = {}


def compiled(fn, **static):
    """``fn`` with its static (Python) arguments bound, as an XLA-compiled function.

    One ``tf.function(jit_compile=True, reduce_retracing=True)`` per distinct
    ``(fn, static)``, shared by all layers of the same configuration. Called eagerly
    (or from a graph that is not XLA-compiled) the kernel is compiled by XLA on its
    own, once per input shape; called from an outer ``jit_compile=True`` function it
    is inlined into the enclosing XLA computation.
    """
    key = (fn, tuple(sorted(static.items())))
    function = _COMPILED.get(key)
    if function is None:
        function = tf().function(functools.partial(fn, **static), jit_compile=True,
                                 autograph=False, reduce_retracing=True)
        _COMPILED[key] = function
    return function


# --------------------------------------------------------------------------- validation
def check_bits(bits, allowed=WEIGHT_BITS, argument="bits"):
    ok = (isinstance(bits, (int, np.integer)) and not isinstance(bits, (bool, np.bool_))
          and int(bits) in allowed)
    if not ok:
        raise ValueError(
            f"{argument} must be one of {tuple(allowed)}; received: {argument}={bits!r}")
    return int(bits)


def check_input_quantization(mode):
    if mode not in INPUT_QUANTIZATION_MODES:
        raise ValueError(
            f"input_quantization must be one of {INPUT_QUANTIZATION_MODES}; received: "
            f"input_quantization={mode!r}")
    return mode


def check_positive_int(value, argument):
    ok = (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
          and int(value) > 0)
    if not ok:
        raise ValueError(f"{argument} must be a positive integer; received: "
                         f"{argument}={value!r}")
    return int(value)


def check_tuple(value, n, argument, allow_zero=False):
    """Normalizes an int or an ``n``-sequence of positive ints (kernel size, strides)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (int(value),) * n
    try:
        value = tuple(value)
    except TypeError:
        raise ValueError(f"{argument} must be an int or a tuple of {n} ints; received: "
                         f"{argument}={value!r}") from None
    lowest = 0 if allow_zero else 1
    ok = len(value) == n and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
        and v >= lowest for v in value)
    if not ok:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{argument} must be a {kind} int or a tuple of {n} {kind} ints; "
                         f"received: {argument}={value!r}")
    return tuple(int(v) for v in value)


def check_activations_scale(scale):
    if scale is None:
        return None
    try:
        value = float(scale)
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"activations_scale must be a positive finite float; received: "
                         f"activations_scale={scale!r}")
    return value


def resolve_input_quantization(input_quantization, activations_scale):
    """``from_*`` constructors: ``None`` means static if a scale is given, else dynamic."""
    scale = check_activations_scale(activations_scale)
    if input_quantization is None:
        input_quantization = "static" if scale is not None else "dynamic"
    mode = check_input_quantization(input_quantization)
    if mode == "static" and scale is None:
        raise ValueError("input_quantization='static' needs a calibrated scale; received: "
                         "activations_scale=None")
    if mode != "static" and scale is not None:
        raise ValueError(f"activations_scale is only used with input_quantization='static'; "
                         f"received: input_quantization={mode!r}, activations_scale={scale!r}")
    return mode, scale


# --------------------------------------------------------------------------- host-side weights
def qmax(bits):
    return 2 ** (bits - 1) - 1


def quantize_per_channel(w, bits, axis=-1):
    """Symmetric restricted-range per-channel quantization of a float array.

    Args:
        w: float array.
        bits: 8 or 4.
        axis: the output-channel axis (kept); all other axes are reduced.

    Returns:
        ``(w_q, scale)``: ``int8`` array of ``w``'s shape with values in
        ``[-qmax, qmax]``, and the ``float32`` scale per channel (an all-zero
        channel gets scale 1 so that it dequantizes to exact zeros).
    """
    w = np.asarray(w, dtype=np.float64)
    axis = axis % w.ndim
    reduce_axes = tuple(i for i in range(w.ndim) if i != axis)
    q = qmax(bits)
    absmax = np.max(np.abs(w), axis=reduce_axes) if w.size else np.zeros(w.shape[axis])
    scale = np.where(absmax > 0, absmax / q, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    w_q = np.clip(np.rint(w / scale.astype(np.float64).reshape(shape)), -q, q)
    return w_q.astype(np.int8), scale


def to_numpy(value):
    """A Keras variable or tensor as a numpy array (``Tensor.numpy()`` where it
    exists: ``keras.ops.convert_to_numpy`` trips numpy 2's ``__array__(copy=)``
    deprecation on TensorFlow tensors)."""
    tensor = keras.ops.convert_to_tensor(value)
    method = getattr(tensor, "numpy", None)
    return np.asarray(method() if method is not None else keras.ops.convert_to_numpy(tensor))


def layer_activation(layer):
    """The ``activation`` of a float layer as a serializable object (or ``None``)."""
    act = getattr(layer, "activation", None)
    if act is None or act is keras.activations.linear:
        return None
    return act


# --------------------------------------------------------------------------- in-graph inputs
def quantize_inputs(x, mode, input_scale=None, axes=(-1,), scale_from=None):
    """Quantizes a float tensor to int8 (``-127..127``).

    Args:
        x: float tensor.
        mode: ``"static"`` (use ``input_scale``) or ``"dynamic"``.
        input_scale: the stored scalar scale (static mode).
        axes: dynamic mode: the axes one scale covers — the contraction axis of a
            matmul (``(-1,)``: one scale per row), all non-batch axes of a
            convolution (one scale per example, since a window mixes pixels).
        scale_from: dynamic mode: the tensor whose max |·| sets the scale, when
            ``x`` is a slice of it (default: ``x``).

    Returns:
        ``(x_q, scale)``: ``x_q`` int8 and the scale that multiplies the int32
        accumulator — a scalar (static) or a tensor broadcastable to it (dynamic).
    """
    tf_ = tf()
    if mode == "static":
        scale = tf_.cast(input_scale, x.dtype)
    else:
        source = x if scale_from is None else scale_from
        absmax = tf_.reduce_max(tf_.abs(source), axis=list(axes), keepdims=True)
        scale = tf_.where(absmax > 0, absmax / ACTIVATION_QMAX, tf_.ones_like(absmax))
    x_q = tf_.cast(tf_.clip_by_value(tf_.round(x / scale), -ACTIVATION_QMAX,
                                     ACTIVATION_QMAX), tf_.int8)
    return x_q, scale


def read(variable):
    """The current value of a Keras variable as a tensor (``None`` passes through).

    The kernels' compiled functions are shared by every layer of the same
    configuration, so they must receive tensors, never the variables themselves
    (a ``tf.function`` traced with a variable argument keeps referring to it).
    """
    if variable is None:
        return None
    return tf().convert_to_tensor(variable.value)


def as_float32(x):
    tf_ = tf()
    x = tf_.convert_to_tensor(x)
    return x if x.dtype == tf_.float32 else tf_.cast(x, tf_.float32)


# --------------------------------------------------------------------------- layer pieces
def add_output_weights(layer, units, kernel_scale=True):
    """Adds the float weights every kernel layer keeps beside its stored kernel.

    Sets ``layer.kernel_scale`` (one scale per output unit, or ``None`` when
    ``kernel_scale`` is false: float storage), ``layer.input_scale`` (the calibrated
    scalar of ``input_quantization="static"``, else ``None``) and ``layer.bias``
    (``None`` without ``use_bias``). All are non-trainable: these layers are for
    inference.
    """
    def add(name, shape, initializer):
        return layer.add_weight(name=name, shape=shape, dtype="float32",
                                initializer=initializer, trainable=False)

    layer.kernel_scale = (add("kernel_scale", (units,), "ones")
                          if kernel_scale else None)
    layer.input_scale = (add("input_scale", (), "ones")
                         if layer.input_quantization == "static" else None)
    layer.bias = add("bias", (units,), "zeros") if layer.use_bias else None


def assign_output_weights(layer, units, kernel_scale, bias, activations_scale):
    """Fills the weights made by :func:`add_output_weights`.

    Raises:
        ValueError: a static-input layer without ``activations_scale``.
    """
    if layer.kernel_scale is not None:
        layer.kernel_scale.assign(kernel_scale)
    if layer.input_scale is not None:
        if activations_scale is None:
            raise ValueError(f"{layer.name}: input_quantization='static' needs "
                             "activations_scale; received: activations_scale=None")
        layer.input_scale.assign(np.float32(activations_scale))
    if layer.bias is not None:
        layer.bias.assign(np.zeros(units, np.float32) if bias is None
                          else np.asarray(bias, np.float32))


def finish_output(layer, y):
    """Adds the bias, applies the activation and casts to the compute dtype."""
    if layer.bias is not None:
        y = y + layer.bias.value
    if layer.activation is not None:
        y = layer.activation(y)
    return tf().cast(y, layer.compute_dtype) if layer.compute_dtype != "float32" else y


def apply_over_last_axis(layer, inputs, core, *args):
    """Runs a 2-D ``core(x, *args) -> (M, units)`` on inputs of any rank ≥ 2.

    Leading axes are flattened into rows and restored afterwards, as Keras's Dense
    does; bias, activation and the dtype cast follow (:func:`finish_output`).
    """
    tf_ = tf()
    x = as_float32(inputs)
    rank = x.shape.rank
    if rank != 2:
        lead = tf_.shape(x)[:-1]
        x = tf_.reshape(x, (-1, layer.in_features))
    y = core(x, *args)
    if rank != 2:
        y = tf_.reshape(y, tf_.concat([lead, [layer.units]], axis=0))
    return finish_output(layer, y)
