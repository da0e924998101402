"""TFLite compression end to end: tfcompress vs TFMOT, gzipped size and LiteRT accuracy.

For the small CNN (2 conv + 2 dense), ResNet-8 and ResNet-20 on Fashion-MNIST: train the
dense model once; then run one compression pipeline through tfcompress (Keras 3)
and through TFMOT (on the tf_keras twin holding the same dense weights): prune
every Conv2D/Dense kernel on the same cubic schedule while fine-tuning, strip,
full-int8 post-training quantization with the TFLite converter (200 calibration
images), saved once with the plain (dense) weight encoding and once with TFLite's
sparse encoding (``Optimize.EXPERIMENTAL_SPARSITY``). The only difference between
the two pruners is the library: tfcompress prunes with one global L2 threshold
across layers, TFMOT layer by layer (its only mode). tfcompress also runs at
intermediate sparsities, in DPF's feedback mode and with 4×1 block masks
(``ours_block``: whole runs of four input weights, which gzip codes as one run of
zeros in TFLite's layouts) where the settings ask for them, and the dense model
is trained on for the fine-tuning epochs without pruning: that is the accuracy
baseline of the claims.

Measured: gzipped float TFLite size ÷ gzipped compressed TFLite size (sizes from
``tfcompress.report``), the accuracy of every ``.tflite`` file in the LiteRT
interpreter on the full 10k test set, and LiteRT latency (batch 1, one thread,
every file of a model interleaved in one process).

Every stage (dense training, one pruning run) is a subprocess — TFMOT needs
tf_keras, which switches TensorFlow into Keras-2 mode for its whole process — that
writes its ``.tflite`` files and a JSON record under ``bench/_runs/export/``;
rerunning skips finished stages, so an interrupted benchmark resumes. The
aggregate goes to ``bench/results/export.json``. ``BENCH_SMOKE=1`` runs a
one-minute check of the plumbing that writes under ``/tmp/bench_smoke/``.

Usage:
    python -m bench.export                         # run what is missing, aggregate
    python -m bench.export --aggregate             # aggregate only
    python -m bench.export --stage ours small_cnn 0.95
"""

import argparse
import functools
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import harness

REPO = pathlib.Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / "_runs" / "export"
SETTINGS = {
    "seed": 0, "batch": 128, "optimizer": "Adam", "test_images": 10000,
    "calibration_images": 200, "verify_images": 500, "mask_frequency": 50,
    "litert_threads": 1, "latency_repeats": 200,
    "ours": {"mode": "hard", "threshold": "global", "criterion": "l2"},
    "block_shape": (4, 1),  # the ours_block stages: 4 inputs × 1 output per block
    # The ours_psg stages: PSG toward a per-channel grid from the end of the sparsity
    # ramp (with Adam the constant λ_s divides out except against Adam's ε).
    "psg": {"bits": 4, "lambda_s": 1000.0},
    # The ours_kd stages: logit distillation from the dense reference (the dense_more
    # model, the one the claims compare with) while pruning, 002 eq. 4.8
    # (L + T²·KL at T = 4, as 002 ch. 3 fixes for KD), with Keras's own Distiller;
    # student_loss_weight 0.5 weighs both terms equally (Adam: same as L + T²·KL).
    "kd": {"temperature": 4.0, "student_loss_weight": 0.5},
    # Files taken apart at aggregation (bench/tflite_anatomy.py): their fixed part, and
    # their weights moved onto coarser grids (weight-only PTQ of the int8 file).
    "anatomy": {"files": [["small_cnn", "ours_s93_int8"], ["small_cnn", "ours_psg4_s93_int8"],
                          ["resnet20_long", "ours_s93_int8"],
                          ["resnet20_long", "ours_psg4_s93_int8"],
                          ["resnet20_xlong", "ours_block4x1_s93_int8"],
                          ["resnet20_kd", "ours_s94_int8"], ["resnet20_kd", "ours_kd_s94_int8"],
                          ["resnet20_rewind", "ours_kd_s95_int8"],
                          ["resnet20_rewind", "ours_kd_s94_int8"]],
                "bits": [6, 5, 4]},
    "models": {
        "small_cnn": {"train_subset": 30000, "epochs": 4, "lr": 1e-3,
                      "finetune_epochs": 3, "finetune_lr": 2e-4, "ramp_fraction": 0.6,
                      "finetune_seeds": [0, 1], "ours": [0.9, 0.93, 0.95],
                      "ours_feedback": [0.95], "tfmot": [0.9, 0.95],
                      "tfmot_global": [0.9, 0.95], "ours_psg": [0.93]},
        "resnet8": {"train_subset": 15000, "epochs": 4, "lr": 1e-3,
                    "finetune_epochs": 3, "finetune_lr": 2e-4, "ramp_fraction": 0.5,
                    "finetune_seeds": [0], "ours": [0.9, 0.95], "tfmot": [0.9],
                    "tfmot_global": [0.9]},
        # ResNet-8 is too small for the goal (see the notes): ResNet-20 (274k weights),
        # twice the data and fine-tuning epochs; 4×1-block pruning (4 consecutive
        # input channels, contiguous in TFLite's OHWI layout) lets gzip code a run of
        # zeros per block instead of per weight.
        "resnet20": {"train_subset": 30000, "epochs": 10, "lr": 1e-3,
                     "finetune_epochs": 6, "finetune_lr": 2e-4, "ramp_fraction": 0.5,
                     "finetune_seeds": [0], "ours": [0.93], "ours_block": [0.9, 0.93],
                     "tfmot": [0.93], "ours_dcil": [0.93]},
        # Is the recovery budget the limit? The same dense ResNet-20, 18 fine-tuning
        # epochs (ramp over the first third) instead of 6.
        "resnet20_long": {"model": "resnet20", "dense_from": "resnet20",
                          "train_subset": 30000, "epochs": 10, "lr": 1e-3,
                          "finetune_epochs": 18, "finetune_lr": 2e-4, "ramp_fraction": 1 / 3,
                          "finetune_seeds": [0], "ours_block": [0.93], "ours": [0.93],
                          "tfmot": [0.93], "ours_psg": [0.93]},
        # Does distilling the dense reference into the pruned model close the gap?
        # resnet20_long's schedule; unstructured 94 % with and without distillation
        # (94 %: its weights on a 5-bit grid would give about 25×).
        "resnet20_kd": {"model": "resnet20", "dense_from": "resnet20", "train_subset": 30000,
                        "epochs": 10, "lr": 1e-3, "finetune_epochs": 18, "finetune_lr": 2e-4,
                        "ramp_fraction": 1 / 3, "finetune_seeds": [0], "ours_kd": [0.94],
                        "ours": [0.94]},
        # Does a full recovery close the gap? 36 fine-tuning epochs (ramp over the
        # first quarter) with the learning rate decayed to zero (cosine) for every
        # run of the entry, the dense reference included.
        "resnet20_xlong": {"model": "resnet20", "dense_from": "resnet20",
                           "train_subset": 30000, "epochs": 10, "lr": 1e-3,
                           "finetune_epochs": 36, "finetune_lr": 2e-4,
                           "finetune_decay": "cosine", "ramp_fraction": 1 / 4,
                           "finetune_seeds": [0], "ours_block": [0.93]},
        # Does learning-rate rewinding close the gap? Pruned networks fine-tuned at
        # the training rate decayed to zero recover more than at a small constant
        # rate (Renda et al. 2020). resnet20_kd's schedule, but Adam 1e-3 (the dense
        # training rate) with cosine decay, for the dense reference (and teacher)
        # and the distilled pruned model alike; 95 % and 94 % (resnet20_kd's).
        "resnet20_rewind": {"model": "resnet20", "dense_from": "resnet20",
                            "train_subset": 30000, "epochs": 10, "lr": 1e-3,
                            "finetune_epochs": 18, "finetune_lr": 1e-3,
                            "finetune_decay": "cosine", "ramp_fraction": 1 / 3,
                            "finetune_seeds": [0], "ours_kd": [0.95, 0.94]},
    },
}
if os.environ.get("BENCH_SMOKE") == "1":  # A minute-long check of the plumbing only.
    SETTINGS.update(test_images=1000, calibration_images=20, verify_images=50,
                    mask_frequency=4, latency_repeats=5)
    SETTINGS["models"] = {
        "small_cnn": {"train_subset": 1024, "epochs": 1, "lr": 1e-3, "finetune_epochs": 1,
                      "finetune_lr": 2e-4, "ramp_fraction": 0.5, "finetune_seeds": [0, 1],
                      "ours": [0.9], "ours_block": [0.9], "tfmot": [0.9],
                      "tfmot_global": [0.9], "ours_psg": [0.9], "ours_kd": [0.9]},
        "resnet8": {"train_subset": 256, "epochs": 1, "lr": 1e-3, "finetune_epochs": 1,
                    "finetune_lr": 2e-4, "finetune_decay": "cosine",
                    "ramp_fraction": 0.5, "finetune_seeds": [0],
                    "ours": [0.9], "tfmot": []},
    }
    SETTINGS["anatomy"] = {"files": [["small_cnn", "ours_block4x1_s90_int8"],
                                     ["small_cnn", "ours_psg4_s90_int8"]], "bits": [4]}
    WORK = pathlib.Path("/tmp/bench_smoke/export_runs")
    harness.RESULTS_DIR = pathlib.Path("/tmp/bench_smoke")  # Never overwrite real results.

