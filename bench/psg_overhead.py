"""PSG overhead: training-step time with ``ScaledGradient`` ÷ plain SGD.

The position-based scale ``λ_s·(|w − Q(w)| + ε)`` (002 eq. 4.7) costs one
per-tensor ``max|w|``, one quantize-dequantize and a few element-wise ops per
kernel and step. This script measures what that costs in a real Keras
``train_on_batch`` step, for the MLP 784-50-20-10 and ResNet-20 (width 16,
28×28×1) at batch 128, with and without ``jit_compile``: the four step functions
of one model (plain / PSG × eager-graph / XLA) start from the same weights and
run interleaved in this one process (``bench.harness.time_side_by_side``), and
the figure of merit is the ratio of median step times (goal ≤ 1.15). The
measurement is repeated ``--rounds`` times (fresh interleaving each round) and
the median of the per-round ratios is reported with their range, because on
shared cores one round of the tiny MLP step moves by several percent.

Usage: ``python -m bench.psg_overhead [--rounds 3] [--repeats 30] [--warmup 5] [--batch 128]``
"""

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import harness

GOAL = 1.15
MODELS = ("mlp", "resnet20")


def _compile(model, psg, jit_compile, bits):
    import keras

    import tfcompress

    inner = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    optimizer = inner
    if psg:
        optimizer = tfcompress.ScaledGradient(
            inner, target=tfcompress.QuantizationGrid(bits), lambda_s=10.0)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--bits", type=int, default=4)
    args = parser.parse_args(argv)

    import keras

    from tfcompress import data, models

    keras.utils.set_random_seed(0)
    (x, y), _ = data.load_fashion_mnist_arrays(subset=args.batch, seed=0)
    rows, claims = [], []
    for name in MODELS:
        variants = {}
        reference = models.build(name)
        for label, psg, xla in (("sgd", False, False), ("psg", True, False),
                                ("sgd_xla", False, True), ("psg_xla", True, True)):
            model = models.build(name)
            model.set_weights(reference.get_weights())
            variants[label] = _compile(model, psg, xla, args.bits)
        steps = {label: (lambda m=m: m.train_on_batch(x, y)) for label, m in variants.items()}
        rounds = [harness.time_side_by_side(steps, warmup=args.warmup, repeats=args.repeats)
                  for _ in range(args.rounds)]
        for plain, wrapped, mode in (("sgd", "psg", "jit_compile=False"),
                                     ("sgd_xla", "psg_xla", "jit_compile=True")):
            ratios = [r[wrapped]["median_ms"] / r[plain]["median_ms"] for r in rounds]
            ratio = statistics.median(ratios)
            p_ms = statistics.median(r[plain]["median_ms"] for r in rounds)
            w_ms = statistics.median(r[wrapped]["median_ms"] for r in rounds)
            rows.append([name, mode, p_ms, w_ms, ratio, min(ratios), max(ratios)])
            claims.append({
                "claim": f"{name}, batch {args.batch}, {mode}: PSG step ÷ SGD step",
                "goal": f"<= {GOAL}",
                "measured": round(ratio, 3),
                "met": bool(ratio <= GOAL),
            })
            print(f"{name} {mode}: sgd {p_ms:.2f} ms, psg {w_ms:.2f} ms, ratio {ratio:.3f} "
                  f"(rounds {[round(v, 3) for v in ratios]})", flush=True)
    path = harness.write_result(
        "psg_overhead",
        "PSG (ScaledGradient) training-step overhead vs plain SGD",
        settings={"models": list(MODELS), "batch": args.batch, "rounds": args.rounds,
                  "repeats per round": args.repeats,
                  "warmup": args.warmup, "input_shape": [28, 28, 1],
                  "data": "Fashion-MNIST train (real), one fixed batch",
                  "plain optimizer": "SGD(0.01, momentum=0.9)",
                  "psg optimizer": (f"ScaledGradient(SGD(0.01, momentum=0.9), "
                                    f"QuantizationGrid({args.bits}), lambda_s=10)"),
                  "step": "train_on_batch", "resnet20": "width 16, option-B shortcuts"},
        tables=[{"title": "Median training-step time (ms) and PSG ÷ SGD: median over rounds of "
                          "the per-round ratio of medians, with the lowest and highest round",
                 "columns": ["model", "mode", "SGD ms", "PSG ms", "PSG ÷ SGD",
                             "lowest round", "highest round"],
                 "rows": rows}],
        claims=claims,
        notes=("All four step functions of a model (SGD / PSG, with and without XLA) start "
               "from the same weights and run interleaved in one process after a warm-up; "
               "the ratio of medians is the result, absolute times are context only (2 CPU "
               "cores shared with other jobs). An earlier single-round run measured the MLP at "
               "1.111 (no XLA) and 1.159 (XLA) and ResNet-20 at 1.011 and 0.993; the MLP's "
               "ratio sits near the goal and moves by a few percent between rounds. On this "
               "CPU XLA makes the ResNet-20 step slower, not faster (1.6-1.7x the non-XLA step "
               "in both runs). "
               "PSG adds, "
               "per scoped kernel and step, a max|w| reduction, one quantize-dequantize and "
               "a few element-wise ops: negligible against a conv net's forward/backward "
               "work, visible on the tiny MLP whose step is dominated by per-op overhead."))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
