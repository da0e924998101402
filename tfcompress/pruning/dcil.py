"""DCIL: Dynamic Collective Intelligence Learning (002 ch. 5, eq. 5.1–5.4, Algorithm 1).

DCIL trains one set of weights ``W`` through two networks at once (002 §5.2.2):

* the **P-net** computes with the masked weights ``W̄ = M ⊙ W`` — the network that is
  kept and exported;
* the **S-net** computes with the dense weights ``W`` and has its *own*
  BatchNormalization layers and its own classifier (the "auxiliary classifier"),
  because the activation statistics of the two paths differ.

Every prunable layer is wrapped once in a :class:`~tfcompress.pruning.PruneWrapper`
with ``mode="dual"`` and *shared* by both paths: the P-net calls it with
``path="pruned"`` (forward ``w*m``, gradient ``g_P*m``), the S-net with
``path="super"`` (forward ``w``, gradient ``g_S*(1-m)``; see
:mod:`tfcompress.pruning.modes`). Summing the losses of both paths therefore gives
exactly the DCIL update (eq. 5.3)::

    W ← W − η{M ⊙ ∇_W̄ L + (1 − M) ⊙ ∇_W L}

with the symmetric distillation loss of eq. 5.4 (targets detached)::

    L = CE(P) + CE(S) + λT²·[KL(S‖P; T) + KL(P‖S; T)]

The KL terms are switched on after ``warmup_epochs`` epochs. Masks are recomputed
every ``F`` steps from one global L2 threshold over all wrapped kernels, following
the cubic schedule of eq. 5.1 and — unlike DPF — through the end of training
(Algorithm 1, lines 3–5). Inference uses the P-net alone (Algorithm 1, line 9):
:attr:`DCILModel.pruned_model`.
"""

import math
import numbers

import keras
from keras import ops

from tfcompress._cloning import clone_model
from tfcompress.pruning import controller
from tfcompress.pruning import registry
from tfcompress.pruning import schedules as schedules_lib
from tfcompress.pruning.callbacks import UpdateMasks
from tfcompress.pruning.prune_model import _is_cloneable
from tfcompress.pruning.prune_model import prune_model
from tfcompress.pruning.wrapper import PruneWrapper

# Weightless single-input layers that may sit between the classifier head and the
# model's output (softmax, dropout ...).
_PASS_THROUGH = (
    keras.layers.Activation,
    keras.layers.Softmax,
    keras.layers.Dropout,
    keras.layers.Identity,
)
SUPER_PREFIX = "super_"
DEFAULT_FREQUENCY = 16


# --------------------------------------------------------------------------- checks
def check_temperature(temperature):
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not math.isfinite(float(temperature))
        or temperature <= 0
    ):
        raise ValueError(
            f"temperature must be a number > 0; received: temperature={temperature!r}"
        )
    return float(temperature)


def check_kl_weight(kl_weight):
    if (
        isinstance(kl_weight, bool)
        or not isinstance(kl_weight, numbers.Real)
        or not math.isfinite(float(kl_weight))
        or kl_weight < 0
    ):
        raise ValueError(f"kl_weight must be a number >= 0; received: kl_weight={kl_weight!r}")
    return float(kl_weight)


def check_warmup_epochs(warmup_epochs):
    if (
        isinstance(warmup_epochs, bool)
        or not isinstance(warmup_epochs, numbers.Integral)
        or warmup_epochs < 0
    ):
        raise ValueError(
            f"warmup_epochs must be an integer >= 0; received: warmup_epochs={warmup_epochs!r}"
        )
    return int(warmup_epochs)


# --------------------------------------------------------------------------- graph helpers
def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history.operation if history is not None else None


