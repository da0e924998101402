"""tf_keras twins compute the same function; tf_keras never enters this process.

Importing tf_keras switches TensorFlow into Keras-2 mode for the whole process,
so everything that touches it runs in a subprocess.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(code, timeout=240):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


# One subprocess for both checks (each TensorFlow import costs ~10 s here).
TWIN_SCRIPT = """
import sys
import tfcompress
import tfcompress.models
tfcompress.models.build("resnet8", width=4)
bad = [m for m in ("tf_keras", "tensorflow_model_optimization") if m in sys.modules]
print("IMPORT_CLEAN" if not bad else f"IMPORT_DIRTY {bad}")

import numpy as np
import keras
from tfcompress import models

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
CASES = [
    ("mlp", {}),
    ("small_cnn", {"filters": (4, 8), "dense": 16}),
    ("resnet8", {"width": 4}),
    ("resnet8", {"width": 4, "input_shape": (32, 32, 3)}),
    ("wrn16_1", {"dropout": 0.2}),
    # 28 -> 14 -> 7 -> 3 -> 1: the fifth pool is skipped.
    ("vgg", {"config": [8, "M", 8, "M", 8, "M", 8, "M", 16, "M"]}),
    ("vgg", {"config": [8, "M", 16, "M"], "batch_norm": False, "input_shape": (32, 32, 3)}),
]
for name, kwargs in CASES:
    model = models.build(name, **kwargs)
    # Non-trivial BN statistics, so that copying them is actually checked.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape),
                rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 1.5, v.shape),
            ])
    twin = models.to_tf_keras(model, name, **kwargs)
    assert type(twin).__module__.startswith("tf_keras"), type(twin)
    assert twin.count_params() == model.count_params(), name
    assert [l.name for l in twin.layers] == [l.name for l in model.layers], name
    x = rng.normal(size=(3, *model.input_shape[1:])).astype("float32")
    ours = keras.ops.convert_to_numpy(model(x, training=False))
    theirs = twin(x, training=False).numpy()
    np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=1e-5, err_msg=name)
    print("TWIN_OK", name, model.count_params())
"""


def test_clean_import_and_tf_keras_twins_match():
    # One test, not two sharing a fixture: under pytest-xdist two tests could
    # land on two workers and pay for the subprocess twice.
    out = _run(TWIN_SCRIPT)
    # `import tfcompress` (and building a model) leaves tf_keras and TFMOT out.
    assert "IMPORT_CLEAN" in out, out
    # Every family: same parameter count, same layer names, same outputs.
    assert out.count("TWIN_OK") == 7, out


def test_this_pytest_process_has_no_tf_keras():
    assert "tf_keras" not in sys.modules
