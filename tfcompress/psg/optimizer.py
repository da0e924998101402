"""``ScaledGradient``: the position-based scaled gradient (PSG) optimizer wrapper.

Implements PSGD of 002 chapter 4: before the wrapped optimizer applies a
gradient ``g`` to a scoped weight ``w``, the gradient is multiplied element-wise
by the position-based scale

    s(w) = λ_s · (|w − Q(w)| + ε)                         (eq. 4.7, footnote 1)

so plain SGD becomes ``w ← w − η · λ_s · (|w − Q(w)| + ε) · ∂L/∂w`` (eq. 4.8).
``Q`` is a :mod:`target <tfcompress.psg.targets>` -- the eq. 4.13 quantization
grid or zero. Modelled on ``keras.optimizers.LossScaleOptimizer``: the wrapper
holds an ``inner_optimizer`` that does the actual update, so any Keras optimizer
(SGD with momentum, Adam, ...) works, and weight decay, clipping, EMA and
gradient accumulation stay the inner optimizer's business (decoupled weight
decay is therefore *not* scaled, as in the authors' code).

All math is ``keras.ops``; the wrapper runs on the TensorFlow backend (with
``jit_compile`` and ``tf.distribute``) and on the JAX backend.
"""

import numbers

import keras
from keras import ops

from tfcompress.psg.targets import PSGTarget, QuantizationGrid

__all__ = ["ScaledGradient", "default_psg_variables"]

#: Last path components of the weights PSG scales by default.
KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")


def _var_path(variable):
    return getattr(variable, "path", None) or getattr(variable, "name", "")


def _leaf_name(variable):
    return _var_path(variable).split("/")[-1]


def _layer_components(variable):
    """The path components above the weight name (layer and model names)."""
    return _var_path(variable).split("/")[:-1]


def default_psg_variables(variable):
    """Default PSG scope: Dense / Conv / DepthwiseConv / SeparableConv kernels.

    A variable is scoped when the last component of its ``path`` is ``kernel``,
    ``depthwise_kernel`` or ``pointwise_kernel`` and it is a floating-point
    matrix or convolution filter (rank >= 2). Biases, BatchNorm parameters and
    embeddings are not scoped. Note that other layers naming a weight ``kernel``
    (e.g. ``EinsumDense``, recurrent layers) are scoped too; pass
    ``variables=`` to :class:`ScaledGradient` to narrow or widen the scope.
    """
    shape = tuple(variable.shape)
    dtype = str(getattr(variable, "dtype", "float32"))
    return _leaf_name(variable) in KERNEL_NAMES and len(shape) >= 2 and "float" in dtype


class _VarPlan:
    """Static, per-variable PSG settings (derived from the variable path)."""

    __slots__ = ("path", "scoped", "bits", "range_slot")

    def __init__(self, path, scoped, bits, range_slot=None):
        self.path = path
        self.scoped = scoped
        self.bits = bits
        # Index into ScaledGradient._range_vars when the target keeps a
        # running range (QuantizationGrid(range_momentum=...)), else None.
        self.range_slot = range_slot


def _is_number(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _serialize_fn(fn):
    if fn is None or isinstance(fn, (str, tuple, list)):
        return list(fn) if isinstance(fn, tuple) else fn
    return keras.saving.serialize_keras_object(fn)


def _deserialize_fn(config, custom_objects=None):
    if config is None or isinstance(config, (str, list, tuple)):
        return config
    return keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)