def find_classifier_head(model):
    """The classifier of a single-output model: the last ``Dense`` layer, found by
    walking back from the output through weightless layers (softmax, dropout).

    Returns:
        ``(head_layer, from_logits)``, or ``(None, True)`` if there is none.
    """
    if isinstance(model, keras.Sequential):
        layers = list(model.layers)
        from_logits = True
        while layers and isinstance(layers[-1], _PASS_THROUGH):
            from_logits &= not _is_softmax(layers[-1])
            layers.pop()
        if layers and isinstance(layers[-1], keras.layers.Dense):
            return layers[-1], from_logits and not _is_softmax(layers[-1])
        return None, True
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != 1:
        return None, True
    tensor = outputs[0]
    layer = _producer(tensor)
    from_logits = True
    while isinstance(layer, _PASS_THROUGH):
        from_logits &= not _is_softmax(layer)
        node = layer._inbound_nodes[tensor._keras_history.node_index]
        if len(node.input_tensors) != 1:
            return None, True
        tensor = node.input_tensors[0]
        layer = _producer(tensor)
    if isinstance(layer, keras.layers.Dense):
        return layer, from_logits and not _is_softmax(layer)
    return None, True


def _is_softmax(layer):
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) in ("softmax", "log_softmax")


def functional_view(model):
    """A functional model over the same layers as a (built) Sequential model."""
    if not isinstance(model, keras.Sequential):
        return model
    if not model.built or not model.inputs:
        raise ValueError(
            f"Sequential model {model.name!r} must be built with a known input shape "
            "(start it with keras.Input(...))."
        )
    x = inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype)
    for layer in model.layers:
        x = layer(x)
    return keras.Model(inputs, x, name=model.name)


def _check_flat(model):
    nested = [
        l.name for l in model.layers if isinstance(l, keras.Model)
    ]
    if nested:
        raise ValueError(
            f"dcil supports flat functional or Sequential models; {nested} are nested "
            "models. Rebuild the model without nesting (call the inner model's layers "
            "directly)."
        )


def build_super_path(pruned_model, head):
    """Traces ``pruned_model``'s graph a second time for the S-net.

    The graph is re-traced with ``keras.models.clone_model(clone_function=…,
    call_function=…)``: every :class:`PruneWrapper` (and every other layer) is
    *shared* and wrappers are called with ``path="super"``; BatchNormalization
    layers and the classifier ``head`` are replaced by fresh copies named
    ``"super_<name>"`` holding a copy of the P-net's current weights.

    Returns:
        ``(super_model, duplicates)`` where ``duplicates`` is a list of
        ``(p_net_layer, s_net_layer)`` pairs.
    """
    duplicates = []

    def clone_function(layer):
        if isinstance(layer, keras.layers.BatchNormalization) or layer.name == head:
            config = layer.get_config()
            config["name"] = SUPER_PREFIX + layer.name
            new = layer.__class__.from_config(config)
            duplicates.append((layer, new))
            return new
        return layer

    def call_function(layer, *args, **kwargs):
        if isinstance(layer, PruneWrapper):
            kwargs["path"] = "super"
        return layer(*args, **kwargs)

    traced = clone_model(
        pruned_model, clone_function=clone_function, call_function=call_function
    )
    super_model = keras.Model(traced.input, traced.output, name=SUPER_PREFIX + pruned_model.name)
    for original, new in duplicates:
        if original.built and original.weights:
            new.set_weights(original.get_weights())
    return super_model, duplicates


# --------------------------------------------------------------------------- losses
def _as_loss(loss):
    """A reduction-aware loss object ``fn(y, y_pred, sample_weight)`` from ``compile``'s
    ``loss`` argument."""
    if isinstance(loss, (list, tuple, dict)):
        raise ValueError(
            "DCILModel trains a single-output classifier; loss must be one loss, "
            f"not a list or dict; received: loss={loss!r}"
        )
    if isinstance(loss, keras.losses.Loss):
        return loss
    obj = keras.losses.get(loss)
    if isinstance(obj, keras.losses.Loss):
        return obj
    if callable(obj):
        return keras.losses.LossFunctionWrapper(obj)
    raise ValueError(f"loss must be a Keras loss or a callable; received: loss={loss!r}")


