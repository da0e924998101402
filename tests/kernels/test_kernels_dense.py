"""QuantizedDense: matches the float Dense within the quantization rounding bound,
eager and under XLA, for odd shapes, batch 1, N-D inputs, int8 and packed int4."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from kernels_testutil import assert_within
from kernels_testutil import fake_quant_input
from kernels_testutil import input_step
from kernels_testutil import rounding_bound
from kernels_testutil import weight_step
from tfcompress.kernels import QuantizedDense

PARAMS = (  # (input shape, units, input quantization, bits)
    [((7, 64), 33, mode, bits) for mode in ("dynamic", "static", "none") for bits in (8, 4)]
    + [((1, 17), 5, "dynamic", 8), ((1, 17), 5, "static", 4),  # batch 1: weight-only product
       ((1, 17), 5, "none", 4), ((2, 17), 5, "dynamic", 4), ((2, 17), 5, "static", 8),
       ((3, 4, 9), 6, "dynamic", 8), ((3, 4, 9), 6, "none", 8)]  # N-D input: last axis
)


def _float_dense(in_features, units, activation, rng):
    layer = keras.layers.Dense(units, activation=activation)
    layer.build((None, in_features))
    layer.kernel.assign(rng.standard_normal((in_features, units)).astype("float32") * 0.2)
    layer.bias.assign(rng.standard_normal(units).astype("float32") * 0.1)
    return layer


@pytest.mark.parametrize("shape,units,mode,bits", PARAMS)
def test_matches_float_within_rounding_bound(shape, units, mode, bits):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype("float32")
    dense = _float_dense(shape[-1], units, "relu", rng)
    static = float(np.abs(x).max() / 127) if mode == "static" else None
    q = QuantizedDense.from_dense(dense, activations_scale=static, bits=bits,
                                  input_quantization=mode)
    kernel = dense.kernel.numpy()
    # a single row is multiplied in float with the int8 weights (see the class doc)
    dx = input_step(x, "none" if np.prod(shape[:-1]) == 1 else mode, static)
    dw = np.broadcast_to(weight_step(kernel, bits), kernel.shape)
    bound = rounding_bound(lambda a, w: np.matmul(a, w), x, kernel, dx, dw)
    reference = dense(x).numpy()
    # the same arithmetic simulated in float64: fake-quantized inputs and weights
    simulated = np.maximum(fake_quant_input(x, dx) @ q.dequantized_kernel()
                           + dense.bias.numpy(), 0)
    eager = q(x).numpy()
    xla = tf.function(q, jit_compile=True)(tf.constant(x)).numpy()
    assert eager.shape == reference.shape
    np.testing.assert_allclose(eager, simulated, rtol=1e-4, atol=1e-4)
    assert_within(eager, reference, bound)
    np.testing.assert_allclose(xla, eager, rtol=1e-5, atol=1e-6)


def test_dequantized_kernel_step_and_storage():
    rng = np.random.default_rng(1)
    dense = _float_dense(9, 4, None, rng)
    for bits, stored in ((8, (4, 9)), (4, (2, 9))):  # int4: pairs of output rows
        q = QuantizedDense.from_dense(dense, bits=bits)
        assert q.kernel.dtype == "int8" and tuple(q.kernel.shape) == stored
        step = weight_step(dense.kernel.numpy(), bits)
        assert np.all(np.abs(q.dequantized_kernel() - dense.kernel.numpy())
                      <= step / 2 + 1e-7)
        assert np.max(np.abs(keras.ops.convert_to_numpy(q.kernel))) <= 127


def test_zero_kernel_and_zero_input_are_exact():
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    dense.kernel.assign(np.zeros((4, 3), "float32"))
    dense.bias.assign(np.array([1.0, -2.0, 0.5], "float32"))
    q = QuantizedDense.from_dense(dense)
    np.testing.assert_array_equal(q(np.ones((2, 4), "float32")).numpy(),
                                  np.tile([1.0, -2.0, 0.5], (2, 1)))
    q2 = QuantizedDense.from_dense(_float_dense(4, 3, None, np.random.default_rng(2)))
    np.testing.assert_allclose(q2(np.zeros((1, 4), "float32")).numpy(),
                               q2.bias.numpy()[None], atol=0)


def test_keras_roundtrip_in_model(tmp_keras_path):
    rng = np.random.default_rng(3)
    dense = _float_dense(10, 6, "tanh", rng)
    x = rng.standard_normal((4, 10)).astype("float32")
    inp = keras.Input((10,))
    for bits, mode in ((8, "static"), (4, "dynamic")):
        layer = QuantizedDense.from_dense(
            dense, bits=bits, input_quantization=mode,
            activations_scale=0.05 if mode == "static" else None, name=f"q{bits}")
        model = keras.Model(inp, layer(inp))
        model.save(tmp_keras_path)
        loaded = keras.models.load_model(tmp_keras_path)
        new = loaded.get_layer(f"q{bits}")
        assert isinstance(new, QuantizedDense) and new.bits == bits
        assert new.input_quantization == mode and new.kernel.dtype == "int8"
        np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
        clone = QuantizedDense.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("kwargs,needle", [
    ({"units": 4, "bits": 3}, "bits=3"),
    ({"units": 0}, "units=0"),
    ({"units": 4, "input_quantization": "int8"}, "input_quantization='int8'"),
])
def test_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        QuantizedDense(**kwargs)


def test_bad_from_dense_arguments():
    dense = _float_dense(4, 3, None, np.random.default_rng(4))
    with pytest.raises(ValueError, match="bits=3"):
        QuantizedDense.from_dense(dense, bits=3)
    with pytest.raises(ValueError, match="activations_scale=-1"):
        QuantizedDense.from_dense(dense, activations_scale=-1)
    with pytest.raises(ValueError, match="activations_scale=None"):
        QuantizedDense.from_dense(dense, input_quantization="static")
    with pytest.raises(ValueError, match="keras.layers.Dense"):
        QuantizedDense.from_dense(keras.layers.Conv2D(2, 1))


def test_varying_batch_sizes_share_one_relaxed_trace():
    """After a few batch sizes the compiled core is traced with an unknown batch
    dimension; batch 1 then takes the weight-only branch of a tf.cond."""
    rng = np.random.default_rng(5)
    dense = _float_dense(12, 7, None, rng)
    q = QuantizedDense.from_dense(dense, activations_scale=0.02, name="varying")
    kernel = q.dequantized_kernel()
    for rows in (2, 3, 5, 1):
        x = rng.standard_normal((rows, 12)).astype("float32") * 0.5
        dx = input_step(x, "none" if rows == 1 else "static", 0.02)
        simulated = fake_quant_input(x, dx) @ kernel + dense.bias.numpy()
        np.testing.assert_allclose(q(x).numpy(), simulated, rtol=1e-4, atol=1e-4)


def test_batch1_product_does_not_recompute_the_previous_layer():
    """Two chained batch-1 layers under XLA: the fused int8 -> float dot loop of the
    second reads the first one's output as a buffer instead of recomputing its
    epilogue (scale, bias, ReLU) once per output — the cause of a 2× slowdown
    (bench/kernels, in-graph rows)."""
    rng = np.random.default_rng(6)
    dense = _float_dense(64, 64, "relu", rng)
    first = QuantizedDense.from_dense(dense, activations_scale=0.02, name="first")
    second = QuantizedDense.from_dense(dense, activations_scale=0.02, name="second")
    chained = tf.function(lambda x: second(first(x)), jit_compile=True)
    x = tf.constant(rng.standard_normal((1, 64)).astype("float32"))
    hlo = chained.experimental_get_compiler_ir(x)(stage="optimized_hlo")
    computations = [c for c in re.split(r"\n(?=\S)", hlo) if " dot(" in c]
    assert len(computations) == 2
    for computation in computations:
        opcodes = set(re.findall(r"= \S+ (\w[\w-]*)\(", computation))
        assert opcodes <= {"parameter", "bitcast", "convert", "dot"}, computation
    np.testing.assert_allclose(chained(x).numpy(), second(first(x)).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_batch1_product_after_flatten_reads_a_2d_row():
    """After Flatten (of a pooled feature map) the row must reach the dot loop as a
    plain 2-D buffer: read through a view of the N-D buffer, XLA's loop does N-D
    index arithmetic that LLVM does not vectorize (2× slower)."""
    rng = np.random.default_rng(8)
    inputs = keras.Input((4, 4, 8))
    pooled = keras.layers.MaxPooling2D()(keras.layers.ReLU()(inputs))
    dense = keras.layers.Dense(16)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(pooled)))
    q = QuantizedDense.from_dense(dense, activations_scale=0.02)
    fn = tf.function(lambda x: q(keras.layers.Flatten()(tf.nn.max_pool2d(
        tf.nn.relu(x), 2, 2, "VALID"))), jit_compile=True)
    x = tf.constant(rng.standard_normal((1, 4, 4, 8)).astype("float32"))
    hlo = fn.experimental_get_compiler_ir(x)(stage="optimized_hlo")
    (computation,) = [c for c in re.split(r"\n(?=\S)", hlo) if " dot(" in c]
    shapes = re.findall(r"= f32\[([\d,]*)\]\{[\d,]*\} parameter\(", computation)
    # one row: at most one dimension longer than 1 (size-1 dimensions cost no index math)
    assert shapes and all(sum(int(d) > 1 for d in s.split(",")) <= 1 for s in shapes), (
        computation)
    reference = model(x).numpy()
    assert_within(fn(x).numpy(), reference,
                  np.abs(reference).max() * 0.05 + 1e-6)


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only_batch_is_one_float_gemm_on_row_major_inputs(bits):
    """A weight-only batch dequantizes the kernel once and runs one float GEMM
    contracting the inputs' last axis. Taking the batch-1 row path instead made
    XLA lay the gathered rows out input-major, a transposed-operand GEMM 10×
    slower than float Dense at batch 64 (bench/kernels)."""
    rng = np.random.default_rng(9)
    dense = _float_dense(64, 48, "relu", rng)
    q = QuantizedDense.from_dense(dense, bits=bits, input_quantization="none")
    fn = tf.function(q, jit_compile=True)
    x = tf.constant(rng.standard_normal((16, 64)).astype("float32"))
    hlo = fn.experimental_get_compiler_ir(x)(stage="optimized_hlo")
    dots = re.findall(r"= f32\[16,48\]\S* dot\(([^)]*)\), lhs_contracting_dims=\{(\d)\}", hlo)
    assert dots and all(lhs_dim == "1" for _, lhs_dim in dots), hlo
    assert " gather(" not in hlo
    reference = x.numpy() @ q.dequantized_kernel() + dense.bias.numpy()
    np.testing.assert_allclose(fn(x).numpy(), np.maximum(reference, 0), rtol=1e-4, atol=1e-4)
