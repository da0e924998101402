"""Granularities and thresholds: N:M exact, structured whole filters, blocks, global."""

import keras
import numpy as np
import pytest

from tfcompress.pruning import NM
from tfcompress.pruning import Block
from tfcompress.pruning import ConstantSparsity
from tfcompress.pruning import prune_layer
from tfcompress.pruning import prune_model
from tfcompress.pruning import sparsity_report
from tfcompress.pruning import update_masks


def _wrapped(layer, shape, **kw):
    w = prune_layer(layer, schedule=ConstantSparsity(0.5, frequency=1), **kw)
    w.build(shape)
    return w


def test_n_m_pattern_is_exact_on_dense_and_conv():
    dense = _wrapped(keras.layers.Dense(8), (None, 16), granularity=NM(2, 4))
    conv = _wrapped(keras.layers.Conv2D(4, 3), (None, 6, 6, 8), granularity="1:4")
    for w in (dense, conv):
        update_masks(w, force=True)
        m = w.full_masks()["kernel"]
        k = w.layer.kernel.numpy()
        groups = np.moveaxis(m, -2 if m.ndim == 4 else 0, -1).reshape(-1, 4)
        n = 2 if w is dense else 1
        assert np.all(groups.sum(-1) == n)
        # the kept ones are the largest magnitudes of each group
        kg = np.abs(np.moveaxis(k, -2 if k.ndim == 4 else 0, -1)).reshape(-1, 4)
        kept_min = np.where(groups == 1, kg, np.inf).min(-1)
        dropped_max = np.where(groups == 0, kg, -np.inf).max(-1)
        assert np.all(kept_min >= dropped_max)


def test_n_m_needs_divisible_input():
    with pytest.raises(ValueError, match=r"multiple of m=4; received: input size 6"):
        _wrapped(keras.layers.Dense(8, name="odd"), (None, 6), granularity="2:4")
    with pytest.raises(ValueError, match=r"n <= m; received: n=5, m=4"):
        NM(5, 4)


def test_unknown_granularity():
    with pytest.raises(ValueError, match="received: granularity='diagonal'"):
        prune_layer(keras.layers.Dense(3), granularity="diagonal")


def test_structured_zeroes_whole_filters_with_lowest_norm():
    w = _wrapped(keras.layers.Conv2D(8, 3), (None, 6, 6, 4), granularity="structured")
    k = w.layer.kernel.numpy()
    k *= np.arange(1, 9, dtype="float32")  # filter norms increase with the index
    w.layer.kernel.assign(k)
    update_masks(w, force=True)
    mask_var = w.targets[0][3]
    assert tuple(mask_var.shape) == (8,)  # one entry per output filter
    np.testing.assert_array_equal(mask_var.numpy(), [0, 0, 0, 0, 1, 1, 1, 1])
    full = w.full_masks()["kernel"]
    assert np.all(full[..., :4] == 0) and np.all(full[..., 4:] == 1)
    x = np.random.rand(2, 6, 6, 4).astype("float32")
    assert np.all(keras.ops.convert_to_numpy(w(x))[..., :4] == 0)  # bias masked too


def test_block_masks_prune_whole_blocks():
    w = _wrapped(keras.layers.Dense(64), (None, 48), granularity=Block((16, 16)))
    update_masks(w, force=True)
    mask_var = w.targets[0][3]
    assert tuple(mask_var.shape) == (3, 4)  # per-block storage
    full = w.full_masks()["kernel"]
    blocks = full.reshape(3, 16, 4, 16)
    per_block = blocks.mean(axis=(1, 3))
    assert set(np.unique(per_block)) <= {0.0, 1.0}
    assert per_block.sum() == 6  # 12 blocks, 50 % pruned
    np.testing.assert_array_equal(np.repeat(np.repeat(mask_var.numpy(), 16, 0), 16, 1), full)


def test_block_partial_edges_and_conv_matrix_view():
    w = _wrapped(keras.layers.Conv2D(10, 3), (None, 5, 5, 3), granularity=Block((8, 4)))
    update_masks(w, force=True)
    assert tuple(w.targets[0][3].shape) == (4, 3)  # (27 rows -> 4, 10 cols -> 3)
    assert abs(sparsity_report(w)["global"]["sparsity"] - 0.5) < 0.1