def _tempered_log_probs(outputs, temperature, from_logits):
    z = ops.cast(outputs, "float32")
    if not from_logits:  # softmax(log p / T) == softmax(z / T): exact for probabilities
        z = ops.log(ops.clip(z, 1e-12, 1.0))
    return ops.log_softmax(z / temperature, axis=-1)


def kl_divergence(target_log_probs, log_probs):
    """Per-example ``KL(target ‖ q)`` from log-probabilities; the target side is
    detached (``stop_gradient``), as in eq. 5.4."""
    target_log_probs = ops.stop_gradient(target_log_probs)
    return ops.sum(ops.exp(target_log_probs) * (target_log_probs - log_probs), axis=-1)


def _weighted_mean(values, sample_weight):
    if sample_weight is None:
        return ops.mean(values)
    w = ops.cast(ops.reshape(sample_weight, ops.shape(values)), values.dtype)
    return ops.mean(values * w)


def _correct(y, outputs):
    """Per-example top-1 correctness (sparse or one-hot labels)."""
    pred = ops.argmax(outputs, axis=-1)
    if len(y.shape) == len(outputs.shape) and y.shape[-1] == outputs.shape[-1] and (
        outputs.shape[-1] is None or outputs.shape[-1] > 1
    ):
        labels = ops.argmax(y, axis=-1)
    else:
        labels = ops.reshape(y, ops.shape(pred))
    return ops.cast(ops.equal(ops.cast(labels, "int32"), ops.cast(pred, "int32")), "float32")


