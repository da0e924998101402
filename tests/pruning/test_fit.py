"""Training with model.fit: every supported layer reaches its target; missing callback."""

import keras
import numpy as np
import pytest

from tfcompress.pruning import PolynomialDecay
from tfcompress.pruning import PruningSummary
from tfcompress.pruning import UpdateMasks
from tfcompress.pruning import prune_model
from tfcompress.pruning import sparsity_report
from tfcompress.pruning import strip

N = 32


def _all_layers_model():
    img = keras.Input((8, 8, 4), name="img")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv2d")(img)
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="depthwise")(x)
    x = keras.layers.SeparableConv2D(8, 3, padding="same", name="separable")(x)
    x = keras.layers.Conv2DTranspose(8, 3, padding="same", name="conv2d_t")(x)
    a = keras.layers.GlobalAveragePooling2D()(x)
    tok = keras.Input((6,), dtype="int32", name="tok")
    y = keras.layers.Embedding(20, 8, name="embedding")(tok)
    y = keras.layers.Conv1D(8, 3, padding="same", name="conv1d")(y)
    b = keras.layers.GlobalAveragePooling1D()(y)
    vol = keras.Input((4, 4, 4, 2), name="vol")
    z = keras.layers.Conv3D(4, 2, name="conv3d")(vol)
    c = keras.layers.GlobalAveragePooling3D()(z)
    h = keras.layers.Concatenate()([a, b, c])
    h = keras.layers.BatchNormalization()(h)
    out = keras.layers.Dense(4, name="dense")(h)
    return keras.Model([img, tok, vol], out)


def _data(n=N):
    rng = np.random.default_rng(0)
    return (
        [
            rng.random((n, 8, 8, 4), dtype="float32"),
            rng.integers(0, 20, (n, 6)).astype("int32"),
            rng.random((n, 4, 4, 4, 2), dtype="float32"),
        ],
        rng.integers(0, 4, n),
    )


def _compile(model, **kw):
    model.compile(
        keras.optimizers.SGD(0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **kw,
    )
    return model


def test_every_supported_layer_reaches_target_after_fit():
    model = _all_layers_model()
    pruned = _compile(prune_model(model, schedule=PolynomialDecay(0.0, 0.75, 0, 6, frequency=2)))
    x, y = _data()
    hist = pruned.fit(
        x, y, batch_size=4, epochs=1, verbose=0, callbacks=[UpdateMasks(), PruningSummary()]
    )
    report = sparsity_report(pruned)
    names = {r["class"] for r in report["layers"]}
    assert names == {
        "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose",
        "Embedding", "Conv1D", "Conv3D", "Dense",
    }
    for row in report["layers"]:
        assert row["sparsity"] == pytest.approx(0.75, abs=0.005), row["name"]
        assert row["nonzeros"] == pytest.approx(row["params"] * 0.25, abs=0.005 * row["params"])
    assert hist.history["sparsity"][-1] == pytest.approx(0.75, abs=0.005)
    assert "sparsity/prune_conv3d" in hist.history
    assert report["stale"] == []
    # strip: a plain model, same outputs, same sparsity
    plain = strip(pruned)
    assert not any("Prune" in type(l).__name__ for l in plain._flatten_layers())
    np.testing.assert_allclose(plain.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)
    assert sparsity_report(plain)["global"]["sparsity"] == pytest.approx(0.75, abs=0.005)
    assert "TOTAL" in str(report)


def _small_model():
    inp = keras.Input((12,))
    x = keras.layers.Dense(16, activation="relu", name="d1")(inp)
    return keras.Model(inp, keras.layers.Dense(4, name="d2")(x))


def _small_data(n=N):
    rng = np.random.default_rng(1)
    return rng.random((n, 12), dtype="float32"), rng.integers(0, 4, n)


def test_steps_per_execution_updates_at_execution_boundaries():
    pruned = _compile(
        prune_model(_small_model(), schedule=PolynomialDecay(0.0, 0.5, 0, 5, frequency=2)),
        steps_per_execution=3,
    )
    x, y = _small_data()
    pruned.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[UpdateMasks()])
    for w in pruned.layers[1:]:
        step, last, checked = w.read_counters()
        assert step == 8 and checked == 8
        assert last == 6  # point 5 (end) fell inside the execution 3..5, applied at 6
        assert w.sparsity() == pytest.approx(0.5, abs=0.005)


