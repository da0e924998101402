"""DCIL (002 ch. 5): two-path structure, eq. 5.3 gradient split, eq. 5.4 loss with
KL warm-up, training through fit to the target sparsity, strip and .keras round trip."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcompress.pruning import ConstantSparsity
from tfcompress.pruning import DCILModel
from tfcompress.pruning import PolynomialDecay
from tfcompress.pruning import PruneWrapper
from tfcompress.pruning import UpdateMasks
from tfcompress.pruning import dcil
from tfcompress.pruning import sparsity_report
from tfcompress.pruning import strip
from tfcompress.pruning import update_masks
from tfcompress.pruning.controller import collect_wrappers

N, BATCH, CLASSES = 32, 8, 4  # 4 steps per epoch
RNG = np.random.default_rng(3)
X = RNG.random((N, 6, 6, 2), dtype="float32")
Y = RNG.integers(0, CLASSES, N)


def _toy(softmax=False):
    inp = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = keras.layers.Dense(CLASSES, activation="softmax" if softmax else None, name="head")(x)
    return keras.Model(inp, out, name="toy")


def _wrappers(model):
    return {w.layer.name: w for w in collect_wrappers(model)}


# --------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=0.0), "temperature=0.0"),
        (dict(temperature=-1), "temperature=-1"),
        (dict(kl_weight=-0.5), "kl_weight=-0.5"),
        (dict(warmup_epochs=-1), "warmup_epochs=-1"),
        (dict(warmup_epochs=1.5), "warmup_epochs=1.5"),
        (dict(schedule=None), "schedule=None"),
        (dict(layers=["conv1", "head"]), "head"),
    ],
)
def test_invalid_arguments(kwargs, match):
    args = dict(schedule=ConstantSparsity(0.5))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        dcil(_toy(), **args)


def test_model_without_dense_head_is_rejected():
    inp = keras.Input((6, 6, 2))
    out = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(3, 3)(inp))
    with pytest.raises(ValueError, match="Dense"):
        dcil(keras.Model(inp, out), schedule=0.5)


# --------------------------------------------------------------------------- structure
def test_two_paths_share_wrappers_and_duplicate_bn_and_head():
    model = dcil(_toy(), schedule=0.5)
    assert isinstance(model, DCILModel) and model.from_logits
    p, s = model.pruned_model, model.super_model
    wrapped = [l for l in p.layers if isinstance(l, PruneWrapper)]
    assert [w.layer.name for w in wrapped] == ["conv1", "conv2"]  # the head is not pruned
    assert all(w.mode == "dual" and w.threshold == "global" for w in wrapped)
    assert all(w.schedule.frequency == 16 for w in wrapped)
    for w in wrapped:  # shared, not copied
        assert s.get_layer(w.name) is w
    for name in ("bn1", "bn2", "head"):
        original, copy = p.get_layer(name), s.get_layer("super_" + name)
        assert copy is not original and not isinstance(copy, PruneWrapper)
        for a, b in zip(original.get_weights(), copy.get_weights()):
            np.testing.assert_array_equal(a, b)  # starts from the same weights
    assert not isinstance(p.get_layer("head"), PruneWrapper)
    # UpdateMasks / the controller find the wrappers inside the DCIL model, once each
    assert sorted(_wrappers(model)) == ["conv1", "conv2"]
    # predict runs the P-net
    np.testing.assert_allclose(model.predict(X, verbose=0), p.predict(X, verbose=0), atol=1e-6)


def test_sequential_softmax_classifier():
    seq = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(8, activation="relu", name="d1"),
         keras.layers.Dense(3, name="d2"), keras.layers.Softmax(name="sm")]
    )
    model = dcil(seq, schedule=0.5, warmup_epochs=0)
    assert model.head == "d2" and not model.from_logits
    model.compile("sgd")
    x, y = RNG.random((4, 5), dtype="float32"), np.array([0, 1, 2, 0])
    terms = model.dcil_losses(x, y)
    # the tempered distributions are exact from probabilities: KL >= 0, finite
    assert np.isfinite(float(model.compute_loss(x, y, training=False)))
    assert float(terms["kl_sp"]) >= 0 and float(terms["kl_ps"]) >= 0


# --------------------------------------------------------------------------- eq. 5.3
def _plain_copy(model, weights_by_name):
    copy = keras.models.clone_model(model)
    for layer in copy.layers:
        if layer.name in weights_by_name:
            layer.set_weights(weights_by_name[layer.name])
    return copy


def test_one_step_gradient_is_eq_5_3():
    toy = _toy()
    lr, temperature, kl_weight = 0.5, 2.0, 0.7
    model = dcil(toy, schedule=ConstantSparsity(0.5, frequency=16), temperature=temperature,
                 kl_weight=kl_weight, warmup_epochs=0)
    update_masks(model, force=True)
    model.compile(keras.optimizers.SGD(lr))
    wrappers = _wrappers(model)
    dense = {n: w.layer.kernel.numpy().copy() for n, w in wrappers.items()}
    masks = {n: w.full_masks()["kernel"] for n, w in wrappers.items()}
    assert all(0 < m.mean() < 1 for m in masks.values())
    p, s = model.pruned_model, model.super_model
    p_weights = {n: [dense[n] * masks[n]] for n in dense}
    s_weights = {n: [dense[n]] for n in dense}
    for name in ("bn1", "bn2", "head"):
        p_weights[name] = p.get_layer(name).get_weights()
        s_weights[name] = s.get_layer("super_" + name).get_weights()
    # make the two paths differ before the step (else KL = 0 is a weak check)
    s_weights["head"] = [w + 0.3 * RNG.normal(size=w.shape).astype("float32")
                         for w in s_weights["head"]]
    s.get_layer("super_head").set_weights(s_weights["head"])
    p_net, s_net = _plain_copy(toy, p_weights), _plain_copy(toy, s_weights)

    # Independent reference: eq. 5.4 per path, then eq. 5.3.
    x, y = X[:BATCH], Y[:BATCH]
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape(persistent=True) as tape:
        zp, zs = p_net(x, training=True), s_net(x, training=True)
        tp = tf.nn.softmax(tf.stop_gradient(zp) / temperature)
        ts = tf.nn.softmax(tf.stop_gradient(zs) / temperature)
        kl_sp = tf.reduce_mean(keras.losses.kl_divergence(ts, tf.nn.softmax(zp / temperature)))
        kl_ps = tf.reduce_mean(keras.losses.kl_divergence(tp, tf.nn.softmax(zs / temperature)))
        loss_p = ce(y, zp) + kl_weight * temperature**2 * kl_sp
        loss_s = ce(y, zs) + kl_weight * temperature**2 * kl_ps
    assert float(kl_sp) > 1e-4
    expected = {}
    for name in dense:
        g_p = tape.gradient(loss_p, p_net.get_layer(name).kernel).numpy()  # ∇_W̄ L
        g_s = tape.gradient(loss_s, s_net.get_layer(name).kernel).numpy()  # ∇_W L
        expected[name] = masks[name] * g_p + (1 - masks[name]) * g_s

    logs = model.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], float(loss_p + loss_s), rtol=1e-5)
    for name, w in wrappers.items():
        got = (dense[name] - w.layer.kernel.numpy()) / lr
        np.testing.assert_allclose(got, expected[name], rtol=1e-4, atol=1e-6)
        assert np.abs(got[masks[name] == 0]).max() > 0  # inactive weights do move
    # BN layers and heads were trained separately by their own path
    for name in ("bn1", "head"):
        a = p.get_layer(name).get_weights()[0]
        b = s.get_layer("super_" + name).get_weights()[0]
        assert not np.allclose(a, b)


# --------------------------------------------------------------------------- fit / save
@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(7)
    model = dcil(_toy(), schedule=PolynomialDecay(0.0, 0.75, 0, 4, frequency=2),
                 warmup_epochs=1)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), metrics=["accuracy"])
    assert not model.kl_active
    history = model.fit(X, Y, batch_size=BATCH, epochs=2, verbose=0)
    return model, history.history


def test_fit_warmup_and_target_sparsity(trained):
    model, hist = trained
    for key in ("loss", "accuracy", "super_accuracy", "ce_pruned", "ce_super", "kl"):
        assert len(hist[key]) == 2, key
    # epoch 0: warm-up, no KL in the loss; epoch 1: λT²·KL switched on (λ=1, T=2)
    np.testing.assert_allclose(hist["loss"][0], hist["ce_pruned"][0] + hist["ce_super"][0],
                               rtol=1e-5)
    np.testing.assert_allclose(
        hist["loss"][1], hist["ce_pruned"][1] + hist["ce_super"][1] + 4.0 * hist["kl"][1],
        rtol=1e-5)
    assert hist["kl"][1] > 0
    assert int(model.epochs_seen.numpy()) == 2 and model.kl_active
    # UpdateMasks was added by fit: global target reached, masks kept updating after the end
    wrappers = list(_wrappers(model).values())
    total = sum(w.full_masks()["kernel"].size for w in wrappers)
    zeros = sum(int((w.full_masks()["kernel"] == 0).sum()) for w in wrappers)
    assert zeros / total == pytest.approx(0.75, abs=0.01)
    for w in wrappers:
        step, last, checked = w.read_counters()
        assert (step, last, checked) == (8, 6, 8)  # dual: updated at 6 > end_step 4
    report = sparsity_report(model.pruned_model)
    assert report["stale"] == []
    # the exported P-net
    plain = strip(model.pruned_model)
    assert not any(isinstance(l, PruneWrapper) for l in plain.layers)
    np.testing.assert_allclose(plain.predict(X, verbose=0), model.predict(X, verbose=0),
                               atol=1e-5)


def test_keras_round_trip_and_resume(trained, tmp_keras_path):
    model, _ = trained
    model.save(tmp_keras_path)
    loaded = keras.models.load_model(tmp_keras_path)
    assert isinstance(loaded, DCILModel)
    for attr in ("head", "temperature", "kl_weight", "warmup_epochs", "from_logits"):
        assert getattr(loaded, attr) == getattr(model, attr), attr
    np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0),
                               atol=1e-6)
    np.testing.assert_allclose(loaded.super_model.predict(X, verbose=0),
                               model.super_model.predict(X, verbose=0), atol=1e-6)
    before, after = _wrappers(model), _wrappers(loaded)
    for name, w in before.items():
        np.testing.assert_array_equal(after[name].full_masks()["kernel"],
                                      w.full_masks()["kernel"])
        assert after[name].read_counters() == w.read_counters()
        assert loaded.super_model.get_layer(w.name) is after[name]  # still shared
    assert int(loaded.epochs_seen.numpy()) == 2 and loaded.kl_active
    # resume: the optimizer state came back and training goes on with KL on
    assert loaded.optimizer.iterations.numpy() == model.optimizer.iterations.numpy()
    hist = loaded.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0,
                      callbacks=[UpdateMasks(frequency=2)]).history
    assert hist["loss"][0] > hist["ce_pruned"][0] + hist["ce_super"][0]
    assert int(loaded.epochs_seen.numpy()) == 3
