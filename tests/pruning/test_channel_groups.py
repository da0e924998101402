"""Channel groups: convolutions meeting in a residual ``Add`` share one channel mask,
so ``shrink`` removes residual channels too (and still equals ``strip``)."""

import keras
import numpy as np
import pytest

from tfcompress import models
from tfcompress.pruning import ConstantSparsity
from tfcompress.pruning import channel_groups
from tfcompress.pruning import prune_layer
from tfcompress.pruning import prune_model
from tfcompress.pruning import shrink
from tfcompress.pruning import sparsity_report
from tfcompress.pruning import strip
from tfcompress.pruning import update_masks

RNG = np.random.default_rng(11)
CONVS = lambda l: isinstance(l, keras.layers.Conv2D)  # noqa: E731


def _resnet8(width=4):
    model = models.resnet(depth=8, width=width, input_shape=(8, 8, 1))
    for layer in model.layers:  # nonzero BN constants of both signs: carriers needed
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([RNG.normal(1, 0.3, c), RNG.normal(0, 0.5, c),
                               RNG.normal(0, 0.3, c), RNG.uniform(0.5, 1.5, c)])
    return model


def _grouped(model, sparsity=0.5, threshold="layer"):
    pruned = prune_model(model, schedule=ConstantSparsity(sparsity), granularity="structured",
                         threshold=threshold, layers=CONVS, channel_groups="auto")
    update_masks(pruned, force=True)
    return pruned


def _mask(pruned, name):
    """Kept output channels of a wrapped conv (bool vector)."""
    wrapper = pruned.get_layer(f"prune_{name}")
    kernel_mask = wrapper.full_masks()["kernel"]
    return kernel_mask.reshape(-1, kernel_mask.shape[-1]).any(axis=0)


def test_channel_groups_of_a_resnet():
    groups = channel_groups(models.resnet(depth=14, width=4, input_shape=(8, 8, 1)))
    stage1 = {n for n, g in groups.items() if g == "group_stem_conv"}
    assert stage1 == {"stem_conv", "stage1_block1_conv2", "stage1_block2_conv2"}
    assert (groups["stage2_block1_proj_conv"] == groups["stage2_block2_conv2"]
            == "group_stage2_block1_proj_conv")
    assert len(set(groups.values())) == 3
    assert not any(n.endswith("_conv1") or n == "head" for n in groups)


def test_group_members_share_one_mask_chosen_by_summed_norm():
    model = _resnet8()
    pruned = _grouped(model)
    members = [n for n, g in channel_groups(model).items() if g == "group_stem_conv"]
    masks = [_mask(pruned, n) for n in members]
    for m in masks[1:]:
        np.testing.assert_array_equal(m, masks[0])
    assert masks[0].sum() == 2  # 50 % of 4 channels, layer-wise per group
    summed = sum((model.get_layer(n).kernel.numpy() ** 2).reshape(-1, 4).sum(0) for n in members)
    assert summed[masks[0]].min() >= summed[~masks[0]].max()
    # block-internal convs stay ungrouped and are pruned on their own
    assert pruned.get_layer("prune_stage1_block1_conv1").channel_group is None
    assert _mask(pruned, "stage1_block1_conv1").sum() == 2


@pytest.mark.parametrize("threshold", ["layer", "global"])
def test_shrink_removes_residual_channels_and_equals_strip(threshold):
    model = _resnet8()
    pruned = _grouped(model, threshold=threshold)
    reference, small = strip(pruned), shrink(pruned)
    x = RNG.random((6, 8, 8, 1), dtype="float32")
    np.testing.assert_allclose(small.predict(x, verbose=0), reference.predict(x, verbose=0),
                               atol=1e-5, rtol=1e-5)
    assert small.count_params() < reference.count_params()
    assert sparsity_report(small)["global"]["macs"] < sparsity_report(reference)["global"]["macs"]
    # the residual streams lose channels: only a carrier channel may stay on top
    # of the kept half (zero-padded 3x3 consumers read nonzero BN constants)
    for name, width in (("stem_conv", 4), ("stage2_block1_conv2", 8),
                        ("stage3_block1_proj_conv", 16)):
        assert small.get_layer(name).kernel.shape[-1] < width, name
    if threshold == "global":
        assert abs(sparsity_report(pruned)["global"]["sparsity"] - 0.5) < 0.05


def test_ungrouped_residual_pruning_cannot_shrink_the_stream():
    model = _resnet8()
    pruned = prune_model(model, schedule=ConstantSparsity(0.5), granularity="structured",
                         layers=CONVS)
    update_masks(pruned, force=True)
    grouped = shrink(_grouped(model))
    ungrouped = shrink(pruned)
    assert ungrouped.count_params() > grouped.count_params()


def test_channel_group_survives_save_and_load(tmp_keras_path):
    pruned = _grouped(_resnet8())
    pruned.save(tmp_keras_path)
    loaded = keras.models.load_model(tmp_keras_path)
    assert loaded.get_layer("prune_stage1_block1_conv2").channel_group == "group_stem_conv"
    update_masks(loaded, force=True)
    np.testing.assert_array_equal(_mask(loaded, "stem_conv"), _mask(loaded, "stage1_block1_conv2"))


def test_explicit_groups_with_prune_layer():
    inp = keras.Input((6, 6, 2))
    a = prune_layer(keras.layers.Conv2D(6, 3, padding="same"), granularity="structured",
                    channel_group="g", schedule=ConstantSparsity(0.5))(inp)
    b = prune_layer(keras.layers.Conv2D(6, 1), granularity="structured",
                    channel_group="g", schedule=ConstantSparsity(0.5))(inp)
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Add()([a, b])))
    update_masks(model, force=True)
    wa, wb = [l for l in model.layers if l.name.startswith("prune_")]
    np.testing.assert_array_equal(wa.full_masks()["kernel"][0, 0, 0],
                                  wb.full_masks()["kernel"][0, 0, 0])
    small = shrink(model)
    x = RNG.random((3, 6, 6, 2), dtype="float32")
    np.testing.assert_allclose(small.predict(x, verbose=0), strip(model).predict(x, verbose=0),
                               atol=1e-5)
    assert small.count_params() < strip(model).count_params()


def test_errors():
    with pytest.raises(ValueError, match="channel_group needs granularity='structured'"):
        prune_layer(keras.layers.Dense(4), channel_group="g")
    with pytest.raises(ValueError, match="channel_group must be None or a non-empty string"):
        prune_layer(keras.layers.Dense(4), granularity="structured", channel_group=3)
    model = _resnet8()
    with pytest.raises(ValueError, match=r"not pruned: \['stem_conv'\]"):
        prune_model(model, granularity="structured", layers=["stage1_block1_conv2"],
                    channel_groups={"stem_conv": "g"})
    with pytest.raises(ValueError, match="channel_groups must be None, 'auto'"):
        prune_model(model, granularity="structured", channel_groups="yes")

    inp = keras.Input((4,))
    outs = [prune_layer(keras.layers.Dense(n), granularity="structured", channel_group="g",
                        threshold=t)(inp) for n, t in ((4, "layer"), (5, "layer"), (4, "global"))]
    mixed = keras.Model(inp, outs[0] + outs[2])
    with pytest.raises(ValueError, match="must share one threshold"):
        update_masks(mixed, force=True)
    uneven = keras.Model(inp, [outs[0], outs[1]])
    with pytest.raises(ValueError, match="same number of output channels"):
        update_masks(uneven, force=True)
