"""prune_model: layer selection, nested models, custom layers, errors; strip; report."""

import keras
import numpy as np
import pytest

from tfcompress.pruning import ConstantSparsity
from tfcompress.pruning import PruneWrapper
from tfcompress.pruning import prune_layer
from tfcompress.pruning import prune_model
from tfcompress.pruning import sparsity_report
from tfcompress.pruning import strip
from tfcompress.pruning import update_masks

X = np.random.default_rng(3).random((4, 10), dtype="float32")


def _nested():
    block = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(12, name="inner_a"), keras.layers.ReLU(),
         keras.layers.Dense(10, name="inner_b")],
        name="block",
    )
    inp = keras.Input((10,))
    x = keras.layers.Dense(10, name="stem")(inp)
    x = block(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inp, keras.layers.Dense(3, name="head")(x))


def _wrapped_names(model):
    return sorted(l.layer.name for l in model._flatten_layers() if isinstance(l, PruneWrapper))


def test_prunes_nested_models_and_copies_weights():
    model = _nested()
    pruned = prune_model(model)
    assert _wrapped_names(pruned) == ["head", "inner_a", "inner_b", "stem"]
    np.testing.assert_allclose(pruned.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6)
    assert not any(isinstance(l, PruneWrapper) for l in model._flatten_layers())  # untouched
    # and strip undoes it, nested structure included, masks baked in
    update_masks(pruned, force=True)
    plain = strip(pruned)
    assert not any(isinstance(l, PruneWrapper) for l in plain._flatten_layers())
    assert isinstance(plain.get_layer("block"), keras.Sequential)
    np.testing.assert_allclose(plain.predict(X, verbose=0), pruned.predict(X, verbose=0), atol=1e-6)
    assert sparsity_report(plain)["global"]["sparsity"] == pytest.approx(0.5, abs=0.01)


def test_layer_selection_by_name_and_predicate():
    assert _wrapped_names(prune_model(_nested(), layers=["stem", "inner_b"])) == ["inner_b", "stem"]
    by_pred = prune_model(_nested(), layers=lambda l: l.name.startswith("inner"))
    assert _wrapped_names(by_pred) == ["inner_a", "inner_b"]


def test_unsupported_or_missing_layers_are_named():
    with pytest.raises(ValueError, match=r"cannot be pruned: \['bn \(BatchNormalization\)'\]"):
        prune_model(_nested(), layers=["stem", "bn"])
    with pytest.raises(ValueError, match=r"not found in the model: \['nope'\]"):
        prune_model(_nested(), layers=["nope"])
    with pytest.raises(ValueError, match=r"cannot be pruned.*bn"):
        prune_model(_nested(), layers=lambda l: l.name in ("bn", "head"))
    with pytest.raises(ValueError, match="'bn' of type BatchNormalization cannot be pruned"):
        prune_layer(keras.layers.BatchNormalization(name="bn"))


def test_subclassed_model_is_rejected_with_advice():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(X)
    with pytest.raises(ValueError, match="prune_layer inside its __init__"):
        prune_model(net)


@keras.saving.register_keras_serializable(package="tfcompress_tests")
class Scale(keras.layers.Layer):
    """A custom layer joining through the get_prunable_weights() protocol."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 6), initializer="glorot_uniform")
        self.s = self.add_weight(shape=(6,), initializer="ones")

    def call(self, x):
        return keras.ops.matmul(x, self.w) * self.s

    def get_prunable_weights(self):
        return [self.w]


def test_custom_layer_protocol_and_sequential():
    model = keras.Sequential([keras.Input((10,)), Scale(name="scale"), keras.layers.ReLU()])
    pruned = prune_model(model, schedule=ConstantSparsity(0.5, frequency=1))
    assert _wrapped_names(pruned) == ["scale"]
    update_masks(pruned, force=True)
    w = pruned.layers[0]
    assert w.sparsity() == 0.5
    expected = np.maximum(X @ (w.layer.w.numpy() * w.full_masks()["w"]), 0)
    np.testing.assert_allclose(pruned.predict(X, verbose=0), expected, atol=1e-5)
    np.testing.assert_allclose(strip(pruned).predict(X, verbose=0), expected, atol=1e-5)


def test_report_counts_params_and_macs():
    inp = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)  # 4x4 output positions
    x = keras.layers.Flatten()(x)
    model = keras.Model(inp, keras.layers.Dense(5, name="dense")(x))
    pruned = prune_model(model, schedule=ConstantSparsity(0.5, frequency=1))
    update_masks(pruned, force=True)
    rows = {r["name"]: r for r in sparsity_report(pruned)["layers"]}
    conv, dense = rows["prune_conv"], rows["prune_dense"]
    assert conv["params"] == 72 and conv["macs"] == 72 * 16 and conv["nonzero_macs"] == 36 * 16
    assert dense["params"] == 320 and dense["macs"] == 320 and dense["nonzeros"] == 160
    report = sparsity_report(pruned)
    assert report["global"]["params"] == 392 and report["total_params"] == model.count_params() + 72 + 320 + 6
    assert "prune_conv" in report["table"]


def test_strip_of_a_model_compiled_with_a_closure_warns_and_keeps_weights():
    """KQP-style training: a PSG optimizer whose mask_fn closes over the masks has a
    compile config that cannot be rebuilt; strip still works (the clone is returned
    uncompiled, with a warning) and bakes the masks in."""
    import tfcompress

    pruned = prune_model(_nested(), schedule=ConstantSparsity(0.5, 0, frequency=1))
    masks = {id(var): mask for layer in pruned._flatten_layers()
             if isinstance(layer, PruneWrapper) for _, var, _, mask in layer.targets}
    optimizer = tfcompress.ScaledGradient(
        keras.optimizers.SGD(0.01), tfcompress.QuantizationGrid(bits=4),
        mask_fn=lambda var: masks.get(id(var)))
    pruned.compile(optimizer, "mse")
    pruned.fit(X, np.zeros((4, 3), "float32"), epochs=1, verbose=0,
               callbacks=[tfcompress.UpdateMasks()])
    with pytest.warns(UserWarning, match="returned uncompiled"):
        stripped = strip(pruned)
    assert not stripped.compiled and pruned.compiled
    np.testing.assert_allclose(stripped.predict(X, verbose=0), pruned.predict(X, verbose=0),
                               atol=1e-5)
    head = stripped.get_layer("head").kernel.numpy()
    assert abs((head == 0).mean() - 0.5) < 0.1
