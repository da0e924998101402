"""Sparsity schedules: small serializable callables ``schedule(step) -> (update, sparsity)``.

Modelled on TFMOT's ``pruning_schedule.py``. A schedule answers two questions for a
training step: *should the masks be recomputed now* and *what sparsity should they
have*. ``PolynomialDecay`` with ``power=3`` is the gradual (cubic) schedule of
Zhu & Gupta used by DPF and DCIL — eq. 5.1 of the dissertation (002):

    S_c = S_t + (S_i - S_t) (1 - (c - c_0) / n)^3

with ``c_0 = begin_step``, ``n = end_step - begin_step``, ``S_i = initial_sparsity``
and ``S_t = final_sparsity``.

``__call__`` accepts a Python int (the fast path used by the callbacks) or a tensor
(graph mode, computed with ``keras.ops`` only).

Update points. Masks are recomputed at ``begin_step``, every ``frequency`` steps after
it, and — unlike TFMOT — also at ``end_step`` itself, so the final sparsity is always
reached even when ``end_step - begin_step`` is not a multiple of ``frequency``.
"""

import math

import keras
import numpy as np
from keras import ops


def _check_sparsity(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"{name} must be a float in [0, 1); received: {name}={value!r}"
        )
    if not 0.0 <= float(value) < 1.0 or math.isnan(float(value)):
        raise ValueError(f"{name} must be in [0, 1); received: {name}={value!r}")
    return float(value)


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer; received: {name}={value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; received: {name}={value!r}")
    return int(value)


def _is_python_step(step):
    if isinstance(step, bool):
        return False
    if isinstance(step, (int, np.integer)):
        return True
    return isinstance(step, np.ndarray) and step.ndim == 0


class PruningSchedule:
    """Base class: a frequency-gated sparsity schedule.

    Subclasses implement :meth:`sparsity_at` (python floats) and
    :meth:`_sparsity_tensor` (``keras.ops``) and add their own config entries.

    Args:
        begin_step: first step at which masks are computed.
        end_step: last step of the schedule; ``-1`` means "never ends".
        frequency: masks are recomputed every ``frequency`` steps (``F`` of 002 §5.2).
    """

    def __init__(self, begin_step=0, end_step=-1, frequency=100):
        self.begin_step = _check_int("begin_step", begin_step, 0)
        self.end_step = _check_int("end_step", end_step, -1)
        self.frequency = _check_int("frequency", frequency, 1)
        if self.end_step != -1 and self.end_step < self.begin_step:
            raise ValueError(
                "end_step must be -1 or >= begin_step; received: "
                f"end_step={end_step!r} with begin_step={begin_step!r}"
            )

    # ----------------------------------------------------------------- python path
    def sparsity_at(self, step):
        """Target sparsity at a (python int) step."""
        raise NotImplementedError

    @property
    def final_sparsity_value(self):
        """Sparsity once the schedule has ended."""
        raise NotImplementedError

    def is_update_step(self, step, keep_updating=False, frequency=None):
        """Whether masks are recomputed at exactly ``step`` (python int)."""
        return self.last_update_point(step, keep_updating, frequency) == step

    def last_update_point(self, step, keep_updating=False, frequency=None):
        """The latest update point ``<= step``, or ``None``.

        Args:
            step: python int.
            keep_updating: keep recomputing masks every ``frequency`` steps after
                ``end_step`` (at the final sparsity) — DCIL's "mask recomputed through
                the end of training". ``False`` freezes masks after ``end_step``
                (hard pruning, DPF).
            frequency: overrides ``self.frequency`` (``UpdateMasks(frequency=…)``).
        """
        freq = frequency or self.frequency
        step = int(step)
        if step < self.begin_step:
            return None
        end = self.end_step
        if end >= 0 and step >= end and not keep_updating:
            return end
        last = self.begin_step + ((step - self.begin_step) // freq) * freq
        if end >= 0 and step >= end >= last:
            return end
        return last

    def update_due(self, prev_step, step, keep_updating=False, frequency=None):
        """Whether an update point lies in ``(prev_step, step]`` (python ints).

        This is what the mask controller asks: with ``steps_per_execution > 1`` the
        callbacks only run at execution boundaries, so exact update steps can be
        skipped over; the masks are then recomputed at the next boundary.
        """
        last = self.last_update_point(step, keep_updating, frequency)
        return last is not None and last > int(prev_step)

    def next_update_point(self, prev_step, keep_updating=False, frequency=None):
        """The first update point after ``prev_step``, or ``None`` if there is none.

        ``update_due(prev_step, step)`` is exactly ``step >= next_update_point(prev_step)``;
        :class:`~tfcompress.pruning.UpdateMasks` uses it to know, after each update,
        how many steps it can let pass without looking again.

        Args:
            prev_step: python int (the step of the last update; ``-1``: never).
            keep_updating, frequency: as in :meth:`last_update_point`.
        """
        freq = frequency or self.frequency
        prev = int(prev_step)
        begin, end = self.begin_step, self.end_step
        if prev < begin:
            return begin
        if 0 <= end <= prev and not keep_updating:
            return None
        following = begin + ((prev - begin) // freq + 1) * freq
        if prev < end < following:
            return end
        return following

    # ----------------------------------------------------------------- call
    def __call__(self, step):
        """Returns ``(update, sparsity)`` for ``step``.

        ``step`` may be a python int (returns ``bool, float``) or a scalar tensor
        (returns two tensors, computed with ``keras.ops`` so it works in graph mode).
        """
        if _is_python_step(step):
            step = int(step)
            return self.is_update_step(step), self.sparsity_at(step)
        step = ops.cast(step, "int32")
        begin = self.begin_step
        after_begin = ops.greater_equal(step, begin)
        on_freq = ops.equal(ops.mod(step - begin, self.frequency), 0)
        if self.end_step >= 0:
            in_range = ops.logical_and(after_begin, ops.less_equal(step, self.end_step))
            on_freq = ops.logical_or(on_freq, ops.equal(step, self.end_step))
        else:
            in_range = after_begin
        update = ops.logical_and(in_range, on_freq)
        return update, self._sparsity_tensor(step)

    def _sparsity_tensor(self, step):
        raise NotImplementedError

    # ----------------------------------------------------------------- config
    def get_config(self):
        return {
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="tfcompress")
class ConstantSparsity(PruningSchedule):
    """A constant target sparsity, applied every ``frequency`` steps.

    Args:
        sparsity: fraction of weights to prune, in ``[0, 1)``.
        begin_step: first step at which masks are computed.
        end_step: last update step; ``-1`` (default) keeps updating forever.
        frequency: update period in steps.

    Raises:
        ValueError: on an out-of-range argument, naming it and the value received.

    Example:
        >>> ConstantSparsity(0.8, frequency=16)(32)
        (True, 0.8)
    """

    def __init__(self, sparsity, begin_step=0, end_step=-1, frequency=100):
        super().__init__(begin_step=begin_step, end_step=end_step, frequency=frequency)
        self.sparsity = _check_sparsity("sparsity", sparsity)

    def sparsity_at(self, step):
        return self.sparsity

    @property
    def final_sparsity_value(self):
        return self.sparsity

    def _sparsity_tensor(self, step):
        return ops.convert_to_tensor(self.sparsity, dtype="float32")

    def get_config(self):
        return {"sparsity": self.sparsity, **super().get_config()}


@keras.saving.register_keras_serializable(package="tfcompress")
class PolynomialDecay(PruningSchedule):
    """Gradual polynomial schedule, eq. 5.1 of 002 with ``power=3``.

    ``S(step) = S_f + (S_i - S_f) * (1 - clip((step - begin) / (end - begin), 0, 1))^power``

    Args:
        initial_sparsity: sparsity at ``begin_step``, in ``[0, 1)``.
        final_sparsity: sparsity reached at ``end_step``, in ``[0, 1)``.
        begin_step: step ``c_0`` at which pruning starts.
        end_step: step ``c_0 + n`` at which ``final_sparsity`` is reached (required,
            ``> begin_step``).
        power: exponent (3 = the cubic schedule of DPF/DCIL).
        frequency: update period ``F`` in steps (16 in DCIL/DPF).

    Raises:
        ValueError: on an out-of-range argument.

    Example:
        >>> s = PolynomialDecay(0.0, 0.9, begin_step=0, end_step=1000, frequency=16)
        >>> s(1000)
        (True, 0.9)
    """

    def __init__(
        self,
        initial_sparsity,
        final_sparsity,
        begin_step,
        end_step,
        power=3,
        frequency=100,
    ):
        super().__init__(begin_step=begin_step, end_step=end_step, frequency=frequency)
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        self.final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        if self.end_step <= self.begin_step:
            raise ValueError(
                "end_step must be > begin_step for PolynomialDecay; received: "
                f"end_step={end_step!r} with begin_step={begin_step!r}"
            )
        if isinstance(power, bool) or not isinstance(power, (int, float)) or power <= 0:
            raise ValueError(f"power must be a number > 0; received: power={power!r}")
        self.power = power

    def sparsity_at(self, step):
        span = self.end_step - self.begin_step
        p = min(max((int(step) - self.begin_step) / span, 0.0), 1.0)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (
            (1.0 - p) ** self.power
        )

    @property
    def final_sparsity_value(self):
        return self.final_sparsity

    def _sparsity_tensor(self, step):
        span = float(self.end_step - self.begin_step)
        p = ops.clip(ops.cast(step - self.begin_step, "float32") / span, 0.0, 1.0)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * ops.power(
            1.0 - p, float(self.power)
        )

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


def get(identifier):
    """Returns a schedule from an instance, a float (constant sparsity) or a config."""
    if isinstance(identifier, PruningSchedule):
        return identifier
    if isinstance(identifier, (int, float)) and not isinstance(identifier, bool):
        return ConstantSparsity(identifier)
    if isinstance(identifier, dict):
        obj = keras.saving.deserialize_keras_object(identifier)
        if isinstance(obj, PruningSchedule):
            return obj
    raise ValueError(
        "schedule must be a PruningSchedule (e.g. ConstantSparsity(0.5)) or a "
        f"sparsity float; received: schedule={identifier!r}"
    )