GOAL_RATIO, GOAL_LOSS = 25.0, 0.5
TFMOT_ANCHOR = "19.2× smaller gzipped at −0.1 point (2 conv + 2 dense CNN, 90 %, int8 PTQ)"


# ----------------------------------------------------------------------------- helpers
def _data(model_name):
    from tfcompress import data

    cfg = SETTINGS["models"][model_name]
    (x, y), (xt, yt) = data.load_fashion_mnist_arrays(
        subset=cfg["train_subset"], test_subset=SETTINGS["test_images"], seed=SETTINGS["seed"])
    return x, y, xt, yt


def _architecture(model_name):
    """The zoo name of a settings entry (``"model"``, default: the entry's name)."""
    return SETTINGS["models"][model_name].get("model", model_name)


def _dense_path(model_name):
    """The dense model a settings entry starts from: its own, or that of the entry
    named by ``"dense_from"`` (same architecture and data, longer fine-tuning)."""
    return WORK / SETTINGS["models"][model_name].get("dense_from", model_name) / "dense.keras"


def _dense_more_path(model_name, seed):
    return WORK / model_name / (_tag("dense_more", None, seed) + ".keras")


def _ramp(model_name, n_train):
    """Keyword arguments of the cubic ``PolynomialDecay`` (the same in tfcompress and
    TFMOT): the last pruning step is ``ramp_fraction`` of fine-tuning, a multiple of
    the mask frequency so that both libraries' last mask update lands on the target."""
    cfg, f = SETTINGS["models"][model_name], SETTINGS["mask_frequency"]
    steps = cfg["finetune_epochs"] * math.ceil(n_train / SETTINGS["batch"])
    return {"begin_step": 0, "end_step": max(f, int(cfg["ramp_fraction"] * steps) // f * f),
            "power": 3, "frequency": f}


def _runnable_invoker(path, x):
    """An invoker on the default XNNPACK delegate, or on the built-in kernels where
    XNNPACK rejects the model (sparse int8); returns ``(call, delegate)``."""
    try:
        call = harness.litert_invoker(
            harness.litert_interpreter(path, len(x), SETTINGS["litert_threads"]), x)
        call()
        return call, "XNNPACK"
    except RuntimeError:
        call = harness.litert_invoker(
            harness.litert_interpreter(path, len(x), SETTINGS["litert_threads"], builtin=True), x)
        call()
        return call, "built-in"


def litert_accuracy(path, xt, yt, chunk=500):
    """Top-1 accuracy of a ``.tflite`` file in the LiteRT interpreter (batches of
    ``chunk``; the last partial batch gets an interpreter of its own size)."""
    correct, delegate = 0, None
    for start in range(0, len(xt), chunk):
        call, delegate = _runnable_invoker(path, xt[start:start + chunk])
        logits = call()  # float: the exports keep float input/output tensors
        correct += int(np.sum(logits.argmax(-1) == yt[start:start + chunk]))
    return correct / len(xt), delegate


def _export_and_score(model, work, label, mode, sparsity, x, xt, yt):
    from tfcompress import data, export

    path = work / f"{label}.tflite"
    result = export.to_tflite(
        model, path, mode=mode, sparsity=sparsity,
        representative_data=data.representative_dataset(x, SETTINGS["calibration_images"]),
        verify_data=xt[:SETTINGS["verify_images"]], min_top1_agreement=0.9)
    accuracy, delegate = litert_accuracy(path, xt, yt)
    print(f"  {label}: {result.size_bytes} B, LiteRT accuracy {accuracy:.4f} ({delegate})",
          flush=True)
    return {"path": str(path), "mode": mode, "sparse_encoding": sparsity,
            "litert_accuracy": accuracy, "delegate": delegate,
            "top1_agreement_with_keras": result.top1_agreement}


def _kernel_sparsity(kernels):
    zeros = sum(int((k == 0).sum()) for k in kernels)
    return zeros / sum(k.size for k in kernels)


# ----------------------------------------------------------------------------- stages
def _finetune_lr(model_name, module, n_train):
    """The fine-tuning learning rate of a settings entry: constant ``finetune_lr``, or
    decayed from it to zero over all fine-tuning steps (``"finetune_decay": "cosine"``)."""
    cfg = SETTINGS["models"][model_name]
    decay = cfg.get("finetune_decay")
    if decay is None:
        return cfg["finetune_lr"]
    if decay != "cosine":
        raise ValueError(f"finetune_decay must be None or 'cosine', got {decay!r}")
    steps = cfg["finetune_epochs"] * math.ceil(n_train / SETTINGS["batch"])
    return module.optimizers.schedules.CosineDecay(cfg["finetune_lr"], decay_steps=steps)


def _fit(model, module, lr, epochs, x, y, callbacks=(), wrap_optimizer=None):
    """Compiles ``model`` with Adam (Keras 3 or tf_keras ``module``) at ``lr`` (a
    number or a schedule), wrapped by ``wrap_optimizer(adam)`` if given, and trains
    it; returns the training seconds."""
    optimizer = module.optimizers.Adam(lr)
    model.compile(wrap_optimizer(optimizer) if wrap_optimizer else optimizer,
                  module.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(x, y, batch_size=SETTINGS["batch"], epochs=epochs, verbose=2,
              callbacks=list(callbacks))
    return time.perf_counter() - started


def _pruned_record(stripped, module, work, tag, seconds, data):
    """Exports a stripped pruned model to int8 TFLite (plain and sparse encoding)."""
    x, _, xt, yt = data
    stripped.compile(loss=module.losses.SparseCategoricalCrossentropy(from_logits=True),
                     metrics=["accuracy"])
    kernels = [l.kernel.numpy() for l in stripped.layers if hasattr(l, "kernel")]
    files = {f"{tag}{suffix}": _export_and_score(stripped, work, f"{tag}{suffix}", "int8",
                                                 sparse, x, xt, yt)
             for suffix, sparse in (("", False), ("_sparse", True))}
    return {"keras_accuracy": float(stripped.evaluate(xt, yt, verbose=0)[1]),
            "kernel_sparsity": _kernel_sparsity(kernels), "train_seconds": seconds,
            "files": files}


def _tag(prefix, sparsity, seed):
    tag = prefix if sparsity is None else f"{prefix}_s{round(sparsity * 100)}_int8"
    return tag if seed == SETTINGS["seed"] else f"{tag}_seed{seed}"


def stage_dense(model_name, sparsity=None, seed=None):
    """Trains the dense model; exports float and int8 TFLite."""
    import keras

    from tfcompress import models

    cfg, work = SETTINGS["models"][model_name], WORK / model_name
    keras.utils.set_random_seed(SETTINGS["seed"])
    x, y, xt, yt = _data(model_name)
    model = models.build(_architecture(model_name))
    seconds = _fit(model, keras, cfg["lr"], cfg["epochs"], x, y)
    model.save(work / "dense.keras")
    files = {label: _export_and_score(model, work, label, mode, False, x, xt, yt)
             for label, mode in (("dense_float", "float"), ("dense_int8", "int8"))}
    return {"keras_accuracy": float(model.evaluate(xt, yt, verbose=0)[1]),
            "train_seconds": seconds, "files": files}


def stage_dense_more(model_name, sparsity=None, seed=0):
    """The accuracy reference: the dense model trained on for the fine-tuning epochs
    (same optimizer, learning rate and seed as the pruned runs, no pruning)."""
    import keras

    cfg, work = SETTINGS["models"][model_name], WORK / model_name
    keras.utils.set_random_seed(seed)
    x, y, xt, yt = _data(model_name)
    model = keras.saving.load_model(_dense_path(model_name))
    seconds = _fit(model, keras, _finetune_lr(model_name, keras, len(x)),
                   cfg["finetune_epochs"], x, y)
    model.save(_dense_more_path(model_name, seed))  # the ours_kd stages' teacher
    label = _tag("dense_more_float", None, seed)
    files = {label: _export_and_score(model, work, label, "float", False, x, xt, yt)}
    return {"keras_accuracy": float(model.evaluate(xt, yt, verbose=0)[1]),
            "train_seconds": seconds, "files": files}


def stage_ours(model_name, sparsity, seed=0, mode=None, block=False, psg=False, kd=False):
    """tfcompress: prune (global L2 threshold, cubic schedule) while fine-tuning.

    ``mode`` defaults to ``SETTINGS["ours"]["mode"]`` (``"hard"``, TFMOT's rule);
    ``"feedback"`` is DPF's: straight-through gradients reach the pruned weights, so
    a pruned weight can grow back and masks keep changing until the ramp ends.
    ``block=True`` prunes whole ``SETTINGS["block_shape"]`` blocks of each kernel's
    matrix view instead of single weights. ``psg=True`` adds PSG (KQP's pruning and
    quantization parts, 002 eq. 6.1-6.2, without DCIL and distillation): once the
    sparsity ramp has ended, the gradients of the active weights are scaled by
    ``λ_s·|w − Q(w)|`` toward a per-channel ``SETTINGS["psg"]["bits"]``-bit grid of the
    active weights (``mask_fn``: pruned weights keep their masked gradient); the
    anatomy table moves the exported weights onto that grid. ``kd=True`` trains the
    pruned model as the student of the dense reference (``dense_more``, same seed)
    through ``keras.distillation.Distiller`` with ``SETTINGS["kd"]``.
    """
    import keras

    import tfcompress
    from tfcompress import pruning

    mode = mode or SETTINGS["ours"]["mode"]
    prefix = "ours" if mode == SETTINGS["ours"]["mode"] else f"ours_{mode}"
    granularity = "unstructured"
    if block:
        granularity = pruning.Block(SETTINGS["block_shape"])
        prefix += "_block{}x{}".format(*SETTINGS["block_shape"])

    cfg, work = SETTINGS["models"][model_name], WORK / model_name
    keras.utils.set_random_seed(seed)
    data = _data(model_name)
    dense = keras.saving.load_model(_dense_path(model_name))
    ours = SETTINGS["ours"]
    ramp = _ramp(model_name, len(data[0]))
    schedule = pruning.PolynomialDecay(0.0, sparsity, **ramp)
    pruned = pruning.prune_model(dense, schedule=schedule, mode=mode, granularity=granularity,
                                 threshold=ours["threshold"], criterion=ours["criterion"])
    callbacks, wrap_optimizer, extra = [pruning.UpdateMasks()], None, {}
    if psg:
        bits, masks = SETTINGS["psg"]["bits"], {
            id(var): mask for layer in pruned.layers
            if isinstance(layer, pruning.PruneWrapper) for _, var, _, mask in layer.targets}
        prefix += f"_psg{bits}"

        def wrap_optimizer(adam):
            return tfcompress.ScaledGradient(
                adam, target=tfcompress.QuantizationGrid(bits=bits, per_channel=True),
                lambda_s=SETTINGS["psg"]["lambda_s"], mask_fn=lambda var: masks.get(id(var)),
                enabled=False)

        extra["psg_start_epoch"] = math.ceil(
            ramp["end_step"] / math.ceil(len(data[0]) / SETTINGS["batch"]))
        callbacks.append(tfcompress.ScaledGradientSchedule(extra["psg_start_epoch"]))
    trained = pruned
    if kd:
        prefix += "_kd"
        teacher = _dense_more_path(model_name, seed)
        if not teacher.exists():  # dense_more records older than the teacher save
            raise FileNotFoundError(f"{teacher} (the ours_kd teacher) is missing: delete "
                                    f"{_record_path('dense_more', model_name, None, seed)} "
                                    "and rerun, its stage saves the model")
        trained = _distiller(keras, keras.saving.load_model(teacher), pruned)
    seconds = _fit(trained, keras, _finetune_lr(model_name, keras, len(data[0])),
                   cfg["finetune_epochs"], data[0], data[1], callbacks, wrap_optimizer)
    record = _pruned_record(pruning.strip(pruned), keras, work, _tag(prefix, sparsity, seed),
                            seconds, data)
    return {**record, **extra}


def _distiller(keras, teacher, student):
    """Keras's Distiller of ``student`` from the frozen ``teacher`` with ``SETTINGS["kd"]``.

    The KL loss is passed as a ``KLDivergence`` object: with Keras 3.15's default
    (the string ``"kl_divergence"``) ``LogitsDistillation`` applies KL to the scaled
    logits instead of their softmax (it tests for the class), a negative "loss".
    """
    teacher.trainable = False
    kd = SETTINGS["kd"]
    return keras.distillation.Distiller(
        teacher=teacher, student=student,
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=kd["temperature"], loss=keras.losses.KLDivergence()),
        student_loss_weight=kd["student_loss_weight"])


def stage_dcil(model_name, sparsity, seed=0):
    """tfcompress DCIL (002 ch. 5): the pruned path and a super path share the
    weights while fine-tuning from the dense model (eq. 5.3-5.4, global L2
    threshold, masks recomputed every ``mask_frequency`` steps to the end; the
    classifier head stays dense, as in the paper). Twice the work per step."""
    import keras

    from tfcompress import pruning

    cfg, work = SETTINGS["models"][model_name], WORK / model_name
    keras.utils.set_random_seed(seed)
    data = _data(model_name)
    dense = keras.saving.load_model(_dense_path(model_name))
    schedule = pruning.PolynomialDecay(0.0, sparsity, **_ramp(model_name, len(data[0])))
    net = pruning.dcil(dense, schedule=schedule, criterion=SETTINGS["ours"]["criterion"])
    net.compile(keras.optimizers.Adam(_finetune_lr(model_name, keras, len(data[0]))),
                metrics=["accuracy"])
    started = time.perf_counter()
    net.fit(data[0], data[1], batch_size=SETTINGS["batch"], epochs=cfg["finetune_epochs"],
            verbose=2)
    return _pruned_record(pruning.strip(net.pruned_model), keras, work,
                          _tag("ours_dcil", sparsity, seed), time.perf_counter() - started,
                          data)


def global_allocation(dense, sparsity):
    """Per-layer sparsities that one global magnitude threshold gives the dense kernels.

    ``{layer name: fraction of its kernel with |w| ≤ t}``, ``t`` the ``sparsity``
    quantile of all Conv2D/Dense kernel magnitudes together (capped at 0.99 per
    layer: TFMOT's schedule needs a target below 1).
    """
    import keras

    kernels = {layer.name: np.abs(keras.ops.convert_to_numpy(layer.kernel))
               for layer in dense.layers
               if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))}
    magnitudes = np.sort(np.concatenate([k.ravel() for k in kernels.values()]))
    count = int(round(sparsity * magnitudes.size))
    threshold = magnitudes[count - 1] if count else -np.inf
    return {name: min(float(np.mean(k <= threshold)), 0.99) for name, k in kernels.items()}


