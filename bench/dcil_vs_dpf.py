"""DCIL vs DPF (vs TFMOT magnitude pruning, vs dense) on Fashion-MNIST.

The claims of 002 tables 5.1/5.5 at small scale: with the same cubic schedule
(eq. 5.1), global L2 threshold, mask period F=16, epochs and seeds, DCIL's last
accuracy is ≥ DPF's and its test accuracy fluctuates much less late in training.

Every (method, sparsity, seed) run is a subprocess writing its own JSON under
``bench/results/partial/dcil_vs_dpf/``; rerunning the script skips finished runs,
so an interrupted benchmark resumes. The aggregate goes to
``bench/results/dcil_vs_dpf.json``.

Usage:
    python -m bench.dcil_vs_dpf                 # run what is missing, then aggregate
    python -m bench.dcil_vs_dpf --aggregate     # aggregate only
"""

import argparse
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import harness

SETTINGS = {
    "model": "resnet14", "width": 16, "input_shape": [28, 28, 1],
    "train_subset": 10000, "curve_test_subset": 2000, "epochs": 10, "batch": 128,
    "lr": 0.1, "lr_decay_epochs": [5, 8], "lr_decay": 0.1, "momentum": 0.9,
    "weight_decay": 5e-4, "target_epoch": 6, "mask_frequency": 16,
    "dcil_warmup_epochs": 2, "temperature": 2.0, "kl_weight": 1.0,
    "evals_per_epoch": 4, "sparsities": [0.9, 0.95], "seeds": [0, 1],
}
# The "gpu" profile: a longer run on the full training set, for Keras-on-JAX on a GPU
# machine (DESIGN.md "Portability"). TFMOT needs TensorFlow, so it is not in this profile.
GPU_SETTINGS = {
    **SETTINGS, "model": "resnet20", "train_subset": None, "curve_test_subset": 10000,
    "epochs": 30, "lr_decay_epochs": [15, 23], "target_epoch": 15,
    "dcil_warmup_epochs": 3, "seeds": [0, 1],
}
PROFILES = {"cpu": (SETTINGS, ("dense", "dcil", "dpf", "tfmot"), "dcil_vs_dpf"),
            "gpu": (GPU_SETTINGS, ("dense", "dcil", "dpf"), "dcil_vs_dpf_gpu")}
PROFILE = os.environ.get("DCIL_BENCH_PROFILE", "cpu")
if PROFILE not in PROFILES:
    raise SystemExit(f"DCIL_BENCH_PROFILE must be one of {sorted(PROFILES)}, got {PROFILE!r}")
SETTINGS, METHODS, RESULT_NAME = PROFILES[PROFILE]
PARTIAL = harness.RESULTS_DIR / "partial" / RESULT_NAME
if os.environ.get("BENCH_SMOKE") == "1":  # A minute-long check of the plumbing only.
    SETTINGS = {**SETTINGS, "model": "resnet8", "train_subset": 512, "curve_test_subset": 500,
                "epochs": 2, "lr_decay_epochs": [1], "target_epoch": 1,
                "dcil_warmup_epochs": 1, "sparsities": [0.9], "seeds": [0]}
    PARTIAL = pathlib.Path("/tmp/bench_smoke") / RESULT_NAME
    harness.RESULTS_DIR = PARTIAL.parent  # Never overwrite real results.


def _runs():
    for seed in SETTINGS["seeds"]:
        for sparsity in SETTINGS["sparsities"]:
            if sparsity == SETTINGS["sparsities"][0] and "dense" in METHODS:
                yield ("dense", 0.0, seed)
            for method in METHODS[1:]:
                yield (method, sparsity, seed)


def _key(method, sparsity, seed):
    return f"{method}_s{int(round(sparsity * 100))}_seed{seed}"


