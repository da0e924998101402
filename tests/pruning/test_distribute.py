"""MirroredStrategy over 2 logical CPU devices reaches the same sparsity.

Logical devices must be configured before TensorFlow initializes, so the training
runs in a subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from tfcompress.pruning import PolynomialDecay, UpdateMasks, prune_model

    def run(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            inp = keras.Input((8, 8, 2))
            x = keras.layers.Conv2D(8, 3, name="conv")(inp)
            x = keras.layers.GlobalAveragePooling2D()(x)
            out = keras.layers.Dense(4, name="dense")(x)
            model = prune_model(
                keras.Model(inp, out),
                schedule=PolynomialDecay(0.0, 0.75, 0, 6, frequency=2),
                threshold="global",
            )
            model.compile(keras.optimizers.SGD(0.05),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rng = np.random.default_rng(0)
        x = rng.random((64, 8, 8, 2), dtype="float32")
        y = rng.integers(0, 4, 64)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[UpdateMasks()])
        out = {}
        for w in model.layers:
            if not hasattr(w, "read_counters"):
                continue
            mask = w.targets[0][3].value
            replicas = [np.asarray(v.numpy()) for v in getattr(mask, "values", [mask])]
            out[w.name] = {
                "counters": list(w.read_counters()),
                "sparsity": w.sparsity(),
                "replicas": len(replicas),
                "replicas_equal": all(np.array_equal(replicas[0], r) for r in replicas),
                "zeros": [int((r == 0).sum()) for r in replicas],
            }
        total = sum(v["zeros"][0] for v in out.values())
        size = sum(int(np.prod(w.targets[0][3].shape)) for w in model.layers
                   if hasattr(w, "targets"))
        return {"layers": out, "global": total / size}

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {"mirrored": run(mirrored), "default": run(tf.distribute.get_strategy()),
              "replicas": mirrored.num_replicas_in_sync}
    print("RESULT " + json.dumps(result))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_reaches_same_sparsity():
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["replicas"] == 2
    mirrored, default = result["mirrored"], result["default"]
    assert mirrored["global"] == pytest.approx(0.75, abs=0.005)
    assert default["global"] == pytest.approx(0.75, abs=0.005)
    for name, layer in mirrored["layers"].items():
        assert layer["replicas"] == 2 and layer["replicas_equal"], name
        # one step per global batch (not per replica), same schedule clock as default
        assert layer["counters"] == default["layers"][name]["counters"] == [8, 6, 8]
