"""PSG is Keras-native: no TensorFlow in tfcompress/psg, and it runs on Keras-on-JAX."""

import ast
import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

PSG_DIR = pathlib.Path(__file__).resolve().parents[2] / "tfcompress" / "psg"


def test_no_tensorflow_import_in_psg():
    for path in PSG_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not name.startswith("tensorflow"), f"{path.name} imports {name}"


JAX_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, os, sys
    class _BlockTF(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError("TensorFlow is blocked in this test: " + name)
    sys.meta_path.insert(0, _BlockTF())
    import numpy as np
    import jax
    import keras
    assert keras.backend.backend() == "jax"
    sys.path.insert(0, sys.argv[1])
    from psg_testutil import ref_grid
    from tfcompress.psg import QuantizationGrid, ScaledGradient, ScaledGradientSchedule

    LR, LAM, EPS = 0.1, 3.0, 1e-3
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = rng.normal(size=(16, 3)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    opt = ScaledGradient(keras.optimizers.SGD(LR), QuantizationGrid(4), lambda_s=LAM, epsilon=EPS)
    model.compile(opt, "mse")
    k, b = (v.numpy() for v in model.trainable_variables)
    loss = lambda k, b: jax.numpy.mean(jax.numpy.mean((x @ k + b - y) ** 2, -1))
    gk, gb = (np.asarray(g) for g in jax.grad(loss, argnums=(0, 1))(k, b))
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(model.trainable_variables[0].numpy(),
                               k - LR * LAM * (np.abs(k - ref_grid(k, 4)) + EPS) * gk,
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.trainable_variables[1].numpy(), b - LR * gb, rtol=1e-5)

    # Schedule + Adam + `.keras` round trip on JAX.
    opt2 = ScaledGradient(keras.optimizers.Adam(0.01), QuantizationGrid(3, range_momentum=0.1),
                          lambda_s=5.0,
                          enabled=False)
    m2 = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                           keras.layers.Dense(3)])
    m2.compile(opt2, "mse")
    h = m2.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[ScaledGradientSchedule(1)])
    assert float(opt2.psg_enabled.numpy()) == 1.0
    # The running range was carried through stateless_apply.
    ranges = [np.asarray(v.numpy()) for pair in opt2.psg_ranges().values() for v in pair]
    assert len(ranges) == 4 and all(np.all(r != 0) for r in ranges), ranges
    assert h.history["loss"][-1] < h.history["loss"][0]
    path = os.path.join(sys.argv[2], "m.keras")
    m2.save(path)
    r = keras.models.load_model(path)
    assert type(r.optimizer).__name__ == "ScaledGradient"
    assert r.optimizer.get_config() == opt2.get_config()
    for a, c in zip(opt2.variables, r.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(c.numpy()))
    print("JAX_OK")
    """
)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_runs_on_keras_jax_without_tensorflow(tmp_path):
    script = tmp_path / "psg_jax.py"
    script.write_text(JAX_SCRIPT)
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([repo, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(script), here, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=repo,
    )
    if proc.returncode != 0:
        pytest.fail(f"subprocess failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    assert "JAX_OK" in proc.stdout
