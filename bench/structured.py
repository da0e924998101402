"""Structured pruning that really shrinks the model: speed and accuracy.

A ResNet-14 (width 16) is trained on Fashion-MNIST; then two runs continue from that
checkpoint with the same epochs and learning rate: the **dense** baseline, and the
**pruned** model — 50 % of the filters of *every* convolution pruned (L2 filter
norm, cubic schedule over the first half of the fine-tuning, then fine-tuning at
the final sparsity). The convolutions writing to one residual stream (the stem or
projection conv and the ``conv2`` of every block of a stage, which meet in the
``Add`` s) share one channel mask (``prune_model(channel_groups="auto")``), each
channel scored by its summed filter norm over the group, so the residual channels
can be removed too — not only the block-internal ones. The masks are stripped, the
model is **shrunk** (pruned filters, their BatchNorm channels and the consumers'
input channels physically removed) and both models are exported to float TFLite.
Measured side by side: LiteRT latency at batch 1 and 64 (interleaved, one thread),
Keras+XLA latency at batch 64, parameters, MACs, and test accuracy in LiteRT.

Usage: ``python -m bench.structured [--epochs 6] [--finetune-epochs 6] [--fold bias_map]
[--cache-dir /tmp/tfcompress_bench_structured]``

By default everything is trained from scratch (about 35 minutes on 2 busy CPU cores).
With ``--cache-dir`` the trained dense and pruned (wrapped) models and their Keras
accuracies are saved there as ``.keras`` files after training, under a key made of
every training setting (model, subset, epochs, learning rates, sparsity, seed) and
the Keras/TensorFlow versions; a later run with the same settings loads them instead
of retraining, so re-measuring after a change to ``shrink`` or the export takes
minutes. The key does not cover the training *code*: delete the cache after changing
it. The result records whether the models came from the cache.
"""

import argparse
import gzip
import hashlib
import json
import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import harness


FOLD_NOTES = {
    "bias_map": (
        "Pruned channels emit nonzero constants (BatchNorm beta − mean·γ/σ after ReLU) "
        "into zero-padded 3×3 convs; shrink(fold='bias_map') folds them into a fixed "
        "per-position bias map added after each such conv (a PositionBias layer, one "
        "extra elementwise add; the maps are weights, so they add H·W·C floats each to "
        "the parameter count and the file), so every conv keeps exactly its unpruned "
        "channels. "),
    "carrier": (
        "A shrunk layer may keep a few more channels than 50 %: shrink(fold='carrier') "
        "keeps one 'carrier' channel per residual tensor whose pruned channels emit "
        "nonzero constants (BatchNorm beta) into a zero-padded 3×3 conv, to stay exact. "),
}


