"""DPF baseline (002 §5.2.1): feedback mode, global threshold, head dense, masks frozen
after the schedule's end while the straight-through gradient keeps moving pruned weights."""

import keras
import numpy as np
import pytest

from tfcompress.pruning import PolynomialDecay
from tfcompress.pruning import PruneWrapper
from tfcompress.pruning import UpdateMasks
from tfcompress.pruning import dpf


def _model():
    inp = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(6, 3, name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(3, name="head")(x))


def _wrappers(model):
    return [l for l in model.layers if isinstance(l, PruneWrapper)]


def test_dpf_is_feedback_global_with_dense_head():
    pruned = dpf(_model(), schedule=0.5)
    wrappers = _wrappers(pruned)
    assert [w.layer.name for w in wrappers] == ["conv1", "conv2"]
    assert all(w.mode == "feedback" and w.threshold == "global" for w in wrappers)
    assert all(w.schedule.frequency == 16 for w in wrappers)
    with_head = dpf(_model(), schedule=0.5, prune_head=True, granularity="structured")
    assert [w.layer.name for w in _wrappers(with_head)] == ["conv1", "conv2", "head"]
    with pytest.raises(ValueError, match="schedule=None"):
        dpf(_model())


def test_masks_frozen_after_end_step():
    pruned = dpf(_model(), schedule=PolynomialDecay(0.0, 0.6, 0, 4, frequency=2))
    pruned.compile(keras.optimizers.SGD(0.5), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 6, 6, 2), dtype="float32"), rng.integers(0, 3, 32)
    pruned.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[UpdateMasks()])
    wrappers = _wrappers(pruned)
    masks = [w.full_masks()["kernel"].copy() for w in wrappers]
    kernels = [w.layer.kernel.numpy().copy() for w in wrappers]
    total = sum(m.size for m in masks)
    assert sum(int((m == 0).sum()) for m in masks) / total == pytest.approx(0.6, abs=0.01)
    assert all(w.read_counters()[1] == 4 for w in wrappers)  # last update at end_step
    pruned.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[UpdateMasks()])
    for w, m, k in zip(wrappers, masks, kernels):
        step, last, _ = w.read_counters()
        assert step == 16 and last == 4
        np.testing.assert_array_equal(w.full_masks()["kernel"], m)  # frozen
        moved = np.abs(w.layer.kernel.numpy() - k)[m == 0]
        assert moved.max() > 0  # straight-through: pruned weights still get gradients
