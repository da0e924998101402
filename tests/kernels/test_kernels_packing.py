"""Packed int4: exact round trips (odd lengths included), Keras-compatible layout,
in-graph unpacking equal to the host one, clear errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcompress.kernels import pack_int4
from tfcompress.kernels import unpack_int4
from tfcompress.kernels.packing import unpack_int4_graph


@pytest.mark.parametrize("length", [1, 2, 5, 8, 13])
@pytest.mark.parametrize("axis", [0, -1])
def test_roundtrip_exact(length, axis):
    rng = np.random.default_rng(length)
    shape = (length, 3) if axis == 0 else (3, length)
    values = rng.integers(-8, 8, shape).astype("int8")
    values.flat[0], values.flat[-1] = -8, 7
    packed = pack_int4(values, axis=axis)
    assert packed.dtype == np.int8
    assert packed.shape[axis] == (length + 1) // 2
    np.testing.assert_array_equal(unpack_int4(packed, length, axis=axis), values)
    graph = unpack_int4_graph(tf.constant(packed), length, axis=axis).numpy()
    np.testing.assert_array_equal(graph, values)
    compiled = tf.function(lambda p: unpack_int4_graph(p, length, axis=axis),
                           jit_compile=True)(tf.constant(packed)).numpy()
    np.testing.assert_array_equal(compiled, values)


def test_same_layout_as_keras():
    values = np.array([[-3, 7, 2], [-8, 1, 0], [5, -1, -7]], "int8")
    keras_packed, _, _ = keras.quantizers.pack_int4(values, axis=0, dtype="int8")
    np.testing.assert_array_equal(pack_int4(values, axis=0),
                                  keras.ops.convert_to_numpy(keras_packed))


def test_every_nibble_value():
    values = np.arange(-8, 8, dtype=np.int8)
    for a in values:
        pair = np.array([a, -1 - a], np.int8)
        np.testing.assert_array_equal(unpack_int4(pack_int4(pair), 2), pair)


@pytest.mark.parametrize("values,needle", [
    (np.array([8], "int32"), r"\[-8, 7\]"),
    (np.array([-9, 0], "int8"), r"\[-8, 7\]"),
    (np.array([0.5]), "integer array"),
    (np.int8(3), "rank >= 1"),
])
def test_pack_bad_values(values, needle):
    with pytest.raises(ValueError, match=needle):
        pack_int4(values)


def test_bad_axis_and_length():
    with pytest.raises(ValueError, match="axis=2"):
        pack_int4(np.zeros((2, 2), "int8"), axis=2)
    packed = pack_int4(np.zeros(5, "int8"))
    with pytest.raises(ValueError, match="length=7"):
        unpack_int4(packed, 7)
    with pytest.raises(ValueError, match="int8 or uint8"):
        unpack_int4(packed.astype("int32"), 5)