def _compile(keras, model, lr):
    model.compile(keras.optimizers.SGD(lr, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _train(args, x, y, xt, yt):
    """Base training, then dense and pruned fine-tuning from the same checkpoint with
    the same epochs and learning rate. Returns ``(dense, pruned, accuracies)``."""
    import keras

    from tfcompress import models, pruning

    batch = 128
    base = _compile(keras, models.build(args.model), args.lr)
    base.fit(x, y, batch_size=batch, epochs=args.epochs, verbose=2)
    accuracies = {"base": base.evaluate(xt, yt, verbose=0)[1]}

    steps_per_epoch = -(-len(x) // batch)
    ramp = steps_per_epoch * max(1, args.finetune_epochs // 2)
    pruned = _compile(keras, pruning.prune_model(
        base, granularity="structured", threshold="layer", channel_groups="auto",
        layers=lambda l: isinstance(l, keras.layers.Conv2D),
        schedule=pruning.PolynomialDecay(0.0, args.sparsity, begin_step=0, end_step=ramp,
                                         frequency=max(1, ramp // 8))), args.finetune_lr)
    pruned.fit(x, y, batch_size=batch, epochs=args.finetune_epochs, verbose=2,
               callbacks=[pruning.UpdateMasks()])
    accuracies["pruned"] = pruned.evaluate(xt, yt, verbose=0)[1]

    dense = _compile(keras, base, args.finetune_lr)  # same epochs and lr, no pruning
    dense.fit(x, y, batch_size=batch, epochs=args.finetune_epochs, verbose=2)
    accuracies["dense"] = dense.evaluate(xt, yt, verbose=0)[1]
    return dense, pruned, accuracies


def _cache_key(args):
    """Hash of every setting that changes the trained weights (and the versions)."""
    import keras
    import tensorflow as tf

    settings = {k: getattr(args, k) for k in
                ("model", "subset", "epochs", "lr", "finetune_epochs", "finetune_lr",
                 "sparsity", "seed")}
    settings["versions"] = [keras.__version__, tf.__version__]
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def trained_models(args, x, y, xt, yt):
    """``_train``, or its saved result from ``args.cache_dir`` when present.

    Returns:
        ``(dense, pruned, accuracies, source)``; ``source`` is ``"trained"``,
        ``"trained, cached in <dir>"`` or ``"loaded from cache <dir>"``.
    """
    import keras

    if not args.cache_dir:
        return (*_train(args, x, y, xt, yt), "trained")
    folder = pathlib.Path(args.cache_dir) / _cache_key(args)
    files = [folder / "dense.keras", folder / "pruned.keras", folder / "accuracies.json"]
    if all(f.exists() for f in files):
        dense = keras.saving.load_model(files[0], compile=False)
        pruned = keras.saving.load_model(files[1], compile=False)
        accuracies = json.loads(files[2].read_text())
        return dense, pruned, accuracies, f"loaded from cache {folder}"
    dense, pruned, accuracies = _train(args, x, y, xt, yt)
    folder.mkdir(parents=True, exist_ok=True)
    dense.save(files[0])
    pruned.save(files[1])
    files[2].write_text(json.dumps({k: float(v) for k, v in accuracies.items()}))
    return dense, pruned, accuracies, f"trained, cached in {folder}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet14")
    parser.add_argument("--subset", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fold", default="bias_map", choices=("bias_map", "carrier"),
                        help="how shrink folds the constants of removed channels into "
                             "zero-padded convolutions (pruning.shrink's fold=)")
    parser.add_argument("--cache-dir", default=None,
                        help="reuse/save the trained models here (default: train from "
                             "scratch, save nothing)")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from tfcompress import data, export, pruning

    keras.utils.set_random_seed(args.seed)
    (x, y), (xt, yt) = data.load_fashion_mnist_arrays(subset=args.subset, seed=args.seed)
    dense, pruned, keras_acc, source = trained_models(args, x, y, xt, yt)
    stripped = pruning.strip(pruned)
    small = pruning.shrink(pruned, fold=args.fold)
    max_diff = float(np.max(np.abs(stripped.predict(xt[:512], verbose=0)
                                   - small.predict(xt[:512], verbose=0))))
    reports = {name: pruning.sparsity_report(m) for name, m in (("dense", dense), ("shrunk", small))}

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench_structured_"))
    files = {
        "dense": export.to_tflite(dense, workdir / "dense.tflite", verify_data=xt[:500]),
        "shrunk": export.to_tflite(small, workdir / "shrunk.tflite", verify_data=xt[:500]),
    }
    accuracy = {name: float(np.mean(export.run_tflite(f.path, xt).argmax(-1) == yt))
                for name, f in files.items()}

    litert = harness.time_side_by_side(
        {name: harness.litert_invoker(harness.litert_interpreter(f.path, 1), xt[:1])
         for name, f in files.items()},
        warmup=20, repeats=args.repeats)
    litert64 = harness.time_side_by_side(
        {name: harness.litert_invoker(harness.litert_interpreter(f.path, 64), xt[:64])
         for name, f in files.items()},
        warmup=5, repeats=max(20, args.repeats // 5))
    x64 = tf.constant(xt[:64])
    keras_fns = {name: tf.function(lambda v, m=m: m(v, training=False), jit_compile=True)
                 for name, m in (("dense", dense), ("shrunk", small))}
    keras_stats = harness.time_side_by_side(
        {name: (lambda f=f: f(x64).numpy()) for name, f in keras_fns.items()},
        warmup=5, repeats=max(20, args.repeats // 5))

    speedup = litert["dense"]["median_ms"] / litert["shrunk"]["median_ms"]
    speedup64 = litert64["dense"]["median_ms"] / litert64["shrunk"]["median_ms"]
    keras_speedup = keras_stats["dense"]["median_ms"] / keras_stats["shrunk"]["median_ms"]
    size = {name: (f.size_bytes, len(gzip.compress(pathlib.Path(f.path).read_bytes())))
            for name, f in files.items()}
    rows = []
    for name in ("dense", "shrunk"):
        g = reports[name]["global"]
        rows.append([name, reports[name]["total_params"], g["macs"], size[name][0], size[name][1],
                     litert[name]["median_ms"], litert64[name]["median_ms"], keras_stats[name]["median_ms"], accuracy[name]])
    claims = [
        {"claim": "LiteRT batch-1 speedup of the shrunk model over dense", "goal": "≥ 1.6×",
         "measured": round(speedup, 3), "met": speedup >= 1.6},
        {"claim": "LiteRT batch-64 speedup of the shrunk model over dense", "goal": "≥ 1.6×",
         "measured": round(speedup64, 3), "met": speedup64 >= 1.6},
        {"claim": "MACs ratio dense ÷ shrunk (the ideal speedup)", "goal": "context",
         "measured": round(reports["dense"]["global"]["macs"] / reports["shrunk"]["global"]["macs"], 3),
         "met": None},
        {"claim": "Keras+XLA batch-64 speedup of the shrunk model over dense", "goal": "context",
         "measured": round(keras_speedup, 3), "met": None},
        {"claim": "accuracy change after pruning + fine-tuning vs the equally trained dense "
                   "model (LiteRT, full test set)",
         "goal": "small", "measured": f"{100 * (accuracy['shrunk'] - accuracy['dense']):+.2f} points",
         "met": None},
        {"claim": "shrink is exact: max |strip − shrink| output difference", "goal": "≤ 1e-4",
         "measured": max_diff, "met": max_diff <= 1e-4},
    ]
    for c in claims:
        print(f"{c['claim']}: {c['measured']} (goal {c['goal']})")
    n_maps = sum(isinstance(l, pruning.PositionBias) for l in small.layers)
    widths = [[l.name, int(dense.get_layer(l.name).kernel.shape[-1]), int(l.kernel.shape[-2]),
               int(l.kernel.shape[-1])]
              for l in small.layers if isinstance(l, keras.layers.Conv2D)]
    harness.write_result(
        "structured",
        f"Structured pruning + shrink: {args.model}, 50 % of the filters of every conv "
        "(residual groups included), TFLite speed",
        settings={"model": args.model, "train_subset": args.subset, "epochs": args.epochs,
                  "lr": args.lr, "finetune_epochs": args.finetune_epochs,
                  "finetune_lr": args.finetune_lr, "sparsity": args.sparsity,
                  "pruned_layers": "every Conv2D (stem, block conv1/conv2, projections); "
                                   "not the Dense head",
                  "channel_groups": "auto: convs meeting in one residual Add share a mask",
                  "criterion": "L2 filter norm (summed over a channel group), layer-wise",
                  "schedule": "cubic 0 → sparsity over the first half of the fine-tuning",
                  "seed": args.seed, "litert_threads": 1, "repeats": args.repeats,
                  "test_images": len(xt), "shrink_fold": args.fold,
                  "position_bias_layers": n_maps, "trained_models": source},
        tables=[{"title": "Dense vs shrunk model",
                 "columns": ["model", "params", "MACs/image", "tflite bytes", "gzipped",
                             "LiteRT ms (batch 1)", "LiteRT ms (batch 64)",
                             "Keras XLA ms (batch 64)", "LiteRT accuracy"],
                 "rows": rows},
                {"title": "Test accuracy in Keras",
                 "columns": ["model", "accuracy"],
                 "rows": [["base (after `epochs`)", keras_acc["base"]],
                          ["dense (+ `finetune_epochs`)", keras_acc["dense"]],
                          ["pruned (+ `finetune_epochs`, wrapped)", keras_acc["pruned"]]]},
                {"title": "Conv widths after shrink",
                 "columns": ["layer", "dense filters", "shrunk in", "shrunk out"],
                 "rows": widths}],
        claims=claims,
        notes=("Dense and pruned models continue from the same base checkpoint for the same "
               "`finetune_epochs` at the same learning rate, so both saw the same training. "
               + (FOLD_NOTES[args.fold])
               + "Latencies are medians of interleaved calls in one process; the machine "
               "had 2 cores shared with other jobs."))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