def _lr_schedule(module, steps_per_epoch):
    s = SETTINGS
    boundaries = [e * steps_per_epoch for e in s["lr_decay_epochs"]]
    values = [s["lr"] * s["lr_decay"] ** i for i in range(len(boundaries) + 1)]
    return module.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def run_one(method, sparsity, seed):
    """Trains one configuration and returns its test-accuracy curve."""
    import keras

    from tfcompress import data, models, pruning
    from tfcompress.pruning import registry

    s = SETTINGS
    keras.utils.set_random_seed(seed)
    (x, y), (xt_full, yt_full) = data.load_fashion_mnist_arrays(
        subset=s["train_subset"], seed=seed)
    xt, yt = xt_full[:s["curve_test_subset"]], yt_full[:s["curve_test_subset"]]
    steps_per_epoch = math.ceil(len(x) / s["batch"])
    eval_every = max(1, steps_per_epoch // s["evals_per_epoch"])
    # A multiple of F, so every library's last mask update lands on the target sparsity.
    target_step = math.ceil(s["target_epoch"] * steps_per_epoch / s["mask_frequency"]) * s["mask_frequency"]
    base = models.build(s["model"], width=s["width"], input_shape=tuple(s["input_shape"]))
    curve = []  # (fractional epoch, test accuracy of the inference model)

    if method == "tfmot":
        import tensorflow_model_optimization as tfmot
        import tf_keras

        twin = models.to_tf_keras(base, s["model"], width=s["width"],
                                  input_shape=tuple(s["input_shape"]))
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            0.0, sparsity, begin_step=0, end_step=target_step, power=3,
            frequency=s["mask_frequency"])

        def prune(layer):  # Same layers as DCIL/DPF: every conv, not the head.
            if isinstance(layer, (tf_keras.layers.Conv2D,)) and layer.name != "head":
                return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
            return layer

        # TFMOT's documented recipe: the wrappers wrap (and share) the twin's layers.
        model = tf_keras.models.clone_model(twin, clone_function=prune)
        model.compile(tf_keras.optimizers.SGD(_lr_schedule(tf_keras, steps_per_epoch),
                                              momentum=s["momentum"], weight_decay=s["weight_decay"]),
                      tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        callbacks_module, callbacks = tf_keras.callbacks, [tfmot.sparsity.keras.UpdatePruningStep()]
        infer = model
    else:
        optimizer = keras.optimizers.SGD(_lr_schedule(keras, steps_per_epoch),
                                         momentum=s["momentum"], weight_decay=s["weight_decay"])
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        schedule = pruning.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=target_step,
                                           power=3, frequency=s["mask_frequency"])
        callbacks_module = keras.callbacks
        if method == "dense":
            model, callbacks = base, []
            model.compile(optimizer, loss, metrics=["accuracy"])
        elif method == "dpf":
            model = pruning.prune_model(base, schedule=schedule, mode="feedback",
                                        threshold="global",
                                        layers=lambda layer: layer.name != "head"
                                        and registry.supports(layer))
            model.compile(optimizer, loss, metrics=["accuracy"])
            callbacks = [pruning.UpdateMasks()]
        elif method == "dcil":
            model = pruning.dcil(base, schedule=schedule, threshold="global",
                                 temperature=s["temperature"], kl_weight=s["kl_weight"],
                                 warmup_epochs=s["dcil_warmup_epochs"])
            model.compile(optimizer, metrics=["accuracy"])
            callbacks = [pruning.UpdateMasks()]
        else:
            raise ValueError(f"unknown method {method!r}")
        infer = model.pruned_model if method == "dcil" else model
        if method != "dense":
            infer.compile(loss=loss, metrics=["accuracy"])

    class Probe(callbacks_module.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if (batch + 1) % eval_every == 0:
                if hasattr(self.model, "jax_state_sync"):  # Keras-on-JAX holds state outside.
                    self.model.jax_state_sync()
                acc = infer.evaluate(xt, yt, batch_size=500, verbose=0)
                acc = acc[1] if isinstance(acc, list) else acc
                curve.append((self.epoch + (batch + 1) / steps_per_epoch, float(acc)))

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    started = time.perf_counter()
    model.fit(x, y, batch_size=s["batch"], epochs=s["epochs"], verbose=0, shuffle=True,
              callbacks=callbacks + [Probe()])
    seconds = time.perf_counter() - started
    if method == "tfmot":
        import tensorflow_model_optimization as tfmot

        stripped = tfmot.sparsity.keras.strip_pruning(model)
        kernels = [l.kernel.numpy() for l in stripped.layers
                   if hasattr(l, "kernel") and l.name != "head"]
    else:
        final = pruning.strip(infer) if method != "dense" else infer
        kernels = [l.kernel.numpy() for l in final.layers
                   if hasattr(l, "kernel") and l.name != "head"]
    final_accuracy = infer.evaluate(xt_full, yt_full, batch_size=500, verbose=0)
    final_accuracy = final_accuracy[1] if isinstance(final_accuracy, list) else final_accuracy
    zeros = sum(int((k == 0).sum()) for k in kernels)
    total = sum(k.size for k in kernels)
    return {"method": method, "sparsity_target": sparsity, "seed": seed,
            "backend": "tf_keras" if method == "tfmot" else keras.backend.backend(),
            "device": _device_name(),
            "sparsity_reached": zeros / total, "curve": curve, "seconds": seconds,
            "final_test_accuracy": float(final_accuracy)}


def _device_name():
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return str(jax.devices()[0].device_kind)
    return "cpu"


def _summary(record):
    accs = [a for _, a in record["curve"]]
    tail = max(4, math.ceil(0.1 * len(accs)))
    return {"last": record["final_test_accuracy"], "best": max(accs),
            "tail_std": statistics.pstdev(accs[-tail:]),
            "tail_points": tail}


def aggregate():
    records = [json.loads(p.read_text()) for p in sorted(PARTIAL.glob("*.json"))]
    groups = {}
    for r in records:
        groups.setdefault((r["method"], r["sparsity_target"]), []).append(r)
    rows, by = [], {}
    for (method, sparsity), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        sums = [_summary(r) for r in rs]
        mean = lambda k: statistics.mean(s[k] for s in sums)  # noqa: E731
        spread = lambda k: statistics.pstdev([s[k] for s in sums]) if len(sums) > 1 else 0.0  # noqa: E731
        by[(method, sparsity)] = {k: mean(k) for k in ("last", "best", "tail_std")}
        backends = sorted({f"{r.get('backend', 'tensorflow')}/{r.get('device', 'cpu')}" for r in rs})
        rows.append([method, sparsity, len(rs), ", ".join(backends),
                     statistics.mean(r["sparsity_reached"] for r in rs),
                     f"{100 * mean('last'):.2f} ± {100 * spread('last'):.2f}",
                     f"{100 * mean('best'):.2f} ± {100 * spread('best'):.2f}",
                     f"{100 * mean('tail_std'):.3f}",
                     statistics.mean(r["seconds"] for r in rs)])
    claims = []
    for sparsity in SETTINGS["sparsities"]:
        d, p = by.get(("dcil", sparsity)), by.get(("dpf", sparsity))
        if d and p:
            claims.append({"claim": f"{sparsity:.0%}: DCIL last accuracy ≥ DPF last accuracy",
                           "goal": "≥", "measured": f"{100 * d['last']:.2f} vs {100 * p['last']:.2f}",
                           "met": d["last"] >= p["last"]})
            claims.append({"claim": f"{sparsity:.0%}: DCIL late-training std < DPF's",
                           "goal": "much smaller",
                           "measured": f"{100 * d['tail_std']:.3f} vs {100 * p['tail_std']:.3f} points",
                           "met": d["tail_std"] < p["tail_std"]})
    expected = len(list(_runs()))
    title = {"cpu": "DCIL vs DPF vs TFMOT magnitude pruning, ResNet-14 on a 10k Fashion-MNIST "
                    "subset (002 tables 5.1/5.5)",
             "gpu": "DCIL vs DPF, ResNet-20 on the full Fashion-MNIST training set, 30 epochs, "
                    "Keras on JAX on a GPU (002 tables 5.1/5.5)"}[PROFILE]
    harness.write_result(
        RESULT_NAME, title,
        settings={**SETTINGS, "runs_done": len(records), "runs_planned": expected},
        tables=[{"title": "Test accuracy of the pruned (inference) model, mean ± std over seeds",
                 "columns": ["method", "target", "seeds", "backend/device", "sparsity reached",
                            "last % (full test set)", "best % (curve)",
                             "late std (points)", "train s"],
                 "rows": rows}],
        claims=claims,
        notes=("'last' is the final model's accuracy on the full 10k test set; the curve is "
               f"measured on the first {SETTINGS['curve_test_subset']} test images "
               f"{SETTINGS['evals_per_epoch']}× per epoch ('best' is its maximum); "
               "'late std' is the std of those "
               "evaluations over the last 10 % of training (at least 4 points), averaged over "
               "seeds. All pruned methods prune every convolution (not the classifier head) "
               "with a cubic schedule reaching the target at the target epoch; DPF and DCIL use "
               "one global L2 threshold with F=16; TFMOT uses its own layer-wise magnitude "
               "threshold (its only mode) on the tf_keras twin with identical initial weights. "
               "The same code runs on TensorFlow (CPU) and on Keras-on-JAX (GPU); the "
               "backend/device column says where each group's runs trained (training "
               "seconds are therefore not comparable across rows). "
               + ("" if len(records) == expected else
                  f"INCOMPLETE: {len(records)} of {expected} runs finished; rerun the script "
                  "to resume.")))
    print(f"aggregated {len(records)}/{expected} runs")


def _run_all(todo, jobs):
    """Trains each missing run in its own process, ``jobs`` at a time."""
    root = pathlib.Path(__file__).resolve().parent.parent
    running, failed = [], []
    while todo or running:
        while todo and len(running) < jobs:
            method, sparsity, seed = todo.pop(0)
            print(f"running {method} sparsity={sparsity} seed={seed}", flush=True)
            running.append(((method, sparsity, seed), subprocess.Popen(
                [sys.executable, "-m", "bench.dcil_vs_dpf", "--run", method, str(sparsity),
                 str(seed)], cwd=root)))
        time.sleep(1)
        for run, process in list(running):
            if process.poll() is not None:
                running.remove((run, process))
                if process.returncode:
                    failed.append(run)
                aggregate()
    if failed:
        raise SystemExit(f"runs failed: {failed}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aggregate", action="store_true")
    parser.add_argument("--run", nargs=3, metavar=("METHOD", "SPARSITY", "SEED"))
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained at once (each in its own process; useful on a GPU)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated subset of the methods to run now")
    args = parser.parse_args(argv)
    if args.run:
        method, sparsity, seed = args.run[0], float(args.run[1]), int(args.run[2])
        record = run_one(method, sparsity, seed)
        PARTIAL.mkdir(parents=True, exist_ok=True)
        path = PARTIAL / f"{_key(method, sparsity, seed)}.json"
        path.write_text(json.dumps(record, indent=1))
        print(f"{path.name}: last {record['curve'][-1][1]:.4f}, {record['seconds']:.0f} s")
        return 0
    if not args.aggregate:
        wanted = set(args.methods.split(","))
        todo = [run for run in _runs() if run[0] in wanted
                and not (PARTIAL / f"{_key(*run)}.json").exists()]
        _run_all(todo, args.jobs)
    aggregate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
