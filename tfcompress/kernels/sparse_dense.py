"""``SparseDense``: a Dense layer stored as its nonzero blocks, whose XLA computation
costs in proportion to the number of nonzero blocks."""

import math

import keras
import numpy as np

from tfcompress.kernels import _common


def check_block_shape(block_shape):
    return _common.check_tuple(block_shape, 2, "block_shape")


def _sparse_core(x, blocks, block_rows, block_cols, kernel_scale, input_scale, *,
                 block_shape, grid, units, num_blocks, bits, mode):
    """``x`` (M, in) float32 -> (M, units) float32, without bias or activation.

    gather the input blocks each nonzero block reads → one batched block matmul →
    segment-sum the partial products into their output block columns.
    """
    tf = _common.tf()
    bk, bn = block_shape
    kb, nb = grid
    rows = tf.shape(x)[0]
    if num_blocks == 0:
        return tf.zeros(tf.stack([rows, units]), tf.float32)
    quantized = bits == 8 and mode != "none"
    scale = None
    if quantized:
        x, scale = _common.quantize_inputs(x, mode, input_scale, axes=(-1,))
    pad = kb * bk - x.shape[-1]
    if pad:
        x = tf.pad(x, [[0, 0], [0, pad]])
    x_blocks = tf.transpose(tf.reshape(x, tf.stack([rows, kb, bk])), (1, 0, 2))  # (kb, M, bk)
    gathered = tf.gather(x_blocks, block_rows)                                # (nnz, M, bk)
    if quantized:
        partial = tf.linalg.matmul(gathered, blocks, output_type=tf.int32)
    elif bits == 8:
        partial = tf.linalg.matmul(gathered, tf.cast(blocks, tf.float32))
    else:
        partial = tf.linalg.matmul(gathered, blocks)                          # (nnz, M, bn)
    summed = tf.math.unsorted_segment_sum(partial, block_cols, nb)            # (nb, M, bn)
    y = tf.reshape(tf.transpose(summed, (1, 0, 2)), tf.stack([rows, nb * bn]))
    if nb * bn != units:
        y = y[:, :units]
    y = tf.cast(y, tf.float32)
    if quantized:
        return y * (scale * kernel_scale)
    if bits == 8:
        return y * kernel_scale
    return y


def blocks_from_kernel(kernel, block_shape):
    """Splits a 2-D kernel ``(in, units)`` into its nonzero blocks.

    Args:
        kernel: 2-D array (float or int8); it is zero-padded to whole blocks.
        block_shape: ``(bk, bn)``.

    Returns:
        ``(blocks, rows, cols)``: the nonzero blocks ``(nnz, bk, bn)`` (the kernel's
        dtype), and their block-row (input) and block-column (output) indices,
        sorted by column then row.
    """
    bk, bn = check_block_shape(block_shape)
    kernel = np.asarray(kernel)
    if kernel.ndim != 2:
        raise ValueError(f"kernel must be 2-D (in, units); received: kernel.shape="
                         f"{kernel.shape}")
    k, n = kernel.shape
    kb, nb = math.ceil(k / bk), math.ceil(n / bn)
    padded = np.zeros((kb * bk, nb * bn), kernel.dtype)
    padded[:k, :n] = kernel
    grid = padded.reshape(kb, bk, nb, bn).transpose(2, 0, 1, 3)  # (nb, kb, bk, bn)
    nonzero = np.any(grid != 0, axis=(2, 3))                      # (nb, kb)
    cols, rows = np.nonzero(nonzero)                              # column-major order
    return (np.ascontiguousarray(grid[cols, rows]), rows.astype(np.int32),
            cols.astype(np.int32))


