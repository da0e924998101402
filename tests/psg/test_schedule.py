"""ScaledGradientSchedule: PSG off before `start_epoch`, on from it (state in a variable)."""

import keras
import numpy as np
import pytest
from psg_testutil import mse_grads, ref_grid, toy_data

from tfcompress.psg import QuantizationGrid, ScaledGradient, ScaledGradientSchedule, find_scaled_gradient

LR, LAM, EPS = 0.1, 4.0, 1e-3


def _model(opt):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(opt, "mse")
    return model


def _psg(enabled=True):
    return ScaledGradient(
        keras.optimizers.SGD(LR), QuantizationGrid(3), lambda_s=LAM, epsilon=EPS, enabled=enabled
    )


def test_schedule_off_then_on():
    x, y = toy_data()
    fit = dict(batch_size=len(x), shuffle=False, verbose=0)
    sched = ScaledGradientSchedule(start_epoch=1)
    model = _model(_psg(enabled=True))  # the callback switches it off for epoch 0
    plain = _model(keras.optimizers.SGD(LR))
    model.fit(x, y, epochs=1, callbacks=[sched], **fit)
    plain.fit(x, y, epochs=1, **fit)
    assert float(model.optimizer.psg_enabled.numpy()) == 0.0
    for a, b in zip(model.trainable_variables, plain.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    # Epoch 1 (resumed with initial_epoch): one exact PSG step.
    k, b = (v.numpy() for v in model.trainable_variables)
    gk, gb = mse_grads(model, x, y)
    model.fit(x, y, epochs=2, initial_epoch=1, callbacks=[sched], **fit)
    assert float(model.optimizer.psg_enabled.numpy()) == 1.0
    expected_k = k - LR * LAM * (np.abs(k - ref_grid(k, 3)) + EPS) * gk
    np.testing.assert_allclose(model.trainable_variables[0].numpy(), expected_k, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.trainable_variables[1].numpy(), b - LR * gb, rtol=1e-5)


def test_schedule_needs_a_scaled_gradient():
    x, y = toy_data()
    model = _model(keras.optimizers.SGD(LR))
    with pytest.raises(ValueError, match="ScaledGradient"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[ScaledGradientSchedule(0)])


def test_find_scaled_gradient_through_loss_scale_optimizer():
    psg = _psg()
    assert find_scaled_gradient(keras.optimizers.LossScaleOptimizer(psg)) is psg
    assert find_scaled_gradient(keras.optimizers.SGD(0.1)) is None


@pytest.mark.parametrize("start", [-1, 1.5, True, "3"])
def test_bad_start_epoch(start):
    with pytest.raises(ValueError, match=f"start_epoch={start!r}"):
        ScaledGradientSchedule(start)


def test_schedule_config():
    cb = ScaledGradientSchedule(start_epoch=5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cb))
    assert isinstance(restored, ScaledGradientSchedule) and restored.start_epoch == 5
