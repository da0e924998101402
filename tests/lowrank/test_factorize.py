"""Low-rank factorization: exact wiring of each chain, budgets, training, round trip, TFLite."""

import warnings

import keras
import numpy as np
import pytest
import tensorly as tl

from tfcompress import export
from tfcompress.lowrank import decompositions
from tfcompress.lowrank import factorize
from tfcompress.models import build

RNG = np.random.default_rng(0)
X_IMAGES = RNG.normal(size=(8, 12, 12, 8)).astype("float32")


def _conv_model(strides, padding, kernel=None):
    inputs = keras.Input((12, 12, 8))
    conv = keras.layers.Conv2D(12, 3, strides=strides, padding=padding, activation="relu",
                               name="conv")
    model = keras.Model(inputs, conv(inputs))
    if kernel is not None:
        conv.set_weights([kernel.astype("float32"), RNG.normal(size=12).astype("float32")])
    return model


def _with_kernel(model, kernel):
    """The same model computing with ``kernel`` instead of its own."""
    twin = keras.models.clone_model(model)
    twin.set_weights([kernel.astype("float32"), model.get_weights()[1]])
    return twin


def _every_layer(layer):
    return isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))


def _quiet_factorize(model, **kwargs):
    """Factorizes every Dense and Conv2D layer (the stem and the head included)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # the budgets below always shrink every layer
        return factorize(model, layers=_every_layer, **kwargs)


def test_svd_chain_computes_the_truncated_product():
    inputs = keras.Input((40,))
    model = keras.Model(inputs, keras.layers.Dense(30, activation="tanh", name="fc")(inputs))
    small = _quiet_factorize(model, rank=6)
    kernel, bias = model.get_weights()
    first, last = decompositions.svd(kernel, 6)
    x = RNG.normal(size=(5, 40)).astype("float32")
    np.testing.assert_allclose(small.predict(x, verbose=0), np.tanh(x @ first @ last + bias),
                               atol=1e-5)
    u, s, vt = np.linalg.svd(kernel)
    np.testing.assert_allclose(first @ last, (u[:, :6] * s[:6]) @ vt[:6], atol=1e-5)
    chain = small.get_layer("fc")
    assert [type(l).__name__ for l in chain.layers] == ["Dense", "Dense"]
    assert small.count_params() == 6 * (40 + 30) + 30


@pytest.mark.parametrize("strides, padding", [((1, 1), "same"), ((2, 2), "same"),
                                              ((2, 1), "valid")])
def test_tucker_chain_equals_the_convolution_with_the_reconstructed_kernel(strides, padding):
    model = _conv_model(strides, padding)
    small = _quiet_factorize(model, method="tucker", rank=(4, 6))
    kernel = model.get_weights()[0]
    first, core, last = decompositions.tucker2(kernel, (4, 6))
    reconstructed = tl.tenalg.multi_mode_dot(core, [first[0, 0], last[0, 0].T], modes=[2, 3])
    np.testing.assert_allclose(small.predict(X_IMAGES, verbose=0),
                               _with_kernel(model, reconstructed).predict(X_IMAGES, verbose=0),
                               atol=1e-4)
    assert [type(l).__name__ for l in small.get_layer("conv").layers] == ["Conv2D"] * 3


@pytest.mark.parametrize("strides, padding", [((1, 1), "same"), ((2, 2), "same"),
                                              ((2, 2), "valid")])
def test_cp_chain_is_exact_on_a_rank_three_kernel(strides, padding):
    h, w, c, f = (RNG.normal(size=(n, 3)) for n in (3, 3, 8, 12))
    kernel = np.einsum("ar,br,cr,dr->abcd", h, w, c, f)
    model = _conv_model(strides, padding, kernel)
    small = _quiet_factorize(model, method="cp", rank=3)
    reference = model.predict(X_IMAGES, verbose=0)
    error = np.abs(small.predict(X_IMAGES, verbose=0) - reference).max()
    assert error < 1e-3 * np.abs(reference).max()
    assert [type(l).__name__ for l in small.get_layer("conv").layers] == [
        "Conv2D", "DepthwiseConv2D", "DepthwiseConv2D", "Conv2D"]


def test_ratio_budget_bounds_every_factorized_kernel():
    model = build("small_cnn", filters=(16, 32), dense=64)
    small = _quiet_factorize(model, ratio=0.25)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            chain = small.get_layer(layer.name)
            kernels = sum(int(np.prod(w.shape)) for w in chain.weights if "kernel" in w.path)
            assert kernels <= 0.25 * int(np.prod(layer.kernel.shape)), layer.name
    assert small.count_params() < 0.3 * model.count_params()


def test_full_energy_keeps_layers_and_says_so():
    model = build("small_cnn", filters=(4, 8), dense=16)
    with pytest.warns(UserWarning) as record:
        same = factorize(model, energy=1.0)
    messages = " | ".join(str(w.message) for w in record)
    assert "kept unfactorized, the factors would not be smaller: conv2" in messages
    assert "left out by default (image stem, output layer;" in messages
    x = RNG.normal(size=(4, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(same.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)


def test_factorized_model_trains_round_trips_and_exports(tmp_keras_path, tmp_path):
    model = build("small_cnn", filters=(8, 16), dense=32)
    small = _quiet_factorize(model, ratio=0.3)
    x = RNG.normal(size=(64, 28, 28, 1)).astype("float32")
    y = RNG.integers(0, 10, 64)
    small.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in small.get_weights()]
    small.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, small.get_weights()))
    small.save(tmp_keras_path)
    loaded = keras.models.load_model(tmp_keras_path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), small.predict(x, verbose=0))
    result = export.to_tflite(small, str(tmp_path / "small.tflite"), verify_data=x[:16])
    assert result.top1_agreement == 1.0 and result.max_abs_error < 1e-4


@pytest.mark.parametrize("kwargs, message", [
    ({}, "Give exactly one of rank, ratio or energy"),
    ({"rank": 2, "ratio": 0.5}, "Give exactly one of rank, ratio or energy"),
    ({"ratio": 0}, r"ratio must be a number in \(0, 1\]; received: ratio=0"),
    ({"energy": 1.5}, r"energy must be a number in \(0, 1\]; received: energy=1.5"),
    ({"method": "qr", "rank": 2}, "method must be one of"),
    ({"method": "cp", "energy": 0.9}, "energy does not define a CP rank"),
    ({"rank": 999}, r"rank must be an int .* for layer 'conv2'; received: rank=999"),
    ({"method": "cp", "rank": 2, "layers": lambda l: l.name == "head"},
     "method='cp' cannot factorize layer 'head' \\(Dense\\)"),
    ({"rank": 2, "layers": "head"}, "layers must be None or a predicate"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    model = build("small_cnn", filters=(4, 8), dense=16)
    with pytest.raises(ValueError, match=message):
        factorize(model, **kwargs)


def test_grouped_convolution_is_reported_not_silently_skipped():
    inputs = keras.Input((12, 12, 8))
    grouped = keras.layers.Conv2D(16, 3, groups=2, name="grouped")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1, name="after")(grouped))
    with pytest.warns(UserWarning) as record:
        factorize(model, ratio=0.5)
    messages = " | ".join(str(w.message) for w in record)
    assert "(unsupported convolution): grouped (groups=2)" in messages
    with pytest.raises(ValueError, match="layer 'grouped' cannot be factorized: groups=2"):
        factorize(model, ratio=0.5, layers=lambda l: l.name == "grouped")


def test_default_leaves_the_image_stem_and_the_output_layer_and_says_so():
    model = build("small_cnn", filters=(8, 16), dense=32)
    with pytest.warns(UserWarning, match=r"left out by default \(image stem, output layer; "
                                         r"select them with layers= to factorize them\): "
                                         r"conv1, head"):
        small = factorize(model, ratio=0.5)
    for name in ("conv1", "head"):
        assert type(small.get_layer(name)) is type(model.get_layer(name))
        for a, b in zip(small.get_layer(name).get_weights(), model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    for name in ("conv2", "dense1"):
        assert isinstance(small.get_layer(name), keras.Sequential)


def test_calibration_sets_batch_norm_statistics_to_those_of_their_inputs():
    model = build("resnet8", width=4)
    x = RNG.normal(size=(96, 28, 28, 1)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the stem and head are left out (default)
        small = factorize(model, method="tucker", ratio=0.5, calibration_data=x)
    batch_norms = [l for l in small.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(batch_norms) == 9
    for layer in batch_norms:
        inputs = keras.Model(small.inputs, layer.input).predict(x, verbose=0)
        np.testing.assert_allclose(layer.moving_mean.numpy(), inputs.mean(axis=(0, 1, 2)),
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), inputs.var(axis=(0, 1, 2)),
                                   rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="x must hold at least one example"):
        factorize(model, ratio=0.5, calibration_data=x[:0])
