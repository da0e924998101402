"""Factor-transfer and attention-transfer losses against NumPy references (002 eq. 3.1, 3.4)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcompress.distillation import attention_map
from tfcompress.distillation import attention_transfer_loss
from tfcompress.distillation import factor_transfer_loss
from tfcompress.distillation import reconstruction_loss

RNG = np.random.default_rng(0)


def _unit_rows(x):
    flat = x.reshape(len(x), -1)
    return flat / np.linalg.norm(flat, axis=1, keepdims=True)


@pytest.mark.parametrize("p", [1, 2])
def test_factor_transfer_loss_is_eq_3_4_averaged_over_elements(p):
    f_t = RNG.normal(size=(4, 3, 3, 5)).astype("float32")
    f_s = RNG.normal(size=(4, 3, 3, 5)).astype("float32")
    diff = np.abs(_unit_rows(f_t) - _unit_rows(f_s)) ** p
    got = float(factor_transfer_loss(f_t, f_s, p=p))
    np.testing.assert_allclose(got, diff.mean(), rtol=1e-5)


def test_factor_transfer_loss_ignores_each_samples_scale_and_stops_teacher_gradient():
    f_t = tf.constant(RNG.normal(size=(3, 2, 2, 4)).astype("float32"))
    scales = tf.constant([0.5, 3.0, 10.0])[:, None, None, None]
    assert float(factor_transfer_loss(f_t, f_t * scales)) == pytest.approx(0.0, abs=1e-6)
    f_s = tf.Variable(RNG.normal(size=(3, 2, 2, 4)).astype("float32"))
    teacher = tf.Variable(f_t)
    with tf.GradientTape() as tape:
        loss = factor_transfer_loss(teacher, f_s)
    grad_t, grad_s = tape.gradient(loss, [teacher, f_s])
    assert grad_t is None
    assert float(tf.reduce_max(tf.abs(grad_s))) > 0


def test_factor_transfer_loss_rejects_mismatched_factors():
    with pytest.raises(ValueError, match="same shape"):
        factor_transfer_loss(np.ones((2, 3, 3, 4), "float32"), np.ones((2, 3, 3, 5), "float32"))
    with pytest.raises(ValueError, match="p must be 1 or 2; received: p=3"):
        factor_transfer_loss(np.ones((2, 3, 3, 4), "float32"), np.ones((2, 3, 3, 4), "float32"),
                             p=3)


def test_reconstruction_loss_is_eq_3_1():
    x = RNG.normal(size=(2, 4, 4, 3)).astype("float32")
    r = RNG.normal(size=(2, 4, 4, 3)).astype("float32")
    assert float(reconstruction_loss(x, r)) == pytest.approx(((x - r) ** 2).mean(), rel=1e-5)
    assert float(reconstruction_loss(x, r, p=1)) == pytest.approx(np.abs(x - r).mean(), rel=1e-5)


def test_attention_transfer_matches_the_reference_and_needs_equal_spatial_size():
    a_t = RNG.normal(size=(2, 4, 4, 6)).astype("float32")
    a_s = RNG.normal(size=(2, 4, 4, 3)).astype("float32")  # channel counts may differ
    q_t, q_s = _unit_rows((a_t**2).mean(-1)), _unit_rows((a_s**2).mean(-1))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(attention_map(a_t)), q_t, rtol=1e-5)
    got = float(attention_transfer_loss(a_t, a_s))
    assert got == pytest.approx(((q_s - q_t) ** 2).mean(), rel=1e-5)
    with pytest.raises(ValueError, match="same spatial size"):
        attention_transfer_loss(a_t, np.ones((2, 2, 2, 3), "float32"))