def test_block_4x1_conv_masks_are_runs_of_input_channels():
    w = _wrapped(keras.layers.Conv2D(6, 3), (None, 7, 7, 8), granularity=Block((4, 1)))
    update_masks(w, force=True)
    full = w.full_masks()["kernel"]  # (kh, kw, in, out)
    groups = full.reshape(3, 3, 2, 4, 6)
    # each block: 4 consecutive input channels of one tap and one filter
    assert np.all(groups.min(axis=3) == groups.max(axis=3))
    assert 0 < full.mean() < 1
    # in TFLite's OHWI layout the zeros come in runs that are multiples of 4
    flat = np.transpose(full, (3, 0, 1, 2)).ravel()
    edges = np.flatnonzero(np.diff(np.concatenate([[1], flat, [1]])))
    assert np.all(np.diff(edges)[::2] % 4 == 0)


def _two_layer_model():
    inp = keras.Input((32,))
    x = keras.layers.Dense(32, name="small")(inp)
    out = keras.layers.Dense(32, name="large")(x)
    model = keras.Model(inp, out)
    model.get_layer("small").kernel.assign(model.get_layer("small").kernel.numpy() * 0.1)
    return model


@pytest.mark.parametrize("threshold", ["layer", "global"])
def test_global_vs_layerwise_threshold(threshold):
    pruned = prune_model(
        _two_layer_model(), schedule=ConstantSparsity(0.6, frequency=1), threshold=threshold
    )
    update_masks(pruned, force=True)
    report = sparsity_report(pruned)
    per_layer = {r["name"]: r["sparsity"] for r in report["layers"]}
    assert report["global"]["sparsity"] == pytest.approx(0.6, abs=0.005)
    if threshold == "layer":
        assert all(s == pytest.approx(0.6, abs=0.005) for s in per_layer.values())
    else:  # one threshold: the small-magnitude layer is pruned much more
        assert per_layer["prune_small"] > 0.9 and per_layer["prune_large"] < 0.35


def test_global_threshold_needs_one_schedule():
    model = _two_layer_model()
    pruned = prune_model(model, schedule=ConstantSparsity(0.5), threshold="global", layers=["small"])
    pruned2 = prune_model(pruned, schedule=ConstantSparsity(0.7), threshold="global", layers=["large"])
    with pytest.raises(ValueError, match="must share one schedule"):
        update_masks(pruned2, force=True)


def test_global_structured_counts_parameters():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, name="a")(inp)
    out = keras.layers.Conv2D(16, 3, name="b")(x)
    pruned = prune_model(
        keras.Model(inp, out), schedule=ConstantSparsity(0.5, frequency=1),
        granularity="structured", threshold="global",
    )
    update_masks(pruned, force=True)
    glob = sparsity_report(pruned)["global"]
    # within one filter of the target fraction of parameters
    assert abs(glob["sparsity"] - 0.5) <= 3 * 3 * 16 / glob["params"]


def _select_by_stable_sort(scores, sizes, sparsity):
    """The selection rule spelled out: prune the lowest scores (stable order) until
    the pruned size is closest to ``sparsity`` of the total."""
    keep = np.ones(scores.shape, dtype=bool)
    order = np.argsort(scores, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(sizes[order])])
    keep[order[: int(np.argmin(np.abs(cum - sparsity * cum[-1])))]] = False
    return keep


@pytest.mark.parametrize("size", [1.0, 9.0])
def test_equal_size_selection_matches_the_stable_sort_with_ties(size):
    from tfcompress.pruning.controller import select_units

    rng = np.random.default_rng(3)
    for n in (1, 7, 64, 1001):
        for scores in (rng.random(n), rng.integers(0, 4, n).astype(float), np.zeros(n)):
            sizes = np.full(n, size)
            for sparsity in (0.0, 0.1, 0.5, 0.55, 0.9, 0.999):
                np.testing.assert_array_equal(
                    select_units(scores, sizes, sparsity),
                    _select_by_stable_sort(scores, sizes, sparsity))
