"""``report``: parameters, sparsity, bit-width, size and latency of a model or a file.

One call describes a Keras model, a ``.tflite`` file or a SavedModel folder the same
way — what it stores (parameters, nonzeros, bits per weight), what it weighs (bytes
raw and gzipped, the size TFMOT's guides compare) and how fast it runs (the LiteRT
interpreter with a fixed thread count for ``.tflite`` files, an XLA-compiled call for
Keras models, the ``serve`` function for SavedModels).
"""

import dataclasses
import gzip
import io
import os
import pathlib
import statistics
import time

import numpy as np

from tfcompress.export import _weights

KERAS_SIZE_NOTE = ("model variables (model.weights, no optimizer state) in their stored "
                   "dtypes, as an uncompressed .npz")
TFLITE_SIZE_NOTE = "the .tflite file"
SAVED_MODEL_SIZE_NOTE = "all files of the SavedModel folder (gzipped: each file, summed)"


@dataclasses.dataclass
class ModelReport:
    """What :func:`report` measured. ``str(report)`` is a readable table.

    Attributes:
        source: the model's name or the file's path.
        format: ``"keras"``, ``"tflite"`` or ``"saved_model"``.
        parameters: logical weight count (packed int4 and sparse-encoded weights
            count their dense shape; sparse indices and shape constants do not count).
        nonzeros: nonzero weights among ``parameters``.
        bits: ``{bits per element: parameter count}``, dtype-based (int4 kernels 4).
        size_bytes: bytes of what ``size_of`` names.
        gzip_bytes: the same bytes gzipped (level 9).
        size_of: which bytes were measured.
        latency_ms: median milliseconds of one call, by runtime (``"litert"``,
            ``"keras_xla"``, ``"saved_model"``); empty when latency was not measured.
        latency_settings: batch, threads, warm-up, repeats and how each runtime ran.
        weights: one dict per stored tensor (``name, shape, dtype, bits, params,
            nonzeros, kind, encoding``; see ``tfcompress.export._weights``).
        notes: anything the numbers depend on (e.g. the model was stripped first).
    """

    source: str
    format: str
    parameters: int
    nonzeros: int
    bits: dict
    size_bytes: int
    gzip_bytes: int
    size_of: str
    latency_ms: dict
    latency_settings: dict
    weights: list
    notes: list = dataclasses.field(default_factory=list)

    @property
    def sparsity(self):
        """Fraction of the parameters that are zero."""
        return 1.0 - self.nonzeros / self.parameters if self.parameters else 0.0

    @property
    def bits_per_weight(self):
        """Mean stored bits per parameter (dtype-based, sparsity not counted)."""
        total = sum(self.bits.values())
        return sum(b * n for b, n in self.bits.items()) / total if total else 0.0

    @property
    def gzip_ratio(self):
        """``size_bytes ÷ gzip_bytes``: how much of the file is redundancy (zeros)."""
        return self.size_bytes / self.gzip_bytes if self.gzip_bytes else float("nan")

    def to_dict(self):
        """A JSON-ready dict of every field plus ``sparsity``, ``bits_per_weight`` and
        ``gzip_ratio``."""
        out = dataclasses.asdict(self)
        out["bits"] = {str(k): v for k, v in self.bits.items()}
        out.update(sparsity=self.sparsity, bits_per_weight=self.bits_per_weight,
                   gzip_ratio=self.gzip_ratio)
        return out

    def summary(self):
        """The headline figures, one per line."""
        bits = ", ".join(f"{b}-bit: {n:,}" for b, n in sorted(self.bits.items(), reverse=True))
        lines = [
            f"report of {self.source} ({self.format})",
            f"  parameters       {self.parameters:,}",
            f"  nonzeros         {self.nonzeros:,} (sparsity {100 * self.sparsity:.2f} %)",
            f"  bits per weight  {self.bits_per_weight:.2f} ({bits or 'no weights'})",
            f"  size             {self.size_bytes:,} B raw, {self.gzip_bytes:,} B gzipped "
            f"(raw ÷ gzipped {self.gzip_ratio:.2f}) — {self.size_of}",
        ]
        settings = self.latency_settings
        for runtime, ms in self.latency_ms.items():
            how = settings.get(runtime, "")
            lines.append(f"  latency {runtime:<12} {ms:.3f} ms (batch {settings['batch']}, "
                         f"median of {settings['repeats']}{', ' + how if how else ''})")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def table(self):
        """The per-tensor table."""
        headers = ["tensor", "shape", "dtype", "bits", "params", "nonzeros", "kind"]
        body = [[w["name"] if len(w["name"]) <= 48 else "…" + w["name"][-47:],
                 "×".join(map(str, w["shape"])) or "scalar", w["dtype"],
                 str(w["bits"]), f"{w['params']:,}", f"{w['nonzeros']:,}",
                 w["kind"] if w["encoding"] == "dense" else f"{w['kind']}, {w['encoding']}"]
                for w in self.weights]
        widths = [max(len(row[i]) for row in [headers] + body) for i in range(len(headers))]
        lines = [_format_row(headers, widths), "-+-".join("-" * w for w in widths)]
        return "\n".join(lines + [_format_row(row, widths) for row in body])

    def __str__(self):
        return self.summary() + "\n\n" + self.table()


