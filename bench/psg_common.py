"""Shared helpers of the PSG benchmarks (``bench/psg_quant.py``).

Data splits, the training loop configuration (plain ``model.fit`` with an
optional :class:`tfcompress.ScaledGradient` and
:class:`tfcompress.ScaledGradientSchedule`, or a ``keras.distillation.Distiller``
for PSGD + KD), accuracy after ``quantize_weights``, weight MSE to the grid,
magnitude pruning without fine-tuning, and a resumable per-run result store.
"""

import json
import os
import time

import numpy as np

VAL_SIZE = 10_000


# ----------------------------------------------------------------------------- data
def load_splits(val_size=VAL_SIZE):
    """Fashion-MNIST (real, offline) with a validation split carved from train.

    Returns:
        dict with ``"train"`` / ``"val"`` (the first ``60k − val_size`` and the
        last ``val_size`` training images: tuning only), ``"full"`` (all 60k
        training images: final runs) and ``"test"`` (the 10k test images, used
        only for the final numbers). Each value is ``(x, y)``; x in [0, 1],
        shape (N, 28, 28, 1).
    """
    from tfcompress import data

    (x, y), (xt, yt) = data.load_fashion_mnist_arrays()
    n = len(x) - val_size
    return {
        "train": (x[:n], y[:n]),
        "val": (x[n:], y[n:]),
        "full": (x, y),
        "test": (xt, yt),
    }


def subset(xy, n, seed=0):
    """A fixed random subset of ``n`` examples of ``(x, y)`` (all of it if n is None)."""
    x, y = xy
    if n is None or n >= len(x):
        return x, y
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
    return x[idx], y[idx]


# ----------------------------------------------------------------------------- training
def build_model(arch):
    """``"mlp"`` (784-50-20-10), ``"mlp300_100"`` (784-300-100-10, the KD teacher)
    or ``"resnet8"``/``"resnet14"``/... (width 16, 28×28×1)."""
    from tfcompress import models

    if arch == "mlp300_100":
        return models.build("mlp", hidden=(300, 100))
    return models.build(arch)


def make_optimizer(cfg, steps_per_epoch):
    """Builds the optimizer of a run configuration.

    ``cfg`` keys: ``opt`` (``"sgd"``: momentum 0.9, or ``"adam"``), ``lr`` (initial
    learning rate), ``decay`` (list of epochs at which the LR is multiplied by
    0.1), and for PSG ``psg`` = ``{"target": "grid"|"zero", "bits", "lambda_s",
    "start", "keep_8bit", "range_momentum", "adam_lr_scale"}``; without PSG,
    ``lr_factor_from = [epoch, factor]`` multiplies the LR from ``epoch`` on
    (the control run of the Adam recipe below).
    ``range_momentum`` (optional) is ``QuantizationGrid``'s running-range
    momentum (the authors use 0.1). ``adam_lr_scale`` (optional, Adam only):
    from the PSG start epoch on, the learning rate is multiplied by
    ``λ_s / 100`` -- the authors' recipe for Adam (PSG-pytorch ``train.py``:
    ``base_lr *= 1e-2 * lambda_s``), since Adam normalises the constant λ_s
    of the scaled gradient away.

    Returns:
        ``(optimizer, callbacks)``.
    """
    import keras

    import tfcompress

    psg = cfg.get("psg")
    decay = list(cfg.get("decay", []))
    epochs = sorted(set(decay))
    lam_factor, start = 1.0, 0
    if psg and psg.get("adam_lr_scale"):
        if cfg["opt"] != "adam":
            raise ValueError("adam_lr_scale applies to opt='adam' only")
        lam_factor, start = float(psg["lambda_s"]) / 100.0, int(psg.get("start", 0))
    elif cfg.get("lr_factor_from"):
        # The same LR schedule without PSG (control run of the Adam recipe).
        start, lam_factor = int(cfg["lr_factor_from"][0]), float(cfg["lr_factor_from"][1])
    if start:
        epochs = sorted(set(epochs) | {start})

    def lr_at(epoch):
        factor = 0.1 ** sum(1 for d in decay if d <= epoch)
        return cfg["lr"] * factor * (lam_factor if epoch >= start else 1.0)

    if epochs:
        boundaries = [int(e * steps_per_epoch) for e in epochs]
        values = [lr_at(0)] + [lr_at(e) for e in epochs]
        lr = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    else:
        lr = lr_at(0)
    if cfg["opt"] == "sgd":
        inner = keras.optimizers.SGD(learning_rate=lr, momentum=0.9)
    elif cfg["opt"] == "adam":
        inner = keras.optimizers.Adam(learning_rate=lr)
    else:
        raise ValueError(f"opt must be 'sgd' or 'adam'; received: opt={cfg['opt']!r}")
    if not psg:
        return inner, []
    if psg["target"] == "grid":
        target = tfcompress.QuantizationGrid(
            bits=psg["bits"], range_momentum=psg.get("range_momentum"))
    elif psg["target"] == "zero":
        target = tfcompress.Zero()
    else:
        raise ValueError(f"psg target must be 'grid' or 'zero'; received: {psg['target']!r}")
    start = int(psg.get("start", 0))
    optimizer = tfcompress.ScaledGradient(
        inner, target=target, lambda_s=float(psg["lambda_s"]),
        keep_8bit=psg.get("keep_8bit"), enabled=start == 0)
    callbacks = [tfcompress.ScaledGradientSchedule(start_epoch=start)] if start else []
    return optimizer, callbacks


