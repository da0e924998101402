"""``prune_model``: clone a Sequential/functional model, wrapping its prunable layers."""

import keras

from tfcompress._cloning import clone_model
from tfcompress.pruning import registry
from tfcompress.pruning.wrapper import PruneWrapper


def _is_cloneable(model):
    return isinstance(model, keras.Sequential) or (
        isinstance(model, keras.Model) and hasattr(model, "_run_through_graph")
    )


def _fresh_copy(layer):
    return layer.__class__.from_config(layer.get_config())


def _all_layers(model):
    out, seen = [], set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if id(layer) not in seen:
            seen.add(id(layer))
            out.append(layer)
    return out


def clone_with(model, clone_layer):
    """Clones a Sequential/functional ``model`` (nested models recursively) with
    ``clone_layer(layer) -> new layer``, then copies the original weights into the
    clones. ``clone_layer`` may return a :class:`PruneWrapper` around a fresh layer
    (weights go to the wrapped layer) or a plain fresh layer. Returns the new model
    and the ``{id(original): clone}`` map."""
    if not _is_cloneable(model):
        raise ValueError(
            f"Only Sequential and functional models can be cloned; received a "
            f"subclassed model of type {type(model).__name__}. Wrap its layers with "
            "tfcompress.pruning.prune_layer inside its __init__ instead."
        )
    pairs = {}

    def clone_function(layer):
        new = clone_layer(layer)
        pairs[id(layer)] = (layer, new)
        return new

    new_model = clone_model(model, clone_function=clone_function, recursive=True)
    for original, new in pairs.values():
        if not original.built or not original.weights:
            continue
        src, dst = original, new
        if isinstance(original, PruneWrapper) and not isinstance(new, PruneWrapper):
            src = original.layer  # stripping: the dense weights (strip overwrites them)
        elif isinstance(new, PruneWrapper) and not isinstance(original, PruneWrapper):
            dst = new.layer  # pruning: weights go to the wrapped layer
        if dst.built:
            dst.set_weights(src.get_weights())
    return new_model, {k: v[1] for k, v in pairs.items()}


def _resolve_groups(model, channel_groups, candidates, selected):
    """``{id(layer): group name}`` for the pruned layers from ``channel_groups``."""
    if channel_groups is None:
        return {}
    by_name = {l.name: l for l in candidates}
    if isinstance(channel_groups, str) and channel_groups == "auto":
        from tfcompress.pruning.shrink import channel_groups as find_groups  # cycle

        found = find_groups(model)
        return {
            id(by_name[n]): g for n, g in found.items() if id(by_name[n]) in selected
        }
    if not isinstance(channel_groups, dict):
        raise ValueError(
            "channel_groups must be None, 'auto' or a {layer name: group name} dict; "
            f"received: channel_groups={channel_groups!r}"
        )
    missing = [n for n in channel_groups if n not in by_name or id(by_name[n]) not in selected]
    if missing:
        raise ValueError(
            f"channel_groups names layers that are not pruned: {missing}."
        )
    return {id(by_name[n]): g for n, g in channel_groups.items()}


def prune_model(
    model,
    schedule=None,
    granularity="unstructured",
    mode="hard",
    criterion="l2",
    threshold="layer",
    layers=None,
    channel_groups=None,
):
    """Returns a copy of ``model`` with its prunable layers wrapped in ``PruneWrapper``.

    The model is cloned with ``keras.models.clone_model(clone_function=…,
    recursive=True)`` — nested Sequential/functional models included — and the
    original weights are copied over; the original model is left untouched.

    Args:
        model: a Sequential or functional Keras model. (Subclassed models: wrap their
            layers with :func:`prune_layer` in ``__init__``.)
        schedule, granularity, mode, criterion, threshold: see :class:`PruneWrapper`.
        layers: which layers to prune: ``None`` (every supported layer), a list of
            layer names (nested models' layers included), or a predicate
            ``fn(layer) -> bool``.
        channel_groups: ``None``; ``"auto"`` — layers whose output channels meet
            in a residual ``Add`` share one channel mask (found by
            :func:`~tfcompress.pruning.channel_groups` among the pruned layers), so
            that :func:`~tfcompress.pruning.shrink` can remove those channels; or
            a ``{layer name: group name}`` dict. Needs
            ``granularity="structured"``; see ``channel_group`` in
            :class:`PruneWrapper`.

    Returns:
        The pruned model (not compiled unless ``model`` was).

    Raises:
        ValueError: on a subclassed model, a layer name that does not exist, or a
            requested layer that cannot be pruned (all such layers are named); if
            ``channel_groups`` names layers that are not pruned.

    Example:
        >>> pruned = prune_model(model, schedule=PolynomialDecay(0.0, 0.9, 0, 1000,
        ...                      frequency=16), mode="feedback", threshold="global")
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model; received: model={model!r}")
    if not _is_cloneable(model):
        raise ValueError(
            "prune_model supports Sequential and functional models; received a "
            f"subclassed model of type {type(model).__name__}. Wrap its layers with "
            "tfcompress.pruning.prune_layer inside its __init__ instead."
        )
    candidates = [
        l for l in _all_layers(model) if not isinstance(l, (keras.Model, keras.layers.InputLayer))
    ]
    if layers is None:
        selected = {id(l) for l in candidates if registry.supports(l)}
    elif callable(layers):
        chosen = [l for l in candidates if layers(l)]
        bad = [f"{l.name} ({type(l).__name__})" for l in chosen if not registry.supports(l)]
        if bad:
            raise ValueError(f"These layers cannot be pruned: {bad}.")
        selected = {id(l) for l in chosen}
    else:
        if isinstance(layers, str):
            layers = [layers]
        by_name = {}
        for l in candidates:
            by_name.setdefault(l.name, l)
        missing = [n for n in layers if n not in by_name]
        if missing:
            raise ValueError(
                f"layers names not found in the model: {missing}; available: "
                f"{sorted(by_name)}"
            )
        bad = [
            f"{n} ({type(by_name[n]).__name__})" for n in layers if not registry.supports(by_name[n])
        ]
        if bad:
            raise ValueError(f"These layers cannot be pruned: {bad}.")
        selected = {id(by_name[n]) for n in layers}
    group_of = _resolve_groups(model, channel_groups, candidates, selected)

    def clone_layer(layer):
        if isinstance(layer, PruneWrapper):
            return _fresh_copy(layer)
        new = _fresh_copy(layer)
        if id(layer) in selected:
            return PruneWrapper(
                new,
                schedule=schedule,
                granularity=granularity,
                mode=mode,
                criterion=criterion,
                threshold=threshold,
                channel_group=group_of.get(id(layer)),
            )
        return new

    new_model, _ = clone_with(model, clone_layer)
    return new_model
