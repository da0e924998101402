"""Portability: the wrapper, callbacks and gradient split on Keras-on-JAX.

Runs only when Keras's backend is JAX (``KERAS_BACKEND=jax python -m pytest
tests/pruning/test_jax_backend.py`` in an environment with JAX); skipped otherwise.
Nothing here imports TensorFlow.
"""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="needs KERAS_BACKEND=jax"
)


def _model():
    inp = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(8, 3, name="conv", activity_regularizer="l2")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4, name="dense")(x))


@pytest.mark.parametrize("mode", ["hard", "feedback", "dual"])
def test_fit_reaches_target_with_steps_per_execution(mode):
    from tfcompress.pruning import PolynomialDecay, UpdateMasks, prune_model, strip

    pruned = prune_model(
        _model(), schedule=PolynomialDecay(0.0, 0.75, 0, 6, frequency=2), mode=mode,
        threshold="global",
    )
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   steps_per_execution=3)
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 8, 8, 2), dtype="float32"), rng.integers(0, 4, 64)
    pruned.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[UpdateMasks()])
    wrappers = [l for l in pruned.layers if hasattr(l, "read_counters")]
    total = sum(w.full_masks()["kernel"].size for w in wrappers)
    zeros = sum(int((w.full_masks()["kernel"] == 0).sum()) for w in wrappers)
    assert zeros / total == pytest.approx(0.75, abs=0.005)
    for w in wrappers:
        step, last, checked = w.read_counters()
        assert step == checked == 16
        assert last == (14 if mode == "dual" else 6)  # dual keeps updating after the end
    np.testing.assert_allclose(
        strip(pruned).predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5
    )


def test_dual_path_gradients_split_by_mask():
    import jax
    import jax.numpy as jnp

    from tfcompress.pruning import prune_layer

    w = prune_layer(keras.layers.Dense(3), mode="dual")
    w.build((None, 5))
    mask = (np.random.default_rng(0).random((5, 3)) > 0.5).astype("float32")
    w.targets[0][3].assign(mask)
    x = np.random.default_rng(1).random((4, 5), dtype="float32")
    ntv = [v.value for v in w.non_trainable_variables]

    def loss(tvals, path):
        out, _ = w.stateless_call(tvals, ntv, x, path=path)
        return jnp.sum(out**2)

    tvals = [v.value for v in w.trainable_variables]
    g_p = np.asarray(jax.grad(loss)(tvals, "pruned")[0])
    g_s = np.asarray(jax.grad(loss)(tvals, "super")[0])
    k = np.asarray(tvals[0])
    b = np.asarray(tvals[1])
    ref_p = x.T @ (2 * (x @ (k * mask) + b))
    ref_s = x.T @ (2 * (x @ k + b))
    np.testing.assert_allclose(g_p, ref_p * mask, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g_s, ref_s * (1 - mask), rtol=1e-5, atol=1e-5)
