"""Factor Transfer through model.fit: paraphraser, translator, frozen teacher, round trip."""

import warnings

import keras
import numpy as np
import pytest

from tfcompress.distillation import AttentionTransfer
from tfcompress.distillation import FactorTransfer
from tfcompress.distillation import Paraphraser
from tfcompress.distillation import ParaphraserTraining
from tfcompress.distillation import Translator
from tfcompress.distillation import factor_transfer_loss
from tfcompress.models import build

N = 64


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, 28, 28, 1)).astype("float32"), rng.integers(0, 10, N)


def _teacher():
    return build("resnet8", width=4)         # last group: stage3_block1_out, 7×7×16


def _student():
    return build("small_cnn", filters=(4, 8), dense=16)  # last 4-D output: pool2, 7×7×8


def _weights(layer):
    return [np.array(w) for w in layer.get_weights()]


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def _trained_paraphraser(teacher, x, epochs=2):
    paraphraser = Paraphraser(rate=0.5)
    stage1 = ParaphraserTraining(teacher, paraphraser)
    stage1.compile(keras.optimizers.Adam(1e-2))
    history = stage1.fit(x, epochs=epochs, batch_size=32, verbose=0)
    return paraphraser, history.history["loss"]


def test_paraphraser_keeps_the_spatial_size_and_scales_the_channels():
    paraphraser = Paraphraser(rate=0.75)
    x = np.ones((2, 5, 7, 12), "float32")
    assert paraphraser(x).shape == (2, 5, 7, 12)
    assert paraphraser.encode(x).shape == (2, 5, 7, 9)
    assert paraphraser.factor_channels == 9
    assert Translator(9)(np.ones((2, 5, 7, 3), "float32")).shape == (2, 5, 7, 9)


@pytest.mark.parametrize("kwargs, message", [
    ({"rate": 0}, "rate must be a finite number > 0; received: rate=0"),
    ({"rate": "half"}, "rate=.half."),
    ({"negative_slope": -1}, r"negative_slope must be a number in \[0, 1\]"),
    ({"negative_slope": float("nan")}, "received: negative_slope=nan"),
])
def test_paraphraser_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Paraphraser(**kwargs)


def test_translator_rejects_bad_factor_channels():
    with pytest.raises(ValueError, match="factor_channels must be an int >= 1; received: "
                                         "factor_channels=0"):
        Translator(0)


def test_paraphraser_training_fits_only_the_paraphraser(data):
    x, _ = data
    teacher = _teacher()
    before = _weights(teacher)
    paraphraser, losses = _trained_paraphraser(teacher, x, epochs=4)
    assert losses[-1] < losses[0]
    assert _same(before, _weights(teacher))
    assert paraphraser.factor_channels == 8       # round(0.5 · 16)


def test_factor_transfer_loss_is_ce_plus_beta_ft_and_trains_student_and_translator(data):
    x, y = data
    teacher = _teacher()
    paraphraser, _ = _trained_paraphraser(teacher, x)
    student = _student()
    ft = FactorTransfer(student, teacher, paraphraser, beta=500.0)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ft.compile(keras.optimizers.SGD(0.05, momentum=0.9), loss=ce, metrics=["accuracy"])

    # eq. 3.2 by hand on one batch
    logits, student_factor = ft(x, training=True)
    expected = float(ce(y, logits)) + 500.0 * float(
        factor_transfer_loss(ft.teacher_factor(x), student_factor))
    got = float(ft.compute_loss(x, y, (logits, student_factor)))
    assert got == pytest.approx(expected, rel=1e-5)

    frozen = (_weights(teacher), _weights(paraphraser))
    trained = (_weights(student), _weights(ft.translator))
    history = ft.fit(x, y, epochs=4, batch_size=32, verbose=0).history
    assert history["ft_loss"][-1] < history["ft_loss"][0]
    assert _same(frozen[0], _weights(teacher)) and _same(frozen[1], _weights(paraphraser))
    assert not _same(trained[0], _weights(student))
    assert not _same(trained[1], _weights(ft.translator))
    # the exported student carries no translator weight
    assert student.count_params() == _student().count_params()
    np.testing.assert_allclose(ft.predict(x, verbose=0), student.predict(x, verbose=0),
                               atol=1e-6)
    result = ft.evaluate(x, y, verbose=0, return_dict=True)
    assert result["ft_loss"] > 0


