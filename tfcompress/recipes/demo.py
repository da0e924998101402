"""The demo recipe behind ``make demo``: train, prune, export and report on Fashion-MNIST.

Trains the small CNN for one epoch with a progress bar, prunes it to a target
sparsity with a cubic (eq. 5.1) schedule during a short fine-tune, strips the
pruning wrappers, exports a SavedModel, a float TFLite file and a full-int8 TFLite
file (each verified in the LiteRT interpreter), and prints a one-screen report.
"""

import gzip
import pathlib
import time

import keras
import numpy as np


def _gzipped_size(path):
    return len(gzip.compress(pathlib.Path(path).read_bytes(), compresslevel=9))


def _tflite_accuracy(path, x, y):
    from tfcompress.export import run_tflite

    return float(np.mean(run_tflite(path, x).argmax(-1) == y))


def run_demo(out_dir="demo_out", epochs=1, finetune_epochs=1, sparsity=0.8,
             batch_size=128, subset=None, seed=0, verbose=1):
    """Runs the demo pipeline and returns its report as a dict.

    Args:
        out_dir: folder receiving the SavedModel and the ``.tflite`` files.
        epochs: dense training epochs.
        finetune_epochs: pruning fine-tune epochs (sparsity ramps over the first
            half, then holds).
        sparsity: target unstructured sparsity of every Conv/Dense kernel.
        batch_size: training batch size.
        subset: optional number of training images (``None``: all 60,000).
        seed: random seed.
        verbose: Keras progress-bar verbosity (1 = progress bar).

    Returns:
        dict with accuracies, sparsity, parameter counts and file sizes.
    """
    from tfcompress import data, export, models, pruning

    keras.utils.set_random_seed(seed)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_ds, test_ds = data.load_fashion_mnist(batch_size=batch_size, subset=subset, seed=seed)
    (_, _), (x_test, y_test) = data.load_fashion_mnist_arrays(subset=1)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    started = time.perf_counter()

    print(f"[1/4] Training the small CNN on Fashion-MNIST for {epochs} epoch(s)")
    model = models.small_cnn()
    model.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    # The tf.data pipeline shuffles itself each epoch.
    model.fit(train_ds, epochs=epochs, verbose=verbose, shuffle=False)
    dense_accuracy = model.evaluate(test_ds, verbose=0)[1]

    steps_per_epoch = int(train_ds.cardinality())
    end_step = max(1, steps_per_epoch * finetune_epochs // 2)
    print(f"[2/4] Pruning to {sparsity:.0%} sparsity (cubic schedule over {end_step} steps)")
    schedule = pruning.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=end_step,
                                       power=3, frequency=max(1, end_step // 10))
    # One magnitude threshold across all layers (as DPF/DCIL): the big dense layer
    # absorbs most of the pruning, the small convolutions keep more of their weights.
    pruned = pruning.prune_model(model, schedule=schedule, threshold="global")
    pruned.compile(keras.optimizers.Adam(3e-4), loss, metrics=["accuracy"])
    pruned.fit(train_ds, epochs=finetune_epochs, verbose=verbose, shuffle=False,
               callbacks=[pruning.UpdateMasks()])
    stripped = pruning.strip(pruned)
    stripped.compile(metrics=["accuracy"], loss=loss)
    pruned_accuracy = stripped.evaluate(test_ds, verbose=0)[1]
    report = pruning.sparsity_report(stripped)

    print("[3/4] Exporting SavedModel, float TFLite and int8 TFLite (verified in LiteRT)")
    verify = x_test[:1000]
    export.to_saved_model(stripped, out / "saved_model", verify_data=verify[:64])
    float_file = export.to_tflite(stripped, out / "model_float.tflite", verify_data=verify)
    int8_file = export.to_tflite(
        stripped, out / "model_int8.tflite", mode="int8",
        representative_data=data.representative_dataset(x_test[1000:], 200),
        verify_data=verify)

    print("[4/4] Measuring the exported files on the full test set")
    float_tflite_acc = _tflite_accuracy(float_file.path, x_test, y_test)
    int8_tflite_acc = _tflite_accuracy(int8_file.path, x_test, y_test)
    result = {
        "dense_accuracy": float(dense_accuracy),
        "pruned_accuracy": float(pruned_accuracy),
        "global_sparsity": float(report["global"]["sparsity"]),
        "parameters": int(report["global"]["params"]),
        "nonzero_parameters": int(report["global"]["nonzeros"]),
        "macs": int(report["global"]["macs"]),
        "nonzero_macs": int(report["global"]["nonzero_macs"]),
        "float_tflite_bytes": float_file.size_bytes,
        "float_tflite_gzip_bytes": _gzipped_size(float_file.path),
        "int8_tflite_bytes": int8_file.size_bytes,
        "int8_tflite_gzip_bytes": _gzipped_size(int8_file.path),
        "float_tflite_accuracy": float_tflite_acc,
        "int8_tflite_accuracy": int8_tflite_acc,
        "int8_top1_agreement": int8_file.top1_agreement,
        "seconds": time.perf_counter() - started,
        "layers": {row["name"]: row for row in report["layers"]},
    }
    print(format_report(result, out))
    return result


def format_report(r, out):
    """Formats the demo result as a one-screen text report."""
    kb = lambda n: f"{n / 1024:8.1f} KiB"  # noqa: E731
    lines = [
        "",
        "tfcompress demo — small CNN on Fashion-MNIST",
        "=" * 60,
        f"dense Keras accuracy          {r['dense_accuracy']:.4f}",
        f"pruned Keras accuracy         {r['pruned_accuracy']:.4f}",
        f"global sparsity               {r['global_sparsity']:.1%}  "
        f"({r['nonzero_parameters']:,} of {r['parameters']:,} weights nonzero)",
        f"multiply-accumulates / image {r['nonzero_macs']:,} nonzero of {r['macs']:,}",
        "-" * 60,
        f"{'file':<22}{'raw':>13}{'gzipped':>13}{'accuracy':>11}",
        f"{'model_float.tflite':<22}{kb(r['float_tflite_bytes']):>13}"
        f"{kb(r['float_tflite_gzip_bytes']):>13}{r['float_tflite_accuracy']:>11.4f}",
        f"{'model_int8.tflite':<22}{kb(r['int8_tflite_bytes']):>13}"
        f"{kb(r['int8_tflite_gzip_bytes']):>13}{r['int8_tflite_accuracy']:>11.4f}",
        f"int8 vs Keras top-1 agreement {r['int8_top1_agreement']:.4f} (1000 test images)",
        "-" * 60,
        "per-layer sparsity: " + ", ".join(
            f"{name} {layer['sparsity']:.1%}" for name, layer in r["layers"].items()),
        f"outputs in {out}/ ; total time {r['seconds']:.0f} s",
    ]
    return "\n".join(lines)
