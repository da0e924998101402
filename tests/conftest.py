"""Shared test set-up: quiet TensorFlow, deterministic seeds, tiny data fixtures."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def tmp_keras_path(tmp_path):
    return str(tmp_path / "model.keras")