def test_factor_transfer_round_trips_through_keras_file(data, tmp_keras_path):
    x, y = data
    teacher = _teacher()
    paraphraser, _ = _trained_paraphraser(teacher, x, epochs=1)
    ft = FactorTransfer(_student(), teacher, paraphraser, beta=100.0, p=2)
    ft.compile(keras.optimizers.SGD(0.05, momentum=0.9),
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ft.fit(x, y, epochs=1, batch_size=32, verbose=0)
    ft.save(tmp_keras_path)
    loaded = keras.models.load_model(tmp_keras_path)
    assert (loaded.beta, loaded.p, loaded.student_layer) == (100.0, 2, "pool2")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), ft.predict(x, verbose=0))
    np.testing.assert_array_equal(loaded.teacher_factor(x), ft.teacher_factor(x))
    assert len(loaded.trainable_variables) == len(ft.trainable_variables)
    assert len(loaded.optimizer.variables) == len(ft.optimizer.variables)
    loaded.fit(x, y, epochs=1, batch_size=32, verbose=0)  # training resumes


def test_factor_transfer_rejects_unmatched_models(data):
    x, _ = data
    teacher = _teacher()
    with pytest.raises(ValueError, match="paraphraser must be a built tfcompress Paraphraser"):
        FactorTransfer(_student(), teacher, Paraphraser())
    paraphraser, _ = _trained_paraphraser(teacher, x, epochs=1)
    with pytest.raises(ValueError, match=r"same spatial size; teacher layer .* \(7, 7\), "
                                         r"student layer 'pool1' gives \(14, 14\)"):
        FactorTransfer(_student(), teacher, paraphraser, student_layer="pool1")
    with pytest.raises(ValueError, match="student_layer must name a layer of student"):
        FactorTransfer(_student(), teacher, paraphraser, student_layer="nope")
    with pytest.raises(ValueError, match=r"translator.factor_channels \(3\) must equal"):
        FactorTransfer(_student(), teacher, paraphraser, translator=Translator(3))
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        FactorTransfer(_student(), teacher, paraphraser, beta=-1)


def test_attention_transfer_trains_through_keras_distiller(data):
    x, y = data
    teacher, student = _teacher(), _student()
    loss = AttentionTransfer("stage3_block1_out", "pool2")
    distiller = keras.distillation.Distiller(
        teacher=teacher, student=student, distillation_losses=[loss],
        distillation_loss_weights=[500.0], student_loss_weight=0.5)
    distiller.compile(keras.optimizers.SGD(0.05),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = _weights(student)
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert not _same(before, _weights(student))
    restored = AttentionTransfer.from_config(loss.get_config())
    assert (restored.teacher_layer_name, restored.student_layer_name, restored.p) == (
        "stage3_block1_out", "pool2", 2)
    with pytest.raises(ValueError, match="teacher_layer_name must be a layer name"):
        AttentionTransfer("", "pool2")


def test_paraphraser_training_round_trips_and_rejects_bad_arguments(data, tmp_keras_path):
    x, _ = data
    teacher = _teacher()
    stage1 = ParaphraserTraining(teacher, Paraphraser(rate=0.5), p=2)
    stage1.compile(keras.optimizers.Adam(1e-3))
    stage1.fit(x, epochs=1, batch_size=32, verbose=0)
    stage1.save(tmp_keras_path)
    loaded = keras.models.load_model(tmp_keras_path)
    assert (loaded.p, loaded.teacher_layer) == (2, "stage3_block1_out")
    np.testing.assert_array_equal(loaded.teacher_factor(x), stage1.teacher_factor(x))
    assert len(loaded.trainable_variables) == len(stage1.trainable_variables) == 12
    with pytest.raises(ValueError, match="paraphraser must be a tfcompress Paraphraser"):
        ParaphraserTraining(teacher, Translator(4))
    with pytest.raises(ValueError, match="p must be 1 or 2; received: p=3"):
        ParaphraserTraining(teacher, Paraphraser(), p=3)
    with pytest.raises(ValueError, match="teacher_layer must name a layer of teacher"):
        ParaphraserTraining(teacher, Paraphraser(), teacher_layer="nope")


def test_distiller_with_attention_transfer_round_trips(data, tmp_keras_path):
    x, y = data
    distiller = keras.distillation.Distiller(
        teacher=_teacher(), student=_student(),
        distillation_losses=[AttentionTransfer("stage3_block1_out", "pool2", p=1)],
        distillation_loss_weights=[500.0], student_loss_weight=0.5)
    distiller.compile(keras.optimizers.SGD(0.05),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    distiller.save(tmp_keras_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # Keras's Distiller is not recompiled on loading
        loaded = keras.models.load_model(tmp_keras_path)
    restored = loaded.distillation_losses[0]
    assert isinstance(restored, AttentionTransfer)
    assert (restored.teacher_layer_name, restored.student_layer_name, restored.p) == (
        "stage3_block1_out", "pool2", 1)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), distiller.predict(x, verbose=0))
