"""Helpers shared by the PSG tests (an independent NumPy reference of eq. 4.13)."""

import numpy as np


def ref_grid(w, bits, axis=None):
    """NumPy eq. 4.13: symmetric restricted-range grid, Δ = max|w| / (2^(n-1)-1)."""
    w = np.asarray(w, np.float64)
    levels = 2 ** (bits - 1) - 1
    if axis is None:
        amax = np.abs(w).max()
    else:
        red = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
        amax = np.abs(w).max(axis=red, keepdims=True)
    delta = np.where(amax > 0, amax / levels, 1.0)
    return np.clip(np.round(w / delta), -levels, levels) * delta


def ref_delta(w, bits):
    return np.abs(np.asarray(w)).max() / (2 ** (bits - 1) - 1)


def normalized_grid_error(model, bits):
    """Mean over kernels of mean|w − Q(w)| / Δ (0.25 for weights uniform in a cell)."""
    errs = []
    for v in model.trainable_variables:
        if v.path.split("/")[-1] != "kernel":
            continue
        k = v.numpy()
        errs.append(np.mean(np.abs(k - ref_grid(k, bits))) / ref_delta(k, bits))
    return float(np.mean(errs))


def grid_error(model, bits):
    """Mean over kernels of mean|w − Q(w)|."""
    errs = []
    for v in model.trainable_variables:
        if v.path.split("/")[-1] != "kernel":
            continue
        k = v.numpy()
        errs.append(np.mean(np.abs(k - ref_grid(k, bits))))
    return float(np.mean(errs))


def toy_data(n=64, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = rng.normal(size=(n, k)).astype("float32")
    return x, y


def mse_grads(model, x, y):
    """Gradients of keras' mean-squared error w.r.t. the trainable variables."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        pred = model(x, training=True)
        loss = tf.reduce_mean(tf.reduce_mean(tf.square(pred - y), axis=-1))
    grads = tape.gradient(loss, model.trainable_variables)
    return [g.numpy() for g in grads]