def _format_row(cells, widths, numeric=(3, 4, 5)):
    return " | ".join(c.rjust(w) if i in numeric else c.ljust(w)
                      for i, (c, w) in enumerate(zip(cells, widths))).rstrip()


# ----------------------------------------------------------------------------- checks
def _check_positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; received: {name}={value!r}")
    return int(value)


def _kind_of(model_or_file):
    """``("keras", model)``, ``("tflite", path)`` or ``("saved_model", path)``."""
    import keras

    if isinstance(model_or_file, keras.Model):
        return "keras", model_or_file
    if not isinstance(model_or_file, (str, os.PathLike)):
        raise ValueError(
            "model_or_file must be a keras.Model, a .tflite file path or a SavedModel "
            f"folder; received: model_or_file={model_or_file!r} of type "
            f"{type(model_or_file).__name__}")
    path = pathlib.Path(model_or_file)
    if not path.exists():
        raise FileNotFoundError(
            "model_or_file must be an existing .tflite file or SavedModel folder; "
            f"received: model_or_file={str(model_or_file)!r} (no such file or folder)")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ValueError(
                "model_or_file is a folder without saved_model.pb, so not a SavedModel; "
                f"received: model_or_file={str(model_or_file)!r}")
        return "saved_model", path
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] != b"TFL3":
        raise ValueError(
            "model_or_file is not a TFLite flatbuffer (its file identifier is not "
            f"'TFL3'); received: model_or_file={str(model_or_file)!r}")
    return "tflite", path


def _totals(rows):
    weights = [r for r in rows if r["kind"] == "weight"]
    bits = {}
    for r in weights:
        bits[r["bits"]] = bits.get(r["bits"], 0) + r["params"]
    return sum(r["params"] for r in weights), sum(r["nonzeros"] for r in weights), bits


def _gzip_size(data):
    return len(gzip.compress(data, compresslevel=9, mtime=0))


# ----------------------------------------------------------------------------- timing
def _median_ms(call, warmup, repeats):
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _as_list(sample_input):
    if sample_input is None:
        return None
    items = list(sample_input) if isinstance(sample_input, (list, tuple)) else [sample_input]
    return [np.asarray(x) for x in items]


def _synthetic(shapes, where):
    """Uniform [0, 1) inputs of the given shapes (``None`` batch → 1)."""
    rng = np.random.default_rng(0)
    out = []
    for shape in shapes:
        shape = [1 if (i == 0 and (d is None or d < 0)) else d for i, d in enumerate(shape)]
        if any(d is None or d < 0 for d in shape):
            raise ValueError(
                f"sample_input is required: {where} has an input of unknown shape "
                f"{tuple(shape)}; received: sample_input=None (or pass latency=False)")
        out.append(rng.random(shape, dtype=np.float32))
    return out


def _keras_latency(model, samples, warmup, repeats):
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("timing a Keras model needs the TensorFlow backend (it is "
                           "XLA-compiled); pass latency=False on KERAS_BACKEND="
                           f"{keras.backend.backend()!r}")
    x = [tf.constant(s) for s in samples]
    x = x[0] if len(x) == 1 else x

    def compiled(jit):
        fn = tf.function(lambda v: model(v, training=False), jit_compile=jit)
        fn(x)  # trace and compile outside the timing
        return lambda: tf.nest.map_structure(np.asarray, fn(x))

    try:
        call, how = compiled(True), "tf.function(jit_compile=True)"
    except Exception as error:  # noqa: BLE001 - some ops have no XLA kernel
        call, how = compiled(False), f"tf.function without XLA ({type(error).__name__} under XLA)"
    return _median_ms(call, warmup, repeats), how


