"""SparseDense equals the dense layer at 0 %, 50 %, 95 % and 100 % block sparsity,
for shapes not divisible by the block, batch 1 and N-D inputs, eager and under XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kernels_testutil import assert_within
from kernels_testutil import block_sparse_kernel
from kernels_testutil import fake_quant_input
from kernels_testutil import input_step
from kernels_testutil import rounding_bound
from kernels_testutil import weight_step
from tfcompress.kernels import SparseDense


def _dense_with(kernel, bias, activation="relu"):
    layer = keras.layers.Dense(kernel.shape[1], activation=activation)
    layer.build((None, kernel.shape[0]))
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)
    return layer


ODD = ((70, 45), (16, 8), (5, 70))        # not divisible by the block: padded
BATCH1 = ((64, 96), (32, 32), (1, 64))
ND = ((40, 24), (8, 8), (2, 3, 40))        # N-D input


@pytest.mark.parametrize("sparsity,case", [
    (0.0, ODD), (0.5, ODD), (0.95, ODD), (1.0, ODD),
    (0.0, BATCH1), (0.95, BATCH1), (0.5, ND)])
def test_equals_dense(sparsity, case):
    shape, block_shape, x_shape = case
    rng = np.random.default_rng(0)
    kernel, kept = block_sparse_kernel(rng, shape, block_shape, sparsity)
    dense = _dense_with(kernel, rng.standard_normal(shape[1]).astype("float32"))
    layer = SparseDense.from_dense(dense, block_shape=block_shape)
    assert layer.num_blocks == kept
    assert layer.density == pytest.approx(kept / (-(-shape[0] // block_shape[0])
                                                  * -(-shape[1] // block_shape[1])))
    np.testing.assert_array_equal(layer.dense_kernel(), kernel)
    x = rng.standard_normal(x_shape).astype("float32")
    expected = dense(x).numpy()
    eager = layer(x).numpy()
    xla = tf.function(layer, jit_compile=True)(tf.constant(x)).numpy()
    assert eager.shape == expected.shape
    np.testing.assert_allclose(eager, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xla, expected, rtol=1e-5, atol=1e-5)
    if sparsity == 1.0:  # no blocks: activation(bias)
        np.testing.assert_allclose(eager, np.broadcast_to(
            np.maximum(dense.bias.numpy(), 0), expected.shape), atol=0)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_blocks_within_rounding_bound(mode):
    rng = np.random.default_rng(1)
    kernel, _ = block_sparse_kernel(rng, (50, 40), (16, 16), 0.5)
    dense = _dense_with(kernel, rng.standard_normal(40).astype("float32"), None)
    x = rng.standard_normal((3, 50)).astype("float32")
    static = float(np.abs(x).max() / 127) if mode == "static" else None
    layer = SparseDense.from_dense(dense, block_shape=(16, 16), bits=8,
                                   activations_scale=static, input_quantization=mode)
    assert layer.blocks.dtype == "int8"
    dx = input_step(x, mode, static)
    dw = np.broadcast_to(weight_step(kernel, 8), kernel.shape)
    bound = rounding_bound(np.matmul, x, kernel, dx, dw)
    eager = layer(x).numpy()
    simulated = fake_quant_input(x, dx) @ layer.dense_kernel() + dense.bias.numpy()
    np.testing.assert_allclose(eager, simulated, rtol=1e-4, atol=1e-4)
    assert_within(eager, dense(x).numpy(), bound)
    xla = tf.function(layer, jit_compile=True)(tf.constant(x)).numpy()
    np.testing.assert_allclose(xla, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_blocks,bits", [(0, None), (3, 8)])
def test_keras_roundtrip(tmp_keras_path, num_blocks, bits):
    rng = np.random.default_rng(2)
    sparsity = 1.0 if num_blocks == 0 else 0.5
    kernel, kept = block_sparse_kernel(rng, (20, 24), (8, 8), sparsity)
    dense = _dense_with(kernel, rng.standard_normal(24).astype("float32"))
    layer = SparseDense.from_dense(dense, block_shape=(8, 8), bits=bits, name="sparse")
    assert layer.num_blocks == kept
    inp = keras.Input((20,))
    model = keras.Model(inp, layer(inp))
    model.save(tmp_keras_path)
    loaded = keras.models.load_model(tmp_keras_path)
    x = rng.standard_normal((2, 20)).astype("float32")
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    new = loaded.get_layer("sparse")
    np.testing.assert_array_equal(new.block_rows.numpy(), layer.block_rows.numpy())
    assert new.get_config() == layer.get_config()


@pytest.mark.parametrize("kwargs,needle", [
    (dict(units=4, num_blocks=1, block_shape=(0, 32)), "block_shape"),
    (dict(units=4, num_blocks=1, block_shape=(32, -1)), "block_shape"),
    (dict(units=4, num_blocks=-1), "num_blocks=-1"),
    (dict(units=4, num_blocks=1, bits=4), "bits=4"),
    (dict(units=4, num_blocks=1, input_quantization="static"), "input_quantization"),
])
def test_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        SparseDense(**kwargs)


def test_too_many_blocks_and_bad_from_dense():
    layer = SparseDense(units=4, num_blocks=5, block_shape=(4, 4))
    with pytest.raises(ValueError, match="num_blocks=5"):
        layer.build((None, 8))
    dense = _dense_with(np.ones((4, 4), "float32"), np.zeros(4, "float32"))
    with pytest.raises(ValueError, match="block_shape"):
        SparseDense.from_dense(dense, block_shape=(0, 4))
