"""The mask controller: recompute masks from criterion + schedule, layer-wise or global.

Runs on the host, eagerly, between training steps (from
:class:`~tfcompress.pruning.UpdateMasks`, or by hand in a custom loop). It sees every
:class:`PruneWrapper` of a model, which is what global thresholding needs: all
wrappers with ``threshold="global"`` are ranked together and one threshold prunes
the target fraction of *their parameters in total*, leaving per-layer sparsities
uneven (DPF/DCIL: one global L2 threshold over all conv kernels).

Selection rule (all threshold granularities): the units (weights, filters, blocks) are
sorted by score and the lowest-scoring are pruned until the pruned parameter count is
as close as possible to ``sparsity × parameters`` — exact for unstructured pruning,
within one unit otherwise (with ``np.partition`` when all units have one size,
e.g. unstructured pruning, so a global update is linear in the parameter count).
N:M masks come from their pattern alone.

Channel groups: structured wrappers sharing a ``channel_group`` (the convolutions
writing to one residual stream, see :func:`~tfcompress.pruning.channel_groups`) get
one mask — each channel is a single unit whose score and size are the sums over the
members — so :func:`~tfcompress.pruning.shrink` can remove the channel everywhere.

On the JAX backend the model state lives outside the variables during an epoch; the
controller calls ``model.jax_state_sync()`` before reading or assigning anything, and
the JAX trainer re-reads the variables on the next step.
"""

import keras
import numpy as np

from tfcompress.pruning._utils import to_numpy
from tfcompress.pruning.wrapper import PruneWrapper


def collect_wrappers(model):
    """All built :class:`PruneWrapper` s of a model or layer (nested models too),
    each once, in model order."""
    if isinstance(model, PruneWrapper):
        return [model] if model.built else []
    seen, out = set(), []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, PruneWrapper) and layer.built and id(layer) not in seen:
            seen.add(id(layer))
            out.append(layer)
    return out


def sync_state(model):
    """Writes the JAX trainer's in-flight state back into the variables (JAX only)."""
    if keras.backend.backend() == "jax" and hasattr(model, "jax_state_sync"):
        model.jax_state_sync()


def select_units(scores, sizes, sparsity):
    """Boolean keep-vector pruning the lowest scores up to ``sparsity`` of ``sizes``."""
    scores = np.asarray(scores, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.float64)
    keep = np.ones(scores.shape, dtype=bool)
    if sparsity <= 0 or scores.size == 0:
        return keep
    if np.all(sizes == sizes[0]):
        return _select_equal_units(scores, sizes[0], sparsity)
    order = np.argsort(scores, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(sizes[order])])
    j = int(np.argmin(np.abs(cum - sparsity * cum[-1])))
    keep[order[:j]] = False
    return keep


def _select_equal_units(scores, size, sparsity):
    """:func:`select_units` for units of one size in O(n) (``np.partition``): the
    same units as the stable sort — ties at the threshold go lowest index first."""
    n = scores.size
    cum = np.arange(n + 1, dtype=np.float64) * size
    j = int(np.argmin(np.abs(cum - sparsity * cum[-1])))
    keep = np.ones(n, dtype=bool)
    if j == 0:
        return keep
    kth = np.partition(scores, j - 1)[j - 1]
    below = scores < kth
    ties = np.flatnonzero(scores == kth)[: j - int(below.sum())]
    keep[below] = False
    keep[ties] = False
    return keep


def _scores(wrapper, name, var):
    scores = np.asarray(to_numpy(wrapper.criterion.score(wrapper, var)), dtype=np.float64)
    if scores.shape != tuple(var.shape):
        raise ValueError(
            f"{type(wrapper.criterion).__name__}.score returned shape {scores.shape} "
            f"for {wrapper.layer.name}.{name}; expected {tuple(var.shape)}."
        )
    return scores


def _assign(mask_var, value):
    mask_var.assign(np.asarray(value, dtype=mask_var.dtype))


