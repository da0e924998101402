"""Helpers shared by the pruning tests."""

import keras
import numpy as np


def randomize_batchnorm(model, rng):
    """Gives every BatchNormalization non-trivial statistics (γ, β, mean, variance),
    so that pruned channels emit nonzero constants of both signs."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.normal(1, 0.3, c), rng.normal(0, 0.5, c),
                               rng.normal(0, 0.3, c), rng.uniform(0.5, 1.5, c)])
    return model
