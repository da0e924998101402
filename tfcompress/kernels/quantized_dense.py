"""``QuantizedDense``: a Dense layer that stores int8 (or packed int4) weights and
computes on them under XLA."""

import functools
import math

import keras
import numpy as np

from tfcompress.kernels import _common
from tfcompress.kernels.packing import pack_int4
from tfcompress.kernels.packing import unpack_int4_graph


def _weight_only(x, kernel, kernel_scale, input_scale=None):
    """``(x / r) · dequant(W)ᵀ · r`` with ``r`` the static input scale if there is
    one, else the max |x| of each row.

    XLA fuses the int8 -> float conversion (and the int4 decoding) into the dot,
    making it a loop fusion; its CPU fusion pass would then also pull in whatever
    produced ``x`` (the previous layer's bias, activation, residual ...) and
    recompute it for every output. A division is an "expensive" producer that
    the pass keeps out of a consumer reusing its elements, so dividing by the
    row scale materializes the row once (2× faster per layer in a chain of
    layers, bench/kernels); the scale is undone on the outputs, so the result
    equals the plain product up to float rounding. The row is then gathered
    through an index vector: the input of a Dense after ``Flatten`` would reach
    the loop as a view of an N-D buffer, whose N-D index arithmetic stops LLVM
    from vectorizing the loop (2× slower); the gather writes a plain 2-D row.
    """
    tf = _common.tf()
    if input_scale is not None:  # a stored scalar: no reduction to run
        row_scale = input_scale
    else:
        absmax = tf.reduce_max(tf.abs(x), axis=-1, keepdims=True)
        row_scale = tf.where(absmax > 0, absmax, tf.ones_like(absmax))
    rows = tf.gather(x / row_scale, tf.range(tf.shape(x)[-1]), axis=1)
    y = tf.linalg.matmul(rows, tf.cast(kernel, tf.float32), transpose_b=True)
    return y * (row_scale * kernel_scale)


def _dequantized_gemm(x, kernel, kernel_scale):
    """Weight-only product of a batch: ``(x · float(W)ᵀ) · s_w``, one float GEMM.

    The int8 -> float conversion of the kernel is materialized once per call: the
    row-at-a-time form of :func:`_weight_only` makes XLA lay the gathered rows out
    input-major, a transposed-operand GEMM 10× slower than float Dense at batch 64
    (bench/kernels).
    """
    tf = _common.tf()
    return tf.linalg.matmul(x, tf.cast(kernel, tf.float32), transpose_b=True) * kernel_scale


def _int8_inputs(x, kernel, kernel_scale, input_scale, mode):
    tf = _common.tf()
    x_q, scale = _common.quantize_inputs(x, mode, input_scale, axes=(-1,))
    acc = tf.linalg.matmul(x_q, kernel, transpose_b=True, output_type=tf.int32)
    return tf.cast(acc, tf.float32) * (scale * kernel_scale)


def _dense_core(x, kernel, kernel_scale, input_scale, bits, units, mode):
    """``x`` (M, in) float32 -> (M, units) float32, without bias or activation.

    A single row (``M = 1``) always takes the weight-only product: XLA's CPU
    backend runs a vector × int8-matrix product as one fused pass over the int8
    weights, into which it would also fuse — and recompute for every output — the
    quantization of the input row; with float inputs (materialized, see
    :func:`_weight_only`) that pass vectorizes as float FMAs and runs 2–5× faster
    than XLA's int8 × int8 → int32 loop, which LLVM does not turn into VNNI.
    A batch takes the int8 GEMM (:func:`_int8_inputs`), or, weight-only, one float
    GEMM on the dequantized kernel (:func:`_dequantized_gemm`).
    """
    tf = _common.tf()
    if bits == 4:
        # pairs of output rows share a byte: decoding is a reshape of the two nibble
        # planes, which XLA fuses into the batch-1 dot.
        kernel = unpack_int4_graph(kernel, units, axis=0)
    if mode == "none":
        batched = functools.partial(_dequantized_gemm, x, kernel, kernel_scale)
    else:
        batched = functools.partial(_int8_inputs, x, kernel, kernel_scale, input_scale, mode)
    rows = x.shape[0]
    if rows is not None:
        return _weight_only(x, kernel, kernel_scale, input_scale) if rows == 1 else batched()
    return tf.cond(tf.equal(tf.shape(x)[0], 1),
                   lambda: _weight_only(x, kernel, kernel_scale, input_scale), batched)


