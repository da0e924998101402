"""Every ``Example:`` in the quantization docstrings runs (doctest)."""

import doctest
import importlib

import keras
import numpy as np
import pytest

import tfcompress.quantization as tq

MODULES = [
    "quantizers",
    "uniform_quantizer",
    "calibration",
    "_registry",
    "ptq",
    "activations",
    "fake_quant_activation",
    "bn_folding",
    "qat",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"tfcompress.quantization.{name}")
    globs = {"np": np, "keras": keras, **{k: getattr(tq, k) for k in dir(tq) if not k.startswith("_")}}
    result = doctest.testmod(module, extraglobs=globs, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
