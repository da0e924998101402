"""Execution kernels under XLA: int8 / int4 / block-sparse layers vs float and Keras int8.

Every figure is a ratio of medians timed side by side in this one process
(``bench.harness.time_side_by_side``, interleaved, after a warm-up), each callable
being one jit-compiled inference (``tf.function(jit_compile=True)``) whose result is
copied back to the host. Compared:

* ``QuantizedDense`` (int8 static / dynamic, int4, weight-only) ÷ float ``Dense`` and
  ÷ Keras's own int8 Dense (``model.quantize("int8")``), 2048 → 2048, batch 1 and 64;
  plus the input-major kernel layout, to record why the layer stores ``(units, in)``.
* ``QuantizedConv2D`` ÷ float ``Conv2D`` (64×28×28×32 → 64, 3×3, same; batch 1 and
  64), with the alternative int8 formulations tried (im2col by concatenated shifted
  slices + int8 matmul, one int8 matmul per kernel tap) and probes of TF ops that
  XLA might have run on int8 (``tf.nn.conv2d``, ``tf.image.extract_patches``).
* ``QuantizedConv2D`` by channel count (its zero padding vs none vs full), as a
  strided 1×1 convolution (slice + int8 matmul vs XLA's int8 convolution), and
  ``QuantizedDepthwiseConv2D`` (sum over taps vs float and grouped int8 convolution).
* Whole models (small CNN, ResNet-8, ResNet-20) through ``kernels.convert`` vs float,
  with and without BatchNormalization folding.
* ``SparseDense`` ÷ dense at 80/90/95/99 % block sparsity (32×32 blocks).
* Each variant twice: per call (one layer per jit call) and in-graph (``CHAIN``
  applications chained in one XLA computation, the layer's cost inside a compiled
  model without the per-call dispatch cost); the claims use the in-graph ratio.
* For the convolution, the floor of any im2col formulation: the int8 and float
  GEMM of the (N·H·W, 9·C) × (9·C, F) patch product alone.
* The accuracy cost of those block masks: an MLP 784-512-512-10 on Fashion-MNIST
  whose two hidden Dense kernels are pruned to 80/90/95/99 % with 32×32 ``block``
  vs ``unstructured`` granularity and fine-tuned (test accuracy, mean over seeds).

Usage: ``python -m bench.kernels [--part all|timing|accuracy] [--repeats 40]
[--warmup 3] [--quick]``. ``--part accuracy`` runs only the accuracy table and
merges it into the existing ``bench/results/kernels.json`` (timings untouched);
``--part timing`` rewrites the timings and keeps an existing accuracy table.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import harness

DENSE_DIM = 2048
CONV_SHAPE = (28, 28, 32)
CONV_FILTERS = 64
SPARSITIES = (0.8, 0.9, 0.95, 0.99)
BLOCK = (32, 32)
FLOOR = "empty jit call (x * 2): dispatch floor"
BATCH1_REPEAT_FACTOR = 5
# In-graph timing: this many applications of a layer chained in one XLA call
# (each fed by the previous output), so the fixed per-call dispatch cost is
# paid once per CHAIN layers, as in a compiled model.
CHAIN = 16
IN_GRAPH = f"in-graph ×{CHAIN}: "


def _jit(fn):
    import tensorflow as tf

    return tf.function(fn, jit_compile=True)


def _time(fns, x, warmup, repeats):
    """Checks every variant runs, then times them interleaved.

    Batch-1 calls take a few milliseconds, so they get 5× the repeats: on a shared
    CPU a single descheduled XLA worker thread doubles such a call.
    """
    import tensorflow as tf

    if x.shape[0] == 1:
        repeats *= BATCH1_REPEAT_FACTOR
    x = tf.constant(x)
    outputs = {name: f(x).numpy() for name, f in fns.items()}
    stats = harness.time_side_by_side({name: (lambda f=f: f(x).numpy())
                                       for name, f in fns.items()},
                                      warmup=warmup, repeats=repeats)
    return stats, outputs


def _chained(fn, adapt=None):
    """``CHAIN`` applications of ``fn`` in one XLA call: ``y ← x + 1e-3·fn(y)``.

    Every application depends on the previous one (nothing is hoisted or
    shared), and the small residual keeps values in range; ``adapt`` maps an
    output back to the input shape (a channel slice for a convolution).
    """
    def chained(x):
        y = x
        for _ in range(CHAIN):
            out = fn(y)
            y = x + 1e-3 * (out if adapt is None else adapt(out))
        return y

    return _jit(chained)


def _in_graph_rows(batch, layers, adapt, x, warmup, repeats, baseline):
    """Times ``layers`` chained in-graph; returns (rows, stats) with per-layer ms."""
    fns = {IN_GRAPH + name: _chained(layer, adapt) for name, layer in layers.items()}
    stats, _ = _time(fns, x, warmup, repeats)
    base = stats[IN_GRAPH + baseline]
    rows = []
    for name in fns:
        st = stats[name]
        rows.append([batch, name + " (ms per layer)", round(st["median_ms"] / CHAIN, 3),
                                   round(st["p25_ms"] / CHAIN, 3), round(st["p75_ms"] / CHAIN, 3),
                                   round(st["median_ms"] / base["median_ms"], 3),
                                   round(st["min_ms"] / base["min_ms"], 3), None])
    return rows, stats


def _rel_err(y, ref):
    return float(np.max(np.abs(y - ref)) / max(np.max(np.abs(ref)), 1e-12))


def _row(prefix, name, stats, err=None):
    s, base = stats[name], stats[stats["_baseline"]]
    row = prefix + [name, round(s["median_ms"], 3), round(s["p25_ms"], 3),
                    round(s["p75_ms"], 3), round(s["ratio_to_baseline"], 3),
                    round(s["min_ms"] / base["min_ms"], 3)]
    return row + ([None if err is None else round(err, 4)])


# --------------------------------------------------------------------------- dense
def bench_dense(batches, warmup, repeats, rng):
    import keras
    import tensorflow as tf

    from tfcompress.kernels import QuantizedDense

    dense = keras.layers.Dense(DENSE_DIM, activation="relu")
    dense.build((None, DENSE_DIM))
    kernel = rng.standard_normal((DENSE_DIM, DENSE_DIM)).astype("float32") / np.sqrt(DENSE_DIM)
    dense.kernel.assign(kernel)
    calib = rng.standard_normal((256, DENSE_DIM)).astype("float32")
    scale = float(np.abs(calib).max() / 127)
    layers = {
        "float Dense": dense,
        "QuantizedDense int8 static": QuantizedDense.from_dense(dense, activations_scale=scale),
        "QuantizedDense int8 dynamic": QuantizedDense.from_dense(dense),
        "QuantizedDense int4 static": QuantizedDense.from_dense(dense, bits=4,
                                                                activations_scale=scale),
        "QuantizedDense int8 weight-only": QuantizedDense.from_dense(
            dense, input_quantization="none"),
    }
    keras_int8 = keras.Sequential([keras.Input((DENSE_DIM,)),
                                   keras.layers.Dense(DENSE_DIM, activation="relu")])
    keras_int8.layers[0].set_weights(dense.get_weights())
    keras_int8.quantize("int8")
    layers["Keras int8 Dense (model.quantize)"] = keras_int8

    # the layout the layer does *not* use: int8 kernel (in, units), static inputs
    w_in_major = tf.constant(np.ascontiguousarray(
        keras.ops.convert_to_numpy(layers["QuantizedDense int8 static"].kernel).T))
    q_static = layers["QuantizedDense int8 static"]

    def input_major(x):
        x_q = tf.cast(tf.clip_by_value(tf.round(x / scale), -127.0, 127.0), tf.int8)
        acc = tf.linalg.matmul(x_q, w_in_major, output_type=tf.int32)
        return tf.nn.relu(tf.cast(acc, tf.float32) * (scale * q_static.kernel_scale.value)
                          + q_static.bias.value)

    fns = {name: _jit(layer) for name, layer in layers.items()}
    fns["int8 matmul, input-major kernel (in, units)"] = _jit(input_major)
    fns[FLOOR] = _jit(lambda x: x * 2.0)
    rows, stats_by_batch = [], {}
    for batch in batches:
        x = rng.standard_normal((batch, DENSE_DIM)).astype("float32")
        stats, outputs = _time(fns, x, warmup, repeats)
        ref = outputs["float Dense"]
        for name in fns:
            err = None if name == FLOOR else _rel_err(outputs[name], ref)
            rows.append(_row([batch], name, stats, err))
        in_rows, in_stats = _in_graph_rows(batch, layers, None, x, warmup, repeats,
                                           "float Dense")
        rows += in_rows
        if batch > 1:  # batch 1 takes the weight-only product, not an int8 GEMM
            rows += _gemm_bound_rows(batch, 1, DENSE_DIM, DENSE_DIM, warmup, repeats, rng,
                                     shape="Dense")
        stats_by_batch[batch] = {**stats, **in_stats}
        print(f"dense batch {batch}: " + ", ".join(
            f"{n} {stats_by_batch[batch][n]['median_ms']:.2f} ms" for n in stats_by_batch[batch]
            if not n.startswith("_")), flush=True)
    return rows, stats_by_batch


# --------------------------------------------------------------------------- conv
def _conv_probes():
    """Tries TF ops that XLA might run on int8; returns {name: outcome}."""
    import tensorflow as tf

    x = tf.zeros((1, 8, 8, 4), tf.int8)
    w = tf.zeros((3, 3, 4, 4), tf.int8)
    probes = {
        "tf.nn.conv2d on int8 (XLA)": lambda: _jit(
            lambda a: tf.nn.conv2d(a, w, 1, "SAME"))(x),
        "tf.image.extract_patches on int8 (XLA)": lambda: _jit(
            lambda a: tf.image.extract_patches(a, [1, 3, 3, 1], [1, 1, 1, 1],
                                               [1, 1, 1, 1], "SAME"))(x),
    }
    outcomes = {}
    for name, probe in probes.items():
        try:
            probe()
            outcomes[name] = "runs"
        except Exception as error:  # noqa: BLE001 - we record whatever XLA/TF says
            text = harness.last_error_line(error)
            if "No registered '" in str(error):
                op = str(error).split("No registered '", 1)[1].split("'", 1)[0]
                text = f"no XLA_CPU_JIT kernel for the {op} op"
            outcomes[name] = f"unsupported: {type(error).__name__}: {text[:200]}"
    return outcomes


def bench_conv(batches, warmup, repeats, rng):
    import keras
    import tensorflow as tf

    from tfcompress.kernels import QuantizedConv2D

    h, w_, c = CONV_SHAPE
    conv = keras.layers.Conv2D(CONV_FILTERS, 3, padding="same", activation="relu")
    conv.build((None, h, w_, c))
    calib = rng.standard_normal((16, h, w_, c)).astype("float32")
    scale = float(np.abs(calib).max() / 127)
    q_static = QuantizedConv2D.from_conv2d(conv, activations_scale=scale)
    layers = {
        "float Conv2D": conv,
        "QuantizedConv2D int8 static": q_static,
        "QuantizedConv2D int8 dynamic": QuantizedConv2D.from_conv2d(conv),
        "QuantizedConv2D int4 static": QuantizedConv2D.from_conv2d(
            conv, bits=4, activations_scale=scale),
        "QuantizedConv2D int8 weight-only": QuantizedConv2D.from_conv2d(
            conv, input_quantization="none"),
    }
    w_q = keras.ops.convert_to_numpy(q_static.kernel)                   # (3, 3, c, f)
    w_kn = tf.constant(w_q.reshape(9 * c, CONV_FILTERS))
    w_taps = tf.constant(w_q)
    k_scale, bias = q_static.kernel_scale.value, q_static.bias.value

    def quant(x):
        return tf.cast(tf.clip_by_value(tf.round(x / scale), -127.0, 127.0), tf.int8)

    def finish(acc, shape):
        acc = tf.reshape(acc, shape)
        return tf.nn.relu(tf.cast(acc, tf.float32) * (scale * k_scale) + bias)

    def im2col(x):
        n = tf.shape(x)[0]
        xp = tf.pad(quant(x), [[0, 0], [1, 1], [1, 1], [0, 0]])
        cols = tf.concat([xp[:, i:i + h, j:j + w_, :] for i in range(3) for j in range(3)],
                         axis=-1)
        acc = tf.linalg.matmul(tf.reshape(cols, (-1, 9 * c)), w_kn, output_type=tf.int32)
        return finish(acc, tf.stack([n, h, w_, CONV_FILTERS]))

    def per_tap(x):
        n = tf.shape(x)[0]
        xp = tf.pad(quant(x), [[0, 0], [1, 1], [1, 1], [0, 0]])
        acc = None
        for i in range(3):
            for j in range(3):
                part = tf.linalg.matmul(tf.reshape(xp[:, i:i + h, j:j + w_, :], (-1, c)),
                                        w_taps[i, j], output_type=tf.int32)
                acc = part if acc is None else acc + part
        return finish(acc, tf.stack([n, h, w_, CONV_FILTERS]))

    w_rows = tf.constant(w_q.reshape(3, 3 * c, CONV_FILTERS))  # (row, (col, c), f)

    def per_row(x):
        """One int8 matmul per kernel row, K = 3·C: a 3×-larger patch matrix
        instead of im2col's 9×, with K still large enough for a GEMM."""
        n = tf.shape(x)[0]
        xp = tf.pad(quant(x), [[0, 0], [1, 1], [1, 1], [0, 0]])
        acc = None
        for i in range(3):
            cols = tf.concat([xp[:, i:i + h, j:j + w_, :] for j in range(3)], axis=-1)
            part = tf.linalg.matmul(tf.reshape(cols, (-1, 3 * c)), w_rows[i],
                                    output_type=tf.int32)
            acc = part if acc is None else acc + part
        return finish(acc, tf.stack([n, h, w_, CONV_FILTERS]))

    def im2col_tiled(x, chunk=4):
        """im2col one tile of ``chunk`` images at a time (XLA while loop), so that the
        9×-larger int8 patch matrix stays in cache."""
        n = tf.shape(x)[0]
        tiles = tf.reshape(x, tf.stack([n // chunk, chunk, h, w_, c]))
        out = tf.map_fn(im2col, tiles, fn_output_signature=tf.float32)
        return tf.reshape(out, tf.stack([n, h, w_, CONV_FILTERS]))

    fns = {name: _jit(layer) for name, layer in layers.items()}
    fns["alt: int8 im2col (concat shifted slices) + int8 matmul"] = _jit(im2col)
    fns["alt: int8 im2col tiled by 4 images (while loop)"] = _jit(im2col_tiled)
    fns["alt: 9 int8 matmuls, one per kernel tap"] = _jit(per_tap)
    fns["alt: 3 int8 matmuls, one per kernel row (K = 3·C)"] = _jit(per_row)
    rows, stats_by_batch = [], {}
    for batch in batches:
        x = rng.standard_normal((batch, h, w_, c)).astype("float32")
        batch_fns = {k: f for k, f in fns.items() if "tiled" not in k or batch % 4 == 0}
        stats, outputs = _time(batch_fns, x, warmup, repeats)
        ref = outputs["float Conv2D"]
        for name in batch_fns:
            rows.append(_row([batch], name, stats, _rel_err(outputs[name], ref)))
        in_layers = dict(layers)
        in_layers["alt: int8 im2col (concat shifted slices) + int8 matmul"] = im2col
        in_layers["alt: 3 int8 matmuls, one per kernel row (K = 3·C)"] = per_row
        in_rows, in_stats = _in_graph_rows(batch, in_layers, lambda o: o[..., :c], x,
                                           warmup, repeats, "float Conv2D")
        rows += in_rows
        rows += _gemm_bound_rows(batch, h * w_, 9 * c, CONV_FILTERS, warmup, repeats, rng)
        stats_by_batch[batch] = {**stats, **in_stats}
        print(f"conv batch {batch}: " + ", ".join(
            f"{n} {stats_by_batch[batch][n]['median_ms']:.2f} ms" for n in stats_by_batch[batch]
            if not n.startswith("_")), flush=True)
    return rows, stats_by_batch, _conv_probes()


GEMM_FLOAT = "GEMM bound: float32 matmul at the {} shape"
GEMM_INT8 = "GEMM bound: int8×int8→int32 matmul at the {} shape"


def _gemm_bound_rows(batch, pixels, k, n, warmup, repeats, rng, shape="im2col"):
    """The matrix product every im2col formulation must do, int8 vs float, alone.

    (batch·H·W, 9·C) × (9·C, F), chained ``CHAIN`` times in one XLA call (the
    product is fed back into the patch matrix's first F columns). If the int8
    product alone is not clearly faster than the float one, no im2col-based int8
    convolution can beat float Conv2D, whose own cost is about this product.
    With ``pixels=1`` and ``shape="Dense"`` it is the (batch, in) × (in, units)
    product of a Dense layer: the floor of any int8 × int8 Dense under XLA.
    """
    import tensorflow as tf

    m = batch * pixels
    a = rng.standard_normal((m, k)).astype("float32")
    w_f = tf.constant((rng.standard_normal((k, n)) / np.sqrt(k)).astype("float32"))
    w_q = tf.constant(rng.integers(-127, 128, (k, n)).astype("int8"))

    def float_mm(y):
        return tf.linalg.matmul(y, w_f)

    def int8_mm(y):
        y_q = tf.cast(tf.clip_by_value(tf.round(y * 40.0), -127.0, 127.0), tf.int8)
        return tf.cast(tf.linalg.matmul(y_q, w_q, output_type=tf.int32), tf.float32) * 1e-4

    def pad(o):
        return tf.pad(o, [[0, 0], [0, k - n]])

    gemm_float, gemm_int8 = GEMM_FLOAT.format(shape), GEMM_INT8.format(shape)
    fns = {gemm_float: _chained(float_mm, pad), gemm_int8: _chained(int8_mm, pad)}
    stats, _ = _time(fns, a, warmup, repeats)
    base = stats[gemm_float]
    # The product alone, one per call, on an int8 patch matrix given as input (no
    # quantization pass): the floor of any im2col formulation's matmul.
    a_f, a_q = tf.constant(a), tf.constant(np.clip(np.round(a * 40), -127, 127).astype("int8"))
    mm_f = _jit(lambda v: tf.linalg.matmul(v, w_f))
    mm_q = _jit(lambda v: tf.linalg.matmul(v, w_q, output_type=tf.int32))
    alone = harness.time_side_by_side(
        {"f": lambda: mm_f(a_f).numpy(), "q": lambda: mm_q(a_q).numpy()},
        warmup=warmup, repeats=repeats * (BATCH1_REPEAT_FACTOR if batch == 1 else 1))
    extra = [[batch, f"GEMM alone, one per call: float32 ({m}×{k}·{k}×{n})",
              round(alone["f"]["median_ms"], 3), round(alone["f"]["p25_ms"], 3),
              round(alone["f"]["p75_ms"], 3), 1.0, 1.0, None],
             [batch, f"GEMM alone, one per call: int8×int8→int32, int8 input given "
                     f"({m}×{k}·{k}×{n})",
              round(alone["q"]["median_ms"], 3), round(alone["q"]["p25_ms"], 3),
              round(alone["q"]["p75_ms"], 3), round(alone["q"]["ratio_to_baseline"], 3),
              round(alone["q"]["min_ms"] / alone["f"]["min_ms"], 3), None]]
    return extra + [[batch, f"{name} ({m}×{k}·{k}×{n}, ms per product, incl. int8 input quantization)"
             if name == gemm_int8 else f"{name} ({m}×{k}·{k}×{n}, ms per product)",
             round(stats[name]["median_ms"] / CHAIN, 3), round(stats[name]["p25_ms"] / CHAIN, 3),
             round(stats[name]["p75_ms"] / CHAIN, 3),
             round(stats[name]["median_ms"] / base["median_ms"], 3),
             round(stats[name]["min_ms"] / base["min_ms"], 3), None] for name in fns]


CHANNEL_CASES = ((1, 16), (1, 32), (3, 16), (3, 32), (4, 16), (16, 16), (16, 32),
                 (24, 16), (32, 16), (32, 32), (64, 16))


def _input_scale(rng, channels, size=CONV_SHAPE[:2]):
    """Static int8 input scale: max |x| / 127 of random-normal inputs (28×28)."""
    sample = rng.standard_normal((256,) + tuple(size) + (channels,))
    return float(np.abs(sample).max() / 127)


def _plain_int8_conv(layer, groups, extra_in=0, extra_out=0, strides=(1, 1),
                     pads=((1, 1), (1, 1))):
    """The layer's static int8 convolution (3×3 same unless ``strides`` / ``pads``
    say otherwise) as one plain XLA convolution, zero-padded by ``extra_in`` input
    channels and ``extra_out`` filters (none by default), without a sum over taps
    or a matmul: the alternatives the layer chooses between."""
    import tensorflow as tf

    from tfcompress.kernels import _common
    from tfcompress.kernels._conv import pad_channels
    from tfcompress.kernels._conv import xla_conv

    def conv(x):
        x_q, scale = _common.quantize_inputs(x, "static", layer.input_scale.value)
        x_q, w = pad_channels(x_q, layer.kernel.value, extra_in, extra_out)
        acc = xla_conv(x_q, w, strides, [list(p) for p in pads], (1, 1), groups, tf.int32)
        if extra_out:
            acc = acc[..., :layer.kernel.shape[-1]]
        return tf.nn.relu(tf.cast(acc, tf.float32) * (scale * layer.kernel_scale.value)
                          + layer.bias.value)

    return _jit(conv)


def bench_conv_channels(batches, warmup, repeats, rng):
    """QuantizedConv2D ÷ float Conv2D on 28×28 inputs, 3×3 same, across channel
    counts (per call), beside the two int8 convolutions the layer chooses between:
    unpadded, and zero-padded to a multiple of 4 input channels and at least 32
    filters. The layer pads the input channels always and the filters only on
    fewer than 32 input channels (``kernels._conv.channel_padding``)."""
    import keras

    from tfcompress.kernels import QuantizedConv2D
    from tfcompress.kernels._conv import INT8_CHANNEL_MULTIPLE
    from tfcompress.kernels._conv import INT8_MIN_FILTERS
    from tfcompress.kernels._conv import channel_padding

    rows = []
    for c_in, c_out in CHANNEL_CASES:
        conv = keras.layers.Conv2D(c_out, 3, padding="same", activation="relu")
        conv.build((None,) + CONV_SHAPE[:2] + (c_in,))
        layer = QuantizedConv2D.from_conv2d(conv, activations_scale=_input_scale(rng, c_in))
        extra_in, extra_out = -c_in % INT8_CHANNEL_MULTIPLE, max(INT8_MIN_FILTERS - c_out, 0)
        fns = {"float": _jit(conv), "int8": _jit(layer)}
        if extra_in or extra_out:
            fns["unpadded"] = _plain_int8_conv(layer, 1)
            fns["padded"] = _plain_int8_conv(layer, 1, extra_in, extra_out)
        layer_pads = "inputs {}, filters {}".format(*channel_padding(c_in, c_out, 1))
        for batch in batches:
            x = rng.standard_normal((batch,) + CONV_SHAPE[:2] + (c_in,)).astype("float32")
            stats, _ = _time(fns, x, warmup, repeats)

            def ratio(name):
                return round(stats[name]["ratio_to_baseline"], 2) if name in stats else None

            rows.append([batch, c_in, c_out, layer_pads, round(stats["float"]["median_ms"], 3),
                         round(stats["int8"]["median_ms"], 3), ratio("int8"),
                         ratio("unpadded"), ratio("padded")])
            print(f"conv channels {c_in}→{c_out} batch {batch}: int8 ÷ float {ratio('int8')}, "
                  f"unpadded {ratio('unpadded')}, padded {ratio('padded')}", flush=True)
    return rows


POINTWISE_CASES = ((28, 3, 16), (28, 16, 32), (14, 32, 64), (7, 64, 128), (28, 64, 32),
                   (14, 128, 64))  # (input size, input channels, filters), stride 2


def bench_strided_pointwise(batches, warmup, repeats, rng):
    """QuantizedConv2D 1×1 stride 2 (a ResNet projection) ÷ float Conv2D, beside the
    plain XLA int8 convolution, in-graph (``CHAIN`` layers per call, each fed the
    input plus the mean of the previous output): the layer computes it as a
    strided slice and one int8 matmul from 16 input channels on."""
    import keras
    import tensorflow as tf

    from tfcompress.kernels import QuantizedConv2D

    def adapt(out):
        return tf.reduce_mean(out)

    rows = []
    for size, c_in, c_out in POINTWISE_CASES:
        conv = keras.layers.Conv2D(c_out, 1, strides=2, padding="same", activation="relu")
        conv.build((None, size, size, c_in))
        layer = QuantizedConv2D.from_conv2d(
            conv, activations_scale=_input_scale(rng, c_in, (size, size)))
        plain = _plain_int8_conv(layer, 1, strides=(2, 2), pads=((0, 0), (0, 0)))
        fns = {"float": _chained(conv, adapt), "int8": _chained(layer, adapt),
               "conv": _chained(plain.python_function, adapt)}
        for batch in batches:
            x = rng.standard_normal((batch, size, size, c_in)).astype("float32")
            stats, _ = _time(fns, x, warmup, repeats)
            rows.append([batch, f"{size}×{size}", c_in, c_out,
                         round(stats["float"]["median_ms"] / CHAIN, 4),
                         round(stats["int8"]["median_ms"] / CHAIN, 4),
                         round(stats["int8"]["ratio_to_baseline"], 2),
                         round(stats["conv"]["ratio_to_baseline"], 2)])
            print(f"strided 1×1 {size}×{size} {c_in}→{c_out} batch {batch}: int8 ÷ float "
                  f"{rows[-1][6]}, XLA int8 convolution {rows[-1][7]}", flush=True)
    return rows


DEPTHWISE_CHANNELS = (16, 32, 64)


def bench_depthwise(batches, warmup, repeats, rng):
    """QuantizedDepthwiseConv2D (sum over kernel taps) ÷ float DepthwiseConv2D, 3×3
    same on 28×28, per call, next to the grouped int8 XLA convolution (one channel
    per group) the layer used before."""
    import keras

    from tfcompress.kernels import QuantizedDepthwiseConv2D

    rows = []
    for channels in DEPTHWISE_CHANNELS:
        float_layer = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")
        float_layer.build((None,) + CONV_SHAPE[:2] + (channels,))
        layer = QuantizedDepthwiseConv2D.from_depthwise_conv2d(
            float_layer, activations_scale=_input_scale(rng, channels))
        fns = {"float": _jit(float_layer), "int8": _jit(layer),
               "grouped": _plain_int8_conv(layer, groups=channels)}
        for batch in batches:
            x = rng.standard_normal((batch,) + CONV_SHAPE[:2] + (channels,)).astype("float32")
            stats, outputs = _time(fns, x, warmup, repeats)
            rows.append([batch, channels, round(stats["float"]["median_ms"], 3),
                         round(stats["int8"]["median_ms"], 3),
                         round(stats["int8"]["ratio_to_baseline"], 3),
                         round(stats["grouped"]["ratio_to_baseline"], 2),
                         round(_rel_err(outputs["int8"], outputs["float"]), 4)])
            print(f"depthwise {channels} batch {batch}: int8 ÷ float {rows[-1][4]}, "
                  f"grouped {rows[-1][5]}", flush=True)
    return rows


MODELS = ("small_cnn", "resnet8", "resnet20")


def bench_models(batches, warmup, repeats, rng):
    """Whole models: ``kernels.convert(model, quantize="int8")`` with calibrated
    static input scales ÷ the float model, each one XLA call (per call), at the
    model's Fashion-MNIST input shape (weights at initialization: speed only)."""
    import keras

    from tfcompress import kernels
    from tfcompress import models

    rows = []
    for name in MODELS:
        keras.utils.set_random_seed(0)
        model = models.build(name)
        calibration = rng.random((64, 28, 28, 1)).astype("float32")
        fns = {"float": _jit(model)}
        for fold in (True, False):
            converted = kernels.convert(model, quantize="int8", fold_batch_norm=fold,
                                        activation_calibration_data=calibration)
            fns["int8" if fold else "int8, BatchNormalization kept"] = _jit(converted)
        if not any(isinstance(layer, keras.layers.BatchNormalization)
                   for layer in model.layers):
            del fns["int8, BatchNormalization kept"]
        for batch in batches:
            x = rng.random((batch, 28, 28, 1)).astype("float32")
            stats, outputs = _time(fns, x, warmup, repeats)
            agreement = float(np.mean(outputs["int8"].argmax(-1)
                                      == outputs["float"].argmax(-1)))
            kept = stats.get("int8, BatchNormalization kept")
            rows.append([batch, name, round(stats["float"]["median_ms"], 3),
                         round(stats["int8"]["median_ms"], 3),
                         round(stats["int8"]["ratio_to_baseline"], 2),
                         round(stats["int8"]["min_ms"] / stats["float"]["min_ms"], 2),
                         None if kept is None else round(kept["ratio_to_baseline"], 2),
                         round(agreement, 2) if batch > 1 else None])
            print(f"model {name} batch {batch}: int8 ÷ float {rows[-1][4]}, "
                  f"BatchNormalization kept {rows[-1][6]}", flush=True)
    return rows


# --------------------------------------------------------------------------- sparse
def _block_sparse(rng, sparsity):
    kb, nb = DENSE_DIM // BLOCK[0], DENSE_DIM // BLOCK[1]
    keep = kb * nb - int(round(sparsity * kb * nb))
    mask = np.zeros(kb * nb, bool)
    mask[rng.choice(kb * nb, keep, replace=False)] = True
    full = np.kron(mask.reshape(kb, nb), np.ones(BLOCK, bool))
    kernel = rng.standard_normal((DENSE_DIM, DENSE_DIM)).astype("float32") / np.sqrt(DENSE_DIM)
    return kernel * full


def bench_sparse(batches, warmup, repeats, rng):
    import keras

    from tfcompress.kernels import SparseDense

    rows, ratios, stats_by_batch = [], {}, {}
    dense = keras.layers.Dense(DENSE_DIM, activation="relu")
    dense.build((None, DENSE_DIM))
    fns = {"dense (float Dense)": _jit(dense), FLOOR: _jit(lambda x: x * 2.0)}
    layers = {}
    for sparsity in SPARSITIES:
        twin = keras.layers.Dense(DENSE_DIM, activation="relu")
        twin.build((None, DENSE_DIM))
        twin.kernel.assign(_block_sparse(rng, sparsity))
        layer = SparseDense.from_dense(twin, block_shape=BLOCK)
        layers[sparsity] = (twin, layer)
        fns[f"SparseDense {sparsity:.0%}"] = _jit(layer)
    for batch in batches:
        x = rng.standard_normal((batch, DENSE_DIM)).astype("float32")
        stats, outputs = _time(fns, x, warmup, repeats)
        base = stats["dense (float Dense)"]
        rows.append([batch, "0 % (dense)", DENSE_DIM ** 2 // (BLOCK[0] * BLOCK[1]),
                     round(base["median_ms"], 3), 1.0, 1.0, None])
        floor = stats[FLOOR]
        rows.append([batch, FLOOR, 0, round(floor["median_ms"], 3),
                     round(floor["ratio_to_baseline"], 3),
                     round(floor["min_ms"] / base["min_ms"], 3), None])
        for sparsity, (twin, layer) in layers.items():
            s = stats[f"SparseDense {sparsity:.0%}"]
            err = _rel_err(outputs[f"SparseDense {sparsity:.0%}"], twin(x).numpy())
            rows.append([batch, f"{sparsity:.0%}", layer.num_blocks, round(s["median_ms"], 3),
                         round(s["ratio_to_baseline"], 3),
                         round(s["min_ms"] / base["min_ms"], 3), float(f"{err:.2g}")])
            ratios[(batch, sparsity)] = s["ratio_to_baseline"]
        in_layers = {"dense (float Dense)": dense,
                     **{f"SparseDense {sp:.0%}": layer for sp, (_, layer) in layers.items()}}
        in_rows, in_stats = _in_graph_rows(
            batch, in_layers, None, x, warmup, repeats, "dense (float Dense)")
        for row in in_rows:  # same columns as above: no "blocks stored" for these
            rows.append([row[0], row[1], None, row[2], row[5], row[6], None])
        stats_by_batch[batch] = {**stats, **in_stats}
        print(f"sparse batch {batch}: " + ", ".join(
            f"{sp:.0%} {ratios[(batch, sp)]:.2f}" for sp in SPARSITIES) + "; in-graph " + ", ".join(
            f"{sp:.0%} {in_stats[IN_GRAPH + f'SparseDense {sp:.0%}']['ratio_to_baseline']:.2f}"
            for sp in SPARSITIES), flush=True)
    return rows, stats_by_batch


# --------------------------------------------------------------------------- accuracy
ACCURACY_HIDDEN = (512, 512)
ACCURACY_TITLE = ("Accuracy cost of 32×32 block vs unstructured pruning: MLP 784-512-512-10, "
                  "hidden Dense kernels pruned, Fashion-MNIST test accuracy")


def _mlp(keras):
    inputs = keras.Input((784,))
    h = inputs
    for i, units in enumerate(ACCURACY_HIDDEN, start=1):
        h = keras.layers.Dense(units, activation="relu", name=f"hidden{i}")(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(h), name="mlp_512")


def _stored_block_fraction(kernel):
    """Fraction of the 32×32 blocks of ``kernel`` holding a nonzero: what a
    ``SparseDense`` would have to store."""
    bk, bn = BLOCK
    rows, cols = -(-kernel.shape[0] // bk), -(-kernel.shape[1] // bn)
    padded = np.zeros((rows * bk, cols * bn), bool)
    padded[:kernel.shape[0], :kernel.shape[1]] = kernel != 0
    return float(padded.reshape(rows, bk, cols, bn).any(axis=(1, 3)).mean())


def _prune_and_finetune(keras, dense, granularity, sparsity, data, settings):
    from tfcompress import pruning

    x, y, xt, yt = data
    steps = settings["finetune_epochs"] * -(-len(x) // settings["batch"])
    frequency = settings["mask_frequency"]
    end = max(frequency, steps // 2 // frequency * frequency)
    pruned = pruning.prune_model(
        dense, layers=[f"hidden{i}" for i in range(1, len(ACCURACY_HIDDEN) + 1)],
        granularity=pruning.Block(BLOCK) if granularity == "block" else granularity,
        threshold="layer",
        schedule=pruning.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=end,
                                         frequency=frequency))
    pruned.compile(keras.optimizers.Adam(settings["finetune_lr"]),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    pruned.fit(x, y, batch_size=settings["batch"], epochs=settings["finetune_epochs"],
               verbose=0, callbacks=[pruning.UpdateMasks()])
    stripped = pruning.strip(pruned)
    stripped.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                     metrics=["accuracy"])
    kernels = [stripped.get_layer(f"hidden{i}").kernel.numpy()
               for i in range(1, len(ACCURACY_HIDDEN) + 1)]
    reached = sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)
    stored = float(np.mean([_stored_block_fraction(k) for k in kernels]))
    return stripped.evaluate(xt, yt, verbose=0)[1], reached, stored


def bench_block_accuracy(settings):
    """Test accuracy after block vs unstructured pruning at each sparsity.

    Returns:
        ``(table, claims)``: one row per sparsity (means over ``settings["seeds"]``)
        and context claims (block − unstructured accuracy at each sparsity).
    """
    import keras

    from tfcompress import data

    (x, y), (xt, yt) = data.load_fashion_mnist_arrays(subset=settings["train_subset"])
    arrays = (x.reshape(len(x), -1), y, xt.reshape(len(xt), -1), yt)
    acc, reached, stored, dense_acc = {}, {}, {}, []
    for seed in settings["seeds"]:
        keras.utils.set_random_seed(seed)
        dense = _mlp(keras)
        dense.compile(keras.optimizers.Adam(settings["lr"]),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        dense.fit(arrays[0], y, batch_size=settings["batch"], epochs=settings["epochs"],
                  verbose=0)
        dense_acc.append(dense.evaluate(arrays[2], yt, verbose=0)[1])
        for sparsity in SPARSITIES:
            for granularity in ("unstructured", "block"):
                keras.utils.set_random_seed(seed)
                a, r, b = _prune_and_finetune(keras, dense, granularity, sparsity, arrays,
                                              settings)
                key = (granularity, sparsity)
                acc.setdefault(key, []).append(a)
                reached.setdefault(key, []).append(r)
                stored.setdefault(key, []).append(b)
                print(f"seed {seed} {granularity} {sparsity:.0%}: accuracy {a:.4f}, "
                      f"stored 32×32 blocks {b:.2f}", flush=True)
    mean = lambda values: float(np.mean(values))  # noqa: E731
    spread = lambda values: float(np.std(values))  # noqa: E731
    rows = [["0 % (dense)", f"{100 * mean(dense_acc):.2f} ± {100 * spread(dense_acc):.2f}",
             "-", "-", None, None, None]]
    claims = []
    for sparsity in SPARSITIES:
        u, b = acc[("unstructured", sparsity)], acc[("block", sparsity)]
        delta = 100 * (mean(b) - mean(u))
        rows.append([f"{sparsity:.0%}", "-",
                     f"{100 * mean(u):.2f} ± {100 * spread(u):.2f}",
                     f"{100 * mean(b):.2f} ± {100 * spread(b):.2f}", round(delta, 2),
                     round(mean(stored[("unstructured", sparsity)]), 3),
                     round(mean(stored[("block", sparsity)]), 3)])
        claims.append({"claim": f"accuracy cost of 32×32 block vs unstructured pruning at "
                                f"{sparsity:.0%} (MLP hidden layers, Fashion-MNIST)",
                       "goal": "context", "measured": f"{delta:+.2f} points", "met": None})
    table = {"title": ACCURACY_TITLE,
             "columns": ["sparsity", "dense accuracy %", "unstructured accuracy %",
                         "block 32×32 accuracy %", "block − unstructured (points)",
                         "32×32 blocks stored, unstructured", "32×32 blocks stored, block"],
             "rows": rows}
    return table, claims


def _accuracy_settings(quick):
    settings = {"model": "MLP 784-512-512-10 (hidden1, hidden2 pruned; head dense)",
                "train_subset": None, "epochs": 4, "finetune_epochs": 3, "batch": 128,
                "lr": 1e-3, "finetune_lr": 5e-4, "mask_frequency": 50,
                "schedule": "cubic PolynomialDecay 0 → target over the first half of "
                            "fine-tuning; layer-wise L2 threshold",
                "block_shape": list(BLOCK), "sparsities": list(SPARSITIES), "seeds": [0, 1]}
    if quick:
        settings.update(train_subset=2048, epochs=1, finetune_epochs=1, mask_frequency=4,
                        seeds=[0])
    return settings


ACCURACY_NOTE = (
    "Block-vs-unstructured accuracy: the same dense MLP (trained `epochs` on the full "
    "training set) is pruned per seed with each granularity to each sparsity (both "
    "hidden kernels, layer-wise threshold, cubic schedule over the first half of "
    "`finetune_epochs`, then fine-tuned to the end) and evaluated on the 10k test "
    "images (mean ± std over seeds). The dense row is that starting model: the pruned "
    "models trained `finetune_epochs` longer, which is why 80 % unstructured beats it; "
    "compare block with unstructured, which had identical training. The 'blocks "
    "stored' columns give the fraction of 32×32 blocks holding any nonzero weight — "
    "what a SparseDense would have to store: the speed-ups of the SparseDense table "
    "need block masks, since unstructured masks leave almost every block occupied.")
TODO_NOTE = ("TODO(lead): add the accuracy cost of block (32×32) vs unstructured pruning "
             "at the same sparsities (the speed-ups above assume block-pruned kernels; an "
             "unstructured 95 %-sparse kernel has almost no all-zero 32×32 blocks).")


def _merge_accuracy(path, table, claims, settings):
    """Puts the accuracy table, claims, settings and note into an existing result file,
    leaving its timing tables, claims, date and environment as they were."""
    record = json.loads(path.read_text())
    record["tables"] = [t for t in record["tables"] if t["title"] != ACCURACY_TITLE] + [table]
    titles = {c["claim"] for c in claims}
    record["claims"] = [c for c in record["claims"] if c["claim"] not in titles
                        and "block vs unstructured" not in c["claim"]] + list(claims)
    record["settings"]["block_accuracy"] = settings
    notes = record.get("notes", "").replace(TODO_NOTE, "").replace(ACCURACY_NOTE, "").strip()
    record["notes"] = f"{notes} {ACCURACY_NOTE}".strip()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def run_accuracy(quick):
    """Runs the block-vs-unstructured accuracy part; merges it into kernels.json."""
    start = time.time()
    settings = _accuracy_settings(quick)
    table, claims = bench_block_accuracy(settings)
    settings["elapsed_s"] = round(time.time() - start)
    for row in table["rows"]:
        print(row)
    path = harness.RESULTS_DIR / "kernels.json"
    if quick:
        return table, claims, settings
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `python -m bench.kernels` "
                                "(all parts) first")
    _merge_accuracy(path, table, claims, settings)
    print(f"merged the accuracy table into {path}")
    return table, claims, settings


# --------------------------------------------------------------------------- main
def _claim(text, goal, value, limit):
    return {"claim": text, "goal": goal, "measured": round(value, 3), "met": value <= limit}


def _measure_once(args, repeats, batches):
    """One full timing pass: ``((dense, conv, sparse, channel, model, depthwise rows), probes,
    raw claims, net-of-floor ratios)``; a raw claim carries its in-graph
    and per-call ratios."""
    import keras

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    dense_rows, dense_stats = bench_dense(batches, args.warmup, repeats, rng)
    conv_rows, conv_stats, probes = bench_conv(batches, args.warmup, repeats, rng)
    sparse_rows, sparse_stats = bench_sparse(batches, args.warmup, repeats, rng)
    channel_rows = bench_conv_channels(batches, args.warmup, repeats, rng)
    model_rows = bench_models(batches, args.warmup, repeats, rng)
    depthwise_rows = bench_depthwise(batches, args.warmup, repeats, rng)
    pointwise_rows = bench_strided_pointwise(batches, args.warmup, repeats, rng)

    def ratio(stats, name, base, in_graph):
        prefix = IN_GRAPH if in_graph else ""
        return stats[prefix + name]["median_ms"] / stats[prefix + base]["median_ms"]

    def claim(text, goal, limit, stats, name, base):
        """Claim on the in-graph ratio (the layer inside a compiled model); the
        per-call ratio (one layer per XLA call, dispatch included) is reported too."""
        return {"claim": text, "goal": goal, "limit": limit,
                "value": ratio(stats, name, base, True),
                "per_call": ratio(stats, name, base, False)}

    claims = []
    for b in batches:
        claims.append(claim(f"QuantizedDense int8 (static) ÷ float Dense, batch {b}", "≤ 0.55",
                            0.55, dense_stats[b], "QuantizedDense int8 static", "float Dense"))
    for b in batches[1:]:
        gemm_q = next(r for r in dense_rows
                      if r[0] == b and r[1].startswith(GEMM_INT8.format("Dense")))
        claims.append({
            "claim": ("Floor of any int8 × int8 Dense under XLA, in-graph: the int8 GEMM at "
                      "the Dense shape (with its input quantization) ÷ the float GEMM, both "
                      f"chained in one XLA call, batch {b}"),
            "goal": "context: at or above 0.55, no formulation on XLA's int8 GEMM can meet "
                    "the 0.55 goal", "limit": None, "value": gemm_q[5], "per_call": None})
    for b in batches:
        claims.append(claim(
            f"QuantizedDense int8 (dynamic, like Keras) ÷ Keras int8 Dense, batch {b}", "≤ 1.0",
            1.0, dense_stats[b], "QuantizedDense int8 dynamic",
            "Keras int8 Dense (model.quantize)"))
    for b in batches:
        claims.append(claim(f"QuantizedConv2D int8 (static) ÷ float Conv2D, batch {b}", "≤ 0.8",
                            0.8, conv_stats[b], "QuantizedConv2D int8 static", "float Conv2D"))
    floor_goal = "context: at or above 0.8, no im2col formulation can meet the 0.8 goal"
    for b in batches:
        gemm_q = next(r[2] for r in conv_rows
                      if r[0] == b and r[1].startswith("GEMM alone") and "int8" in r[1])
        claims.append({
            "claim": ("Floor of any im2col int8 convolution: the int8 GEMM alone (int8 patch "
                      f"matrix given, nothing else) ÷ float Conv2D, per call, batch {b}"),
            "goal": floor_goal, "limit": None,
            "value": gemm_q / conv_stats[b]["float Conv2D"]["median_ms"], "per_call": None})
    for b in batches:
        gemm_q = next(r[2] for r in conv_rows
                      if r[0] == b and r[1].startswith(GEMM_INT8.format("im2col")))
        float_conv = conv_stats[b][IN_GRAPH + "float Conv2D"]["median_ms"] / CHAIN
        claims.append({
            "claim": ("Floor of any im2col int8 convolution, in-graph: the int8 GEMM at the "
                      "im2col shape (with its input quantization) ÷ float Conv2D, both "
                      f"chained in one XLA call, batch {b}"),
            "goal": floor_goal, "limit": None, "value": gemm_q / float_conv, "per_call": None})
    for b in batches:
        for sp, goal in ((0.95, 0.2), (0.8, 0.55)):
            claims.append(claim(f"SparseDense ÷ dense at {sp:.0%} block sparsity, batch {b}",
                                f"≤ {goal}", goal, sparse_stats[b], f"SparseDense {sp:.0%}",
                                "dense (float Dense)"))

    def net(stats, name, base):
        floor = stats[FLOOR]["median_ms"]
        return (stats[name]["median_ms"] - floor) / (stats[base]["median_ms"] - floor)

    net_ratios = {
        "QuantizedDense int8 static ÷ float Dense, batch 1": net(
            dense_stats[1], "QuantizedDense int8 static", "float Dense"),
        "SparseDense 95 % ÷ dense, batch 1": net(
            sparse_stats[1], "SparseDense 95%", "dense (float Dense)"),
        "SparseDense 95 % ÷ dense, batch 64": net(
            sparse_stats[64], "SparseDense 95%", "dense (float Dense)"),
    }
    return ((dense_rows, conv_rows, sparse_rows, channel_rows, model_rows, depthwise_rows,
             pointwise_rows), probes, claims, net_ratios)


def _median_claims(per_run):
    """Claims decided on the median over runs, every run's value kept (``runs``)."""
    claims = []
    for raws in zip(*per_run):
        first, n = raws[0], len(raws)
        value = float(np.median([r["value"] for r in raws]))
        runs = [round(r["value"], 3) for r in raws]
        if first["per_call"] is None:
            claims.append({"claim": first["claim"] + (f" (median of {n} runs)" if n > 1 else ""),
                           "goal": first["goal"], "measured": round(value, 3), "met": None,
                           "runs": runs})
            continue
        per_call = float(np.median([r["per_call"] for r in raws]))
        where = f"median of {n} runs, " if n > 1 else ""
        text = (first["claim"] + f" (in-graph, {CHAIN} layers per XLA call, {where}each run "
                f"{', '.join(f'{v:.2f}' for v in runs)}; one layer per call: {per_call:.3f})")
        claim = _claim(text, first["goal"], value, first["limit"])
        claim.update(per_call=round(per_call, 3), runs=runs)
        claims.append(claim)
    return claims


def run_timing(args):
    """Runs the timing parts (dense, conv, sparse) ``args.runs`` times and writes
    kernels.json: claims on the median ratio over the runs (run-to-run spread on a
    shared 2-core VM is ±0.1), tables of the last run; the accuracy table of an
    existing file is kept."""
    repeats = 3 if args.quick else args.repeats
    batches = (1, 64)
    load_start = os.getloadavg()[0]
    start = time.time()
    per_run, net_runs = [], []
    for run in range(1 if args.quick else args.runs):
        print(f"timing run {run + 1}", flush=True)
        (dense_rows, conv_rows, sparse_rows, channel_rows, model_rows, depthwise_rows,
         pointwise_rows), probes, raw, net_ratios = _measure_once(
            args, repeats, batches)
        per_run.append(raw)
        net_runs.append(net_ratios)
    claims = _median_claims(per_run)
    net_ratios = {k: float(np.median([r[k] for r in net_runs])) for k in net_runs[0]}
    elapsed = time.time() - start
    for name, value in net_ratios.items():
        print(f"net of the dispatch floor: {name}: {value:.3f}")
    for c in claims:
        print(f"{c['claim']}: {c['measured']} (per call {c.get('per_call', '-')}; goal "
              f"{c['goal']}, met={c['met']})")
    print(f"elapsed {elapsed:.0f} s")
    if args.quick:
        return

    columns = ["batch", "variant", "median ms", "p25 ms", "p75 ms", "÷ float (median)",
               "÷ float (min)", "max |Δ| / max |float|"]
    tables = [
        {"title": f"Dense {DENSE_DIM}→{DENSE_DIM} + ReLU under XLA: median time and ratio "
                  "to float Dense", "columns": columns, "rows": dense_rows},
        {"title": f"Conv2D {CONV_SHAPE[0]}×{CONV_SHAPE[1]}×{CONV_SHAPE[2]}→{CONV_FILTERS}, "
                  "3×3 same + ReLU under XLA (layers and alternative int8 formulations)",
         "columns": columns, "rows": conv_rows},
        {"title": f"QuantizedConv2D int8 (static) ÷ float Conv2D by channel count, "
                  f"{CONV_SHAPE[0]}×{CONV_SHAPE[1]}, 3×3 same + ReLU, one layer per call",
         "columns": ["batch", "input channels", "filters", "layer's zero padding", "float ms",
                     "int8 ms", "int8 ÷ float", "unpadded int8 ÷ float",
                     "int8 padded to 4·k inputs, ≥ 32 filters ÷ float"],
         "rows": channel_rows},
        {"title": f"QuantizedDepthwiseConv2D int8 (static) ÷ float DepthwiseConv2D, "
                  f"{CONV_SHAPE[0]}×{CONV_SHAPE[1]}, 3×3 same + ReLU, one layer per call",
         "columns": ["batch", "channels", "float ms", "int8 ms", "int8 ÷ float",
                     "grouped int8 XLA convolution ÷ float", "max |Δ| / max |float|"],
         "rows": depthwise_rows},
        {"title": f"QuantizedConv2D int8 (static) 1×1 stride 2 + ReLU ÷ float Conv2D, "
                  f"in-graph ×{CHAIN} (ms per layer)",
         "columns": ["batch", "input", "input channels", "filters", "float ms", "int8 ms",
                     "int8 ÷ float", "XLA int8 convolution ÷ float"],
         "rows": pointwise_rows},
        {"title": "Whole models under XLA: kernels.convert(model, quantize='int8', "
                  "calibrated) ÷ the float model, one XLA call",
         "columns": ["batch", "model", "float ms", "int8 ms", "int8 ÷ float (median)",
                     "int8 ÷ float (min)", "int8 without BatchNormalization folding ÷ float",
                     "top-1 agreement (random weights)"],
         "rows": model_rows},
        {"title": "Int8 convolution ops probed under XLA", "columns": ["op", "outcome"],
         "rows": [[k, v] for k, v in probes.items()]},
        {"title": f"SparseDense {DENSE_DIM}→{DENSE_DIM}, {BLOCK[0]}×{BLOCK[1]} blocks, "
                  "random block masks, under XLA",
         "columns": ["batch", "block sparsity", "blocks stored", "median ms",
                     "÷ dense (median)", "÷ dense (min)", "max |Δ| / max |dense|"],
         "rows": sparse_rows},
    ]
    load = f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"

    def measured(prefix):
        return next(f"{c['measured']:.2f}" for c in claims if c["claim"].startswith(prefix))

    notes = (
        f"Load average of the 2-core machine during this run: {load}. The claims are "
        f"the median over {len(per_run)} full timing passes (each pass's value listed); the "
        "tables are the last pass. Every ratio "
        "compares variants interleaved in one process, and the min-based ratio is given "
        "next to the median-based one. Two measurements per variant: per call (one "
        "layer per jit call, the dispatch cost of a call included) and in-graph (the "
        f"'in-graph ×{CHAIN}' rows: {CHAIN} applications of the layer chained in one "
        "XLA computation, y ← x + 1e-3·layer(y), so the per-call cost is shared as in a "
        "compiled model; ms per layer). The claims use the in-graph ratio -- the cost of "
        "the layer inside a model -- and list the per-call ratio next to it. "
        "GEMM bound rows (conv): the (N·H·W, 9·C) × (9·C, F) product that every im2col "
        "formulation must perform, int8×int8→int32 (with the input quantization) vs "
        "float32, chained in-graph the same way; where the int8 product alone is not "
        "below 0.8 of the float one, no im2col-based int8 convolution can reach the 0.8 "
        "goal, whatever the patch extraction costs. At batch 1 the int8 static, int8 dynamic and weight-only "
        "QuantizedDense rows run the same computation (the weight-only product), so "
        "their spread shows the noise. Every jit call pays a fixed dispatch cost (the 'dispatch "
        "floor' rows: an XLA function computing x * 2), which bounds the batch-1 ratios "
        "from below; in a whole model it is paid once per call, not per layer. Net of "
        "the floor (median - floor) / (median_base - floor): "
        + "; ".join(f"{k} {v:.2f}" for k, v in net_ratios.items()) + ". "
        "Dense: the int8 kernel is stored output-major (units, in) because XLA's CPU "
        "backend lowers an int8 vector × matrix product with the input-major layout "
        "(Keras's) to a strided loop (the 'input-major' and Keras rows at batch 1); "
        "at batch 1 QuantizedDense multiplies the float input row by the int8 weights "
        "(one fused pass over 4× fewer bytes), since XLA would fuse the input "
        "quantization into that pass and recompute it per output. The row is first "
        "divided by a runtime scale (the stored input scale, else its max |x|; undone "
        "on the outputs): XLA's CPU fusion pass keeps "
        "a division out of a consumer that reuses its elements, so the row is "
        "materialized once; without it the pass fused the previous layer's epilogue "
        "(scale, bias, ReLU, the chain's residual) into the dot loop and recomputed it "
        "for every one of the 2048 outputs, which made the in-graph batch-1 layer 2× "
        "slower (0.57 of float on the Xeon run of kernels.json at commit 5ce8a2b, "
        "where per call it was 0.52). The row is then gathered through an index "
        "vector, so that after Flatten the loop reads a plain 2-D row, not a view of "
        "an N-D buffer whose index arithmetic LLVM does not vectorize. Weight-only int8 "
        "(float compute) is faster than float only at batch 1; a batch dequantizes the "
        "kernel once per call and runs one float GEMM (through the batch-1 row path, "
        "XLA laid the gathered rows out input-major, a transposed-operand GEMM: 11.8× "
        "the float layer in-graph at batch 64 in kernels.json at commit 311845e). "
        "Int4 packs pairs of output rows per byte; decoding fuses into the batch-1 dot. "
        "Conv: tf.nn.conv2d has no int8 kernel under XLA and extract_patches no XLA "
        "kernel at all (probes); QuantizedConv2D uses one XLA int8×int8→int32 "
        "convolution (XlaConvV2). XLA's CPU backend has no int8 route to oneDNN (its "
        "oneDNN contraction rewriter takes F32/BF16/F16 only), so every int8 product "
        "-- the convolution, the int8 dot, an im2col GEMM -- runs on XLA's own loops "
        "or Eigen's generic integer kernels, without VNNI's int8 dot-product "
        "instructions even where the CPU has them (environment.cpu_simd). What int8 "
        "then gains over float depends on the CPU's float throughput, and the two "
        "machines these benchmarks have run on differ: on the Intel Xeon of the "
        "previous run (kernels.json at commit 5ce8a2b) the int8 convolution tied float "
        "Conv2D (0.96 / 0.94 in-graph, batch 1 / 64), the int8 GEMM at the im2col shape "
        "was slower than float (1.17 / 1.38) and the int8 Dense GEMM at batch 64 ran at "
        f"0.37 of float; on this run's CPU (environment.cpu) the int8 convolution runs "
        f"at {measured('QuantizedConv2D int8 (static) ÷ float Conv2D, batch 1')} / "
        f"{measured('QuantizedConv2D int8 (static) ÷ float Conv2D, batch 64')} of float "
        "and the int8 Dense GEMM at batch 64 at "
        f"{measured('Floor of any int8 × int8 Dense')} of the float GEMM. The Dense "
        "'GEMM bound' rows time that product alone (with its input quantization): the "
        "floor of any QuantizedDense formulation on XLA's int8 GEMM. The "
        "GEMM rows of the conv table time the (N·H·W, 288) × (288, 64) product every "
        "im2col formulation must perform; XLA's float Conv2D never builds that 9×-larger "
        "patch matrix, which is why no im2col variant beats the XLA int8 convolution. "
        "At batch 1 a float Dense reads a 16 MB kernel and the int8 layer 4 MB; "
        "chained (the in-graph rows), one layer's kernel can stay in a large L3 cache, "
        "which narrows the gap. "
        "Sparse: gather → batched 32×32 block matmul → unsorted_segment_sum. "
        "Channel-count table: QuantizedConv2D pads the int8 convolution with zeros to a "
        "multiple of 4 input channels and, on fewer than 32 input channels, to at least "
        "32 filters (extra outputs sliced off), the shapes XLA's int8 convolution runs "
        "fast at on the CPU where this was measured; the last two columns are the same "
        "convolution unpadded and padded to both. "
        "Models table: the Fashion-MNIST models of bench/export as "
        "kernels.convert rebuilds them (every Conv2D and Dense int8, each "
        "BatchNormalization folded into the convolution before it unless the column "
        "says kept, static input scales calibrated on 64 random images), weights at initialization, so it "
        "measures speed only; the top-1 agreement of random-weight models is a "
        "sanity check, not an accuracy (tests/kernels and tutorial 01 check that). "
        "Strided 1×1 table: from 16 input channels on, QuantizedConv2D computes a "
        "1×1 stride-2 convolution (a ResNet projection) as a strided slice of the int8 "
        "input and one int8 matmul; the last column is the XLA int8 convolution it "
        "replaced. Depthwise table: XLA runs DepthwiseConv2D (float) and a grouped int8 "
        "convolution with one channel per group as scalar loop nests; "
        "QuantizedDepthwiseConv2D sums the kernel taps' strided windows times their "
        "weights instead (exact integer arithmetic in float32), one vectorized loop. "
        "Layers XLA runs slower in int8 than in float (few channels, tiny Dense "
        "layers at batch 1) can make a small model no faster than float."
    )
    path = harness.RESULTS_DIR / "kernels.json"
    previous = json.loads(path.read_text()) if path.exists() else None
    path = harness.write_result(
        "kernels",
        "Execution kernels under XLA: int8/int4 Dense and Conv2D, block-sparse Dense",
        settings={"batches": list(batches), "repeats": repeats,
                  "repeats_batch_1": repeats * BATCH1_REPEAT_FACTOR, "warmup": args.warmup,
                  "runs": len(per_run),
                  "dense": f"{DENSE_DIM}→{DENSE_DIM}, ReLU",
                  "conv": f"{CONV_SHAPE}→{CONV_FILTERS}, 3×3, same, ReLU",
                  "sparse_blocks": list(BLOCK), "sparsities": list(SPARSITIES),
                  "static_scale": "max |x| / 127 over random-normal calibration data",
                  "xla": "every variant in tf.function(jit_compile=True)",
                  "elapsed_s": round(elapsed)},
        tables=tables, claims=claims, notes=notes)
    print(f"wrote {path}")
    kept = [t for t in (previous or {}).get("tables", []) if t["title"] == ACCURACY_TITLE]
    if kept:
        _merge_accuracy(path, kept[0], [c for c in previous["claims"]
                                        if "block vs unstructured" in c["claim"]],
                        previous["settings"].get("block_accuracy", {}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "timing", "accuracy"), default="all",
                        help="timing tables, the block-vs-unstructured accuracy table "
                             "(merged into the existing result), or both")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3,
                        help="full timing passes; claims use the median over them")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="3 repeats / a tiny training run, no result file (smoke test)")
    args = parser.parse_args(argv)
    if args.part in ("all", "timing"):
        run_timing(args)
    if args.part in ("all", "accuracy"):
        run_accuracy(args.quick)


if __name__ == "__main__":
    main()
