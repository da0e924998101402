"""Portability: the DCIL transform trains on Keras-on-JAX (DESIGN.md, Portability).

Runs only when Keras's backend is JAX (``KERAS_BACKEND=jax python -m pytest
tests/pruning/test_dcil_jax.py`` in an environment with JAX); skipped otherwise.
Nothing here imports TensorFlow.
"""

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="needs KERAS_BACKEND=jax"
)


def _toy():
    inp = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(3, name="head")(x))


def test_dcil_fit_on_jax(tmp_path):
    from tfcompress.pruning import PolynomialDecay, dcil
    from tfcompress.pruning.controller import collect_wrappers

    model = dcil(_toy(), schedule=PolynomialDecay(0.0, 0.5, 0, 4, frequency=2),
                 warmup_epochs=1)
    model.compile(keras.optimizers.SGD(0.1), metrics=["accuracy"], steps_per_execution=2)
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 6, 6, 2), dtype="float32"), rng.integers(0, 3, 32)
    hist = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    np.testing.assert_allclose(hist["loss"][0], hist["ce_pruned"][0] + hist["ce_super"][0],
                               rtol=1e-5)
    np.testing.assert_allclose(
        hist["loss"][1], hist["ce_pruned"][1] + hist["ce_super"][1] + 4.0 * hist["kl"][1],
        rtol=1e-5)
    assert int(np.asarray(model.epochs_seen.value)) == 2
    (wrapper,) = collect_wrappers(model)
    assert wrapper.read_counters()[0] == 8
    assert (wrapper.full_masks()["kernel"] == 0).mean() == pytest.approx(0.5, abs=0.03)
    p_bn = model.pruned_model.get_layer("bn1").get_weights()[0]
    s_bn = model.super_model.get_layer("super_bn1").get_weights()[0]
    assert not np.allclose(p_bn, s_bn)
    path = str(tmp_path / "dcil.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)