def test_update_masks_touches_variables_only_at_update_points(monkeypatch):
    """Batches with no update due cost the callback no variable read or assign."""
    from tfcompress.pruning import controller

    updates = []
    apply_updates = controller.apply_updates

    def recording(model, wrappers, *args, **kwargs):
        updated, counters = apply_updates(model, wrappers, *args, **kwargs)
        updates.append((wrappers[0].read_counters()[0], len(updated)))
        return updated, counters

    monkeypatch.setattr(controller, "apply_updates", recording)
    pruned = _compile(prune_model(
        _small_model(), schedule=PolynomialDecay(0.0, 0.5, 2, 9, frequency=3)))
    x, y = _small_data()  # 8 batches of 4 per epoch
    pruned.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[UpdateMasks()])
    # looked at step 0 (start), then only at the update points 2, 5, 8 and 9 (end)
    assert updates == [(0, 0), (2, 2), (5, 2), (8, 2), (9, 2)]
    for w in pruned.layers[1:]:
        assert w.read_counters() == (16, 9, 16)


def test_training_without_update_masks_is_detected():
    pruned = _compile(
        prune_model(_small_model(), schedule=PolynomialDecay(0.0, 0.5, 0, 5, frequency=2))
    )
    x, y = _small_data()
    pruned.fit(x, y, batch_size=4, epochs=1, verbose=0)  # forgot the callback
    with pytest.raises(RuntimeError, match=r"without their masks being updated.*UpdateMasks"):
        strip(pruned)
    assert len(sparsity_report(pruned)["stale"]) == 2
    # the next fit with the callback warns, then catches up
    with pytest.warns(UserWarning, match="trained without their masks being updated"):
        pruned.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[UpdateMasks()])
    assert sparsity_report(pruned)["stale"] == []
    assert pruned.layers[1].sparsity() == pytest.approx(0.5, abs=0.005)
    strip(pruned)  # no error now


def test_update_masks_on_a_model_without_wrappers():
    model = _compile(_small_model())
    x, y = _small_data()
    with pytest.raises(ValueError, match="no PruneWrapper"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[UpdateMasks()])
    with pytest.raises(ValueError, match="frequency=0"):
        UpdateMasks(frequency=0)


def test_pruning_summary_writes_tensorboard_scalars(tmp_path):
    import tensorflow as tf

    pruned = _compile(
        prune_model(_small_model(), schedule=PolynomialDecay(0.0, 0.5, 0, 5, frequency=2))
    )
    x, y = _small_data()
    pruned.fit(x, y, batch_size=4, epochs=1, verbose=0,
               callbacks=[UpdateMasks(), PruningSummary(log_dir=str(tmp_path), per_layer=False)])
    (event_file,) = list(tmp_path.iterdir())
    tags = {}
    for event in tf.compat.v1.train.summary_iterator(str(event_file)):
        for value in event.summary.value:
            tags[value.tag] = tf.make_ndarray(value.tensor)
    assert float(tags["sparsity/global"]) == pytest.approx(0.5, abs=0.005)
    assert "sparsity/prune_d1" in tags


def test_pruned_student_of_a_keras_distiller_reaches_target_and_strips():
    """Pruning while distilling: UpdateMasks finds the wrappers of a student nested in
    ``keras.distillation.Distiller``, the teacher stays untouched, and the stripped
    student keeps the masks."""
    teacher = _small_model()
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    student = prune_model(_small_model(), schedule=PolynomialDecay(0.0, 0.5, 0, 5, frequency=2))
    distiller = keras.distillation.Distiller(
        teacher=teacher, student=student,
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=4.0, loss=keras.losses.KLDivergence()))
    _compile(distiller)
    x, y = _small_data()
    history = distiller.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[UpdateMasks()])
    assert history.history["distillation_loss"][-1] >= 0.0  # a real KL, on the softmax
    for w in student.layers[1:]:
        assert w.sparsity() == pytest.approx(0.5, abs=0.005)
    for before, after in zip(teacher_weights, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    stripped = strip(student)
    for layer in stripped.layers[1:]:
        assert np.mean(layer.kernel.numpy() == 0) == pytest.approx(0.5, abs=0.005)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), student.predict(x, verbose=0),
                               atol=1e-6)