def _litert_interpreter(path, threads, samples, builtin):
    from ai_edge_litert.interpreter import OpResolverType

    from tfcompress.export.tflite import _interpreter

    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if builtin else None
    interpreter = _interpreter(path, threads, resolver)
    details = interpreter.get_input_details()
    if samples is None:
        samples = _synthetic([list(d["shape_signature"]) for d in details], str(path))
    if len(samples) != len(details):
        raise ValueError(f"sample_input must hold {len(details)} array(s), one per model "
                         f"input; received {len(samples)}")
    for detail, sample in zip(details, samples):
        if tuple(detail["shape"]) != sample.shape:
            interpreter.resize_tensor_input(detail["index"], sample.shape)
    interpreter.allocate_tensors()
    feeds = []
    for detail, sample in zip(interpreter.get_input_details(), samples):
        scale, zero = detail["quantization"]
        if detail["dtype"] != np.float32 and scale:
            sample = np.round(sample / scale + zero)
        feeds.append((detail["index"], sample.astype(detail["dtype"])))
    outputs = [d["index"] for d in interpreter.get_output_details()]

    def call():
        for index, value in feeds:
            interpreter.set_tensor(index, value)
        interpreter.invoke()
        return [interpreter.get_tensor(i) for i in outputs]

    call()  # XNNPACK rejects some models (sparse int8) only when invoked
    return call, samples[0].shape[0]


def _litert_latency(path, samples, threads, warmup, repeats):
    try:
        call, batch = _litert_interpreter(path, threads, samples, builtin=False)
        how = f"{threads} thread(s), default delegate (XNNPACK)"
    except RuntimeError:
        call, batch = _litert_interpreter(path, threads, samples, builtin=True)
        how = f"{threads} thread(s), built-in kernels (the XNNPACK delegate rejected the model)"
    return _median_ms(call, warmup, repeats), how, batch


def _saved_model_latency(path, samples, warmup, repeats):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures["serving_default"]
    specs = fn.structured_input_signature[1]
    names = sorted(specs)
    if samples is None:
        samples = _synthetic([spec.shape.as_list() for spec in (specs[n] for n in names)],
                             str(path))
    if len(samples) != len(names):
        raise ValueError(f"sample_input must hold {len(names)} array(s), one per input "
                         f"{names}; received {len(samples)}")
    feeds = {n: tf.constant(s, dtype=specs[n].dtype) for n, s in zip(names, samples)}
    call = lambda: tf.nest.map_structure(np.asarray, fn(**feeds))  # noqa: E731
    return _median_ms(call, warmup, repeats), "signature serving_default", samples[0].shape[0]


# ----------------------------------------------------------------------------- per format
def _keras_part(model, samples, latency, warmup, repeats):
    from tfcompress.pruning import PruneWrapper
    from tfcompress.pruning import strip

    notes = []
    if any(isinstance(l, PruneWrapper) for l in model._flatten_layers(include_self=False)):
        model = strip(model)
        notes.append("the model holds PruneWrapper layers: reported as strip(model)")
    rows = _weights.keras_weight_rows(model)
    buffer = io.BytesIO()
    np.savez(buffer, *_weights.keras_weight_arrays(model))
    data = buffer.getvalue()
    timing = {}
    if latency:
        if samples is None:
            shapes = [list(t.shape) for t in getattr(model, "inputs", None) or []]
            if not shapes:
                raise ValueError(
                    f"sample_input is required to time model {model.name!r}, whose input "
                    "shape is unknown (subclassed model); received: sample_input=None "
                    "(or pass latency=False)")
            samples = _synthetic(shapes, f"model {model.name!r}")
        ms, how = _keras_latency(model, samples, warmup, repeats)
        timing = {"keras_xla": (ms, how, samples[0].shape[0])}
    return model.name, rows, len(data), _gzip_size(data), KERAS_SIZE_NOTE, timing, notes


def _tflite_part(path, samples, latency, threads, warmup, repeats):
    data = path.read_bytes()
    timing = {}
    if latency:
        timing["litert"] = _litert_latency(path, samples, threads, warmup, repeats)
    return (str(path), _weights.tflite_weight_rows(data), len(data), _gzip_size(data),
            TFLITE_SIZE_NOTE, timing, [])


