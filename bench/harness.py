"""Side-by-side timing and result recording shared by every benchmark script.

Timings follow the benchmark protocol of DESIGN.md: the callables being compared run
in one process, interleaved (A, B, A, B, ... with the order rotated each round so
neither always runs first), after a warm-up; the figure of merit is the ratio of
medians. Absolute times are context only.
"""

import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import statistics
import subprocess
import time

import numpy as np

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
_PACKAGES = (
    "tensorflow", "keras", "numpy", "tensorly", "ai-edge-litert", "tf_keras",
    "tensorflow-model-optimization", "scikit-learn", "jax",
)


def time_side_by_side(callables, warmup=3, repeats=20, baseline=None):
    """Times several zero-argument callables interleaved in one process.

    Args:
        callables: dict ``name -> fn``; each ``fn()`` performs one unit of work
            (one training step, one inference) and blocks until it is done.
        warmup: untimed calls of each callable before measuring (tracing, XLA
            compilation, caches).
        repeats: timed rounds; each round calls every callable once, in an order
            rotated by one each round.
        baseline: name whose median is the denominator of the ratios; defaults
            to the first key.

    Returns:
        dict ``name -> {"median_ms", "p25_ms", "p75_ms", "min_ms", "stdev_ms",
        "repeats", "ratio_to_baseline"}`` plus a ``"_baseline"`` key.

    Example:
        >>> stats = time_side_by_side({"plain": step_a, "pruned": step_b})
        >>> stats["pruned"]["ratio_to_baseline"]
    """
    if not callables:
        raise ValueError("callables must hold at least one callable; received: {}")
    if repeats < 3:
        raise ValueError(f"repeats must be >= 3; received: repeats={repeats}")
    names = list(callables)
    baseline = names[0] if baseline is None else baseline
    if baseline not in callables:
        raise ValueError(f"baseline must be one of {names}; received: baseline={baseline!r}")
    for name in names:
        for _ in range(warmup):
            callables[name]()
    samples = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            callables[name]()
            samples[name].append((time.perf_counter() - start) * 1e3)
    stats = {}
    for name, values in samples.items():
        quartiles = statistics.quantiles(values, n=4)
        stats[name] = {
            "median_ms": statistics.median(values),
            "p25_ms": quartiles[0],
            "p75_ms": quartiles[2],
            "min_ms": min(values),
            "stdev_ms": statistics.stdev(values),
            "repeats": repeats,
        }
    base = stats[baseline]["median_ms"]
    for name in names:
        stats[name]["ratio_to_baseline"] = stats[name]["median_ms"] / base
    stats["_baseline"] = baseline
    return stats


def _cpuinfo(field):
    """The value of ``field`` in /proc/cpuinfo (first CPU), or None."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_model():
    return _cpuinfo("model name") or platform.processor() or "unknown"


_SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def _cpu_simd_flags():
    """The CPU's vector extensions that decide int8 and float kernel speed."""
    present = set((_cpuinfo("flags") or "").split())
    return [flag for flag in _SIMD_FLAGS if flag in present]


def _git_commit():
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=RESULTS_DIR.parent, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def litert_interpreter(path, batch, threads=1, builtin=False):
    """A LiteRT interpreter for ``path`` resized to ``batch`` examples.

    ``builtin`` selects the built-in kernels without the default XNNPACK delegate
    (which rejects some sparse int8 models).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {"num_threads": threads}
    if builtin:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_path=str(path), **kwargs)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], (batch,) + tuple(detail["shape"][1:]))
    interpreter.allocate_tensors()
    return interpreter


def litert_invoker(interpreter, x):
    """``call() -> output``: one inference on float ``x`` (quantized first when the
    file's input tensor is integer)."""
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    if inp["dtype"] != np.float32:
        x = np.round(x / scale + zero).astype(inp["dtype"])

    def call():
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])
    return call


RESULT_PREFIX = "RESULT "


def emit_result(record):
    """Prints a worker process's result for :func:`run_worker` (one JSON line)."""
    print(RESULT_PREFIX + json.dumps(record), flush=True)


def run_worker(command, xla_flags=""):
    """Runs a benchmark worker process (XLA reads its flags once per process).

    Returns:
        ``(record, completed)``: the record the worker passed to :func:`emit_result`
        (``None`` if it printed none, e.g. it crashed) and the ``CompletedProcess``.
    """
    env = {**os.environ, "XLA_FLAGS": xla_flags, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, env=env, capture_output=True, text=True,
                          cwd=RESULTS_DIR.parent.parent)
    records = [json.loads(line[len(RESULT_PREFIX):]) for line in done.stdout.splitlines()
               if line.startswith(RESULT_PREFIX)]
    return (records[-1] if records else None), done


def last_error_line(error):
    """The last informative line of a TensorFlow / XLA error message (tracebacks,
    "in user code:" headers and node annotations left out)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    informative = [line for line in lines if "user code" not in line
                   and not line.startswith(("File ", "[[", "Stack trace"))]
    return (informative or lines or [""])[-1]


def environment():
    """Describes the machine and the installed versions of the packages that matter."""
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_simd": _cpu_simd_flags(),
        "cpu_count": os.cpu_count(),
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "packages": versions,
        "git_commit": _git_commit(),
    }


def write_result(name, title, settings, tables, claims=(), notes=""):
    """Writes ``bench/results/<name>.json`` atomically.

    Args:
        name: file stem, e.g. ``"train_step"``.
        title: one-line heading used in BENCHMARKS.md.
        settings: dict of everything needed to rerun (models, batch, epochs, seeds).
        tables: list of ``{"title", "columns", "rows"}`` dicts (rows are lists).
        claims: list of ``{"claim", "goal", "measured", "met"}`` dicts, the
            figures a benchmark exists to check; ``met`` is True/False/None.
        notes: free text (what the numbers mean, what did not reproduce).

    Returns:
        The path written.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name,
        "title": title,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "settings": settings,
        "tables": list(tables),
        "claims": list(claims),
        "notes": notes,
    }
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=float) + "\n")
    os.replace(tmp, path)
    return path
