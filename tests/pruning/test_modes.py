"""Forward values and gradients of the three modes (DESIGN.md table, 002 eq. 5.2-5.3)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcompress.pruning import prune_layer

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 5)).astype("float32")


def _toy(mode, granularity="unstructured", units=4):
    w = prune_layer(keras.layers.Dense(units), mode=mode, granularity=granularity)
    w.build((None, 5))
    mask_var = w.targets[0][3]
    mask = (RNG.random(tuple(mask_var.shape)) > 0.5).astype("float32")
    mask_var.assign(mask)
    return w, mask


def _grads(wrapper, path):
    k, b = wrapper.layer.kernel, wrapper.layer.bias
    with tf.GradientTape() as tape:
        out = wrapper(X, path=path)
        loss = tf.reduce_sum(out**2)  # nonlinear, so the gradient depends on the weight used
    gk, gb = tape.gradient(loss, [k, b])
    return out.numpy(), gk.numpy(), gb.numpy()


def _reference(kernel, bias):
    out = X @ kernel + bias
    return out, X.T @ (2 * out), (2 * out).sum(0)  # output, dL/dW, dL/db at that weight


@pytest.mark.parametrize("mode", ["hard", "feedback", "dual"])
def test_pruned_path_gradients(mode):
    w, m = _toy(mode)
    k, b = w.layer.kernel.numpy(), w.layer.bias.numpy()
    out, gk, gb = _grads(w, "pruned")
    ref_out, g_p, g_b = _reference(k * m, b)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)  # forward w*m in every mode
    if mode == "feedback":
        np.testing.assert_allclose(gk, g_p, rtol=1e-5, atol=1e-5)  # straight-through: g
    else:
        np.testing.assert_allclose(gk, g_p * m, rtol=1e-5, atol=1e-5)  # g * m
        assert np.all(gk[m == 0] == 0)
    np.testing.assert_allclose(gb, g_b, rtol=1e-5, atol=1e-5)


def test_super_path_and_eq_5_3():
    w, m = _toy("dual")
    k, b = w.layer.kernel.numpy(), w.layer.bias.numpy()
    out_s, gk_s, _ = _grads(w, "super")
    ref_s, g_s, _ = _reference(k, b)
    np.testing.assert_allclose(out_s, ref_s, rtol=1e-5, atol=1e-5)  # S-net computes with dense W
    np.testing.assert_allclose(gk_s, g_s * (1 - m), rtol=1e-5, atol=1e-5)  # g_S * (1-m)
    assert np.all(gk_s[m == 1] == 0)
    _, gk_p, _ = _grads(w, "pruned")
    _, g_p, _ = _reference(k * m, b)
    # eq. 5.3: the summed update is M ⊙ ∇_W̄ L + (1 − M) ⊙ ∇_W L
    np.testing.assert_allclose(gk_p + gk_s, m * g_p + (1 - m) * g_s, rtol=1e-5, atol=1e-5)


def test_two_path_functional_model_splits_gradient_by_mask():
    """The basis of the DCIL transform: one wrapper called on both paths in a graph."""
    w, m = _toy("dual")
    inp = keras.Input((5,))
    model = keras.Model(inp, [w(inp, path="pruned"), w(inp, path="super")])
    k = w.layer.kernel
    with tf.GradientTape() as tape:
        p, s = model(X)
        loss = tf.reduce_sum(p**2) + tf.reduce_sum(s**2)
    g = tape.gradient(loss, k).numpy()
    _, g_p, _ = _reference(k.numpy() * m, w.layer.bias.numpy())
    _, g_s, _ = _reference(k.numpy(), w.layer.bias.numpy())
    np.testing.assert_allclose(g, m * g_p + (1 - m) * g_s, rtol=1e-5, atol=1e-5)


def test_super_path_needs_dual_mode():
    w, _ = _toy("hard")
    with pytest.raises(ValueError, match="path='super'"):
        w(X, path="super")
    with pytest.raises(ValueError, match="path must be one of"):
        w(X, path="dense")


def test_structured_masks_whole_units_and_their_bias():
    w, _ = _toy("hard", granularity="structured")
    mask = np.array([1, 0, 1, 0], "float32")
    w.targets[0][3].assign(mask)
    w.layer.bias.assign(np.ones(4, "float32"))
    out, gk, gb = _grads(w, "pruned")
    assert np.all(out[:, mask == 0] == 0)  # pruned units output exactly 0
    assert np.all(gk[:, mask == 0] == 0) and np.all(gb[mask == 0] == 0)


def test_only_training_calls_on_the_pruned_path_advance_the_step():
    w, _ = _toy("dual")
    w(X, training=True)
    w(X, training=True, path="super")
    w(X)
    assert w.read_counters()[0] == 1


def test_activity_regularizer_loss_is_kept():
    w = prune_layer(keras.layers.Dense(3, activity_regularizer="l2"))
    w(X)
    assert len(w.losses) == 1 and float(w.losses[0]) > 0
    inp = keras.Input((5,))
    model = keras.Model(inp, prune_layer(keras.layers.Dense(3, activity_regularizer="l2"))(inp))
    model(X)
    assert len(model.losses) == 1


class SubclassedNet(keras.Model):
    def __init__(self, schedule):
        super().__init__()
        self.d1 = prune_layer(keras.layers.Dense(8, activation="relu"), schedule=schedule)
        self.d2 = prune_layer(keras.layers.Dense(3), schedule=schedule)

    def call(self, x, training=None):
        # Like Dropout/BatchNorm, the wrappers need `training` (it drives their step).
        return self.d2(self.d1(x, training=training), training=training)


def test_subclassed_model_with_prune_layer_in_init():
    from tfcompress.pruning import ConstantSparsity, UpdateMasks, sparsity_report

    model = SubclassedNet(ConstantSparsity(0.5, frequency=2))
    model.compile("sgd", "mse")
    model.fit(X, np.zeros((6, 3)), batch_size=2, epochs=1, verbose=0, callbacks=[UpdateMasks()])
    report = sparsity_report(model)
    assert report["global"]["sparsity"] == pytest.approx(0.5, abs=0.005)
    assert model.d1.read_counters()[0] == 3
    from tfcompress.pruning import strip, strip_layer

    with pytest.raises(ValueError, match="strip_layer"):
        strip(model)
    plain = strip_layer(model.d1)
    np.testing.assert_allclose(
        plain(X).numpy(), model.d1(X).numpy(), atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="soft"), "mode must be one of ('hard', 'feedback', 'dual'); received: mode='soft'"),
        (dict(threshold="model"), "received: threshold='model'"),
        (dict(criterion="l3"), "received: criterion='l3'"),
        (dict(granularity="n:m:k"), "received: granularity='n:m:k'"),
        (dict(schedule="half"), "received: schedule='half'"),
        (dict(schedule=1.5), "sparsity must be in [0, 1); received: sparsity=1.5"),
    ],
)
def test_bad_wrapper_arguments(kwargs, message):
    with pytest.raises(ValueError) as err:
        prune_layer(keras.layers.Dense(3), **kwargs)
    assert message in str(err.value)
