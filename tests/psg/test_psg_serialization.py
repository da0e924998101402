"""ScaledGradient serialization: config, `.keras` round trip, checkpoint resume."""

import keras
import numpy as np
import pytest
from psg_testutil import toy_data

from tfcompress.psg import QuantizationGrid, ScaledGradient, Zero


@keras.saving.register_keras_serializable(package="tfcompress_tests")
def only_last_kernel(variable):
    return variable.path.endswith("last/kernel")


def _model(opt, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5, activation="tanh", name="first"),
            keras.layers.Dense(3, name="last"),
        ]
    )
    model.compile(opt, "mse")
    return model


def _psg(**kwargs):
    args = dict(
        inner_optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        target=QuantizationGrid(2, per_channel=True),
        lambda_s=7.0,
        epsilon=1e-4,
        keep_8bit=["first"],
        keep_8bit_below=None,
        enabled=False,
    )
    args.update(kwargs)
    return ScaledGradient(**args)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"target": Zero(), "keep_8bit": "first_last", "variables": only_last_kernel},
        {"inner_optimizer": keras.optimizers.Adam(1e-3, beta_1=0.8), "keep_8bit": only_last_kernel},
    ],
)
def test_config_round_trip(kwargs):
    opt = _psg(**kwargs)
    config = keras.saving.serialize_keras_object(opt)
    assert config["registered_name"] == "tfcompress>ScaledGradient"
    restored = keras.saving.deserialize_keras_object(config)
    assert isinstance(restored, ScaledGradient)
    assert restored.get_config() == opt.get_config()
    assert type(restored.inner_optimizer) is type(opt.inner_optimizer)
    assert restored.target == opt.target
    for key in ("variables", "keep_8bit"):
        assert restored.get_config()[key] == opt.get_config()[key]


def _assert_same_state(a, b):
    va, vb = list(a.variables), list(b.variables)
    assert len(va) == len(vb)
    for x, y in zip(va, vb):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)


@pytest.mark.parametrize("momentum", [None, 0.1], ids=["per_step_range", "running_range"])
def test_keras_round_trip_keeps_settings_and_state(tmp_keras_path, momentum):
    x, y = toy_data()
    model = _model(_psg(target=QuantizationGrid(2, per_channel=True, range_momentum=momentum)))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.optimizer.set_enabled(True)
    model.save(tmp_keras_path)
    loaded = keras.models.load_model(tmp_keras_path)
    opt = loaded.optimizer
    assert isinstance(opt, ScaledGradient)
    assert opt.get_config() == model.optimizer.get_config()
    # Variable paths lose the model prefix on reload; layer names are kept.
    def plan(o):
        return [("/".join(p.split("/")[-2:]), s, b) for p, s, b in o.psg_plan()]

    assert plan(opt) == plan(model.optimizer)
    assert ("first/kernel", True, 8) in plan(opt)
    before, after = list(model.optimizer.variables), list(opt.variables)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert float(opt.psg_enabled.numpy()) == 1.0
    assert any("momentum" in v.path for v in after)
    assert any("psg_range" in v.path for v in after) == (momentum is not None)
    # Training continues identically.
    for m in (model, loaded):
        m.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.trainable_variables, loaded.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def _adam_psg():
    return ScaledGradient(keras.optimizers.Adam(0.01), QuantizationGrid(3, range_momentum=0.1),
                         lambda_s=5.0, enabled=False)


def test_weights_checkpoint_resume_keeps_optimizer_state(tmp_path):
    x, y = toy_data()
    fit = dict(batch_size=16, shuffle=False, verbose=0)
    # Uninterrupted: 1 epoch plain, then PSG on for 1 epoch.
    ref = _model(_adam_psg())
    ref.fit(x, y, epochs=1, **fit)
    ref.optimizer.set_enabled(True)
    ref.fit(x, y, epochs=1, **fit)
    # Interrupted after the first epoch + switch, resumed in a fresh process-like object.
    run = _model(_adam_psg())
    run.fit(x, y, epochs=1, **fit)
    run.optimizer.set_enabled(True)
    path = str(tmp_path / "ckpt.weights.h5")
    run.save_weights(path)
    resumed = _model(_adam_psg())
    resumed.optimizer.build(resumed.trainable_variables)
    resumed.load_weights(path)
    _assert_same_state(run.optimizer, resumed.optimizer)
    assert float(resumed.optimizer.psg_enabled.numpy()) == 1.0
    assert int(resumed.optimizer.iterations) == len(x) // 16
    resumed.fit(x, y, epochs=1, **fit)
    for a, b in zip(ref.trainable_variables, resumed.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)


def test_tf_checkpoint_resume(tmp_path):
    tf = pytest.importorskip("tensorflow")
    x, y = toy_data()
    run = _model(_adam_psg())
    run.fit(x, y, batch_size=16, epochs=1, verbose=0)
    run.optimizer.set_enabled(True)
    path = tf.train.Checkpoint(model=run, optimizer=run.optimizer).write(str(tmp_path / "ck"))
    resumed = _model(_adam_psg())
    resumed.optimizer.build(resumed.trainable_variables)
    tf.train.Checkpoint(model=resumed, optimizer=resumed.optimizer).read(path).assert_consumed()
    _assert_same_state(run.optimizer, resumed.optimizer)
