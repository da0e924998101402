"""BatchNormalization statistics re-estimated after the layers before them changed."""

import keras
import numpy as np


def recalibrate_batch_norms(model, x, batch_size=256):
    """Sets every BatchNormalization's moving mean and variance to its input's statistics.

    A factorized (or otherwise rewritten) convolution approximates the original one,
    so the activations reaching the next BatchNormalization no longer have the
    moving statistics it learned, and the model in inference mode is off even where
    the approximation is good. The layers are re-estimated in model order, each on
    ``x`` propagated through the already re-estimated ones (inference mode), with
    the mean and (biased) variance over every example and position, as
    BatchNormalization computes them. Weights, gamma and beta are unchanged.

    Example::

        small = tfcompress.factorize(model, ratio=0.5)
        recalibrate_batch_norms(small, x_train[:2000])   # = factorize(..., calibration_data=)

    Args:
        model: a functional or Sequential model (changed in place).
        x: calibration inputs (NumPy array), e.g. a few thousand training images.
        batch_size: examples per forward pass.

    Returns:
        The names of the re-estimated layers.

    Raises:
        ValueError: if ``x`` is empty.
    """
    if len(x) == 0:
        raise ValueError("x must hold at least one example; received an empty array")
    names = []
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # the input of this layer, with every earlier BN already re-estimated
            probe = keras.Model(inputs, layer.input)
            total, total_sq, count = 0.0, 0.0, 0
            axes = None
            for start in range(0, len(x), batch_size):
                values = np.asarray(probe(x[start:start + batch_size], training=False),
                                    dtype=np.float64)
                axes = tuple(i for i in range(values.ndim) if i != layer.axis % values.ndim)
                total = total + values.sum(axis=axes)
                total_sq = total_sq + (values ** 2).sum(axis=axes)
                count += int(np.prod([values.shape[i] for i in axes]))
            mean = total / count
            layer.moving_mean.assign(mean.astype("float32"))
            layer.moving_variance.assign(np.maximum(total_sq / count - mean**2, 0)
                                         .astype("float32"))
            names.append(layer.name)
    return names
