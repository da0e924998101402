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
within one unit otherwise. N:M masks come from their pattern alone.

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
    order = np.argsort(scores, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(sizes[order])])
    j = int(np.argmin(np.abs(cum - sparsity * cum[-1])))
    keep[order[:j]] = False
    return keep


def _scores(wrapper, var):
    return np.asarray(to_numpy(wrapper.criterion.score(wrapper, var)), dtype=np.float64)


def _assign(mask_var, value):
    mask_var.assign(np.asarray(value, dtype=mask_var.dtype))


def _update_layerwise(wrapper, sparsity):
    gran = wrapper.granularity
    for name, var, spec, mask in wrapper.targets:
        scores = _scores(wrapper, var)
        if scores.shape != tuple(var.shape):
            raise ValueError(
                f"{type(wrapper.criterion).__name__}.score returned shape {scores.shape} "
                f"for {wrapper.layer.name}.{name}; expected {tuple(var.shape)}."
            )
        if gran.pattern:
            _assign(mask, gran.pattern_mask(scores, spec))
        else:
            unit_scores, sizes = gran.units(scores, spec)
            keep = select_units(unit_scores, sizes, sparsity)
            _assign(mask, gran.mask_from_units(keep, tuple(var.shape), spec))


def _update_global(wrappers, sparsity):
    pieces = []
    for w in wrappers:
        for name, var, spec, mask in w.targets:
            unit_scores, sizes = w.granularity.units(_scores(w, var), spec)
            pieces.append((w, var, spec, mask, unit_scores, sizes))
    if not pieces:
        return
    keep = select_units(
        np.concatenate([p[4] for p in pieces]), np.concatenate([p[5] for p in pieces]), sparsity
    )
    offset = 0
    for w, var, spec, mask, unit_scores, _ in pieces:
        n = unit_scores.size
        _assign(mask, w.granularity.mask_from_units(keep[offset : offset + n], tuple(var.shape), spec))
        offset += n


def _stamp(wrapper, step, updated):
    if updated:
        wrapper.last_update_step.assign(step)
    wrapper.checked_step.assign(step)


def update_masks(model, force=False, frequency=None, sync=True):
    """Recomputes the masks of every wrapper whose schedule says an update is due.

    An update is due when an update point of the wrapper's schedule lies in
    ``(last_update_step, step]``; the masks then get the sparsity the schedule
    gives at ``step``. Wrappers with ``threshold="global"`` are updated together
    with one global threshold (their schedules must be equal).

    Args:
        model: a model or a single :class:`PruneWrapper`.
        force: recompute every wrapper now, whatever the schedule says.
        frequency: overrides the schedules' update frequency.
        sync: call ``model.jax_state_sync()`` first on the JAX backend.

    Returns:
        The names of the wrappers whose masks were recomputed.

    Raises:
        ValueError: if ``threshold="global"`` wrappers have different schedules.
    """
    if sync:
        sync_state(model)
    wrappers = collect_wrappers(model)
    counters = {id(w): w.read_counters() for w in wrappers}

    def due(w):
        step, last, _ = counters[id(w)]
        return force or w.schedule.update_due(last, step, w.keep_updating, frequency)

    updated = []
    global_group = [
        w for w in wrappers if w.threshold == "global" and not w.granularity.pattern
    ]
    if global_group:
        ref = global_group[0].schedule
        different = [w.name for w in global_group if w.schedule != ref]
        if different:
            raise ValueError(
                "Wrappers with threshold='global' must share one schedule; "
                f"{different} differ from {global_group[0].name!r} ({ref!r})."
            )
        if any(due(w) for w in global_group):
            step = max(counters[id(w)][0] for w in global_group)
            _update_global(global_group, ref.sparsity_at(step))
            for w in global_group:
                _stamp(w, counters[id(w)][0], True)
                updated.append(w.name)
    in_group = {id(w) for w in global_group}
    for w in wrappers:
        if id(w) in in_group:
            continue
        if due(w):
            step = counters[id(w)][0]
            _update_layerwise(w, w.schedule.sparsity_at(step))
            _stamp(w, step, True)
            updated.append(w.name)
    return updated


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