def _saved_model_part(path, samples, latency, warmup, repeats):
    files = [p for p in sorted(path.rglob("*")) if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    gz = sum(_gzip_size(p.read_bytes()) for p in files)
    timing = {}
    if latency:
        timing["saved_model"] = _saved_model_latency(path, samples, warmup, repeats)
    return (str(path), _weights.saved_model_weight_rows(str(path)), size, gz,
            SAVED_MODEL_SIZE_NOTE, timing, [])


def report(model_or_file, *, sample_input=None, threads=1, latency=True, repeats=20,
           warmup=3):
    """Describes a compressed model: parameters, nonzeros, bits, size and latency.

    * **Keras model**: its variables, with ``tfcompress.kernels`` layers decoded (int4
      kernels count 4 bits per logical weight; ``SparseDense`` counts its dense shape,
      its block indices are metadata). Size: the variables in their stored dtypes as
      an uncompressed ``.npz`` (no optimizer state) — the *weights*, not a deployable
      file; export with :func:`to_tflite` and report the file for that. A model still
      holding ``PruneWrapper`` layers is reported as :func:`tfcompress.strip` of it.
      Latency: one ``tf.function(jit_compile=True)`` call (TensorFlow's own thread
      pools; ``threads`` does not apply), falling back to a graph without XLA if XLA
      cannot compile the model.
    * **.tflite file**: the constant tensors of the flatbuffer (float and quantized
      constants are weights; unquantized integer constants such as reshape shapes and
      the index arrays of sparse tensors are metadata). Size: the file. Latency: one
      ``invoke`` in the LiteRT interpreter (``ai_edge_litert``) with ``threads``
      threads and the default XNNPACK delegate, or the built-in kernels where XNNPACK
      rejects the model (e.g. sparse int8 fully-connected layers).
    * **SavedModel folder**: the variables of its checkpoint. Size: every file of
      the folder (gzipped per file). Latency: the ``serving_default`` signature.

    Latency is the median over ``repeats`` calls after ``warmup`` calls, on
    ``sample_input`` (one batch) or, without it, on one uniform-random sample of the
    model's input shape. Absolute times are context only: compare files side by side.

    Args:
        model_or_file: a ``keras.Model``, a ``.tflite`` path or a SavedModel folder.
        sample_input: a numpy batch (or a list of them, one per input) to time on.
        threads: LiteRT interpreter threads.
        latency: whether to measure latency at all (``False``: sizes only, fast).
        repeats: timed calls.
        warmup: untimed calls before timing.

    Returns:
        A :class:`ModelReport`; ``print(report(...))`` shows the summary and the
        per-tensor table, ``.to_dict()`` is JSON-ready.

    Raises:
        ValueError: ``model_or_file`` is neither a Keras model nor a path, a file that
            is not a TFLite flatbuffer, a folder without ``saved_model.pb``, a bad
            ``threads``/``repeats``/``warmup``, or latency on a model whose input
            shape is unknown without ``sample_input``.
        FileNotFoundError: the path does not exist.

    Example:
        >>> r = report("cnn_int8.tflite", threads=1)
        >>> r.gzip_bytes, r.sparsity, r.latency_ms["litert"]
        >>> print(report(stripped_model, latency=False))
    """
    threads = _check_positive_int("threads", threads)
    repeats = _check_positive_int("repeats", repeats)
    warmup = _check_positive_int("warmup", warmup, minimum=0)
    kind, target = _kind_of(model_or_file)
    samples = _as_list(sample_input)
    if kind == "keras":
        part = _keras_part(target, samples, latency, warmup, repeats)
    elif kind == "tflite":
        part = _tflite_part(target, samples, latency, threads, warmup, repeats)
    else:
        part = _saved_model_part(target, samples, latency, warmup, repeats)
    source, rows, size, gz, size_of, timing, notes = part
    parameters, nonzeros, bits = _totals(rows)
    settings = {"threads": threads if kind == "tflite" else None, "warmup": warmup,
                "repeats": repeats, "batch": None}
    for runtime, (_, how, batch) in timing.items():
        settings[runtime] = how
        settings["batch"] = int(batch)
    return ModelReport(
        source=source, format=kind, parameters=parameters, nonzeros=nonzeros, bits=bits,
        size_bytes=size, gzip_bytes=gz, size_of=size_of,
        latency_ms={runtime: float(t[0]) for runtime, t in timing.items()},
        latency_settings=settings, weights=rows, notes=notes)
