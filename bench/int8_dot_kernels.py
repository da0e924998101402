"""Which native kernel XLA runs for each int8 product route, and which instructions it uses.

``bench/int8_gemm_routes`` times every int8 product route XLA offers at the Dense
batch-64 shape (64×2048 · 2048×2048); none gets below ~0.55 of the float GEMM on a
CPU with VNNI. This script says why, from the machine code that runs: each route
is one jit-compiled product called in a loop in its own process under
``perf record``; the table gives the hottest native function (TensorFlow's
libraries, Python's own frames left out), its share of the samples, and the
multiply instructions in that function's code (``perf annotate``):

* ``vpdpbusd`` (AVX-512 VNNI: 64 u8×s8 multiply-accumulates per 512-bit instruction,
  4× a float ``vfmadd``'s 16) and ``vpdpwssd`` (VNNI, 32 s16×s16);
* ``vpmaddwd`` / ``vpmaddubsw`` (AVX-512BW, 32 multiplies then a separate add),
  usually after ``vpmovsxbw`` / ``vpmovzxbw`` sign/zero extension of int8 to int16;
* ``vpmulld`` (int32 multiply), ``vfmadd…ps`` (float FMA), ``vdpbf16ps`` (bf16 pairs).

Each route's process also reports its milliseconds per call (one product per jit
call, dispatch included, routes not interleaved: a sanity figure; the ratios are
bench/int8_gemm_routes' side-by-side ones). A route XLA refuses, or that aborts the
process, is listed with XLA's message.

Needs Linux ``perf`` (Debian package ``linux-perf``) with permission to sample
(root, or ``kernel.perf_event_paranoid`` ≤ 1).

Usage: ``python -m bench.int8_dot_kernels [--seconds 5]``; writes
``bench/results/int8_dot_kernels.json``.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import harness

BATCH = 64
DIM = 2048
YNN_FUSION = "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT"
# (name, operand dtypes, formulation, XLA_FLAGS)
ROUTES = {
    "float32 × float32 → float32 dot (float Dense's product)":
        ("float32", "float32", "dot", ""),
    "int8 × int8 → int32 dot (QuantizedDense's product)": ("int8", "int8", "dot", ""),
    "int8 × int8 → int32 dot, W as (units, in)": ("int8", "int8", "dot_transposed", ""),
    "uint8 × int8 → int32 dot (the VNNI operand form)": ("uint8", "int8", "dot", ""),
    "uint8 × uint8 → int32 dot": ("uint8", "uint8", "dot", ""),
    "int8 × int8 → int32 1×1 convolution": ("int8", "int8", "conv", ""),
    "uint8 × int8 → int32 1×1 convolution": ("uint8", "int8", "conv", ""),
    "int8 × int8 → int32 dot, YNNPACK library fusion of dots":
        ("int8", "int8", "dot", YNN_FUSION),
    "uint8 × int8 → int32 dot, YNNPACK library fusion of dots":
        ("uint8", "int8", "dot", YNN_FUSION),
    "bfloat16 × bfloat16 → float32 dot, bf16 arguments": ("bfloat16", "bfloat16", "dot", ""),
    "bfloat16 × bfloat16 → float32 dot, cast from float32 inside the call":
        ("float32", "bfloat16", "dot_cast_lhs", ""),
    # the other shapes the int8 layers run: one row (QuantizedDense at batch 1) and
    # QuantizedConv2D's 3×3 convolution of bench/kernels
    "int8 × int8 → int32 dot, batch 1": ("int8", "int8", "dot_row", ""),
    "float32 3×3 convolution, 64×28×28×32 → 64": ("float32", "float32", "conv3x3", ""),
    "int8 × int8 → int32 3×3 convolution, 64×28×28×32 → 64":
        ("int8", "int8", "conv3x3", ""),
}
# operand shapes (x, w) by formulation; every other one is (BATCH, DIM) · (DIM, DIM)
SHAPES = {"dot_row": ((1, DIM), (DIM, DIM)),
          "conv3x3": ((BATCH, 28, 28, 32), (3, 3, 32, 64))}
MULTIPLY_INSTRUCTIONS = ("vpdpbusd", "vpdpwssd", "vpmaddubsw", "vpmaddwd", "vpmulld",
                         "vdpbf16ps", "vfmadd", "vpmovsxbw", "vpmovzxbw")
VNNI = ("vpdpbusd", "vpdpwssd")
JIT_CODE = "XLA-compiled code (JIT, no symbols)"
OWN_PROCESS = ("libpython", "python3", "[kernel", "ld-linux", "libc.so", "libc-", "[unknown]",
               "openblas")


# --------------------------------------------------------------------------- worker
def _operand(rng, dtype, shape):
    import tensorflow as tf

    if dtype in ("float32", "bfloat16"):
        return tf.cast(tf.constant(rng.integers(-127, 128, shape).astype("float32")), dtype)
    low, high = (0, 256) if dtype == "uint8" else (-127, 128)
    return tf.constant(rng.integers(low, high, shape).astype(dtype))


def _product(formulation, out_type):
    """``fn(x, w)``: the route's single XLA product (a dot or a convolution)."""
    import tensorflow as tf

    from bench.int8_gemm_routes import _dot
    from tfcompress.kernels._conv import xla_conv

    if formulation in ("dot", "dot_row"):
        return lambda x, w: _dot(x, w, 1, 0, out_type)
    if formulation == "dot_transposed":
        return lambda x, w: tf.transpose(_dot(w, x, 1, 1, out_type))
    if formulation == "dot_cast_lhs":
        return lambda x, w: _dot(tf.cast(x, tf.bfloat16), w, 1, 0, out_type)
    if formulation == "conv":
        return lambda x, w: tf.reshape(
            xla_conv(tf.reshape(x, (1, 1, BATCH, DIM)), tf.reshape(w, (1, 1, DIM, DIM)),
                     (1, 1), [[0, 0], [0, 0]], (1, 1), 1, out_type), (BATCH, DIM))
    if formulation == "conv3x3":
        return lambda x, w: xla_conv(x, w, (1, 1), [[1, 1], [1, 1]], (1, 1), 1, out_type)
    raise ValueError(f"formulation must be dot, dot_row, dot_transposed, dot_cast_lhs, conv "
                     f"or conv3x3; got {formulation!r}")


