"""PSG composes with knowledge distillation (002 eq. 4.11-4.12)."""

import keras
import numpy as np
import tensorflow as tf
from psg_testutil import ref_grid

from tfcompress.psg import QuantizationGrid, ScaledGradient

LR, LAM, EPS, T = 0.1, 4.0, 1e-3, 4.0


def _net(seed, width):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(width, activation="relu"), keras.layers.Dense(5)]
    )


def _kd_loss(y, z_s, z_t):
    """0.5 · (CE(y, z_s) + T² · KL(p_T ‖ p_S)), written out by hand (eq. 4.9-4.11)."""
    ce = tf.reduce_mean(
        keras.losses.sparse_categorical_crossentropy(y, z_s, from_logits=True)
    )
    p_t, p_s = tf.nn.softmax(z_t / T), tf.nn.softmax(z_s / T)
    kl = tf.reduce_mean(tf.reduce_sum(p_t * tf.math.log(p_t / p_s), axis=-1))
    return 0.5 * ce + 0.5 * T**2 * kl


def test_psg_update_is_the_scaled_gradient_of_the_kd_loss():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 5, size=32)
    teacher, student = _net(1, 16), _net(2, 4)
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        # Keras 3.15: the default loss="kl_divergence" resolves to the *function*
        # kl_divergence, which LogitsDistillation then applies to raw logits
        # (no softmax, no T²). Passing the KLDivergence instance gives eq. 4.10.
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=T, loss=keras.losses.KLDivergence()
        ),
        student_loss_weight=0.5,
    )
    distiller.compile(
        optimizer=ScaledGradient(
            keras.optimizers.SGD(LR), QuantizationGrid(3), lambda_s=LAM, epsilon=EPS
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    z_t = teacher(x).numpy()
    before = [v.numpy() for v in student.trainable_variables]
    with tf.GradientTape() as tape:
        z_s = student(x, training=True)
        loss = _kd_loss(y, z_s, z_t)
    grads = [g.numpy() for g in tape.gradient(loss, student.trainable_variables)]
    # Eq. 4.11 is exactly the Distiller's loss.
    distiller_loss = distiller.compute_loss(x=x, y=y, y_pred=student(x, training=True))
    np.testing.assert_allclose(float(distiller_loss), float(loss), rtol=1e-5)
    teacher_before = [v.numpy() for v in teacher.weights]

    distiller.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)

    for v, w, g in zip(student.trainable_variables, before, grads):
        if v.path.endswith("kernel"):
            g = LAM * (np.abs(w - ref_grid(w, 3)) + EPS) * g  # eq. 4.12
        np.testing.assert_allclose(v.numpy(), w - LR * g, rtol=1e-4, atol=1e-6, err_msg=v.path)
    for v, w in zip(teacher.weights, teacher_before):
        np.testing.assert_array_equal(v.numpy(), w)