def stage_tfmot(model_name, sparsity, seed=0, allocation="layer"):
    """TFMOT on the tf_keras twin: prune_low_magnitude, same schedule.

    ``allocation="layer"``: TFMOT's own recipe, every layer to the target.
    ``"global"``: each layer to its share under one global magnitude threshold on
    the dense weights (:func:`global_allocation`) -- TFMOT has no global threshold,
    so this gives it the allocation tfcompress starts from, leaving the pruning
    mechanics as the only difference.
    """
    import keras

    from tfcompress import models

    cfg, work = SETTINGS["models"][model_name], WORK / model_name
    data = _data(model_name)
    dense = keras.saving.load_model(_dense_path(model_name))
    targets = global_allocation(dense, sparsity) if allocation == "global" else None
    twin = models.to_tf_keras(dense, _architecture(model_name))  # imports tf_keras: Keras-2 mode from here
    import tensorflow_model_optimization as tfmot
    import tf_keras

    tf_keras.utils.set_random_seed(seed)

    def schedule(target):
        return tfmot.sparsity.keras.PolynomialDecay(0.0, target,
                                                    **_ramp(model_name, len(data[0])))

    if targets is None:
        pruned = tfmot.sparsity.keras.prune_low_magnitude(twin, pruning_schedule=schedule(sparsity))
    else:
        def wrap(layer):  # the twin's own layer objects: their trained weights are kept
            if layer.name in targets:
                return tfmot.sparsity.keras.prune_low_magnitude(
                    layer, pruning_schedule=schedule(targets[layer.name]))
            return layer

        pruned = tf_keras.models.clone_model(twin, clone_function=wrap)
    seconds = _fit(pruned, tf_keras, _finetune_lr(model_name, tf_keras, len(data[0])),
                   cfg["finetune_epochs"], data[0], data[1],
                   [tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    prefix = "tfmot" if targets is None else "tfmot_global"
    record = _pruned_record(stripped, tf_keras, work, _tag(prefix, sparsity, seed), seconds,
                            data)
    if targets is not None:
        record["layer_targets"] = targets
    return record


STAGES = {"dense": stage_dense, "dense_more": stage_dense_more, "ours": stage_ours,
          "ours_feedback": functools.partial(stage_ours, mode="feedback"),
          "ours_block": functools.partial(stage_ours, block=True),
          "ours_dcil": stage_dcil,
          "ours_psg": functools.partial(stage_ours, psg=True),
          "ours_kd": functools.partial(stage_ours, kd=True),
          "tfmot": stage_tfmot,
          "tfmot_global": functools.partial(stage_tfmot, allocation="global")}


def _runs():
    """``(stage, model, sparsity, seed)`` in running order."""
    for model_name, cfg in SETTINGS["models"].items():
        yield ("dense", model_name, None, SETTINGS["seed"])
        for seed in cfg["finetune_seeds"]:
            yield ("dense_more", model_name, None, seed)
            for stage in ("ours", "ours_feedback", "ours_block", "tfmot", "tfmot_global",
                          "ours_dcil", "ours_psg", "ours_kd"):
                if stage.startswith("tfmot") and seed != SETTINGS["seed"]:
                    continue  # TFMOT rows are single-seed
                for sparsity in cfg.get(stage, ()):
                    yield (stage, model_name, sparsity, seed)


def _record_path(stage, model_name, sparsity, seed):
    suffix = "" if sparsity is None else f"_s{round(sparsity * 100)}"
    suffix += "" if seed == SETTINGS["seed"] else f"_seed{seed}"
    if stage == "dense":  # shared with the "dense_from" entry, if any
        return _dense_path(model_name).parent / f"dense{suffix}.json"
    return WORK / model_name / f"{stage}{suffix}.json"


def run_stage(stage, model_name, sparsity, seed):
    """Runs one stage in this process and writes its JSON record."""
    (WORK / model_name).mkdir(parents=True, exist_ok=True)
    record = STAGES[stage](model_name, sparsity, seed)
    record.update(stage=stage, model=model_name, sparsity=sparsity, seed=seed)
    path = _record_path(stage, model_name, sparsity, seed)
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}", flush=True)


# ----------------------------------------------------------------------------- aggregate
def _latencies(files, xt):
    """LiteRT batch-1 latency of every file, interleaved in this one process."""
    calls, delegates = {}, {}
    for label, info in files.items():
        calls[label], delegates[label] = _runnable_invoker(info["path"], xt[:1])
    stats = harness.time_side_by_side(calls, warmup=20, repeats=SETTINGS["latency_repeats"],
                                      baseline="dense_float")
    return stats, delegates


def _gzipped(path):
    import tfcompress

    return tfcompress.report(path, latency=False).gzip_bytes


def _describe(label, record):
    if label.startswith("dense_more"):
        return "dense, trained on for the fine-tuning epochs", "-"
    if label.startswith("dense_"):
        return "dense", "-"
    if label.startswith("ours_feedback"):
        library = "tfcompress, feedback (DPF) mode"
    elif label.startswith("ours_dcil"):
        library = "tfcompress, DCIL"
    elif label.startswith("ours_psg"):
        library = "tfcompress, PSG toward a {}-bit grid after the ramp".format(
            SETTINGS["psg"]["bits"])
    elif label.startswith("ours_kd"):
        library = "tfcompress, distilled from the dense reference (KD, T = {:g})".format(
            SETTINGS["kd"]["temperature"])
    elif label.startswith("ours_block"):
        library = "tfcompress, {}×{} blocks".format(*SETTINGS["block_shape"])
    elif label.startswith("tfmot_global"):
        library = "TFMOT, per-layer targets of one global magnitude threshold"
    else:
        library = "tfcompress" if label.startswith("ours") else "TFMOT"
    return library, f"{record['sparsity']:.0%}"


def _groups(records):
    """``{label without seed: [(label, file info, record), ...]}``, seed 0 first."""
    groups = {}
    for record in records:
        for label, info in record["files"].items():
            groups.setdefault(re.sub(r"_seed\d+", "", label), []).append((label, info, record))
    return groups


def _baseline(groups):
    """``(gzipped bytes of the dense float file, the claims' accuracy baseline, the
    dense model's accuracy)``: the baseline is the dense model trained on for the
    fine-tuning epochs (``dense_more``, mean over its seeds), else the dense model."""
    dense_acc = groups["dense_float"][0][1]["litert_accuracy"]
    reference = [m[1]["litert_accuracy"] for m in groups.get("dense_more_float", [])]
    return (_gzipped(groups["dense_float"][0][1]["path"]),
            float(np.mean(reference or [dense_acc])), dense_acc)


def _model_rows(model_name, groups, xt):
    """Rows of the files table and per-group figures (means over fine-tuning seeds).

    Sizes are compared with the dense float file; accuracy with the dense model
    trained for the same number of epochs as the pruned ones (``dense_more``, mean
    over its seeds), and with the dense model itself.
    """
    import tfcompress

    first = {base: members[0] for base, members in groups.items()}
    stats, delegates = _latencies({base: m[1] for base, m in first.items()}, xt)
    gz = {base: [_gzipped(m[1]["path"]) for m in members] for base, members in groups.items()}
    accuracy = {base: [m[1]["litert_accuracy"] for m in members]
                for base, members in groups.items()}
    base_gz, base_acc, dense_acc = _baseline(groups)
    rows, figures = [], {}
    for base, (label, info, record) in first.items():
        r = tfcompress.report(info["path"], latency=False)
        library, target = _describe(base, record)
        acc = accuracy[base]
        ratio, loss = base_gz / float(np.mean(gz[base])), 100 * (base_acc - np.mean(acc))
        figures[base] = {"ratio": ratio, "loss": loss, "seeds": len(acc), "library": library,
                         "sparsity": record["sparsity"],
                         "latency_ratio": stats[base]["ratio_to_baseline"]}
        spread = f" ± {100 * np.std(acc):.2f} ({len(acc)} seeds)" if len(acc) > 1 else ""
        rows.append([model_name, library, target, f"{r.sparsity:.1%}",
                     info["mode"] + (" + sparse encoding" if info["sparse_encoding"] else ""),
                     r.size_bytes, round(float(np.mean(gz[base]))), round(ratio, 2),
                     f"{100 * np.mean(acc):.2f}{spread}", round(-loss, 2),
                     round(100 * (np.mean(acc) - dense_acc), 2),
                     round(stats[base]["median_ms"], 4),
                     round(stats[base]["ratio_to_baseline"], 3), delegates[base]])
    return rows, figures


def _claims(model_name, figures):
    claims = []
    for label, f in figures.items():
        if not label.startswith("ours") or label.endswith("_sparse"):
            continue
        sparse = figures[label + "_sparse"]
        met = f["ratio"] >= GOAL_RATIO and f["loss"] <= GOAL_LOSS
        seeds = f" (mean of {f['seeds']} fine-tuning seeds)" if f["seeds"] > 1 else ""
        claims.append({
            "claim": f"{model_name}, {f['library']}, {f['sparsity']:.0%} + full-int8 PTQ: "
                     "gzipped float TFLite ÷ gzipped compressed TFLite, and the LiteRT "
                     f"accuracy change vs the dense model trained for the same epochs{seeds}",
            "goal": f"≥ {GOAL_RATIO:g}× at ≤ {GOAL_LOSS} point",
            "measured": f"{f['ratio']:.1f}× at {-f['loss']:+.2f} points (sparse encoding: "
                        f"{sparse['ratio']:.1f}× at {-sparse['loss']:+.2f})",
            "met": bool(met)})
    targets = SETTINGS["models"][model_name].get("ours")
    top = f"ours_s{round(max(targets) * 100)}_int8" if targets else None
    if top in figures:
        claims.append({
            "claim": f"{model_name}: LiteRT batch-1 latency ÷ float file (1 thread): dense "
                     f"int8, tfcompress {figures[top]['sparsity']:.0%} int8 (plain / sparse "
                     "encoding)",
            "goal": "context",
            "measured": f"{figures['dense_int8']['latency_ratio']:.2f} / "
                        f"{figures[top]['latency_ratio']:.2f} / "
                        f"{figures[top + '_sparse']['latency_ratio']:.2f}",
            "met": None})
    for label, f in figures.items():
        if label.startswith("tfmot") and not label.endswith("_sparse"):
            claims.append({
                "claim": f"{model_name}, {f['library']} {f['sparsity']:.0%} + full-int8 PTQ "
                         "(same pipeline on the tf_keras twin)",
                "goal": f"context (issue anchor: {TFMOT_ANCHOR})",
                "measured": f"{f['ratio']:.1f}× at {-f['loss']:+.2f} points",
                "met": None})
    return claims


def _anatomy_rows(model_name, groups, xt, yt):
    """Rows of the anatomy table for the settings' files of ``model_name`` (seed-0
    files): gzipped size, its fixed part (weights zeroed), and the size and LiteRT
    accuracy (Δ against the claims' baseline) of its weight-only rewrites: onto each
    coarser grid with the converter's float scales (``tflite_anatomy.regrid``), and
    onto 8 and each coarser bit-width with power-of-two scales
    (``tfcompress.export.power_of_two_scales``)."""
    from bench import tflite_anatomy
    from tfcompress import export

    labels = [label for model, label in SETTINGS["anatomy"]["files"]
              if model == model_name and label in groups]
    if not labels:
        return []
    base_gz, base_acc, _ = _baseline(groups)
    work = WORK / model_name / "anatomy"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for label in labels:
        info = groups[label][0][1]
        source = pathlib.Path(info["path"])
        variants = [("float", 8, source, "-")]  # (weight scales, bits, file, grid distance)
        variants += [("float", bits, tflite_anatomy.regrid(source, work / f"{label}_w{bits}.tflite",
                                                           bits),
                      round(tflite_anatomy.grid_distance(source, bits), 3))
                     for bits in SETTINGS["anatomy"]["bits"]]
        for bits in [8] + SETTINGS["anatomy"]["bits"]:
            pot = work / f"{label}_pot{bits}.tflite"
            pot.write_bytes(export.power_of_two_scales(source.read_bytes(), bits=bits))
            variants.append(("power of two", bits, pot, "-"))
        for scales, bits, path, distance in variants:
            # each file's own fixed part: power-of-two rewrites also rescale the biases
            fixed = _gzipped(tflite_anatomy.zero_weights(path, work / f"{path.stem}_zero.tflite"))
            size = _gzipped(path)
            acc = info["litert_accuracy"] if path == source else litert_accuracy(path, xt, yt)[0]
            rows.append([model_name, label, scales, bits, distance, size,
                         round(base_gz / size, 2), fixed, f"{fixed / size:.0%}",
                         round(100 * acc, 2), round(100 * (acc - base_acc), 2)])
    return rows


def _anatomy_claims(rows):
    """The goal applied to the rewritten files of the anatomy table (coarser grids,
    power-of-two scales)."""
    claims = []
    for model, label, scales, bits, _, _, ratio, _, _, _, delta in rows:
        if bits == 8 and scales == "float":
            continue  # the int8 file itself: claimed in the main table
        rewrite = [f"its weights on a {bits}-bit per-channel grid"] if bits < 8 else []
        rewrite += ["power-of-two weight scales"] if scales != "float" else []
        claims.append({
            "claim": f"{model}, {label} with {' and '.join(rewrite)} (weight-only "
                     "rewrite of the int8 file, seed 0): gzipped float TFLite ÷ gzipped "
                     "file, and the LiteRT accuracy change vs the dense model trained "
                     "for the same epochs",
            "goal": f"≥ {GOAL_RATIO:g}× at ≤ {GOAL_LOSS} point",
            "measured": f"{ratio:.1f}× at {delta:+.2f} points",
            "met": bool(ratio >= GOAL_RATIO and -delta <= GOAL_LOSS)})
    return claims


def _stage_key(record):
    key = record["stage"]
    key += "" if record["sparsity"] is None else f"_s{round(record['sparsity'] * 100)}"
    seed = record.get("seed", SETTINGS["seed"])
    return key + ("" if seed == SETTINGS["seed"] else f"_seed{seed}")


def aggregate():
    tables, claims, seconds = [], [], {}
    columns = ["model", "pruning", "target", "sparsity (file)", "TFLite", "bytes",
               "gzipped", "float gz ÷ gz", "LiteRT accuracy %", "Δ points vs dense (same epochs)",
               "Δ points vs dense", "LiteRT ms (b=1)", "÷ float latency", "delegate"]
    all_rows, anatomy_rows, missing = [], [], []
    for model_name in SETTINGS["models"]:
        paths = [_record_path(*run) for run in _runs() if run[1] == model_name]
        missing += [f"{model_name}/{p.name}" for p in paths if not p.exists()]
        records = [json.loads(p.read_text()) for p in paths if p.exists()]
        if not records or records[0]["stage"] != "dense":
            continue
        _, _, xt, yt = _data(model_name)
        groups = _groups(records)
        rows, figures = _model_rows(model_name, groups, xt)
        all_rows += rows
        anatomy_rows += _anatomy_rows(model_name, groups, xt, yt)
        claims += _claims(model_name, figures)
        seconds[model_name] = {_stage_key(r): round(r["train_seconds"]) for r in records}
        tables.append({"title": f"{model_name}: Keras accuracy of each stage's model",
                       "columns": ["stage", "kernel sparsity", "Keras accuracy %"],
                       "rows": [[_stage_key(r), r.get("kernel_sparsity"),
                                 round(100 * r["keras_accuracy"], 2)] for r in records]})
    claims += _anatomy_claims(anatomy_rows)
    tables.insert(0, {"title": "TFLite files: size raw and gzipped, LiteRT accuracy on the "
                               "test set, LiteRT latency (batch 1, 1 thread, interleaved)",
                      "columns": columns, "rows": all_rows})
    tables.append({"title": "File anatomy: the fixed part (gzipped file with every weight "
                            "zeroed), the per-channel weight scales rounded up to powers "
                            "of two, and the int8 weights moved onto coarser per-channel "
                            "grids (weight-only rewrites of the file, no retraining; "
                            "seed-0 files)",
                   "columns": ["model", "file", "weight scales", "weight grid bits",
                               "mean distance of the file's nonzero weights to that grid (Δ)",
                               "gzipped",
                               "float gz ÷ gz", "fixed part gzipped", "fixed share",
                               "LiteRT accuracy %", "Δ points vs dense (same epochs)"],
                   "rows": anatomy_rows})
    harness.write_result(
        "export",
        "TFLite compression: prune + int8 PTQ, tfcompress vs TFMOT (gzipped size, LiteRT accuracy)",
        settings={**SETTINGS, "train_seconds": seconds},
        tables=tables, claims=claims, notes=_notes(missing))
    print(f"aggregated; missing stages: {missing or 'none'}")


def _notes(missing):
    text = (
        "Sizes are of the .tflite files (tfcompress.report; gzip level 9); the baseline of "
        "every size ratio is the float TFLite file of the dense model. Accuracy deltas "
        "(LiteRT, full test set) are given against the dense model trained on for the "
        "same fine-tuning epochs without pruning (the claims' baseline: the pruned models "
        "get those extra epochs too; mean over its fine-tuning seeds) and against the "
        "dense model itself. Rows with several seeds share the dense starting model and "
        "differ in the fine-tuning shuffle; TFMOT rows are single-seed (their deficit is "
        "many points). Both pruners start from the same dense weights and prune every "
        "Conv2D/Dense kernel (classifier included) on the same cubic PolynomialDecay "
        "(0 → target over the first ramp_fraction of fine-tuning, masks updated every "
        "mask_frequency steps) with the same optimizer, epochs and data. tfcompress uses "
        "one global L2 threshold, so it prunes the 401k-weight dense1 of the CNN hardest "
        "(≈92 % at a 90 % target) and the 288-weight conv1 lightly; TFMOT's layer-wise "
        "threshold prunes every layer to the target, conv1 included — the likely cause of "
        "its large accuracy loss on this short fine-tuning, far from the issue's anchor "
        "(19.2× at −0.1 point, measured elsewhere with its own training). The 'TFMOT, "
        "per-layer targets of one global magnitude threshold' rows test that reading: "
        "TFMOT has no global threshold, so each layer gets its own PolynomialDecay target, "
        "the share one global magnitude threshold on the dense weights gives it (e.g. "
        "small CNN at 90 %: conv1 30 %, conv2 58 %, dense1 92 %, head 24 %; stage records "
        "hold layer_targets). With that allocation TFMOT's small CNN lands within 0.2 "
        "point of tfcompress at 90 % and 95 % (89.44 vs 89.59, 88.53 vs 88.58, seed 0), "
        "ResNet-8 at 90 % on par (79.22 vs 79.14): "
        "the gap of TFMOT's own recipe is the allocation, not the mask mechanics. Levers tried "
        "for the ≥ 25× goal, in this order: 90 % (≈20×, the TFMOT-anchor size) and 95 % "
        "(≈33×, but ≈0.8 point below the same-epochs dense model), DPF's feedback mode "
        "at 95 % (worse here: masks keep changing until the ramp ends, leaving little "
        "recovery), then 93 % — chosen after seeing the 90/95 % results, as the "
        "interpolation between them. TFLite's sparse encoding "
        "(Optimize.EXPERIMENTAL_SPARSITY) shrinks the raw file but gzip compresses the "
        "plain encoding of the zeros better, and XNNPACK rejects sparse int8 layers, so "
        "those files run on LiteRT's slower built-in kernels (the 'delegate' column). "
        "ResNet-8 (77k weights, 3 fine-tuning epochs on 15k images) is too small for "
        "these sparsities: the global threshold empties its largest convolutions "
        "(stage3 conv2 ≈98 % at a 90 % target) and the file's fixed part (BN-folded int32 "
        "biases, per-channel scales, graph) caps its gzip ratio near 21× at 95 %. "
        "ResNet-20 (274k weights, added for that reason; 30k images, 10 dense epochs at "
        "Adam 1e-3, 6 fine-tuning epochs at 2e-4, ramp over the first half): the dense "
        "model overfits (train 96.6 %, test 87.2 %) and the 6 extra epochs at the lower "
        "rate lift it to 90.6 %, the claims' baseline. Unstructured 93 %: 19.9× at −3.50 "
        "points. 4×1 blocks (four consecutive input weights of one output, contiguous "
        "in TFLite's OHWI and (out, in) layouts, so gzip codes one run of zeros per "
        "block instead of per weight): 90 % gives 20.3× at −2.66 — the size of "
        "unstructured 93 % with 0.8 point more accuracy — and 93 % gives 25.7× at −4.92; "
        "sparse-encoded 4×1-block files stay on XNNPACK (about a third of the float "
        "latency in the table) where unstructured sparse-encoded ones fall back to the "
        "built-in kernels (slower than the float file). "
        "So on ResNet-20 the size side of the goal is reached (block masks) and the "
        "accuracy side is not: after 6 fine-tuning epochs the pruned models end "
        "underfit (train accuracy 88 % for unstructured 93 % against 100 % for the dense "
        "model trained on). The entry resnet20_long tests that reading: the same dense "
        "model, 18 fine-tuning epochs (ramp over the first third, 12 recovery epochs at "
        "2e-4). The dense model trained on stays at 90.61 % (90.64 % after 6), while the "
        "pruned models gain 2-3 points: unstructured 93 % 89.77 % (−0.84, was −3.50) at "
        "19.6×, 4×1 blocks 93 % 88.92 % (−1.69, was −4.92) at 25.8×, train accuracy "
        "still rising at the end (94 % and 92 %). So the recovery budget is the limit, "
        "not the file format or the allocation; a ResNet-20 stage of 18 epochs takes "
        "35-45 min on this 2-core CPU, so the goal row (≥ 25× within 0.5 point) was not "
        "reached in the benchmark's budget. TFMOT's layer-wise recipe with the same 18 "
        "epochs: 18.6× at −3.31 (was −14.86 after 6): the longer recovery helps it most, "
        "and the global threshold still leads it by 2.5 points at 93 %. "
        "The entry resnet20_xlong doubles the budget again for 4×1 blocks at 93 %: 36 "
        "fine-tuning epochs (ramp over the first quarter), learning rate decayed to zero "
        "(cosine) for the pruned and the dense reference alike. The reference stays at "
        "90.59 % and the blocks reach 89.05 % (−1.54, was −1.69 after 18) at 25.7×; the "
        "pruned model's train accuracy stops at 91.9 % over the last 8 epochs (the dense "
        "one at 100 %), so past 18 epochs more recovery at this small rate no longer "
        "closes the gap (the learning rate, not the epochs, turned out to be the limit: "
        "resnet20_rewind below). "
        "With a full schedule the accuracy "
        "holds: bench/results/dcil_vs_dpf_gpu.json prunes ResNet-20 while training on "
        "all 60k images for 30 epochs (SGD 0.1, GPU through Keras-JAX) and ends DCIL at "
        "95 % with 93.07 % against 93.01 % dense (no file exported there: the GPU "
        "machine has no TensorFlow). TFMOT with its own layer-wise recipe at 93 %: 19.0× at −14.86 points. TFMOT cannot take the block lever "
        "on this model: its block_size is for 2-D weights only (ValueError 'Block "
        "Sparsity can only be used for layers which have 2-dimensional weights'), and "
        "ResNet-20 is convolutions. DCIL (stage ours_dcil: fine-tuning from the dense "
        "model with the pruned and super paths sharing the weights, eq. 5.3-5.4; head "
        "left dense as in the paper, so 92.8 % of the kernels; twice the work per step) "
        "at 93 %: 19.7× at −2.96, 0.54 point above hard pruning at the same sparsity "
        "and size (train accuracy of the pruned path 89 % at the end: still underfit). "
        "The anatomy table takes files apart (bench/tflite_anatomy.py). Their "
        "fixed part — the gzipped file with every weight zeroed: int32 biases, "
        "per-channel scales, the graph — is 5.2 KB of the small CNN's 60 KB file (9 %) "
        "but 13.8 KB of ResNet-20's 39 KB block file (35 %), so each weight byte saved "
        "buys ResNet-20 less ratio. About 6 KB of those 14 KB are the float32 "
        "per-channel scales of the weights and of the int32 biases (input scale × "
        "weight scale), which gzip cannot shrink. tfcompress.export.power_of_two_scales "
        "(also to_tflite(power_of_two_scales=True)) rounds every weight scale up to a "
        "power of two and requantizes the weights and biases to it: the scale arrays "
        "then differ only in their exponents, the fixed part falls from 13.8-14.1 to "
        "8.4-8.8 KB on every ResNet-20 file ('power of two' rows), and the weights keep 7-8 of "
        "their 8 bits (accuracy within ±0.15 point of the int8 file on every "
        "ResNet-20 file here); with bits < 8 the same rewrite puts every channel on the "
        "same bits-bit integers (a scale up to 2× the absmax grid's step: between "
        "bits − 1 and bits bits of precision). "
        "Moving the int8 weights onto coarser per-channel "
        "grids without retraining (gzip then codes a nonzero weight in about that many "
        "bits; LiteRT runs the file unchanged): the small CNN at 93 % reaches 32.9× at "
        "5 bits (−0.23) and 36.3× at 4 bits (−0.34), past the goal; ResNet-20 "
        "unstructured 93 % 23.4× at 5 bits (−1.03) and 25.1× at 4 bits (−2.87), 4×1 "
        "blocks 93 % 30.4× at 5 bits (−1.89) and 32.8× at 4 bits (−7.92). So on "
        "ResNet-20 the size side has room to spare and the accuracy side is what is "
        "missing; 4-bit PTQ costs it 2.0-6.4 points more than the int8 file, which "
        "training onto the grid has to win back. The ours_psg stages measure that with "
        "PSG (002 ch. 4; KQP's pruning + quantization parts, eq. 6.1-6.2): the ours "
        "stage, and from the end of the sparsity ramp the active weights' gradients "
        "scaled toward a per-channel 4-bit grid of the active weights (Adam, λ_s 1000, "
        "not tuned). On ResNet-20 (resnet20_long, 12 PSG epochs) the weights' mean "
        "distance to the 4-bit grid (anatomy table) falls from 0.24 Δ (uniform: 0.25) "
        "to 0.08 Δ, and "
        "the 4-bit file costs 0.43 point against the PSG model's own int8 file (plain "
        "pruning: 2.03): 25.3× at −1.77 against 25.1× at −2.87 without PSG. The price "
        "is the float model: PSG's int8 file is at −1.34 against −0.84 (its "
        "clustered weights also gzip smaller: 22.1× against 19.6×). On the small CNN "
        "(one PSG epoch, where 4-bit PTQ is already nearly free) PSG changes little "
        "(4 bits: 36.0× at −0.20 against 36.3× at −0.34, seed 0). So PSG makes the "
        "4-bit file nearly as good as its float model, as the source claims, but "
        "does not lift ResNet-20's pruned accuracy, which is what the goal lacks. "
        "The ours_kd stage tests the last lever at hand on this CPU, distillation: the "
        "ours pruning with the pruned model trained as the student of the dense "
        "reference (dense_more, the model the claims compare with) through Keras's "
        "keras.distillation.Distiller (002 eq. 4.8, L + T²·KL at T = 4, both terms "
        "weighted equally). Entry resnet20_kd (resnet20_long's schedule; its dense "
        "reference, rerun to save it as the teacher, lands at 90.61 % again) at "
        "unstructured 94 %: 89.89 % (−0.72) at 21.4× with KD against 89.60 % (−1.01) at "
        "21.6× without, +0.29 point, one seed; on a 6-bit grid the KD file keeps its "
        "accuracy (23.9× at −0.74), on a 5-bit grid it reaches the size (25.5×) at "
        "−1.25 (−1.45 without KD). So distillation narrows the gap by about a third of "
        "a point; at the constant fine-tuning rate of 2e-4 ResNet-20 still missed the "
        "goal row by 0.25-0.75 point wherever the file was 24-25×. "
        "What closed it is learning-rate rewinding (Renda et al. 2020: fine-tune a "
        "pruned network at the training rate, decayed, rather than at a small constant "
        "one). Entry resnet20_rewind: the same dense ResNet-20 and 18 fine-tuning "
        "epochs, but Adam 1e-3 (the dense training rate) decayed to zero (cosine), for "
        "the dense reference (90.64 %, was 90.61 % at 2e-4: the dense model gains "
        "nothing) and for the pruned model, distilled from that reference as in "
        "resnet20_kd. Unstructured 95 %: 90.98 % (+0.34 above the reference, train "
        "accuracy 95.3 % at the end against 93.6 % for resnet20_kd's 94 % KD run) at "
        "23.6× for the int8 file; its 6-bit-grid file 26.4× at +0.30, its "
        "power-of-two-scale file 27.1× at +0.41, 31.2× at +0.02 with 6-bit "
        "power-of-two weights. So the goal row holds on ResNet-20 as well (seed 0, one "
        "run). At 94 %, where the only difference from resnet20_kd's KD run is the "
        "learning-rate schedule: 90.92 % (+0.28) against 89.89 % (−0.72), so rewinding "
        "is worth 1.0 point here, three times distillation's 0.29; its 5-bit-grid file "
        "reaches 25.1× at +0.18. Rewinding was not run without distillation, so the "
        "two are not separated at 95 %. "
        "Full-int8 PTQ keeps float input/output tensors. Training uses a fixed random "
        "training subset and few epochs (settings) to fit the 2-core budget. The CPU "
        "was shared with other jobs, so latencies are noisy; their ratios compare files "
        "interleaved in one process.")
    if missing:
        text += f" INCOMPLETE: missing stages {missing}; rerun the script to resume."
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aggregate", action="store_true", help="aggregate only")
    parser.add_argument("--stage", nargs="+", metavar="STAGE MODEL [SPARSITY]",
                        help=f"run one stage ({', '.join(STAGES)}) in this process")
    parser.add_argument("--seed", type=int, default=SETTINGS["seed"],
                        help="fine-tuning seed of the stage")
    args = parser.parse_args(argv)
    if args.stage:
        stage, model_name = args.stage[0], args.stage[1]
        sparsity = float(args.stage[2]) if len(args.stage) > 2 else None
        run_stage(stage, model_name, sparsity, args.seed)
        return 0
    if not args.aggregate:
        for stage, model_name, sparsity, seed in _runs():
            if _record_path(stage, model_name, sparsity, seed).exists():
                continue
            print(f"running {stage} {model_name} {sparsity or ''} seed {seed}", flush=True)
            command = [sys.executable, "-m", "bench.export", "--stage", stage, model_name]
            command += ([] if sparsity is None else [str(sparsity)]) + ["--seed", str(seed)]
            subprocess.run(command, check=True, cwd=REPO)
    aggregate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
