"""ScaledGradient under tf.distribute.MirroredStrategy (2 logical CPUs, in a subprocess)."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    sys.path.insert(0, sys.argv[1])
    from psg_testutil import ref_grid
    from tfcompress.psg import QuantizationGrid, ScaledGradient, ScaledGradientSchedule

    LR, LAM, EPS = 0.1, 4.0, 1e-3
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = rng.normal(size=(32, 3)).astype("float32")

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="tanh"),
                                  keras.layers.Dense(3)])
        # Running range (authors' momentum 0.1): its first step is the exact grid.
        opt = ScaledGradient(keras.optimizers.SGD(LR), QuantizationGrid(3, range_momentum=0.1),
                             lambda_s=LAM,
                             epsilon=EPS)
        model.compile(opt, "mse")
    before = [v.numpy() for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.reduce_mean(tf.square(model(x) - y), axis=-1))
    grads = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    for v, w, g in zip(model.trainable_variables, before, grads):
        if v.path.endswith("kernel"):
            g = LAM * (np.abs(w - ref_grid(w, 3)) + EPS) * g
        np.testing.assert_allclose(v.numpy(), w - LR * g, rtol=1e-4, atol=1e-6, err_msg=v.path)
    # The schedule switches the mirrored flag; training still runs on both replicas.
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[ScaledGradientSchedule(3)])
    assert float(opt.psg_enabled.numpy()) == 0.0
    print("DISTRIBUTE_OK", int(opt.iterations.numpy()))
    """
)


def test_mirrored_strategy_two_replicas(tmp_path):
    script = tmp_path / "psg_distribute.py"
    script.write_text(SCRIPT)
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env["PYTHONPATH"] = os.pathsep.join([repo, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(script), here],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=repo,
    )
    if proc.returncode != 0:
        pytest.fail(f"subprocess failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    assert "DISTRIBUTE_OK 5" in proc.stdout, proc.stdout
