"""Callbacks: ``UpdateMasks`` (recompute masks on schedule) and ``PruningSummary``."""

import math
import warnings

import keras

from tfcompress.pruning import controller


@keras.saving.register_keras_serializable(package="tfcompress")
class UpdateMasks(keras.callbacks.Callback):
    """Recomputes the masks of a pruned model when its schedules say so.

    At the start of training and before every training batch (or every execution of
    ``steps_per_execution`` batches) it checks whether an update point of a
    wrapper's schedule has been reached since the wrapper's last update; if so the
    masks are recomputed (layer-wise, per channel group or with one global
    threshold, see :func:`~tfcompress.pruning.update_masks`). After each update it
    notes how many steps remain until the next update point, so the batches in
    between cost one comparison — no variable read, no state sync on JAX.

    * The schedule clock is each wrapper's own ``step`` weight, advanced in-graph by
      every training step, so it is exact whatever ``steps_per_execution`` is and it
      is saved with the model (``.keras``, checkpoints, ``BackupAndRestore``).
    * With ``steps_per_execution=k`` callbacks only run every ``k`` steps: an
      update point inside an execution is applied at the next execution boundary
      (at the sparsity the schedule gives there). Choose ``k`` dividing the
      schedule's ``frequency`` to update at exactly the scheduled steps.
    * Under ``tf.distribute`` the masks are assigned in cross-replica context, so
      every replica gets the same masks.
    * On the JAX backend it calls ``model.jax_state_sync()`` before reading or
      assigning variables.

    Training a pruned model without this callback is detected: the next
    ``UpdateMasks`` run warns (and catches up), and ``strip`` raises.

    Args:
        frequency: overrides every schedule's ``frequency`` (steps); ``None`` keeps
            the schedules' own.

    Raises:
        ValueError: if ``frequency`` is not a positive integer, or (at the start of
            training) if the model has no :class:`PruneWrapper`.
    """

    def __init__(self, frequency=None):
        super().__init__()
        if frequency is not None and (
            isinstance(frequency, bool) or not isinstance(frequency, int) or frequency < 1
        ):
            raise ValueError(
                f"frequency must be a positive integer or None; received: frequency={frequency!r}"
            )
        self.frequency = frequency
        self._pending_build = False
        self._started = False
        self._executed = 0
        self._due_after = math.inf
        self._batch_begin = 0

    def _update(self, sync=True):
        """Applies the due updates, then caches on the host after how many executed
        steps the next one is due — so batches with nothing due cost one comparison
        and no variable read (a read on JAX would force a state sync every step)."""
        wrappers = controller.collect_wrappers(self.model)
        _, counters = controller.apply_updates(
            self.model, wrappers, frequency=self.frequency, sync=sync)
        self._executed = 0
        self._due_after = math.inf
        for w in wrappers:
            step, last, _ = counters[id(w)]
            point = w.schedule.next_update_point(last, w.keep_updating, self.frequency)
            if point is not None:
                self._due_after = min(self._due_after, max(point - step, 0))

    def on_train_begin(self, logs=None):
        if not any(
            isinstance(layer, controller.PruneWrapper)
            for layer in self.model._flatten_layers(include_self=False)
        ):
            raise ValueError(
                "UpdateMasks: the model has no PruneWrapper layer; prune it with "
                "tfcompress.pruning.prune_model or prune_layer first."
            )
        # The first real look happens at the first batch, after every callback's
        # on_train_begin — so a BackupAndRestore listed after this callback has
        # already restored the masks and steps.
        self._started = False

    def _start(self):
        controller.sync_state(self.model)
        stale = controller.stale_wrappers(self.model, self.frequency, sync=False)
        if stale:
            warnings.warn(
                controller.stale_message(stale) + " Updating the masks now.",
                stacklevel=3,
            )
        self._update(sync=False)
        self._pending_build = any(
            isinstance(layer, controller.PruneWrapper) and not layer.built
            for layer in self.model._flatten_layers(include_self=False)
        )
        self._started = True

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_begin = batch
        if not self._started:
            self._start()
        elif self._pending_build:
            # Wrappers of a subclassed model may only be built by the first step.
            self._update()
            self._pending_build = False
        elif self._executed >= self._due_after:
            self._update()

    def on_train_batch_end(self, batch, logs=None):
        self._executed += max(int(batch) - int(self._batch_begin) + 1, 1)

    def on_train_end(self, logs=None):
        controller.mark_checked(self.model)

    def get_config(self):
        return {"frequency": self.frequency}


@keras.saving.register_keras_serializable(package="tfcompress")
class PruningSummary(keras.callbacks.Callback):
    """Adds per-layer and global sparsity to the epoch logs (and TensorBoard).

    Logs ``sparsity`` (global, over all pruned weights) and, with
    ``per_layer=True``, ``sparsity/<wrapper name>`` at the end of every epoch; they
    then appear in ``History`` and in a ``keras.callbacks.TensorBoard`` listed
    after this callback. With ``log_dir`` it also writes them as scalars itself
    (TensorFlow's summary writer, imported lazily).

    Args:
        log_dir: TensorBoard directory, or ``None``.
        per_layer: also log each wrapper's sparsity.
    """

    def __init__(self, log_dir=None, per_layer=True):
        super().__init__()
        self.log_dir = log_dir
        self.per_layer = per_layer
        self._writer = None

    def _sparsities(self):
        controller.sync_state(self.model)
        out, zeros, total = {}, 0, 0
        for w in controller.collect_wrappers(self.model):
            masks = w.full_masks()
            n = sum(m.size for m in masks.values())
            z = sum(int((m == 0).sum()) for m in masks.values())
            out[w.name] = z / n if n else 0.0
            zeros, total = zeros + z, total + n
        return (zeros / total if total else 0.0), out

    def on_epoch_end(self, epoch, logs=None):
        glob, per_layer = self._sparsities()
        if logs is not None:
            logs["sparsity"] = glob
            if self.per_layer:
                for name, s in per_layer.items():
                    logs[f"sparsity/{name}"] = s
        if self.log_dir is not None:
            import tensorflow as tf  # lazy: TensorBoard writing only

            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default(step=epoch):
                _write_scalar(tf, "sparsity/global", glob, epoch)
                for name, s in per_layer.items():
                    _write_scalar(tf, f"sparsity/{name}", s, epoch)
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def get_config(self):
        return {"log_dir": self.log_dir, "per_layer": self.per_layer}


def _write_scalar(tf, tag, value, step):
    """A TensorBoard scalar via the core ``tf.summary.write`` op (works without the
    ``tensorboard`` package, which ``tf.summary.scalar`` needs)."""
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    tf.summary.write(
        tag, tf.constant(float(value), tf.float32), step=step,
        metadata=metadata.SerializeToString(),
    )