def run_worker(route, seconds):
    """Calls the route's product in a loop for ``seconds``; prints ms per call as JSON."""
    import tensorflow as tf

    lhs_dtype, rhs_dtype, formulation, _ = ROUTES[route]
    rng = np.random.default_rng(0)
    x_shape, w_shape = SHAPES.get(formulation, ((BATCH, DIM), (DIM, DIM)))
    x = _operand(rng, lhs_dtype, x_shape)
    w = _operand(rng, rhs_dtype, w_shape)
    out_type = tf.int32 if "int" in rhs_dtype else tf.float32
    product = _product(formulation, out_type)
    # the whole product is returned: a reduction fused after the dot changes what XLA
    # emits (and a slice of the result would let XLA shrink the dot)
    fn = tf.function(product, jit_compile=True)
    try:
        fn(x, w).numpy()
    except Exception as error:  # noqa: BLE001 - XLA's refusal is the result
        harness.emit_result(
            {"refused": f"{type(error).__name__}: {harness.last_error_line(error)[:300]}"})
        return
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(x, w).numpy()
        calls += 1
    ms = (time.perf_counter() - start) / calls * 1e3
    harness.emit_result({"ms_per_call": ms, "calls": calls})


# --------------------------------------------------------------------------- parent
def _require_perf():
    perf = shutil.which("perf")
    if perf is None:
        raise SystemExit("bench.int8_dot_kernels needs Linux perf on PATH "
                         "(Debian: apt-get install linux-perf); none was found")
    probe = subprocess.run([perf, "stat", "-e", "task-clock", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise SystemExit(f"perf cannot sample here (perf stat exit {probe.returncode}: "
                         f"{probe.stderr.strip()[-200:]}); run as root or set "
                         "kernel.perf_event_paranoid to 1")
    return perf


def _hottest_native(perf, data):
    """(function, share %) of the hottest function outside Python, libc and the kernel.

    Code XLA compiled itself has no symbols (perf lists it per address under a
    ``[JIT]`` object): its samples are summed into one entry, ``JIT_CODE``.
    """
    report = subprocess.run(
        [perf, "report", "-i", data, "--stdio", "--sort", "dso,symbol", "--percent-limit",
         "0.01"], capture_output=True, text=True).stdout
    shares = {}
    for line in report.splitlines():
        # perf pads the symbol column and may append empty '-' columns
        match = re.match(r"\s*([\d.]+)%\s+(\[JIT\] tid \d+|\S+)\s+\[[.k]\]\s+(.+?)(\s+-)*\s*$",
                         line)
        if match is None or any(tag in match.group(2) for tag in OWN_PROCESS):
            continue
        symbol = JIT_CODE if match.group(2).startswith("[JIT]") else match.group(3)
        shares[symbol] = shares.get(symbol, 0.0) + float(match.group(1))
    if not shares:
        return None, 0.0
    symbol = max(shares, key=shares.get)
    return symbol, round(shares[symbol], 2)


def _instruction_counts(perf, data, symbol):
    """Static counts of MULTIPLY_INSTRUCTIONS in ``symbol``'s disassembly."""
    listing = subprocess.run([perf, "annotate", "-i", data, "--stdio", "-s", symbol],
                             capture_output=True, text=True).stdout
    mnemonics = re.findall(r":\s+(v[a-z0-9]+)\b", listing)
    counts = {}
    for name in MULTIPLY_INSTRUCTIONS:
        found = sum(1 for m in mnemonics if m.startswith(name))
        if found:
            counts[name] = found
    return counts


def _profile_route(perf, route, seconds, workdir):
    data = os.path.join(workdir, "perf.data")
    result, done = harness.run_worker(
        [perf, "record", "-q", "-o", data, "--", sys.executable, "-m", "bench.int8_dot_kernels",
         "--worker", route, "--seconds", str(seconds)], ROUTES[route][3])
    if result is None:
        # no RESULT: the process died (an XLA CHECK failure aborts it)
        lines = [line for line in done.stderr.splitlines()
                 if line.strip() and not line.lstrip().startswith("@")]  # '@': stack frames
        checks = [line for line in lines if "Check failed" in line or "RET_CHECK" in line]
        return {"refused": f"process exit {done.returncode}: "
                           f"{(checks or lines or [''])[-1].strip()[:300]}"}
    if "refused" in result:
        return result
    symbol, share = _hottest_native(perf, data)
    result.update(symbol=symbol, share=share,
                  instructions=(_instruction_counts(perf, data, symbol)
                                if symbol not in (None, JIT_CODE) else {}))
    return result


def _int8_kernel_families():
    """{YNNPACK int8 dot kernel family: instruction sets} in TensorFlow's library (``nm``)."""
    import tensorflow as tf

    nm = shutil.which("nm")
    library = os.path.join(os.path.dirname(tf.__file__), "libtensorflow_cc.so.2")
    if nm is None or not os.path.exists(library):
        return {}
    symbols = subprocess.run([nm, "-C", library], capture_output=True, text=True).stdout
    families = {}
    # e.g. ynn::dot_uint8_int8_int32_6x32x4_1x16x4_avx512vnni
    for name, isa in set(re.findall(
            r"ynn::(dot_u?int8_u?int\d+_int32)_\d+x\d+x\d+_\d+x\d+x\d+_?(\w*)", symbols)):
        families.setdefault(name, set()).add(isa or "portable C")
    return {name: sorted(isas) for name, isas in sorted(families.items())}


def _row(route, result):
    instructions = result["instructions"]
    listed = ", ".join(f"{name}×{count}" for name, count in instructions.items()) or "none"
    vnni = sum(instructions.get(name, 0) for name in VNNI)
    return [route, result["symbol"], round(result["share"], 1), listed, vnni,
            round(result["ms_per_call"], 2)]


def run(args):
    perf = _require_perf()
    start = time.time()
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for route in ROUTES:
            print(f"profiling: {route}", flush=True)
            results[route] = _profile_route(perf, route, args.seconds, workdir)
            print(f"  {results[route]}", flush=True)
    rows = [_row(r, res) for r, res in results.items() if "refused" not in res]
    families = _int8_kernel_families()
    refusals = [[r, res["refused"]] for r, res in results.items() if "refused" in res]
    layer_route = "int8 × int8 → int32 dot (QuantizedDense's product)"
    layer = results[layer_route]
    vnni_routes = [row for row in rows if row[4] > 0]
    claims = [
        {"claim": "VNNI multiply-accumulate instructions (vpdpbusd, vpdpwssd) in the kernel "
                  f"XLA runs for QuantizedDense's int8 × int8 → int32 dot ({layer['symbol']})",
         "goal": "context: with none, the kernel multiplies through vpmaddwd on "
                 "int8 sign-extended to int16 (at most 2× the float FMA's "
                 "multiply-accumulates per instruction), so no int8 Dense reaches "
                 "bench/kernels' 0.55 of float once quantization is added",
         "measured": sum(layer["instructions"].get(name, 0) for name in VNNI), "met": None},
        {"claim": "Routes whose hottest kernel uses VNNI, among those XLA accepts",
         "goal": "context: TensorFlow's library has VNNI int8 kernels only for "
                 + (", ".join(name for name, isas in families.items()
                              if any("vnni" in isa for isa in isas)) or "no operand types")
                 + " (last table); XLA refuses a dot of mixed operand types",
         "measured": len(vnni_routes), "met": None},
    ]
    settings = {"batch": BATCH, "dim": DIM, "seconds_per_route": args.seconds,
                "routes": {name: {"lhs": spec[0], "rhs": spec[1], "formulation": spec[2],
                                  "xla_flags": spec[3]} for name, spec in ROUTES.items()},
                "elapsed_s": round(time.time() - start)}
    notes = (
        "One process per route under `perf record` (default sampling), calling a jit-compiled "
        f"product ({BATCH}×{DIM} · {DIM}×{DIM} unless the route names another shape) in a "
        "loop and copying it to the host. "
        "'hottest native function' skips Python's, the kernel's and libc's frames; its "
        "instruction counts are static (how often each mnemonic appears in its code, from "
        "`perf annotate`), telling which multiply the kernel is built on, not how often it "
        "ran. 'ms per call' is the profiled loop's (one route per process, not interleaved, "
        "dispatch and host copy included, perf attached): a sanity figure, not a timing to "
        "compare; bench/int8_gemm_routes has the side-by-side ratios. A route whose process "
        "aborted (an XLA CHECK failure) is listed with the failed check.")
    tables = [
        {"title": f"Native kernel behind each product route ({BATCH}×{DIM} · {DIM}×{DIM} "
                  "unless named)",
         "columns": ["route", "hottest native function", "% of samples",
                     "multiply instructions in its code", "VNNI instructions",
                     "ms per call (profiled loop)"],
         "rows": rows},
        {"title": "Routes XLA refused or that aborted the process", "columns": ["route", "error"],
         "rows": refusals},
        {"title": "YNNPACK int8 dot kernels in TensorFlow's library (nm), by operand types",
         "columns": ["kernel family", "instruction sets"],
         "rows": [[name, ", ".join(isas)] for name, isas in families.items()]},
    ]
    path = harness.write_result(
        "int8_dot_kernels", "Native kernels behind XLA's int8 product routes (perf)",
        settings, tables, claims, notes)
    print(f"wrote {path}")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="profiled loop length per route (default 5)")
    parser.add_argument("--worker", metavar="ROUTE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error(f"--seconds must be positive; got {args.seconds}")
    if args.worker is not None:
        if args.worker not in ROUTES:
            parser.error(f"--worker must name one of ROUTES; got {args.worker!r}")
        run_worker(args.worker, args.seconds)
    else:
        run(args)


if __name__ == "__main__":
    main()
