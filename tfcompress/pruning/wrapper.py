"""``PruneWrapper``: one wrapper, three gradient modes (DESIGN.md, 002 ch. 5).

The wrapper owns, as non-trainable weights created in ``build``:

* one mask per prunable weight (``<weight>_mask``; per output channel for
  structured pruning, per block for block pruning);
* ``step`` — training forward passes seen on the primary (``pruned``) path, the
  clock of the sparsity schedule; incremented in-graph, so it is exact under
  ``steps_per_execution > 1``, ``tf.distribute`` and ``jit_compile``;
* ``last_update_step`` — the step of the last mask recomputation (``-1``: never);
* ``checked_step`` — the step at which the mask controller last looked at this
  wrapper. ``step > checked_step`` with an update due in between means the model
  was trained without :class:`~tfcompress.pruning.UpdateMasks` (see
  :func:`~tfcompress.pruning.controller.stale_wrappers`).

The forward pass computes the effective weight(s) with
:func:`~tfcompress.pruning.modes.effective_weight` and runs the wrapped layer's
own ``__call__`` under a :class:`~tfcompress.pruning.substitution.WeightSubstitution`
scope that makes the layer read the effective weight instead of its variable.
"""

import keras
import numpy as np
from keras import ops

from tfcompress.pruning import criteria as criteria_lib
from tfcompress.pruning import granularity as granularity_lib
from tfcompress.pruning import modes as modes_lib
from tfcompress.pruning import registry
from tfcompress.pruning import schedules as schedules_lib
from tfcompress.pruning._utils import to_numpy
from tfcompress.pruning.granularity import Structured
from tfcompress.pruning.substitution import WeightSubstitution

THRESHOLDS = ("layer", "global")


