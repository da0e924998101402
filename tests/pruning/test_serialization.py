"""Configs, .keras round trip, and checkpoint resume keep masks and the schedule step."""

import copy

import keras
import numpy as np
import pytest

from tfcompress.pruning import NM
from tfcompress.pruning import Block
from tfcompress.pruning import ConstantSparsity
from tfcompress.pruning import MagnitudeCriterion
from tfcompress.pruning import PolynomialDecay
from tfcompress.pruning import PruneWrapper
from tfcompress.pruning import PruningSummary
from tfcompress.pruning import UpdateMasks
from tfcompress.pruning import prune_layer
from tfcompress.pruning import prune_model

N, BATCH = 32, 8  # 4 steps per epoch


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(schedule=PolynomialDecay(0.1, 0.8, 3, 50, power=2, frequency=7), granularity=NM(1, 4),
             mode="feedback", criterion=MagnitudeCriterion("l1"), threshold="global"),
        dict(schedule=ConstantSparsity(0.3), granularity=Block((4, 8)), mode="dual"),
        dict(granularity="structured", mode="hard", criterion="l2"),
    ],
)
def test_wrapper_config_round_trip(kwargs):
    w = prune_layer(keras.layers.Dense(8, name="inner"), name="w", **kwargs)
    config = keras.saving.serialize_keras_object(w)
    again = keras.saving.deserialize_keras_object(copy.deepcopy(config))
    assert isinstance(again, PruneWrapper)
    for attr in ("schedule", "granularity", "mode", "criterion", "threshold", "name"):
        assert getattr(again, attr) == getattr(w, attr), attr
    assert again.layer.get_config() == w.layer.get_config()
    assert keras.saving.serialize_keras_object(again) == config


def test_callback_configs():
    assert UpdateMasks(frequency=16).get_config() == {"frequency": 16}
    assert PruningSummary(log_dir="x").get_config() == {"log_dir": "x", "per_layer": True}


def _model():
    inp = keras.Input((12,))
    x = keras.layers.Dense(16, activation="relu", name="d1")(inp)
    return keras.Model(inp, keras.layers.Dense(4, name="d2")(x))


def _data():
    rng = np.random.default_rng(2)
    return rng.random((N, 12), dtype="float32"), rng.integers(0, 4, N)


def _pruned(mode="dual"):
    m = prune_model(_model(), schedule=PolynomialDecay(0.0, 0.6, 0, 10, frequency=2), mode=mode)
    m.compile(keras.optimizers.SGD(0.1, momentum=0.9),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return m


def _state(model):
    return {w.name: (w.read_counters(), w.full_masks()["kernel"].copy())
            for w in model.layers if isinstance(w, PruneWrapper)}


def test_keras_save_load_keeps_masks_step_and_training(tmp_keras_path):
    model = _pruned()
    x, y = _data()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[UpdateMasks()])
    before = _state(model)
    assert before["prune_d1"][0][0] == 4 and 0 < model.layers[1].sparsity() < 0.6
    model.save(tmp_keras_path)
    loaded = keras.models.load_model(tmp_keras_path)
    after = _state(loaded)
    for name, (counters, mask) in before.items():
        assert after[name][0] == counters
        np.testing.assert_array_equal(after[name][1], mask)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert loaded.layers[1].schedule == model.layers[1].schedule and loaded.layers[1].mode == "dual"
    # training resumes on the schedule: step continues, final sparsity reached
    loaded.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[UpdateMasks()])
    assert loaded.layers[1].read_counters()[0] == 12
    assert loaded.layers[1].sparsity() == pytest.approx(0.6, abs=0.005)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt("simulated crash")


class _Probe(keras.callbacks.Callback):
    """Records the state seen at the first batch of a run."""

    def on_train_batch_begin(self, batch, logs=None):
        if not hasattr(self, "seen"):
            self.seen = _state(self.model)


def test_backup_and_restore_resume_keeps_masks_and_step(tmp_path):
    x, y = _data()
    backup = str(tmp_path / "backup")
    model = _pruned(mode="hard")
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=BATCH, epochs=4, verbose=0,
                  callbacks=[UpdateMasks(), keras.callbacks.BackupAndRestore(backup), _Interrupt()])
    saved = _state(model)  # == the backup written at the end of epoch 2 (step 8)
    assert saved["prune_d1"][0][0] == 8

    fresh = _pruned(mode="hard")  # a new process would start from scratch like this
    probe = _Probe()
    # UpdateMasks listed *before* BackupAndRestore on purpose: it must still see the
    # restored state (the probe runs first, before the update due at step 8).
    fresh.fit(x, y, batch_size=BATCH, epochs=4, verbose=0,
              callbacks=[probe, UpdateMasks(), keras.callbacks.BackupAndRestore(backup)])
    for name, (counters, mask) in saved.items():
        assert probe.seen[name][0][0] == counters[0] == 8
        np.testing.assert_array_equal(probe.seen[name][1], mask)
    w = fresh.layers[1]
    assert w.read_counters()[0] == 16  # 2 restored epochs + 2 resumed epochs
    assert w.sparsity() == pytest.approx(0.6, abs=0.005)