@keras.saving.register_keras_serializable(package="tfcompress")
class QuantizedDense(keras.layers.Layer):
    """Inference Dense layer on int8 / packed-int4 weights, computed under XLA.

    ``y = activation(dequant(W_q x_q) + b)`` with per-output-channel weight scales
    (symmetric, restricted range, see :mod:`tfcompress.kernels._common`) and, unless
    ``input_quantization="none"``, int8 inputs: the product is an
    int8 × int8 → int32 matmul (``tf.linalg.matmul(..., output_type=tf.int32)``),
    rescaled once by ``input_scale · kernel_scale``.

    A single input row (batch 1) is multiplied in float with the int8 weights
    instead (the weight-only product, exact in the input up to float rounding):
    XLA's CPU backend runs a vector × matrix product as one fused pass over the
    int8 weights — faster than its int8 × int8 one, which would moreover recompute
    the input quantization for every output inside that pass. So batch-1 results
    are slightly *more* accurate than the same row in a larger batch.

    The kernel is stored *output-major*, shape ``(units, in)`` (``(ceil(units / 2),
    in)`` for ``bits=4``, pairs of output rows packed into one byte): with this
    layout XLA on CPU runs the batch-1 product as a contiguous dot per output that
    reads the int8 weights once (decoding int4 on the fly); the input-major layout
    ``(in, units)`` makes XLA emit a strided loop that is ~10× slower than float.

    All weights are non-trainable (the layer is for inference); they are created in
    :meth:`build`, so a ``.keras`` file restores them. Needs the TensorFlow backend.

    Args:
        units: number of outputs.
        activation: activation applied after the bias (any Keras activation).
        use_bias: whether the layer adds a bias.
        bits: weight bits, 8 or 4 (int4 values ``-7..7`` packed two per byte and
            unpacked inside the compiled computation).
        input_quantization: ``"dynamic"`` (default; one int8 scale per input row
            computed on the fly), ``"static"`` (a calibrated per-tensor scale stored
            in the ``input_scale`` weight) or ``"none"`` (weight-only: float inputs,
            the weights are dequantized inside the computation; saves memory but is
            only faster than float at batch 1 — at batch 2–16 XLA fuses the
            int8 → float conversion into a loop-emitted dot that is slower).
        **kwargs: base ``Layer`` arguments (``name``, ``dtype``, ...).

    Raises:
        ValueError: for a non-positive ``units``, ``bits`` not in (8, 4) or an
            unknown ``input_quantization``.

    Example:
        >>> q = QuantizedDense.from_dense(dense_layer)            # int8, dynamic inputs
        >>> q4 = QuantizedDense.from_dense(dense_layer, bits=4, activations_scale=0.02)
    """

    def __init__(self, units, activation=None, use_bias=True, bits=8,
                 input_quantization="dynamic", **kwargs):
        super().__init__(**kwargs)
        self.units = _common.check_positive_int(units, "units")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.bits = _common.check_bits(bits)
        self.input_quantization = _common.check_input_quantization(input_quantization)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.supports_masking = True

    # ------------------------------------------------------------------ weights
    def build(self, input_shape):
        in_features = input_shape[-1]
        if in_features is None:
            raise ValueError(f"{self.name}: the last input dimension must be known; "
                             f"received: input_shape={tuple(input_shape)}")
        self.in_features = int(in_features)
        rows = self.units if self.bits == 8 else math.ceil(self.units / 2)
        self.kernel = self.add_weight(name="kernel", shape=(rows, self.in_features),
                                      dtype="int8", initializer="zeros", trainable=False)
        _common.add_output_weights(self, self.units)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: self.in_features})

    def set_float_weights(self, kernel, bias=None, activations_scale=None):
        """Quantizes a float kernel ``(in, units)`` into this (built) layer.

        Args:
            kernel: float array ``(in, units)`` (Keras Dense layout).
            bias: float array ``(units,)`` or ``None``.
            activations_scale: the calibrated input scale (static mode only).
        """
        kernel = np.asarray(kernel, dtype=np.float32)
        if kernel.shape != (self.in_features, self.units):
            raise ValueError(f"kernel must have shape {(self.in_features, self.units)}; "
                             f"received: kernel.shape={kernel.shape}")
        w_q, scale = _common.quantize_per_channel(kernel.T, self.bits, axis=0)
        if self.bits == 4:
            w_q = pack_int4(w_q, axis=0)
        self.kernel.assign(w_q)
        _common.assign_output_weights(self, self.units, scale, bias, activations_scale)

    @classmethod
    def from_dense(cls, layer, activations_scale=None, bits=8, input_quantization=None,
                   name=None):
        """Builds a ``QuantizedDense`` equal (up to quantization) to a float Dense.

        Args:
            layer: a built ``keras.layers.Dense`` (masks already baked in).
            activations_scale: calibrated per-tensor scale of the layer's inputs
                (``max |x| / 127`` over calibration data); implies static input
                quantization.
            bits: weight bits, 8 or 4.
            input_quantization: ``None`` (static if ``activations_scale`` is given,
                else dynamic), ``"dynamic"``, ``"static"`` or ``"none"``.
            name: name of the new layer (defaults to the float layer's name).

        Returns:
            A built ``QuantizedDense`` holding the quantized weights.

        Raises:
            ValueError: if ``layer`` is not a built Dense layer, or on bad arguments.
        """
        if not isinstance(layer, keras.layers.Dense) or not layer.built:
            raise ValueError("layer must be a built keras.layers.Dense; received: "
                             f"layer={layer!r}")
        bits = _common.check_bits(bits)
        mode, scale = _common.resolve_input_quantization(input_quantization,
                                                         activations_scale)
        kernel = _common.to_numpy(layer.kernel)
        bias = _common.to_numpy(layer.bias) if layer.use_bias else None
        new = cls(units=layer.units, activation=_common.layer_activation(layer),
                  use_bias=layer.use_bias, bits=bits, input_quantization=mode,
                  name=name or layer.name)
        new.build((None, kernel.shape[0]))
        new.set_float_weights(kernel, bias, scale)
        return new

    def dequantized_kernel(self):
        """The float kernel ``(in, units)`` this layer computes with (numpy)."""
        from tfcompress.kernels.packing import unpack_int4

        w = _common.to_numpy(self.kernel)
        if self.bits == 4:
            w = unpack_int4(w, self.units, axis=0)
        return (w.astype(np.float32) * _common.to_numpy(self.kernel_scale)[:, None]).T

    # ------------------------------------------------------------------ compute
    def call(self, inputs):
        core = _common.compiled(_dense_core, bits=self.bits, units=self.units,
                                mode=self.input_quantization)
        return _common.apply_over_last_axis(
            self, inputs, core, _common.read(self.kernel), _common.read(self.kernel_scale),
            _common.read(self.input_scale))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = {
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "bits": self.bits,
            "input_quantization": self.input_quantization,
        }
        return {**super().get_config(), **config}
