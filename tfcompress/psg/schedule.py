"""``ScaledGradientSchedule``: switch PSG on at a given epoch."""

import numbers

import keras

__all__ = ["ScaledGradientSchedule", "find_scaled_gradient"]


def find_scaled_gradient(optimizer):
    """Returns the :class:`ScaledGradient` in ``optimizer`` (possibly wrapped).

    Looks through ``inner_optimizer`` chains, so a ``ScaledGradient`` wrapped by
    Keras's ``LossScaleOptimizer`` (mixed precision) is found too. Returns
    ``None`` when there is none.
    """
    from tfcompress.psg.optimizer import ScaledGradient

    seen = set()
    while optimizer is not None and id(optimizer) not in seen:
        if isinstance(optimizer, ScaledGradient):
            return optimizer
        seen.add(id(optimizer))
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return None


@keras.saving.register_keras_serializable(package="tfcompress")
class ScaledGradientSchedule(keras.callbacks.Callback):
    """Turns PSG off before ``start_epoch`` and on from ``start_epoch``.

    The paper trains with plain SGD first and applies PSGD from the first
    learning-rate decay (CIFAR) or for the last 15 epochs (ImageNet) (002
    §4.3.1). This callback sets the ``psg_enabled`` switch of the model's
    :class:`~tfcompress.psg.ScaledGradient` at the beginning of every epoch:
    ``0`` (plain gradients) for ``epoch < start_epoch``, ``1`` afterwards. The
    switch is a non-trainable optimizer variable, so it is saved with the
    optimizer and a run resumed with ``fit(initial_epoch=...)`` picks up the
    right state; the callback itself holds no state.

    The callback is a convenience: a ``ScaledGradient`` built with
    ``enabled=True`` applies PSG from the first step without it.

    Args:
        start_epoch: Integer ``>= 0``, the first (0-based) epoch trained with
            PSG.

    Raises:
        ValueError: If ``start_epoch`` is not a non-negative integer, or (at
            the start of training) if the model's optimizer is not, and does
            not wrap, a ``ScaledGradient``.

    Example:

    ```python
    opt = tfcompress.ScaledGradient(keras.optimizers.SGD(0.1, momentum=0.9),
                                    tfcompress.QuantizationGrid(4), lambda_s=10.0)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=12,
              callbacks=[tfcompress.ScaledGradientSchedule(start_epoch=8)])
    ```
    """

    def __init__(self, start_epoch):
        super().__init__()
        if (
            isinstance(start_epoch, bool)
            or not isinstance(start_epoch, numbers.Integral)
            or start_epoch < 0
        ):
            raise ValueError(
                "`start_epoch` must be an integer >= 0. Received: "
                f"start_epoch={start_epoch!r}"
            )
        self.start_epoch = int(start_epoch)

    def _optimizer(self):
        opt = find_scaled_gradient(getattr(self.model, "optimizer", None))
        if opt is None:
            raise ValueError(
                "ScaledGradientSchedule needs a model compiled with a "
                "tfcompress ScaledGradient optimizer. Received: optimizer="
                f"{getattr(self.model, 'optimizer', None)!r}"
            )
        return opt

    def on_train_begin(self, logs=None):
        self._optimizer()

    def on_epoch_begin(self, epoch, logs=None):
        # On JAX the trainer re-reads all variables at the first step of an
        # epoch, so an assignment here is seen by the compiled step.
        self._optimizer().set_enabled(epoch >= self.start_epoch)

    def get_config(self):
        return {"start_epoch": self.start_epoch}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