@keras.saving.register_keras_serializable(package="tfcompress")
class SparseDense(keras.layers.Layer):
    """Inference Dense layer on a block-sparse kernel, computed under XLA.

    The kernel ``(in, units)`` is cut into ``block_shape`` blocks (zero-padded at
    the edges); only the ``num_blocks`` nonzero ones are stored, as the weight
    ``blocks`` ``(num_blocks, bk, bn)`` with their int32 block-row and
    block-column indices. The forward pass gathers the input block each stored
    block reads, multiplies all of them in one batched matmul and sums the partial
    products per output block column (``unsorted_segment_sum``), so its cost
    scales with ``num_blocks``, not with ``in · units``. ``num_blocks = 0`` (a fully
    pruned kernel) gives ``activation(bias)``.

    With ``bits=8`` the blocks are int8 with one scale per output unit (symmetric,
    restricted range) and, unless ``input_quantization="none"``, the inputs are
    quantized to int8 and multiplied with int32 accumulation.

    Applied to the last axis, so a 1×1 stride-1 ``Conv2D`` is a ``SparseDense`` too.
    All weights are non-trainable and created in :meth:`build`.

    Args:
        units: number of outputs.
        num_blocks: number of stored (nonzero) blocks.
        block_shape: ``(bk, bn)`` — input rows × output columns per block.
        activation: activation after the bias.
        use_bias: whether to add a bias.
        bits: ``None`` (float32 blocks) or 8 (int8 blocks).
        input_quantization: for ``bits=8``: ``"dynamic"`` (default), ``"static"`` or
            ``"none"``; must be ``None`` or ``"none"`` for float blocks.
        **kwargs: base ``Layer`` arguments.

    Raises:
        ValueError: on invalid arguments (named in the message).

    Example:
        >>> sparse = SparseDense.from_dense(pruned_dense, block_shape=(32, 32))
        >>> sparse.density                      # fraction of blocks stored
    """

    def __init__(self, units, num_blocks, block_shape=(32, 32), activation=None,
                 use_bias=True, bits=None, input_quantization=None, **kwargs):
        super().__init__(**kwargs)
        self.units = _common.check_positive_int(units, "units")
        if (isinstance(num_blocks, (bool, np.bool_))
                or not isinstance(num_blocks, (int, np.integer)) or num_blocks < 0):
            raise ValueError("num_blocks must be a non-negative integer; received: "
                             f"num_blocks={num_blocks!r}")
        self.num_blocks = int(num_blocks)
        self.block_shape = check_block_shape(block_shape)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        if bits is not None:
            bits = _common.check_bits(bits, allowed=(8,))
        self.bits = bits
        if bits is None:
            if input_quantization not in (None, "none"):
                raise ValueError("input_quantization needs bits=8 (float blocks take "
                                 "float inputs); received: bits=None, "
                                 f"input_quantization={input_quantization!r}")
            input_quantization = "none"
        elif input_quantization is None:
            input_quantization = "dynamic"
        self.input_quantization = _common.check_input_quantization(input_quantization)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape):
        in_features = input_shape[-1]
        if in_features is None:
            raise ValueError(f"{self.name}: the last input dimension must be known; "
                             f"received: input_shape={tuple(input_shape)}")
        self.in_features = int(in_features)
        bk, bn = self.block_shape
        self.grid = (math.ceil(self.in_features / bk), math.ceil(self.units / bn))
        if self.num_blocks > self.grid[0] * self.grid[1]:
            raise ValueError(f"{self.name}: num_blocks must be at most {self.grid[0]} × "
                             f"{self.grid[1]} blocks for a ({self.in_features}, "
                             f"{self.units}) kernel; received: num_blocks={self.num_blocks}")
        self.blocks = self.add_weight(
            name="blocks", shape=(self.num_blocks, bk, bn),
            dtype="float32" if self.bits is None else "int8", initializer="zeros",
            trainable=False)
        self.block_rows = self.add_weight(name="block_rows", shape=(self.num_blocks,),
                                          dtype="int32", initializer="zeros",
                                          trainable=False)
        self.block_cols = self.add_weight(name="block_cols", shape=(self.num_blocks,),
                                          dtype="int32", initializer="zeros",
                                          trainable=False)
        _common.add_output_weights(self, self.units, kernel_scale=self.bits == 8)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: self.in_features})

    @property
    def density(self):
        """Fraction of the kernel's blocks that are stored."""
        return self.num_blocks / float(self.grid[0] * self.grid[1])

    @classmethod
    def from_kernel(cls, kernel, bias=None, block_shape=(32, 32), activation=None,
                    bits=None, activations_scale=None, input_quantization=None,
                    name=None):
        """Builds a ``SparseDense`` from a 2-D float kernel ``(in, units)``.

        Args:
            kernel: float array ``(in, units)``, pruned (zeros are not stored).
            bias: float array ``(units,)`` or ``None`` (no bias).
            block_shape: ``(bk, bn)``.
            activation: activation of the layer.
            bits: ``None`` (float blocks) or 8.
            activations_scale: calibrated input scale (``bits=8``, static mode).
            input_quantization: see the class; ``None`` picks static if a scale is
                given, else dynamic (``bits=8``) / none (float).
            name: layer name.

        Returns:
            A built ``SparseDense``.
        """
        block_shape = check_block_shape(block_shape)
        kernel = np.asarray(kernel, np.float32)
        if kernel.ndim != 2:
            raise ValueError(f"kernel must be 2-D (in, units); received: kernel.shape="
                             f"{kernel.shape}")
        scale = None
        stored = kernel
        if bits is not None:
            bits = _common.check_bits(bits, allowed=(8,))
            mode, act_scale = _common.resolve_input_quantization(input_quantization,
                                                                 activations_scale)
            stored, scale = _common.quantize_per_channel(kernel, 8, axis=1)
        else:
            if activations_scale is not None:
                raise ValueError("activations_scale needs bits=8; received: bits=None, "
                                 f"activations_scale={activations_scale!r}")
            mode, act_scale = input_quantization, None
        blocks, rows, cols = blocks_from_kernel(stored, block_shape)
        new = cls(units=kernel.shape[1], num_blocks=len(rows), block_shape=block_shape,
                  activation=activation, use_bias=bias is not None, bits=bits,
                  input_quantization=mode, name=name)
        new.build((None, kernel.shape[0]))
        new.blocks.assign(blocks)
        new.block_rows.assign(rows)
        new.block_cols.assign(cols)
        _common.assign_output_weights(new, new.units, scale, bias, act_scale)
        return new

    @classmethod
    def from_dense(cls, layer, block_shape=(32, 32), bits=None, activations_scale=None,
                   input_quantization=None, name=None):
        """Builds a ``SparseDense`` equal to a (pruned) float Dense layer.

        Every block with at least one nonzero weight is stored, so the result is
        exact for float blocks whatever the sparsity pattern; the speed-up comes
        from blocks that are entirely zero (block pruning).

        Args:
            layer: a built ``keras.layers.Dense`` with its masks baked in.
            block_shape: ``(bk, bn)``, positive ints.
            bits: ``None`` (float blocks) or 8 (int8 blocks, per-unit scales).
            activations_scale: calibrated input scale (``bits=8``, static mode).
            input_quantization: see the class.
            name: name of the new layer (defaults to the float layer's name).

        Returns:
            A built ``SparseDense``.

        Raises:
            ValueError: if ``layer`` is not a built Dense, or on bad arguments.
        """
        if not isinstance(layer, keras.layers.Dense) or not layer.built:
            raise ValueError("layer must be a built keras.layers.Dense; received: "
                             f"layer={layer!r}")
        kernel = _common.to_numpy(layer.kernel)
        bias = _common.to_numpy(layer.bias) if layer.use_bias else None
        return cls.from_kernel(kernel, bias, block_shape=block_shape,
                               activation=_common.layer_activation(layer), bits=bits,
                               activations_scale=activations_scale,
                               input_quantization=input_quantization,
                               name=name or layer.name)

    def dense_kernel(self):
        """The (dequantized) kernel ``(in, units)`` as a dense numpy array."""
        bk, bn = self.block_shape
        kb, nb = self.grid
        blocks = _common.to_numpy(self.blocks).astype(np.float32)
        dense = np.zeros((kb, nb, bk, bn), np.float32)
        dense[_common.to_numpy(self.block_rows),
              _common.to_numpy(self.block_cols)] = blocks
        dense = dense.transpose(0, 2, 1, 3).reshape(kb * bk, nb * bn)
        dense = dense[:self.in_features, :self.units]
        if self.kernel_scale is not None:
            dense = dense * _common.to_numpy(self.kernel_scale)
        return dense

    def call(self, inputs):
        core = _common.compiled(
            _sparse_core, block_shape=self.block_shape, grid=self.grid, units=self.units,
            num_blocks=self.num_blocks, bits=self.bits, mode=self.input_quantization)
        return _common.apply_over_last_axis(
            self, inputs, core, _common.read(self.blocks), _common.read(self.block_rows),
            _common.read(self.block_cols), _common.read(self.kernel_scale),
            _common.read(self.input_scale))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = {
            "units": self.units,
            "num_blocks": self.num_blocks,
            "block_shape": self.block_shape,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "bits": self.bits,
            "input_quantization": self.input_quantization,
        }
        return {**super().get_config(), **config}