def train(cfg, x, y, seed, teacher=None, x_val=None, y_val=None, verbose=0,
          init_weights=None, initial_epoch=0, snapshot_epoch=None):
    """Trains one model with ``model.fit``; returns ``(model, info)``.

    From scratch by default. ``init_weights`` + ``initial_epoch`` continue a run
    from a snapshot (weights only; the optimizer restarts with its step counter
    set to the start of ``initial_epoch``, so the LR schedule and the PSG
    schedule are where they would be); ``snapshot_epoch`` keeps the weights at
    the start of that epoch in ``info["snapshot"]``.

    With ``teacher`` (a trained float model) and ``cfg["kd"] = {"temperature": T}``
    the student trains inside a ``keras.distillation.Distiller`` on
    ``0.5·CE + 0.5·T²·KL(p_T‖p_S)`` = 0.5 × eq. 4.11 with the run's own learning
    rate (a constant factor: η/2 on eq. 4.11, which keeps the step close to
    plain PSGD's since the KD gradient is about twice the CE gradient; doubling
    η pushed lr·λ_s past the stable range in a smoke test). ``info`` has the wall time and the
    per-epoch validation accuracy of the float model when ``x_val`` is given.
    """
    import keras

    keras.utils.set_random_seed(seed)
    model = build_model(cfg["arch"])
    batch = cfg.get("batch", 128)
    steps = int(np.ceil(len(x) / batch))
    kd = cfg.get("kd")
    optimizer, callbacks = make_optimizer(cfg, steps)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    history, snapshot = [], []

    class _Val(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if snapshot_epoch is not None and epoch == snapshot_epoch:
                snapshot.append(model.get_weights())

        def on_epoch_end(self, epoch, logs=None):
            if x_val is not None:
                history.append(round(accuracy(model, x_val, y_val), 4))

    if kd:
        trainer = keras.distillation.Distiller(
            teacher=teacher, student=model,
            distillation_losses=keras.distillation.LogitsDistillation(
                temperature=float(kd["temperature"]), loss=keras.losses.KLDivergence()),
            student_loss_weight=0.5)
        trainer.compile(optimizer=optimizer, loss=loss, jit_compile=cfg.get("jit", True))
    else:
        trainer = model
        trainer.compile(optimizer=optimizer, loss=loss, jit_compile=cfg.get("jit", True))
    if init_weights is not None:
        model.set_weights(init_weights)
    if initial_epoch:
        optimizer.build(model.trainable_variables)
        optimizer.iterations.assign(initial_epoch * steps)
    start = time.perf_counter()
    trainer.fit(x, y, batch_size=batch, epochs=cfg["epochs"], shuffle=True,
                initial_epoch=initial_epoch, callbacks=callbacks + [_Val()], verbose=verbose)
    info = {"train_s": round(time.perf_counter() - start, 1)}
    if history:
        info["val_curve"] = history
    if snapshot:
        info["snapshot"] = snapshot[0]
    return model, info


# ----------------------------------------------------------------------------- evaluation
def accuracy(model, x, y, batch=1000):
    """Top-1 accuracy (%) of a logits model, eager forward passes in inference mode."""
    correct = 0
    for i in range(0, len(x), batch):
        logits = np.asarray(model(x[i:i + batch], training=False))
        correct += int(np.sum(np.argmax(logits, axis=-1) == y[i:i + batch]))
    return 100.0 * correct / len(x)


def kernels(model):
    """``{layer_name: kernel ndarray}`` of the quantizable (Dense/Conv) layers."""
    from tfcompress.quantization import quantizable_layers

    names = quantizable_layers(model)
    return {n: np.asarray(model.get_layer(n).kernel) for n in names}


def weight_mse(model, bits):
    """Mean squared error between the kernels and their eq. 4.13 grid (per tensor).

    Pooled over every kernel element of every quantizable layer (sum of squared
    errors ÷ number of weights).
    """
    from tfcompress.quantization import quantize_dequantize

    sse, count = 0.0, 0
    for w in kernels(model).values():
        q = np.asarray(quantize_dequantize(w, bits, symmetric=True))
        sse += float(np.sum((w - q) ** 2))
        count += w.size
    return sse / count


def quantized_accuracy(model, x, y, bits, per_channel=False, bits_overrides=None):
    """Accuracy after ``quantize_weights`` (symmetric, absmax = eq. 4.13)."""
    from tfcompress.quantization import quantize_weights

    q = quantize_weights(model, bits=bits, per_channel=per_channel, symmetric=True,
                         bits_overrides=bits_overrides)
    return accuracy(q, x, y)


def prune_magnitude(model, sparsity, scope="global"):
    """A clone with the smallest-magnitude kernel weights set to zero (no fine-tuning).

    ``scope="global"``: one threshold over all Dense/Conv kernels;
    ``"layer"``: every kernel pruned to ``sparsity`` separately. Biases and BN
    are untouched. Ties at the threshold are broken by order (exactly
    ``round(sparsity·n)`` zeros).
    """
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    ks = kernels(clone)
    if scope == "global":
        flat = np.concatenate([np.abs(w).ravel() for w in ks.values()])
        k = int(round(sparsity * flat.size))
        order = np.argsort(flat, kind="stable")
        keep = np.ones(flat.size, bool)
        keep[order[:k]] = False
        offset = 0
        for name, w in ks.items():
            m = keep[offset:offset + w.size].reshape(w.shape)
            offset += w.size
            clone.get_layer(name).kernel.assign(w * m)
    elif scope == "layer":
        for name, w in ks.items():
            flat = np.abs(w).ravel()
            k = int(round(sparsity * flat.size))
            keep = np.ones(flat.size, bool)
            keep[np.argsort(flat, kind="stable")[:k]] = False
            clone.get_layer(name).kernel.assign(w * keep.reshape(w.shape))
    else:
        raise ValueError(f"scope must be 'global' or 'layer'; received: scope={scope!r}")
    return clone


def near_zero_fraction(model, tol=1e-3):
    """Fraction of kernel weights with |w| < tol·max|w| of their tensor."""
    total = small = 0
    for w in kernels(model).values():
        small += int(np.sum(np.abs(w) < tol * np.max(np.abs(w))))
        total += w.size
    return small / total


# ----------------------------------------------------------------------------- store
def run_key(cfg):
    """A stable string key of a run configuration (changing any setting re-runs it)."""
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"))


class RunStore:
    """Per-run results kept in the ``"runs"`` field of a result JSON, for resuming.

    Every :meth:`put` rewrites the result file (atomically) through ``write_fn``,
    so an interrupted script restarts where it stopped and skips finished runs.
    """

    def __init__(self, path, write_fn):
        self.path = path
        self.write_fn = write_fn
        self.runs = {}
        if os.path.exists(path):
            try:
                with open(path) as f:
                    self.runs = json.load(f).get("runs", {})
            except (OSError, ValueError):
                self.runs = {}

    def get(self, cfg):
        return self.runs.get(run_key(cfg))

    def put(self, cfg, result):
        self.runs[run_key(cfg)] = {"config": cfg, **result}
        self.write_fn(self.runs)
        return self.runs[run_key(cfg)]


def attach_runs(path, runs):
    """Adds the raw per-run results to a result file written by ``harness.write_result``."""
    with open(path) as f:
        record = json.load(f)
    record["runs"] = runs
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1, default=float)
        f.write("\n")
    os.replace(tmp, path)
