"""Post-training weight quantization (quantize_weights)."""

import keras
import numpy as np
import pytest

from tfcompress.quantization import quantizable_layers
from tfcompress.quantization import quantize_weights

KERNELS = {"conv": ["_kernel"], "dw": ["kernel"], "sep": ["depthwise_kernel", "pointwise_kernel"],
           "fc1": ["_kernel"], "fc2": ["_kernel"]}


def _kernel(model, name, attr):
    return getattr(model.get_layer(name), attr).numpy()


def _channels(kernel, attr, per_channel):
    if not per_channel:
        return [kernel.ravel()]
    if attr in ("kernel", "depthwise_kernel"):  # depthwise: (..., in, mult) -> in*mult channels
        kernel = kernel.reshape(kernel.shape[:-2] + (-1,))
    return [kernel[..., c].ravel() for c in range(kernel.shape[-1])]


def test_quantizable_layers(small_cnn):
    assert quantizable_layers(small_cnn) == ["conv", "dw", "sep", "fc1", "fc2"]


@pytest.mark.parametrize(
    "bits,per_channel,symmetric,calibration",
    [(2, False, True, None), (3, True, True, "mse"), (4, True, False, None), (8, False, False, "mse")],
)
def test_distinct_values_and_untouched_weights(small_cnn, images, bits, per_channel, symmetric, calibration):
    original = [w.copy() for w in small_cnn.get_weights()]
    qm = quantize_weights(small_cnn, bits, per_channel=per_channel, symmetric=symmetric, calibration=calibration)
    assert qm is not small_cnn
    max_levels = 2**bits - 1 if symmetric else 2**bits
    for name, attrs in KERNELS.items():
        for attr in attrs:
            k = _kernel(qm, name, attr)
            assert not np.array_equal(k, _kernel(small_cnn, name, attr))
            for c in _channels(k, attr, per_channel):
                assert len(np.unique(c)) <= max_levels
    # biases, BN and everything else untouched; the original model unchanged
    for layer in small_cnn.layers[1:]:
        for w, wq in zip(layer.weights, qm.get_layer(layer.name).weights):
            if "kernel" not in w.name:
                np.testing.assert_array_equal(w.numpy(), wq.numpy())
    for w, w0 in zip(small_cnn.get_weights(), original):
        np.testing.assert_array_equal(w, w0)
    if bits == 8:
        np.testing.assert_allclose(qm(images), small_cnn(images), atol=0.05)


@pytest.mark.parametrize("per_channel", [False, True])
def test_mse_calibration_error_at_most_absmax(small_cnn, per_channel):
    qa = quantize_weights(small_cnn, 3, per_channel=per_channel)
    qm = quantize_weights(small_cnn, 3, per_channel=per_channel, calibration="mse", num_candidates=50)
    for name, attrs in KERNELS.items():
        for attr in attrs:
            w = _kernel(small_cnn, name, attr)
            err_abs = ((_kernel(qa, name, attr) - w) ** 2).sum()
            err_mse = ((_kernel(qm, name, attr) - w) ** 2).sum()
            assert err_mse <= err_abs * (1 + 1e-6)


def test_skip_and_bits_overrides(small_cnn):
    names = quantizable_layers(small_cnn)
    qm = quantize_weights(small_cnn, 2, skip=["sep"], bits_overrides={names[0]: 8, names[-1]: 8})
    np.testing.assert_array_equal(_kernel(qm, "sep", "pointwise_kernel"), _kernel(small_cnn, "sep", "pointwise_kernel"))
    assert len(np.unique(_kernel(qm, "dw", "kernel"))) <= 3
    assert 3 < len(np.unique(_kernel(qm, "conv", "_kernel"))) <= 255
    assert 3 < len(np.unique(_kernel(qm, "fc2", "_kernel"))) <= 255
    qp = quantize_weights(small_cnn, 2, skip=lambda layer: isinstance(layer, keras.layers.Dense))
    np.testing.assert_array_equal(_kernel(qp, "fc1", "_kernel"), _kernel(small_cnn, "fc1", "_kernel"))
    assert len(np.unique(_kernel(qp, "conv", "_kernel"))) <= 3


def test_sequential_model_and_kl():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5), keras.layers.Dense(3)])
    qm = quantize_weights(model, 4, calibration="kl", num_bins=64)
    assert isinstance(qm, keras.Sequential)
    for layer in qm.layers:
        assert len(np.unique(layer.kernel.numpy())) <= 15


def test_errors(small_cnn):
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 8\]; received: bits=1"):
        quantize_weights(small_cnn, 1)
    with pytest.raises(ValueError, match="calibration must be one of .*received: calibration='max'"):
        quantize_weights(small_cnn, 4, calibration="max")
    with pytest.raises(ValueError, match=r"skip names layers that are not in the model: \['nope'\]"):
        quantize_weights(small_cnn, 4, skip=["nope"])
    with pytest.raises(ValueError, match=r"bits_overrides\['conv'\]=9"):
        quantize_weights(small_cnn, 4, bits_overrides={"conv": 9})
    with pytest.raises(ValueError, match="per_channel must be a bool"):
        quantize_weights(small_cnn, 4, per_channel="yes")
    rnn = keras.Sequential([keras.Input((3, 2)), keras.layers.SimpleRNN(4, name="rnn"), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="'rnn' \\(SimpleRNN\\)"):
        quantize_weights(rnn, 4)
    qm = quantize_weights(rnn, 4, skip="rnn")
    assert len(np.unique(qm.layers[-1].kernel.numpy())) <= 15


def test_quantize_weights_of_a_model_compiled_with_a_closure_warns_and_quantizes():
    """A compile config that does not rebuild (a PSG optimizer scoped by a lambda) no
    longer breaks the clone: the quantized model comes back uncompiled, with a warning."""
    import tfcompress

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5), keras.layers.Dense(2)])
    model.compile(tfcompress.ScaledGradient(keras.optimizers.SGD(0.01),
                                            tfcompress.QuantizationGrid(bits=4),
                                            variables=lambda var: True), "mse")
    with pytest.warns(UserWarning, match="returned uncompiled"):
        quantized = quantize_weights(model, bits=4, per_channel=True)
    assert not quantized.compiled and model.compiled
    assert max(len(np.unique(col)) for col in quantized.layers[0].kernel.numpy().T) <= 15