@keras.saving.register_keras_serializable(package="tfcompress")
class PruneWrapper(keras.layers.Wrapper):
    """Masks the prunable weights of ``layer``.

    Args:
        layer: the layer to prune (registered class or with
            ``get_prunable_weights()``).
        schedule: a :class:`~tfcompress.pruning.PruningSchedule` (default
            ``ConstantSparsity(0.5)``) or a sparsity float.
        granularity: ``"unstructured"``, ``"structured"``, ``"n:m"`` / ``"2:4"``,
            ``"block"`` or a granularity object (``NM(2, 4)``, ``Block((32, 32))``).
        mode: ``"hard"``, ``"feedback"`` (DPF) or ``"dual"`` (DCIL); see
            :mod:`tfcompress.pruning.modes`.
        criterion: a :class:`~tfcompress.pruning.Criterion` or ``"l1"``/``"l2"``.
        threshold: ``"layer"`` (each weight reaches the target on its own) or
            ``"global"`` (one threshold over all ``"global"`` wrappers of the
            model, computed by the mask controller, as in DPF/DCIL).
        channel_group: ``None`` or a name. Structured wrappers with the same
            ``channel_group`` share one output-channel mask: the controller scores
            each channel by the sum of its filter scores over the members and keeps
            or prunes it in all of them — what a residual ``Add`` needs for
            :func:`~tfcompress.pruning.shrink` to remove its channels (see
            :func:`~tfcompress.pruning.channel_groups`). Members must have the same
            number of output channels, schedule and ``threshold``.
        **kwargs: base ``Layer`` arguments (``name`` …).

    Call arguments:
        inputs: the wrapped layer's inputs.
        training: forwarded through the call context; training calls on the
            ``pruned`` path advance ``step``. (A subclassed model must accept and
            pass on ``training``, as it must for Dropout/BatchNorm; a layer shared
            ``n`` times in a graph advances ``n`` steps per training step.)
        path: ``"pruned"`` (default) or, in ``mode="dual"``, ``"super"``.

    Raises:
        ValueError: if ``layer`` is not prunable or an argument is invalid.

    Example:
        >>> layer = prune_layer(keras.layers.Dense(8),
        ...                     schedule=PolynomialDecay(0.0, 0.8, 0, 100, frequency=10))
    """

    def __init__(
        self,
        layer,
        schedule=None,
        granularity="unstructured",
        mode="hard",
        criterion="l2",
        threshold="layer",
        channel_group=None,
        **kwargs,
    ):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(f"layer must be a keras Layer; received: layer={layer!r}")
        if isinstance(layer, PruneWrapper):
            raise ValueError(f"Layer {layer.name!r} is already wrapped in a PruneWrapper.")
        if not registry.supports(layer):
            raise ValueError(
                f"Layer {layer.name!r} of type {type(layer).__name__} cannot be "
                "pruned: supported are Dense, Conv1D/2D/3D, Conv*DTranspose, "
                "DepthwiseConv1D/2D, SeparableConv1D/2D, Embedding, and layers "
                "defining get_prunable_weights()."
            )
        kwargs.setdefault("name", f"prune_{layer.name}")
        super().__init__(layer, **kwargs)
        self.schedule = schedules_lib.get(
            schedule if schedule is not None else schedules_lib.ConstantSparsity(0.5)
        )
        self.granularity = granularity_lib.get(granularity)
        self.mode = modes_lib.check_mode(mode)
        self.criterion = criteria_lib.get(criterion)
        if threshold not in THRESHOLDS:
            raise ValueError(
                f"threshold must be one of {THRESHOLDS}; received: threshold={threshold!r}"
            )
        self.threshold = threshold
        self.channel_group = _check_channel_group(channel_group, self.granularity)

    # ------------------------------------------------------------------ build
    def build(self, input_shape=None):
        super().build(input_shape)
        entries, bias = registry.prunable_weights(self.layer)
        masks = []
        for name, var, spec in entries:
            self.granularity.validate(tuple(var.shape), spec, f"{self.layer.name}.{name}")
            masks.append(
                self.add_weight(
                    name=f"{name}_mask",
                    shape=self.granularity.mask_shape(tuple(var.shape), spec),
                    initializer="ones",
                    dtype=var.dtype,
                    trainable=False,
                    aggregation="only_first_replica",
                )
            )

        def counter(name, value):
            return self.add_weight(
                name=name,
                shape=(),
                initializer=keras.initializers.Constant(value),
                dtype="int32",
                trainable=False,
                aggregation="only_first_replica",
            )

        self.step = counter("step", 0)
        self.last_update_step = counter("last_update_step", -1)
        self.checked_step = counter("checked_step", 0)
        # Derived views of the layer's variables (not state): bypass attribute
        # tracking so the wrapped layer's variables are not tracked twice.
        targets = [(n, v, s, m) for (n, v, s), m in zip(entries, masks)]
        object.__setattr__(self, "_targets", targets)
        object.__setattr__(self, "_bias", bias if isinstance(self.granularity, Structured) else None)
        self.built = True

    # ------------------------------------------------------------------ forward
    @property
    def keep_updating(self):
        """Whether masks keep being recomputed after the schedule's end (dual)."""
        return modes_lib.KEEP_UPDATING[self.mode]

    @property
    def targets(self):
        """List of ``(name, variable, WeightSpec, mask_variable)``."""
        return list(self._targets)

    def effective_weights(self, path=modes_lib.PRIMARY_PATH):
        """``[(variable, effective tensor)]`` for ``path`` (keras.ops)."""
        mapping = []
        for _, var, spec, mask in self._targets:
            m = self.granularity.expand(ops.convert_to_tensor(mask), tuple(var.shape), spec)
            mapping.append((var, modes_lib.effective_weight(var, m, self.mode, path)))
        if self._bias is not None:
            bias_var, idx = self._bias
            mask = self._targets[idx][3]
            if int(np.prod(mask.shape)) == int(np.prod(bias_var.shape)):
                m = ops.reshape(ops.convert_to_tensor(mask), tuple(bias_var.shape))
                mapping.append((bias_var, modes_lib.effective_weight(bias_var, m, self.mode, path)))
        return mapping

    def call(self, inputs, training=None, path=modes_lib.PRIMARY_PATH, **kwargs):
        modes_lib.check_path(path, self.mode)
        if training is True and path == modes_lib.PRIMARY_PATH:
            self.step.assign_add(1)
        scope = WeightSubstitution(self.effective_weights(path))
        with scope:
            outputs = self.layer(inputs, **kwargs)
        for loss in scope.orphan_losses:
            self.add_loss(loss)
        return outputs

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return self.layer.compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, training=None, path=modes_lib.PRIMARY_PATH, **kwargs):
        return self.layer.compute_output_spec(inputs, **kwargs)

    # ------------------------------------------------------------------ host-side helpers
    def read_counters(self):
        """``(step, last_update_step, checked_step)`` as python ints (eager)."""
        return tuple(
            int(to_numpy(v))
            for v in (self.step, self.last_update_step, self.checked_step)
        )

    def full_masks(self):
        """``{weight name: numpy mask with the weight's shape}`` (eager)."""
        out = {}
        for name, var, spec, mask in self._targets:
            out[name] = np.asarray(
                self.granularity.expand_numpy(to_numpy(mask), tuple(var.shape), spec)
            )
        return out

    def pruned_weights(self):
        """The wrapped layer's weights (numpy, in ``layer.weights`` order) with masks
        baked in: the P-net weights ``w * m`` — what :func:`strip` exports."""
        values = {id(v): to_numpy(e) for v, e in self.effective_weights("pruned")}
        return [
            values.get(id(v), to_numpy(v)) for v in self.layer.weights
        ]

    def sparsity(self):
        """Fraction of zeros among the prunable weights' mask entries (eager)."""
        masks = self.full_masks()
        total = sum(m.size for m in masks.values())
        zeros = sum(int((m == 0).sum()) for m in masks.values())
        return zeros / total if total else 0.0

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "granularity": keras.saving.serialize_keras_object(self.granularity),
            "mode": self.mode,
            "criterion": keras.saving.serialize_keras_object(self.criterion),
            "threshold": self.threshold,
            "channel_group": self.channel_group,
        }
        return {**super().get_config(), **config}


def _check_channel_group(channel_group, granularity):
    if channel_group is None:
        return None
    if not isinstance(channel_group, str) or not channel_group:
        raise ValueError(
            "channel_group must be None or a non-empty string; received: "
            f"channel_group={channel_group!r}"
        )
    if not isinstance(granularity, Structured):
        raise ValueError(
            "channel_group needs granularity='structured' (one mask entry per output "
            f"channel); received: channel_group={channel_group!r} with "
            f"granularity={granularity.name!r}"
        )
    return channel_group


def prune_layer(
    layer,
    schedule=None,
    granularity="unstructured",
    mode="hard",
    criterion="l2",
    threshold="layer",
    channel_group=None,
    **kwargs,
):
    """Wraps ``layer`` in a :class:`PruneWrapper` (see it for the arguments).

    Works anywhere a layer does — in a Sequential or functional model, or inside a
    subclassed model's ``__init__``. Train with
    :class:`~tfcompress.pruning.UpdateMasks` in ``fit``'s callbacks.

    Example:
        >>> dense = prune_layer(keras.layers.Dense(10), schedule=ConstantSparsity(0.8))
    """
    return PruneWrapper(
        layer,
        schedule=schedule,
        granularity=granularity,
        mode=mode,
        criterion=criterion,
        threshold=threshold,
        channel_group=channel_group,
        **kwargs,
    )
