"""Low-rank factorization: parameters, accuracy and LiteRT speed of factorized models.

Two trained base models on a fixed Fashion-MNIST subset — ``small_cnn`` (most weights
in its Dense layers: SVD) and ``resnet8`` (convolutions: Tucker-2 or CP) — are
factorized with :func:`tfcompress.factorize` at several weight ratios, their
BatchNormalization statistics re-estimated, then fine-tuned; the original model gets
the same fine-tuning (same epochs and learning rate) so the accuracy change is the
factorization's alone. Each model is exported
to a float TFLite file (verified against Keras) and timed in the LiteRT interpreter
(1 thread, batch 1), the factorized files side by side with their original.

Usage: ``python -m bench.lowrank [--subset 20000] [--epochs 6] [--finetune-epochs 2]``;
writes ``bench/results/lowrank.json``.
"""

import argparse
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import harness

CONFIGS = {
    "small_cnn": [("auto", 0.5), ("auto", 0.25), ("auto", 0.1)],
    "resnet8": [("tucker", 0.5), ("tucker", 0.25), ("cp", 0.5), ("cp", 0.25)],
}
ACCURACY_GOAL = 1.0   # points lost at ratio 0.5 after fine-tuning, at most
CALIBRATION = 2000    # training images that re-estimate the BatchNormalization statistics


def _compile(model, lr):
    import keras

    model.compile(keras.optimizers.SGD(lr, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _accuracy(model, x, y):
    return float(np.mean(model.predict(x, batch_size=1000, verbose=0).argmax(-1) == y))


def _family(name, configs, args, data_splits, workdir):
    """Rows for one base model and its factorizations."""
    import keras

    import tfcompress
    from tfcompress import export, models

    (x, y), (xt, yt) = data_splits
    keras.utils.set_random_seed(args.seed)
    base = _compile(models.build(name), args.lr)
    base.fit(x, y, batch_size=128, epochs=args.epochs, verbose=0)
    variants = {"original": keras.models.clone_model(base)}
    variants["original"].set_weights(base.get_weights())
    before = {"original": _accuracy(base, xt, yt)}
    calibrated = dict(before)
    for method, ratio in configs:
        label = f"{method} ratio {ratio}"
        start = time.perf_counter()
        variants[label] = tfcompress.factorize(base, method=method, ratio=ratio)
        print(f"{name} {label}: factorized in {time.perf_counter() - start:.1f} s", flush=True)
        before[label] = _accuracy(variants[label], xt, yt)
        tfcompress.lowrank.recalibrate_batch_norms(variants[label], x[:CALIBRATION])
        calibrated[label] = _accuracy(variants[label], xt, yt)
    after, files = {}, {}
    for label, model in variants.items():
        _compile(model, args.finetune_lr).fit(x, y, batch_size=128,
                                              epochs=args.finetune_epochs, verbose=0)
        after[label] = _accuracy(model, xt, yt)
        files[label] = export.to_tflite(model, workdir / f"{name}_{label.replace(' ', '_')}"
                                        ".tflite", verify_data=xt[:200])
        print(f"{name} {label}: {before[label]:.4f} -> {after[label]:.4f}", flush=True)
    latency = harness.time_side_by_side(
        {label: harness.litert_invoker(harness.litert_interpreter(f.path, 1), xt[:1])
         for label, f in files.items()},
        warmup=20, repeats=args.repeats, baseline="original")
    original = variants["original"].count_params()
    rows = []
    for label, model in variants.items():
        rows.append([name, label, model.count_params(),
                     round(model.count_params() / original, 3), files[label].size_bytes,
                     round(100 * before[label], 2), round(100 * calibrated[label], 2),
                     round(100 * after[label], 2),
                     round(100 * (after[label] - after["original"]), 2),
                     round(latency[label]["median_ms"], 4),
                     round(latency[label]["median_ms"] / latency["original"]["median_ms"], 3),
                     float(f"{files[label].max_abs_error:.3g}")])
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for arg in ("subset", "epochs", "finetune_epochs", "repeats"):
        if getattr(args, arg) < 1:
            parser.error(f"--{arg.replace('_', '-')} must be >= 1; got {getattr(args, arg)}")

    from tfcompress import data

    start = time.time()
    splits = data.load_fashion_mnist_arrays(subset=args.subset, seed=args.seed)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench_lowrank_"))
    rows = []
    for name, configs in CONFIGS.items():
        rows += _family(name, configs, args, splits, workdir)
    claims = []
    for row in rows:
        if row[1] == "original":
            continue
        claim = {"claim": f"{row[0]}, {row[1]}: accuracy change after fine-tuning vs the "
                          f"equally fine-tuned original (points), at {row[3]:.2f} of its "
                          f"parameters; LiteRT batch-1 time {row[10]:.2f} of the original's",
                 "measured": row[8]}
        if row[1].endswith("ratio 0.5"):
            claim.update(goal=f"≥ −{ACCURACY_GOAL} point at ratio 0.5",
                         met=row[8] >= -ACCURACY_GOAL)
        else:
            claim.update(goal="context", met=None)
        claims.append(claim)
    settings = {**vars(args), "configs": {k: [list(c) for c in v] for k, v in CONFIGS.items()},
                "litert_threads": 1, "test_images": len(splits[1][0]),
                "elapsed_s": round(time.time() - start)}
    tables = [{"title": "Factorized models vs their original (float TFLite files, LiteRT "
                        "1 thread, batch 1)",
               "columns": ["model", "variant", "params", "params ÷ original", "tflite bytes",
                           "accuracy factorized %", "after BN recalibration %",
                           "after fine-tuning %",
                           "Δ vs fine-tuned original (points)", "LiteRT ms", "÷ original",
                           "TFLite max |Δ| vs Keras"],
               "rows": rows}]
    notes = ("ratio bounds each factorized kernel's weights (biases, BatchNorm and "
             "unfactorized layers are not counted in it, hence 'params ÷ original' above "
             "the ratio). 'auto' factorizes Dense layers by SVD and convolutions by "
             "Tucker-2; 'tucker' and 'cp' only the convolutions; by default neither the "
             "image stem (a convolution of the 1-channel input) nor the output layer is "
             "factorized. Each factorized model's BatchNormalization statistics are "
             f"re-estimated on {CALIBRATION} training images (recalibrate_batch_norms) "
             "before its fine-tuning. Fine-tuning: SGD momentum 0.9 at the fine-tuning "
             "rate, the original model included. Accuracy on the full 10k test set in "
             "Keras; the TFLite files are checked against Keras on 200 images.")
    path = harness.write_result("lowrank", "Low-rank factorization (SVD, Tucker-2, CP): "
                                "parameters, accuracy, LiteRT speed", settings, tables,
                                claims, notes)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
