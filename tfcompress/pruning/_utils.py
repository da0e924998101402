"""Small private helpers."""

import keras
import numpy as np


def to_numpy(x):
    """A variable's or tensor's value as a numpy array (eager).

    Goes through the backend value's own ``.numpy()`` where it has one (TF), else
    ``np.asarray`` (JAX) — avoiding numpy 2's ``__array__(copy=…)`` deprecation
    path of ``keras.ops.convert_to_numpy`` on variables and eager tensors.
    """
    if isinstance(x, keras.Variable):
        x = x.value
    if hasattr(x, "numpy"):
        return np.asarray(x.numpy())
    return np.asarray(x)