def _pieces(wrappers):
    """Splits the targets of ``wrappers`` into *pieces*: lists of
    ``(wrapper, name, variable, spec, mask)`` that share one keep-vector over their
    units — the members of a ``channel_group`` together, every other target alone."""
    members = [(w, name, var, spec, mask) for w in wrappers for name, var, spec, mask in w.targets]
    return _gather_channel_groups(members, lambda member: member[0].channel_group)


def _gather_channel_groups(items, group_of):
    """``items`` in order as lists: those sharing a (non-``None``) channel group
    gathered into one list at the first one's place, every other item alone."""
    gathered, by_group = [], {}
    for item in items:
        group = group_of(item)
        if group is None:
            gathered.append([item])
        elif group in by_group:
            by_group[group].append(item)
        else:
            by_group[group] = [item]
            gathered.append(by_group[group])
    return gathered


def _piece_units(piece):
    """``(unit_scores, unit_sizes)`` of a piece: summed over its members."""
    total_scores = total_sizes = None
    for w, name, var, spec, _ in piece:
        scores, sizes = w.granularity.units(_scores(w, name, var), spec)
        if total_scores is None:
            total_scores, total_sizes = scores, sizes
        elif scores.shape != total_scores.shape:
            first = piece[0][0]
            raise ValueError(
                f"Wrappers of channel_group={w.channel_group!r} must have the same "
                f"number of output channels; {first.name!r} has {total_scores.size}, "
                f"{w.name!r} has {scores.size}."
            )
        else:
            total_scores, total_sizes = total_scores + scores, total_sizes + sizes
    return total_scores, total_sizes


def _assign_piece(piece, keep):
    for w, _, var, spec, mask in piece:
        _assign(mask, w.granularity.mask_from_units(keep, tuple(var.shape), spec))


def _update_layerwise(wrappers, sparsity):
    """Updates one wrapper, or the members of one channel group, at ``sparsity``."""
    for piece in _pieces(wrappers):
        w, name, var, spec, mask = piece[0]
        if w.granularity.pattern:
            _assign(mask, w.granularity.pattern_mask(_scores(w, name, var), spec))
        else:
            unit_scores, sizes = _piece_units(piece)
            _assign_piece(piece, select_units(unit_scores, sizes, sparsity))


def _update_global(wrappers, sparsity):
    pieces = _pieces(wrappers)
    if not pieces:
        return
    units = [_piece_units(piece) for piece in pieces]
    keep = select_units(
        np.concatenate([u[0] for u in units]), np.concatenate([u[1] for u in units]), sparsity
    )
    offset = 0
    for piece, (unit_scores, _) in zip(pieces, units):
        n = unit_scores.size
        _assign_piece(piece, keep[offset : offset + n])
        offset += n


def _check_shared_schedule(wrappers, what):
    ref = wrappers[0].schedule
    different = [w.name for w in wrappers if w.schedule != ref]
    if different:
        raise ValueError(
            f"{what} must share one schedule; {different} differ from "
            f"{wrappers[0].name!r} ({ref!r})."
        )


def _layerwise_units(wrappers):
    """Groups the layer-wise wrappers into update units: one channel group, or one
    wrapper alone. Checks that a group's members agree on schedule and threshold."""
    units = _gather_channel_groups(wrappers, lambda w: w.channel_group)
    for unit in units:
        if len(unit) > 1:
            _check_shared_schedule(unit, f"Wrappers of channel_group={unit[0].channel_group!r}")
    return units


def _check_group_thresholds(wrappers):
    thresholds = {}
    for w in wrappers:
        if w.channel_group is not None:
            thresholds.setdefault(w.channel_group, {}).setdefault(w.threshold, []).append(w.name)
    for group, by_threshold in thresholds.items():
        if len(by_threshold) > 1:
            raise ValueError(
                f"Wrappers of channel_group={group!r} must share one threshold; "
                f"received: {by_threshold}."
            )


def _stamp(wrapper, step, updated):
    if updated:
        wrapper.last_update_step.assign(step)
    wrapper.checked_step.assign(step)


