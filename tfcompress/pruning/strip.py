"""``strip``: bake the masks in and drop the wrappers."""

import keras

from tfcompress.pruning import controller
from tfcompress.pruning.prune_model import _fresh_copy
from tfcompress.pruning.prune_model import _is_cloneable
from tfcompress.pruning.prune_model import clone_with
from tfcompress.pruning.wrapper import PruneWrapper


def strip_layer(wrapper):
    """Returns a fresh copy of ``wrapper.layer`` whose weights are the pruned
    weights ``w * m`` (the P-net of DCIL; the same for every mode)."""
    if not isinstance(wrapper, PruneWrapper):
        raise ValueError(f"strip_layer expects a PruneWrapper; received: {wrapper!r}")
    new = _fresh_copy(wrapper.layer)
    config = wrapper.layer.get_build_config() if wrapper.layer.built else None
    if config:
        new.build_from_config(config)
        new.set_weights(wrapper.pruned_weights())
    return new


def strip(model, check=True):
    """Returns a plain Keras model: every :class:`PruneWrapper` replaced by its layer
    with the masks baked in. Outputs equal the wrapped model's (pruned path).

    Args:
        model: a Sequential or functional model (nested models included), or a single
            :class:`PruneWrapper` (returns the stripped layer).
        check: raise if the model was trained without its masks being updated
            (``UpdateMasks`` missing); ``False`` strips whatever masks it has.

    Returns:
        A new model without wrappers (compiled like ``model`` if it was).

    Raises:
        RuntimeError: if ``check`` and masks are stale (see
            :func:`~tfcompress.pruning.controller.stale_wrappers`).
        ValueError: on a subclassed model (rebuild it without ``prune_layer`` and
            copy :func:`strip_layer` weights instead).
    """
    if isinstance(model, PruneWrapper):
        if check:
            stale = controller.stale_wrappers(model)
            if stale:
                raise RuntimeError(controller.stale_message(stale))
        return strip_layer(model)
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model; received: model={model!r}")
    if not _is_cloneable(model):
        raise ValueError(
            "strip supports Sequential and functional models; received a subclassed "
            f"model of type {type(model).__name__}. Build the plain model and set each "
            "pruned layer's weights from tfcompress.pruning.strip_layer(wrapper)."
        )
    if check:
        stale = controller.stale_wrappers(model)
        if stale:
            raise RuntimeError(controller.stale_message(stale))
    else:
        controller.sync_state(model)

    def clone_layer(layer):
        if isinstance(layer, PruneWrapper):
            return _fresh_copy(layer.layer)
        return _fresh_copy(layer)

    new_model, pairs = clone_with(model, clone_layer)
    # clone_with copied the wrappers' dense weights; overwrite with the pruned ones.
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, PruneWrapper) and id(layer) in pairs and layer.built:
            pairs[id(layer)].set_weights(layer.pruned_weights())
    return new_model
