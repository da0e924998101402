"""Property tests for the uniform quantizers (002 eq. 4.13; survey 003)."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcompress.quantization import UniformQuantizer
from tfcompress.quantization import compute_range
from tfcompress.quantization import compute_scale
from tfcompress.quantization import dequantize
from tfcompress.quantization import fake_quant
from tfcompress.quantization import quantize
from tfcompress.quantization import quantize_dequantize

SHAPES = [(37,), (5, 7), (3, 3, 4, 6)]
BITS = range(2, 9)


def _cases():
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        x = rng.normal(size=shape).astype("float32") * rng.uniform(0.1, 5)
        if len(shape) > 1:
            x += rng.uniform(-1, 2)  # asymmetric data
        x.flat[::5] = 0.0  # exact zeros
        axes = [None] + list(range(-len(shape), len(shape)))
        for axis in axes:
            yield x, axis


def _bcast(p, x, axis):
    p = np.asarray(p, dtype="float64")
    if axis is None:
        return p.reshape(())
    shape = [1] * x.ndim
    shape[axis] = -1
    return p.reshape(shape)


def _channels(a, axis):
    if axis is None:
        return [a.ravel()]
    a = np.moveaxis(a, axis, 0)
    return [c.ravel() for c in a]


@pytest.mark.parametrize("symmetric", [True, False])
def test_grid_error_and_zero_properties(symmetric):
    for (x, axis), bits in itertools.product(list(_cases()), BITS):
        y = np.asarray(quantize_dequantize(x, bits, symmetric=symmetric, axis=axis))
        ints, scale, zp = quantize(x, bits, symmetric=symmetric, axis=axis)
        ints, scale, zp = np.asarray(ints), np.asarray(scale), np.asarray(zp)
        s = _bcast(scale, x, axis)
        z = _bcast(zp, x, axis)
        # values lie on the grid: y / Δ + z is integral
        k = y / s + z
        np.testing.assert_allclose(k, np.round(k), atol=1e-3)
        # number of levels per channel
        max_levels = 2**bits - 1 if symmetric else 2**bits
        for c in _channels(y, axis):
            assert len(np.unique(c)) <= max_levels
        # rounding error at most half a step inside the grid's clip range
        # [(qmin - z)Δ, (qmax - z)Δ]; symmetric absmax covers every value.
        qmin, qmax = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
        inside = (x >= (qmin - z - 1e-4) * s) & (x <= (qmax - z + 1e-4) * s)
        if symmetric:
            assert np.all(inside)
        err = np.abs(x - y)
        assert np.all(err[inside] <= (s / 2 * (1 + 1e-5) + 1e-7 + 0 * x)[inside])
        # asymmetric: rounding the zero point shifts the grid by < Δ/2, so the
        # min/max ends may saturate by at most another half step
        assert np.all(err <= s * (1 + 1e-5) + 1e-7)
        # zero is exactly representable and maps to exactly zero
        assert np.all(y[x == 0.0] == 0.0)
        # quantize -> dequantize equals quantize_dequantize
        np.testing.assert_allclose(
            np.asarray(dequantize(ints, scale, zp, axis=axis)), y, rtol=1e-6, atol=1e-7
        )
        # integer dtype and range
        if symmetric:
            assert ints.dtype == np.int8
            assert np.all(np.abs(ints.astype(int)) <= 2 ** (bits - 1) - 1)
            assert np.all(zp == 0)
        else:
            assert ints.dtype == np.uint8
            assert ints.max() <= 2**bits - 1
            assert np.all((zp >= 0) & (zp <= 2**bits - 1))
        # per-channel scales have one entry per channel
        assert scale.shape == (() if axis is None else (x.shape[axis],))


def test_symmetric_matches_eq_4_13_reference():
    rng = np.random.default_rng(1)
    for bits in BITS:
        x = rng.normal(size=(64,)).astype("float32")
        qmax = 2 ** (bits - 1) - 1
        delta = np.max(np.abs(x)) / qmax
        ref = np.clip(np.round(x / delta), -qmax, qmax) * delta
        np.testing.assert_allclose(np.asarray(quantize_dequantize(x, bits)), ref, rtol=1e-6)
        # minmax gives the same range in symmetric mode: max(-min, max)
        np.testing.assert_allclose(
            np.asarray(quantize_dequantize(x, bits, range_method="minmax")), ref, rtol=1e-6
        )


def test_per_channel_uses_one_scale_per_kept_axis():
    x = np.array([[1.0, 10.0], [-0.5, 5.0], [0.25, -2.5]], "float32")
    _, scale, _ = quantize(x, 8, axis=-1)
    np.testing.assert_allclose(np.asarray(scale), [1 / 127, 10 / 127], rtol=1e-6)
    _, scale0, _ = quantize(x, 8, axis=0)
    np.testing.assert_allclose(np.asarray(scale0), [10 / 127, 5 / 127, 2.5 / 127], rtol=1e-6)


def test_asymmetric_range_includes_zero():
    x = np.array([2.0, 3.0, 4.0], "float32")
    lo, hi = compute_range(x, range_method="minmax")
    scale, zp = compute_scale(lo, hi, bits=8, symmetric=False)
    assert float(np.asarray(zp).ravel()[0]) == 0.0
    np.testing.assert_allclose(float(np.asarray(scale).ravel()[0]), 4.0 / 255, rtol=1e-6)
    y = np.asarray(quantize_dequantize(x, 8, symmetric=False))
    assert np.all(np.abs(y - x) <= 4.0 / 255 / 2 + 1e-6)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("axis", [None, -1])
def test_all_zero_tensor_gives_zeros_not_nan(symmetric, axis):
    x = np.zeros((4, 3), "float32")
    y = np.asarray(quantize_dequantize(x, 4, symmetric=symmetric, axis=axis))
    assert np.all(y == 0) and not np.any(np.isnan(y))
    with tf.GradientTape() as tape:
        v = tf.constant(x)
        tape.watch(v)
        out = tf.reduce_sum(fake_quant(v, 4, symmetric=symmetric, axis=axis))
    g = tape.gradient(out, v).numpy()
    assert not np.any(np.isnan(g))


@pytest.mark.parametrize("symmetric", [True, False])
def test_fake_quant_forward_and_straight_through_gradient(symmetric):
    x = np.array([-5.0, -0.9, -0.3, 0.0, 0.2, 0.7, 0.95, 5.0], "float32")
    value_range = (-1.0, 1.0)
    v = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = fake_quant(v, 4, symmetric=symmetric, value_range=value_range)
        loss = tf.reduce_sum(y * tf.range(1.0, 9.0))
    grad = tape.gradient(loss, v).numpy()
    expected_mask = np.array([0, 1, 1, 1, 1, 1, 1, 0], "float32")
    np.testing.assert_array_equal(grad, expected_mask * np.arange(1.0, 9.0))
    np.testing.assert_allclose(
        y.numpy(),
        np.asarray(quantize_dequantize(x, 4, symmetric=symmetric, value_range=value_range)),
    )
    # saturated values clip to the range end
    assert y.numpy()[0] <= -0.8 and y.numpy()[-1] >= 0.8


def test_fake_quant_gradient_is_identity_with_data_range():
    rng = np.random.default_rng(2)
    v = tf.Variable(rng.normal(size=(3, 3, 2, 5)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fake_quant(v, 3, axis=-1))
    np.testing.assert_array_equal(tape.gradient(loss, v).numpy(), np.ones(v.shape))
    # quantize_dequantize has no straight-through gradient (round has none;
    # only the dependence of Δ on max|x| carries a gradient, to the max elements)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(quantize_dequantize(v, 3, axis=-1))
    g = tape.gradient(loss, v)
    assert g is None or np.mean(g.numpy() == 0) > 0.5


def test_fake_quant_works_inside_keras_ops_graph():
    fn = tf.function(lambda t: fake_quant(t, 4, axis=-1))
    x = np.random.default_rng(3).normal(size=(4, 6)).astype("float32")
    np.testing.assert_allclose(fn(x).numpy(), np.asarray(quantize_dequantize(x, 4, axis=-1)), rtol=1e-6)


def test_per_channel_value_range_vectors():
    x = np.array([[0.5, 4.0], [-2.0, 1.0]], "float32")
    y = np.asarray(quantize_dequantize(x, 8, axis=-1, value_range=([-1.0, -2.0], [1.0, 2.0])))
    np.testing.assert_allclose(y[:, 0], [0.5, -1.0], atol=1 / 127)
    np.testing.assert_allclose(y[:, 1], [2.0, 1.0], atol=2 / 127)


@pytest.mark.parametrize("bits", [1, 9, 2.5, "8", True, None])
def test_bad_bits(bits):
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 8\]; received: bits="):
        quantize_dequantize(np.ones(3), bits)
    with pytest.raises(ValueError, match="bits"):
        UniformQuantizer(bits=bits)


def test_bad_bits_message_is_exact():
    with pytest.raises(ValueError) as err:
        quantize_dequantize(np.ones(3), 1)
    assert str(err.value) == "bits must be an integer in [2, 8]; received: bits=1"


def test_bad_arguments():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="axis must be in .*received: axis=2"):
        quantize_dequantize(x, 4, axis=2)
    with pytest.raises(ValueError, match="received: axis=-3"):
        fake_quant(x, 4, axis=-3)
    with pytest.raises(ValueError, match="received: axis=1.0"):
        quantize(x, 4, axis=1.0)
    with pytest.raises(ValueError, match="range_method must be one of .*received: range_method='foo'"):
        quantize_dequantize(x, 4, range_method="foo")
    with pytest.raises(ValueError, match="symmetric must be a bool.*received: symmetric=.yes."):
        quantize_dequantize(x, 4, symmetric="yes")
    with pytest.raises(ValueError, match="per_channel"):
        UniformQuantizer(per_channel="yes")
    with pytest.raises(ValueError, match="range_method"):
        UniformQuantizer(range_method="kl")
    with pytest.raises(ValueError, match="axis"):
        UniformQuantizer(per_channel=True, axis=3)(np.ones((2, 2)))


def test_uniform_quantizer_config_round_trip_and_methods():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(3, 3, 4, 5)).astype("float32")
    for kwargs in [
        {},
        {"bits": 3, "symmetric": False, "per_channel": True, "axis": 2, "range_method": "minmax"},
    ]:
        qz = UniformQuantizer(**kwargs)
        config = keras.saving.serialize_keras_object(qz)
        assert config["registered_name"] == "tfcompress>UniformQuantizer"
        clone = keras.saving.deserialize_keras_object(config)
        assert isinstance(clone, UniformQuantizer)
        assert clone.get_config() == qz.get_config()
        assert set(qz.get_config()) == {"bits", "symmetric", "per_channel", "axis", "range_method"}
        ints, scale, zp = clone.quantize(w)
        np.testing.assert_allclose(np.asarray(clone.dequantize(ints, scale, zp)), np.asarray(qz(w)), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(qz.quantize_dequantize(w)), np.asarray(qz(w)))