def update_masks(model, force=False, frequency=None, sync=True):
    """Recomputes the masks of every wrapper whose schedule says an update is due.

    An update is due when an update point of the wrapper's schedule lies in
    ``(last_update_step, step]``; the masks then get the sparsity the schedule
    gives at ``step``. Wrappers with ``threshold="global"`` are updated together
    with one global threshold (their schedules must be equal); the members of a
    ``channel_group`` are updated together with one shared channel mask, each
    channel scored by the sum of its filter scores over the members.

    Args:
        model: a model or a single :class:`PruneWrapper`.
        force: recompute every wrapper now, whatever the schedule says.
        frequency: overrides the schedules' update frequency.
        sync: call ``model.jax_state_sync()`` first on the JAX backend.

    Returns:
        The names of the wrappers whose masks were recomputed.

    Raises:
        ValueError: if ``threshold="global"`` wrappers, or the members of a channel
            group, have different schedules; if a channel group mixes thresholds
            or output-channel counts.
    """
    wrappers = collect_wrappers(model)
    updated, _ = apply_updates(model, wrappers, force, frequency, sync)
    return [w.name for w in updated]


def apply_updates(model, wrappers, force=False, frequency=None, sync=True):
    """:func:`update_masks` on the given wrappers of ``model``.

    Returns:
        ``(updated wrappers, counters)`` where ``counters`` maps ``id(wrapper)``
        to its ``(step, last_update_step, checked_step)`` *after* the update — so a
        caller (``UpdateMasks``) need not read the variables again.
    """
    if sync:
        sync_state(model)
    counters = {id(w): w.read_counters() for w in wrappers}

    def due(w):
        step, last, _ = counters[id(w)]
        return force or w.schedule.update_due(last, step, w.keep_updating, frequency)

    _check_group_thresholds(wrappers)
    updated = []
    global_group = [
        w for w in wrappers if w.threshold == "global" and not w.granularity.pattern
    ]
    units = []  # (wrappers updated together, their update function)
    if global_group:
        _check_shared_schedule(global_group, "Wrappers with threshold='global'")
        units.append((global_group, _update_global))
    in_group = {id(w) for w in global_group}
    units += [(unit, _update_layerwise)
              for unit in _layerwise_units([w for w in wrappers if id(w) not in in_group])]
    for unit, update in units:
        if any(due(w) for w in unit):
            step = max(counters[id(w)][0] for w in unit)
            update(unit, unit[0].schedule.sparsity_at(step))
            for w in unit:
                _stamp(w, counters[id(w)][0], True)
                updated.append(w)
    for w in updated:
        step = counters[id(w)][0]
        counters[id(w)] = (step, step, step)
    return updated, counters


def mark_checked(model, sync=True):
    """Records that the controller has looked at every wrapper at its current step
    (called by ``UpdateMasks`` at the end of training)."""
    if sync:
        sync_state(model)
    for w in collect_wrappers(model):
        step, _, checked = w.read_counters()
        if checked != step:
            w.checked_step.assign(step)


def stale_wrappers(model, frequency=None, sync=True):
    """Wrappers trained past a mask update without the controller running.

    A wrapper is stale when it took training steps after ``checked_step`` and its
    schedule had an update point among those steps that was never applied — i.e. it
    was trained without :class:`~tfcompress.pruning.UpdateMasks`.

    Returns:
        A list of ``(wrapper, step, last_update_step)``.
    """
    if sync:
        sync_state(model)
    out = []
    for w in collect_wrappers(model):
        step, last, checked = w.read_counters()
        if step > checked and w.schedule.update_due(
            max(last, checked - 1), step - 1, w.keep_updating, frequency
        ):
            out.append((w, step, last))
    return out


def stale_message(stale):
    names = ", ".join(
        f"{w.name} (step {s}, masks last updated at "
        f"{'never' if last < 0 else 'step ' + str(last)})"
        for w, s, last in stale
    )
    return (
        "Pruned layers were trained without their masks being updated: "
        f"{names}. Add tfcompress.pruning.UpdateMasks() to model.fit(callbacks=[...]) "
        "(or call tfcompress.pruning.update_masks(model) in a custom training loop)."
    )