@keras.saving.register_keras_serializable(package="tfcompress")
class ScaledGradient(keras.optimizers.Optimizer):
    """Position-based scaled gradient (PSGD) wrapper around a Keras optimizer.

    For every *scoped* variable ``w`` (by default Dense/Conv/Depthwise kernels,
    see :func:`default_psg_variables`) the gradient ``g`` is replaced by

        g' = λ_s · (|w − Q(w)| + ε) · g                   (002 eq. 4.7-4.8)

    before ``inner_optimizer`` applies it; all other variables (biases,
    BatchNorm) get their plain gradient. ``Q`` is ``target``:
    :class:`~tfcompress.psg.QuantizationGrid` (the per-layer symmetric grid of
    eq. 4.13, recomputed from the current weights every step, or from a
    running range with ``range_momentum`` -- the wrapper then keeps one
    ``(lo, hi)`` pair per scoped kernel as optimizer state, updated once per
    step before the scale is computed, whether PSG is on or off) or
    :class:`~tfcompress.psg.Zero` (sparse training). With SGD, λ_s acts as a
    learning-rate multiplier (η = η₀·λ_s, 002 footnote 1); since
    ``|w − Q(w)| ≤ Δ/2`` is small, useful values are large: the paper uses
    λ_s = 10 (CIFAR-10) to 500-1000 (ImageNet) for quantization and 100-1200 for
    sparse training, with PSG switched on at the first LR decay (or for the last
    15 epochs) -- see :class:`~tfcompress.psg.ScaledGradientSchedule`.
    Those values assume PSG starts from a trained model at a decayed LR. The
    effective step is ``η₀·λ_s·|w − Q(w)|`` and ``Δ`` grows with ``max|w|``, so
    λ_s must shrink as η₀ and the weights grow: training the 784-50-20-10 MLP
    *from scratch* with SGD(0.05, momentum 0.9), λ_s = 5 worked while 20-50
    diverged (tutorial 02, ``bench/psg_quant.py``'s validation grid).

    **Adam.** The scale multiplies the *gradient*, so with Adam (which
    divides each coordinate by the root of its second moment) the constant
    λ_s cancels and what remains of PSG is the time variation of
    ``|w − Q(w)|``: a weight approaching a grid point gets steps shrinking
    relative to its gradient history (β₂ memory), so it still settles there.
    The authors' code keeps the gradient scaling and, for Adam, multiplies the
    learning rate by ``λ_s / 100`` (PSG-pytorch ``train.py``: ``base_lr *=
    1e-2 * lambda_s``); λ_s then acts through the inner optimizer's learning
    rate, which this wrapper leaves untouched -- set it on the inner
    optimizer (``bench/psg_quant.py`` does this for its Adam runs).

    **Differences from the authors' code.** Their backward pass multiplies by
    ``λ_s·|w − Q(w)|`` without ε (ε here defaults to 1e-8, negligible); their
    ``Linear`` layers also scale and quantize the bias (here only kernels
    are scoped by default; pass ``variables=`` to widen the scope); first and
    last layers are either kept at 8 bits below 4 bits (``keep_8bit=
    "first_last"``, the default ``keep_8bit_below=4``) or left unscaled and
    unquantized; their weight decay is added after the scaling (not scaled),
    as with this wrapper's inner-optimizer weight decay.

    Because PSG only rescales gradients, it composes with any loss, e.g. a
    distillation loss ``L + T²·KL(z_T‖z_S)`` (eq. 4.11-4.12).

    Args:
        inner_optimizer: A ``keras.optimizers.Optimizer`` instance that applies
            the scaled gradients (SGD, SGD with momentum, Adam, ...).
        target: A :class:`~tfcompress.psg.PSGTarget`. Defaults to
            ``QuantizationGrid(bits=4)``.
        lambda_s: Float ``>= 0``, the scale hyper-parameter λ_s.
        epsilon: Float ``>= 0``, ε of eq. 4.7; keeps weights that sit exactly on
            a target point trainable (their gradient is multiplied by λ_s·ε).
        variables: Optional predicate ``fn(variable) -> bool`` choosing the
            scoped variables. Defaults to :func:`default_psg_variables`.
        keep_8bit: Layers whose grid uses 8 bits when the target is below
            ``keep_8bit_below`` bits (the authors keep the first and last layer
            at 8 bits for 2- and 3-bit targets). One of ``None``; ``"first_last"``
            (the first and last scoped variable in the model's variable order);
            a list of layer names (matched against the components of the
            variable path; every name must match a scoped variable); or a
            predicate ``fn(variable) -> bool``. Ignored by targets without bits.
        keep_8bit_below: Integer or ``None``. Kept layers use 8 bits only when
            ``target.bits < keep_8bit_below`` (default 4, as in the authors'
            code). ``None`` keeps them at 8 bits whatever the target.
        mask_fn: Optional ``fn(variable) -> mask or None`` for PSG on a pruned
            model (KQP, 002 eq. 6.1-6.2). When it returns a 0/1 mask (a tensor or
            a ``keras.Variable`` broadcastable to the variable), only the active
            weights (mask 1) are scaled, with ``Q`` computed from the active
            weights alone; pruned weights keep their plain gradient. The mask
            is read each step on TensorFlow. On the JAX backend the optimizer
            step is a pure function of the trainable and optimizer variables,
            so a mask held in a *model* variable is read when the train step is
            traced; recompile (``model.make_train_function(force=True)``) after
            changing such masks there.
        enabled: Bool, initial value of the on/off switch stored in the
            non-trainable variable :attr:`psg_enabled` (``False``: plain
            gradients until :class:`~tfcompress.psg.ScaledGradientSchedule` or
            :meth:`set_enabled` turns PSG on).
        name: Optional name of the wrapper.

    Raises:
        TypeError: If ``inner_optimizer`` is not a Keras optimizer, ``target``
            is not a ``PSGTarget`` or a predicate argument is not callable.
        ValueError: If ``lambda_s`` or ``epsilon`` is negative or not a number,
            or ``keep_8bit_below`` is not a positive integer. At build time, if
            no variable is scoped or a ``keep_8bit`` name matches no scoped
            variable.

    Example:

    ```python
    model.compile(
        optimizer=tfcompress.ScaledGradient(
            keras.optimizers.SGD(0.001, momentum=0.9),
            target=tfcompress.QuantizationGrid(bits=4),
            lambda_s=10.0,
            enabled=False,
        ),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(x, y, epochs=90,
              callbacks=[tfcompress.ScaledGradientSchedule(start_epoch=75)])
    ```
    """

    def __init__(
        self,
        inner_optimizer,
        target=None,
        lambda_s=1.0,
        epsilon=1e-8,
        variables=None,
        keep_8bit=None,
        keep_8bit_below=4,
        mask_fn=None,
        enabled=True,
        name=None,
        **kwargs,
    ):
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                "`inner_optimizer` must be a keras.optimizers.Optimizer instance "
                "(e.g. keras.optimizers.SGD(0.01, momentum=0.9); use "
                "keras.optimizers.get(name) for a string). Received: "
                f"inner_optimizer={inner_optimizer!r} "
                f"of type {type(inner_optimizer).__name__}"
            )
        if target is None:
            target = QuantizationGrid(bits=4)
        if not isinstance(target, PSGTarget):
            raise TypeError(
                "`target` must be a tfcompress.psg target (QuantizationGrid(bits) "
                f"or Zero()). Received: target={target!r}"
            )
        if not _is_number(lambda_s) or not lambda_s >= 0 or lambda_s == float("inf"):
            raise ValueError(
                f"`lambda_s` must be a finite number >= 0. Received: lambda_s={lambda_s!r}"
            )
        if not _is_number(epsilon) or not epsilon >= 0 or epsilon == float("inf"):
            raise ValueError(
                f"`epsilon` must be a finite number >= 0. Received: epsilon={epsilon!r}"
            )
        if variables is not None and not callable(variables):
            raise TypeError(
                "`variables` must be None or a predicate fn(variable) -> bool. "
                f"Received: variables={variables!r}"
            )
        if isinstance(keep_8bit, (list, tuple)):
            if not all(isinstance(n, str) for n in keep_8bit):
                raise TypeError(
                    "`keep_8bit` names must be strings. Received: "
                    f"keep_8bit={keep_8bit!r}"
                )
            keep_8bit = tuple(keep_8bit)
        elif isinstance(keep_8bit, str):
            if keep_8bit != "first_last":
                raise ValueError(
                    '`keep_8bit` as a string must be "first_last" (or pass a list '
                    f"of layer names). Received: keep_8bit={keep_8bit!r}"
                )
        elif keep_8bit is not None and not callable(keep_8bit):
            raise TypeError(
                '`keep_8bit` must be None, "first_last", a list of layer names or '
                f"a predicate fn(variable) -> bool. Received: keep_8bit={keep_8bit!r}"
            )
        if keep_8bit_below is not None and (
            isinstance(keep_8bit_below, bool)
            or not isinstance(keep_8bit_below, numbers.Integral)
            or keep_8bit_below < 1
        ):
            raise ValueError(
                "`keep_8bit_below` must be None or a positive integer. Received: "
                f"keep_8bit_below={keep_8bit_below!r}"
            )
        if mask_fn is not None and not callable(mask_fn):
            raise TypeError(
                "`mask_fn` must be None or a callable fn(variable) -> mask or None. "
                f"Received: mask_fn={mask_fn!r}"
            )
        if not isinstance(enabled, bool):
            raise TypeError(f"`enabled` must be a bool. Received: enabled={enabled!r}")
        # Accept (and drop) the base-optimizer arguments a generic config may
        # carry, but refuse any that would change behaviour: they belong to
        # the inner optimizer, as with LossScaleOptimizer.
        for arg, default in (
            ("weight_decay", None),
            ("clipnorm", None),
            ("clipvalue", None),
            ("global_clipnorm", None),
            ("use_ema", False),
            ("loss_scale_factor", None),
            ("gradient_accumulation_steps", None),
        ):
            if arg in kwargs and kwargs.pop(arg) != default:
                raise ValueError(
                    f"ScaledGradient does not support `{arg}`; set it on the "
                    "inner optimizer instead."
                )
        kwargs.pop("ema_momentum", None)
        kwargs.pop("ema_overwrite_frequency", None)
        kwargs.pop("learning_rate", None)
        if kwargs:
            raise ValueError(
                f"ScaledGradient got unexpected arguments: {sorted(kwargs)}"
            )

        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.target = target
        self.lambda_s = float(lambda_s)
        self.epsilon = float(epsilon)
        self.variable_predicate = variables
        self.keep_8bit = keep_8bit
        self.keep_8bit_below = None if keep_8bit_below is None else int(keep_8bit_below)
        self.mask_fn = mask_fn
        self.enabled = enabled
        # The on/off switch is optimizer state: it is saved in `.keras` files
        # and checkpoints, restored on resume, and read inside the compiled
        # train step (a Python attribute would be frozen at trace time).
        with keras.name_scope(self.name, caller=self):
            psg_enabled = keras.Variable(
                1.0 if enabled else 0.0,
                name="psg_enabled",
                dtype="float32",
                trainable=False,
                aggregation="only_first_replica",
            )
        self._track_variable(psg_enabled)
        self._psg_enabled = psg_enabled
        self._plan = ()
        self._range_vars = ()

    # ------------------------------------------------------------------ state
    @property
    def psg_enabled(self):
        """The non-trainable 0/1 ``keras.Variable`` switching PSG on and off."""
        return self._psg_enabled

    def set_enabled(self, enabled):
        """Switches PSG on (``True``) or off (plain gradients, ``False``)."""
        self._psg_enabled.assign(1.0 if enabled else 0.0)

    @property
    def variables(self):
        return self._variables[:] + self.inner_optimizer.variables

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        # PSG scaling is linear in the gradient, so loss scaling of the inner
        # optimizer (e.g. a LossScaleOptimizer) commutes with it.
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    # ------------------------------------------------------------------ build
    def build(self, var_list):
        # The per-variable plan is static configuration derived from the
        # variables' paths, not training state.
        self._build_plan(list(var_list))
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    def _build_plan(self, var_list):
        track = bool(getattr(self.target, "tracks_range", False))
        scope = self.variable_predicate or default_psg_variables
        scoped = [bool(scope(v)) for v in var_list]
        if not any(scoped):
            raise ValueError(
                "ScaledGradient found no variable to scale: the `variables` "
                "predicate matched none of the trainable variables "
                f"{[_var_path(v) for v in var_list]}."
            )
        keep = [False] * len(var_list)
        if self.keep_8bit == "first_last":
            idx = [i for i, s in enumerate(scoped) if s]
            keep[idx[0]] = keep[idx[-1]] = True
        elif isinstance(self.keep_8bit, tuple):
            unmatched = set(self.keep_8bit)
            for i, v in enumerate(var_list):
                hit = set(self.keep_8bit) & set(_layer_components(v))
                if scoped[i] and hit:
                    keep[i] = True
                    unmatched -= hit
            if unmatched:
                raise ValueError(
                    f"`keep_8bit` names {sorted(unmatched)} match no scoped "
                    "variable. Scoped variables: "
                    f"{[_var_path(v) for v, s in zip(var_list, scoped) if s]}"
                )
        elif callable(self.keep_8bit):
            keep = [s and bool(self.keep_8bit(v)) for v, s in zip(var_list, scoped)]

        target_bits = getattr(self.target, "bits", None)
        plan = []
        range_vars = []
        for v, s, k in zip(var_list, scoped, keep):
            bits = None
            if s and k and target_bits is not None:
                if self.keep_8bit_below is None or target_bits < self.keep_8bit_below:
                    bits = 8
            slot = None
            if s and track:
                # The running (lo, hi) of eq. 4.13's range: optimizer state,
                # saved and restored with the other optimizer variables. The
                # same on every replica (weights are mirrored), hence
                # "only_first_replica".
                shape = self.target.range_shape(tuple(v.shape))
                base = _var_path(v).replace("/", "_")
                pair = tuple(
                    self.add_variable(
                        shape,
                        initializer="zeros",
                        dtype="float32",
                        aggregation="only_first_replica",
                        name=f"psg_range_{end}_{base}",
                    )
                    for end in ("lo", "hi")
                )
                slot = len(range_vars)
                range_vars.append(pair)
            plan.append(_VarPlan(_var_path(v), s, bits, slot))
        self._plan = tuple(plan)
        self._range_vars = tuple(range_vars)

    def psg_ranges(self):
        """``{variable_path: (lo, hi)}`` running ranges (empty without ``range_momentum``)."""
        return {
            p.path: tuple(self._range_vars[p.range_slot])
            for p in self._plan
            if p.range_slot is not None
        }

    def psg_plan(self):
        """``[(variable_path, scoped, bits)]`` of the built optimizer.

        ``bits`` is the grid bit-width used for that variable (``None`` for
        unscoped variables or targets without bits).
        """
        if not self.built:
            raise ValueError("ScaledGradient is not built yet.")
        target_bits = getattr(self.target, "bits", None)
        return [
            (p.path, p.scoped, (p.bits or target_bits) if p.scoped else None)
            for p in self._plan
        ]

    # ------------------------------------------------------------------ math
    def position_scale(self, value, variable=None, bits=None, value_range=None):
        """The PSG scale ``λ_s · (|w − Q(w)| + ε)`` of eq. 4.7 for a weight.

        Args:
            value: Current weight tensor ``w``.
            variable: Optional variable, passed to ``mask_fn``.
            bits: Optional bit-width override of the target's grid.
            value_range: Optional ``(lo, hi)`` range of the grid (the running
                range); ``None`` uses the range of ``value``.

        Returns:
            A tensor of the shape of ``value``. With a mask from ``mask_fn``,
            pruned entries get scale 1 (plain gradient).
        """
        w = ops.convert_to_tensor(value)
        mask = self._mask(variable, w.dtype)
        q = self.target(w, bits=bits, mask=mask, value_range=value_range)
        scale = self.lambda_s * (ops.abs(w - ops.cast(q, w.dtype)) + self.epsilon)
        if mask is not None:
            scale = mask * scale + (1.0 - mask)
        return scale

    def _mask(self, variable, dtype):
        if self.mask_fn is None or variable is None:
            return None
        mask = self.mask_fn(variable)
        if mask is None:
            return None
        return ops.cast(ops.convert_to_tensor(mask), dtype)

    def _scale_gradients(self, grads, values, variables, enabled, ranges=None):
        """Scaled gradients and, with a running range, the updated ranges.

        Args:
            grads, values, variables: Aligned lists (gradient, current value,
                variable).
            enabled: The 0/1 switch value.
            ranges: ``[(lo, hi)]`` current values of the running ranges by slot
                (``None``: read the range variables).

        Returns:
            ``(scaled_grads, new_ranges)``; ``new_ranges`` maps a slot to its
            updated ``(lo, hi)`` (empty without a running range).
        """
        enabled = ops.cast(enabled, "float32")
        if ranges is None:
            ranges = [(lo.value, hi.value) for lo, hi in self._range_vars]
        out, new_ranges = [], {}
        for g, w, v in zip(grads, values, variables):
            plan = self._plan[self._get_variable_index(v)]
            if g is None or not plan.scoped or self._overwrite_variable_with_gradient(v):
                out.append(g)
                continue
            g = ops.convert_to_tensor(g)  # densifies sparse (IndexedSlices) gradients
            w = ops.cast(ops.convert_to_tensor(w), "float32")
            value_range = None
            if plan.range_slot is not None:
                value_range = self.target.update_range(
                    ranges[plan.range_slot], w, mask=self._mask(v, w.dtype)
                )
                new_ranges[plan.range_slot] = value_range
            scale = self.position_scale(w, v, bits=plan.bits, value_range=value_range)
            scale = enabled * scale + (1.0 - enabled)
            out.append(g * ops.cast(scale, g.dtype))
        return out, new_ranges

    def scaled_gradients(self, grads, trainable_variables=None):
        """Returns the gradients PSG hands to the inner optimizer (for inspection)."""
        tvs = list(trainable_variables or self._trainable_variables)
        if not self.built:
            self.build(tvs)
        return self._scale_gradients(
            list(grads), [v.value for v in tvs], tvs, self._psg_enabled.value
        )[0]

    # ------------------------------------------------------------------ apply
    def apply(self, grads, trainable_variables=None):
        if trainable_variables is not None:
            trainable_variables = list(trainable_variables)
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    "When passing `grads` without `variables`, the optimizer "
                    "must already be built on a list of variables."
                )
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        elif trainable_variables is not None:
            self._check_variables_are_known(trainable_variables)
        tvs = trainable_variables or self._trainable_variables
        grads = list(grads)
        scaled, new_ranges = self._scale_gradients(
            grads, [v.value for v in tvs], tvs, self._psg_enabled.value
        )
        for slot, (lo, hi) in new_ranges.items():
            lo_var, hi_var = self._range_vars[slot]
            lo_var.assign(lo)
            hi_var.assign(hi)
        self.inner_optimizer.apply(scaled, trainable_variables=trainable_variables)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        if not self.built:
            raise ValueError(
                "To call `stateless_apply`, ScaledGradient must be built. "
                "Call `optimizer.build(trainable_variables)` first."
            )
        n_own = len(self._variables)
        own = list(optimizer_variables[:n_own])
        def position(var):
            return next(i for i, v in enumerate(self._variables) if v is var)

        enabled = own[position(self._psg_enabled)]
        range_pos = [(position(lo), position(hi)) for lo, hi in self._range_vars]
        ranges = [(own[i], own[j]) for i, j in range_pos]
        scaled, new_ranges = self._scale_gradients(
            list(grads),
            list(trainable_variables),
            self._trainable_variables,
            enabled,
            ranges=ranges,
        )
        for slot, (lo, hi) in new_ranges.items():
            i, j = range_pos[slot]
            own[i], own[j] = lo, hi
        new_trainable, new_inner = self.inner_optimizer.stateless_apply(
            list(optimizer_variables[n_own:]), scaled, trainable_variables
        )
        return new_trainable, own + list(new_inner)

    # ---------------------------------------------------------- serialization
    def get_config(self):
        # Only `name` of the base config applies (as in LossScaleOptimizer).
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "target": keras.saving.serialize_keras_object(self.target),
            "lambda_s": self.lambda_s,
            "epsilon": self.epsilon,
            "variables": _serialize_fn(self.variable_predicate),
            "keep_8bit": _serialize_fn(self.keep_8bit),
            "keep_8bit_below": self.keep_8bit_below,
            "mask_fn": _serialize_fn(self.mask_fn),
            "enabled": self.enabled,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        target = keras.saving.deserialize_keras_object(
            config.pop("target"), custom_objects=custom_objects
        )
        for key in ("variables", "keep_8bit", "mask_fn"):
            if key in config:
                config[key] = _deserialize_fn(config[key], custom_objects)
        return cls(inner, target=target, **config)
