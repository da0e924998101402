"""Baseline benchmark: plain Keras 3 training-step time vs the same tf_keras model.

Every later benchmark that times a compressed model divides by a plain step; this
one anchors those ratios against Keras 2 (``tf_keras``, what TFMOT runs on). Both
frameworks run in this one process, interleaved, on the same real Fashion-MNIST
batch, with identical architectures and initial weights.

Usage: ``python -m bench.train_step [--repeats 30] [--batch 128]``
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import harness

MODELS = ("small_cnn", "resnet20")


def _compile(model, framework_module, jit_compile):
    kwargs = {"jit_compile": jit_compile} if jit_compile is not None else {}
    model.compile(
        optimizer=framework_module.optimizers.SGD(learning_rate=0.05, momentum=0.9),
        loss=framework_module.losses.SparseCategoricalCrossentropy(from_logits=True),
        **kwargs)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args(argv)

    import keras
    import tf_keras  # Benchmark process only: TFMOT's Keras 2.

    from tfcompress import data, models

    keras.utils.set_random_seed(0)
    (x, y), _ = data.load_fashion_mnist_arrays(subset=args.batch, seed=0)
    rows, claims = [], []
    for name in MODELS:
        plain = _compile(models.build(name), keras, jit_compile=False)
        xla = _compile(models.build(name), keras, jit_compile=True)
        xla.set_weights(plain.get_weights())
        twin = _compile(models.to_tf_keras(plain, name), tf_keras, jit_compile=None)
        steps = {
            "keras3": lambda m=plain: m.train_on_batch(x, y),
            "keras3_xla": lambda m=xla: m.train_on_batch(x, y),
            "tf_keras": lambda m=twin: m.train_on_batch(x, y),
        }
        stats = harness.time_side_by_side(steps, warmup=args.warmup, repeats=args.repeats)
        for label in steps:
            s = stats[label]
            rows.append([name, label, s["median_ms"], s["p25_ms"], s["p75_ms"],
                         s["ratio_to_baseline"]])
        ratio = stats["keras3"]["median_ms"] / stats["tf_keras"]["median_ms"]
        claims.append({
            "claim": f"{name}: Keras 3 step ÷ tf_keras step (no XLA, same weights)",
            "goal": "context (baseline for later ratios)",
            "measured": round(ratio, 3),
            "met": None,
        })
        print(f"{name}: keras3 {stats['keras3']['median_ms']:.1f} ms, "
              f"keras3+XLA {stats['keras3_xla']['median_ms']:.1f} ms, "
              f"tf_keras {stats['tf_keras']['median_ms']:.1f} ms")
    path = harness.write_result(
        "train_step",
        "Training step: plain Keras 3 vs the tf_keras twin (baseline)",
        settings={"models": list(MODELS), "batch": args.batch, "repeats": args.repeats,
                  "warmup": args.warmup, "data": "Fashion-MNIST train (real), one fixed batch",
                  "optimizer": "SGD(0.05, momentum=0.9)", "step": "train_on_batch",
                  "input_shape": [28, 28, 1]},
        tables=[{"title": "Median training-step time (ms) and ratio to Keras 3 without XLA",
                 "columns": ["model", "variant", "median ms", "p25 ms", "p75 ms", "÷ keras3"],
                 "rows": rows}],
        claims=claims,
        notes=("keras3 = Keras 3.15 `train_on_batch` with jit_compile=False; keras3_xla = "
               "jit_compile=True; tf_keras = the same architecture and weights in Keras 2 "
               "(`tf_keras`), the framework TFMOT requires. Later benchmarks divide by the "
               "keras3 step measured in their own run."))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