# --------------------------------------------------------------------------- callback
class DCILEpochClock(keras.callbacks.Callback):
    """Advances :attr:`DCILModel.epochs_seen` (the warm-up clock of the KL term).

    :meth:`DCILModel.fit` adds it automatically. The clock is a non-trainable model
    variable, so it is saved in ``.keras`` files and checkpoints. It counts finished
    epochs across ``fit`` calls (+1 at every epoch end) and, at the start of an
    epoch, is raised to at least ``fit``'s epoch index, so resuming with
    ``initial_epoch`` (or ``BackupAndRestore``) continues the count.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.model._advance_clock(at_least=epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.model._advance_clock(increment=1)


# --------------------------------------------------------------------------- model
@keras.saving.register_keras_serializable(package="tfcompress")
class DCILModel(keras.Model):
    """A two-path (P-net / S-net) model trained with DCIL (002 eq. 5.3–5.4, Alg. 1).

    Build it with :func:`dcil`. ``call`` (``predict``, ``evaluate``'s metrics) runs
    the P-net; ``compute_loss`` also runs the S-net on the same batch and returns
    eq. 5.4 summed over both paths, so ``compile(optimizer, metrics=[...])`` and
    ``fit(x, y)`` are all it takes.

    Logged besides ``loss`` and the compiled metrics (which are the P-net's):
    ``ce_pruned``, ``ce_super``, ``kl`` (``KL(S‖P) + KL(P‖S)`` at temperature
    ``T``, logged also during warm-up, when it is not in the loss) and
    ``super_accuracy``.

    Args:
        pruned_model: the P-net: a flat functional model whose prunable layers are
            :class:`PruneWrapper` s in ``mode="dual"`` (from :func:`prune_model`).
        head: name of the classifier layer (a ``Dense``), duplicated for the S-net
            and never masked.
        temperature: ``T`` of eq. 5.4 (``> 0``).
        kl_weight: ``λ`` of eq. 5.4 (``>= 0``; 0 turns the KL terms off).
        warmup_epochs: epochs trained before the KL terms are switched on.
        **kwargs: base ``Model`` arguments (``name``).

    Attributes:
        pruned_model: the P-net (shares its weights with this model): inference,
            :func:`~tfcompress.pruning.strip` and export use it.
        super_model: the S-net (dense weights, own BN layers and classifier).
        epochs_seen: non-trainable int32 variable, the warm-up clock.

    Raises:
        ValueError: on an invalid argument, or if ``pruned_model`` has no
            ``mode="dual"`` wrapper or no layer named ``head``.
    """

    def __init__(
        self,
        pruned_model,
        head,
        temperature=2.0,
        kl_weight=1.0,
        warmup_epochs=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.temperature = check_temperature(temperature)
        self.kl_weight = check_kl_weight(kl_weight)
        self.warmup_epochs = check_warmup_epochs(warmup_epochs)
        if not isinstance(pruned_model, keras.Model) or not _is_cloneable(pruned_model):
            raise ValueError(
                "pruned_model must be a functional or Sequential keras Model; "
                f"received: pruned_model={pruned_model!r}"
            )
        pruned_model = functional_view(pruned_model)
        _check_flat(pruned_model)
        wrappers = [l for l in pruned_model.layers if isinstance(l, PruneWrapper)]
        if not wrappers or any(w.mode != "dual" for w in wrappers):
            raise ValueError(
                "pruned_model must contain PruneWrapper layers with mode='dual'; "
                f"found modes {sorted({w.mode for w in wrappers})}. Build it with "
                "tfcompress.pruning.dcil(model, ...)."
            )
        names = [l.name for l in pruned_model.layers]
        if head not in names:
            raise ValueError(
                f"head must name a layer of pruned_model; received: head={head!r}"
            )
        if isinstance(pruned_model.get_layer(head), PruneWrapper):
            raise ValueError(
                f"The classifier head {head!r} must not be pruned: DCIL duplicates it "
                "for the S-net (002 §5.3, 'except the last fully connected layer')."
            )
        _, self.from_logits = find_classifier_head(pruned_model)
        self.head = head
        self.pruned_model = pruned_model
        self.super_model, _ = build_super_path(pruned_model, head)
        self.epochs_seen = self.add_weight(
            name="epochs_seen",
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        self.ce_pruned_tracker = keras.metrics.Mean(name="ce_pruned")
        self.ce_super_tracker = keras.metrics.Mean(name="ce_super")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.super_accuracy_tracker = keras.metrics.Mean(name="super_accuracy")
        self._path_loss = None
        self.built = True

    # ------------------------------------------------------------------ training
    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        """``Model.compile``; ``loss`` is the cross-entropy used on *both* paths and
        defaults to ``SparseCategoricalCrossentropy`` (``from_logits`` matching the
        classifier's activation). Pass ``CategoricalCrossentropy`` for one-hot labels."""
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=self.from_logits)
        self._path_loss = _as_loss(loss)
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def compile_from_config(self, config):
        """Re-compiles a loaded model (``.keras`` files keep the compile config)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def call(self, inputs, training=None):
        return self.pruned_model(inputs, training=training)

    @property
    def kl_active(self):
        """Whether the KL terms of eq. 5.4 are in the loss now (eager)."""
        controller.sync_state(self)
        return int(keras.ops.convert_to_numpy(self.epochs_seen.value)) >= self.warmup_epochs

    def _advance_clock(self, at_least=0, increment=0):
        controller.sync_state(self)
        current = int(keras.ops.convert_to_numpy(self.epochs_seen.value))
        new = max(current, int(at_least)) + int(increment)
        if new != current:
            self.epochs_seen.assign(new)

    def dcil_losses(self, x, y, y_pred=None, sample_weight=None, training=True):
        """The terms of eq. 5.4 for one batch (``keras.ops``).

        Returns:
            A dict with ``ce_pruned``, ``ce_super``, ``kl_sp`` (``KL(S‖P)``, target
            S detached), ``kl_ps`` (``KL(P‖S)``, target P detached), ``kl_on``
            (0./1.) and the outputs ``pruned`` and ``super``.
        """
        if self._path_loss is None:
            raise ValueError("DCILModel must be compiled first: model.compile(optimizer).")
        if y_pred is None:
            y_pred = self(x, training=training)
        s_pred = self.super_model(x, training=training)
        t = self.temperature
        log_p = _tempered_log_probs(y_pred, t, self.from_logits)
        log_s = _tempered_log_probs(s_pred, t, self.from_logits)
        kl_on = ops.cast(ops.greater_equal(self.epochs_seen, self.warmup_epochs), "float32")
        return {
            "ce_pruned": ops.cast(self._path_loss(y, y_pred, sample_weight), "float32"),
            "ce_super": ops.cast(self._path_loss(y, s_pred, sample_weight), "float32"),
            "kl_sp": _weighted_mean(kl_divergence(log_s, log_p), sample_weight),
            "kl_ps": _weighted_mean(kl_divergence(log_p, log_s), sample_weight),
            "kl_on": kl_on,
            "pruned": y_pred,
            "super": s_pred,
        }

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Eq. 5.4 over both paths (plus regularization losses)::

            CE(P) + CE(S) + [epoch >= warmup] · λT² · (KL(S‖P) + KL(P‖S))
        """
        terms = self.dcil_losses(x, y, y_pred, sample_weight, training)
        kl = terms["kl_sp"] + terms["kl_ps"]
        total = (
            terms["ce_pruned"]
            + terms["ce_super"]
            + terms["kl_on"] * (self.kl_weight * self.temperature**2) * kl
        )
        for extra in self.losses:
            total = total + self._aggregate_additional_loss(extra)
        self.ce_pruned_tracker.update_state(terms["ce_pruned"])
        self.ce_super_tracker.update_state(terms["ce_super"])
        self.kl_tracker.update_state(kl)
        self.super_accuracy_tracker.update_state(
            _correct(y, terms["super"]), sample_weight=sample_weight
        )
        return total

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            **kwargs):
        """``Model.fit`` that adds :class:`DCILEpochClock` (the KL warm-up clock) and,
        unless one is given, :class:`~tfcompress.pruning.UpdateMasks` (mask
        recomputation every ``F`` steps, Algorithm 1 lines 3–5)."""
        if callbacks is None or isinstance(callbacks, (list, tuple)):
            callbacks = list(callbacks or [])
            if not any(isinstance(c, DCILEpochClock) for c in callbacks):
                callbacks.insert(0, DCILEpochClock())
            if not any(isinstance(c, UpdateMasks) for c in callbacks):
                callbacks.insert(1, UpdateMasks())
        return super().fit(
            x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
            callbacks=callbacks, **kwargs,
        )

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = {
            "pruned_model": keras.saving.serialize_keras_object(self.pruned_model),
            "head": self.head,
            "temperature": self.temperature,
            "kl_weight": self.kl_weight,
            "warmup_epochs": self.warmup_epochs,
        }
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["pruned_model"] = keras.saving.deserialize_keras_object(
            config["pruned_model"], custom_objects=custom_objects
        )
        return cls(**config)


def _select_layers(model, head, layers):
    """``prune_model``'s ``layers`` argument with the classifier head excluded."""
    if layers is None:
        return lambda l: registry.supports(l) and l is not head
    if callable(layers):
        def predicate(l):
            chosen = layers(l)
            if chosen and l is head:
                raise ValueError(
                    f"layers selects the classifier head {head.name!r}, which DCIL "
                    "never prunes (it is duplicated for the S-net)."
                )
            return chosen
        return predicate
    names = [layers] if isinstance(layers, str) else list(layers)
    if head is not None and head.name in names:
        raise ValueError(
            f"layers includes the classifier head {head.name!r}, which DCIL never "
            "prunes (it is duplicated for the S-net); received: layers={layers!r}"
        )
    return names


def dcil(
    model,
    schedule=None,
    granularity="unstructured",
    threshold="global",
    temperature=2.0,
    kl_weight=1.0,
    warmup_epochs=0,
    criterion="l2",
    layers=None,
):
    """Builds a :class:`DCILModel` from a plain classifier (002 ch. 5, Algorithm 1).

    Prunes every prunable layer except the classifier head with
    ``PruneWrapper(mode="dual")`` (the P-net), then traces the graph a second time
    for the S-net, sharing the wrapped layers and duplicating the BatchNormalization
    layers and the classifier (the last ``Dense``, never masked). Train with
    ``compile``/``fit``: the loss is eq. 5.4 on both paths, the weight update is
    eq. 5.3, and masks are recomputed every ``schedule.frequency`` steps (``F``;
    16 in the paper) through the end of training with a global L2 threshold.

    Args:
        model: a flat functional or Sequential classifier with a single output
            produced by a ``Dense`` layer (optionally followed by a softmax).
        schedule: a :class:`~tfcompress.pruning.PruningSchedule` —
            ``PolynomialDecay(0.0, target, 0, target_step, frequency=16)`` is the
            cubic schedule of eq. 5.1 — or a float (``ConstantSparsity`` with
            ``frequency=16``).
        granularity: ``"unstructured"`` (weights) or ``"structured"`` (filters);
            any granularity of :class:`PruneWrapper` works.
        threshold: ``"global"`` (one threshold over all wrapped kernels, as in the
            paper) or ``"layer"``.
        temperature: ``T`` of eq. 5.4 (paper: 2).
        kl_weight: ``λ`` of eq. 5.4 (paper: 1).
        warmup_epochs: epochs before the KL terms are switched on.
        criterion: pruning criterion (paper: L2 magnitude).
        layers: layers to prune (``prune_model`` semantics); default: every prunable
            layer except the classifier head.

    Returns:
        An uncompiled :class:`DCILModel`.

    Raises:
        ValueError: ``temperature <= 0``, ``kl_weight < 0``, ``warmup_epochs < 0``,
            a missing schedule, a model without a ``Dense`` classifier head, nested
            models, or ``layers`` selecting the head.

    Example:
        >>> from tfcompress import models, pruning
        >>> net = pruning.dcil(
        ...     models.resnet(depth=8, width=8, input_shape=(12, 12, 1)),
        ...     schedule=pruning.PolynomialDecay(0.0, 0.9, 0, 200, frequency=16),
        ...     warmup_epochs=1)
        >>> net.compile(keras.optimizers.SGD(0.1, momentum=0.9), metrics=["accuracy"])
        >>> # net.fit(x, y, epochs=3)      # logs accuracy (P-net) and super_accuracy
        >>> small = pruning.strip(net.pruned_model)
    """
    temperature = check_temperature(temperature)
    kl_weight = check_kl_weight(kl_weight)
    warmup_epochs = check_warmup_epochs(warmup_epochs)
    if schedule is None:
        raise ValueError(
            "schedule is required, e.g. PolynomialDecay(0.0, 0.9, begin_step=0, "
            "end_step=<target step>, frequency=16); received: schedule=None"
        )
    if isinstance(schedule, numbers.Real) and not isinstance(schedule, bool):
        schedule = schedules_lib.ConstantSparsity(float(schedule), frequency=DEFAULT_FREQUENCY)
    if not isinstance(model, keras.Model) or not _is_cloneable(model):
        raise ValueError(
            "dcil supports functional and Sequential models; received: "
            f"model={model!r}"
        )
    head, _ = find_classifier_head(model)
    if head is None:
        raise ValueError(
            f"dcil needs a classifier whose single output comes from a Dense layer "
            f"(optionally followed by softmax/dropout); model {model.name!r} has none."
        )
    pruned = prune_model(
        model,
        schedule=schedule,
        granularity=granularity,
        mode="dual",
        criterion=criterion,
        threshold=threshold,
        layers=_select_layers(model, head, layers),
    )
    return DCILModel(
        pruned,
        head=head.name,
        temperature=temperature,
        kl_weight=kl_weight,
        warmup_epochs=warmup_epochs,
        name=f"dcil_{model.name}",
    )
