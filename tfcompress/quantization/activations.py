"""Post-training activation quantization: ``quantize_activations``."""

import keras
import numpy as np

from tfcompress._cloning import clone_model
from tfcompress.quantization import _registry as reg
from tfcompress.quantization import quantizers as q
from tfcompress.quantization.calibration import _check_method
from tfcompress.quantization.calibration import calibrate_range
from tfcompress.quantization.fake_quant_activation import FakeQuantActivation

__all__ = ["quantize_activations", "iter_batches"]


def iter_batches(dataset, batch_size=32, num_batches=None):
    """Input batches of a representative dataset.

    ``dataset`` may be a NumPy array (or a list/dict of arrays for a
    multi-input model), split into ``batch_size`` batches, or any iterable of
    batches (a ``tf.data.Dataset``, a generator, a list), whose elements are
    inputs or ``(inputs, targets[, sample_weights])`` tuples; targets are dropped.
    """
    if num_batches is not None and (not isinstance(num_batches, int) or num_batches < 1):
        raise ValueError(f"num_batches must be a positive int or None; received: num_batches={num_batches!r}")
    if isinstance(dataset, np.ndarray):
        batches = (dataset[i : i + batch_size] for i in range(0, len(dataset), batch_size))
    elif isinstance(dataset, dict) or (
        isinstance(dataset, (list, tuple)) and dataset and all(isinstance(d, np.ndarray) for d in dataset)
    ):
        raise ValueError(
            "dataset must be a single NumPy array or an iterable of batches; for a "
            "multi-input model pass a tf.data.Dataset or a list of batches."
        )
    else:
        batches = iter(dataset)
    for i, batch in enumerate(batches):
        if num_batches is not None and i >= num_batches:
            break
        if isinstance(batch, tuple) and len(batch) in (2, 3):
            batch = batch[0]
        yield batch


def quantize_activations(
    model,
    dataset,
    bits=8,
    symmetric=False,
    calibration="minmax",
    skip=None,
    bits_overrides=None,
    num_batches=None,
    batch_size=32,
    max_values=1_000_000,
    ema=False,
    **calibration_kwargs,
):
    """Inserts calibrated activation fake-quantizers in front of every quantizable layer.

    Post-training activation quantization (survey 003, PTQ: "estimate the
    quantization range of both weights and activations"). The *input* of
    every Dense / Conv / DepthwiseConv / SeparableConv layer passes through a
    :class:`~tfcompress.quantization.FakeQuantActivation` (per-tensor), so each
    matmul / convolution sees ``bits``-bit activations — the "A" of a W/A
    setting; combine with :func:`~tfcompress.quantization.quantize_weights` for
    the "W". Ranges are calibrated on the float activations of ``model`` over
    ``dataset`` (inference mode) and stored in the quantizers' non-trainable
    weights.

    Calibration: ``"minmax"`` (default), ``"absmax"``, ``"mse"`` (range
    minimising the squared error) or ``"kl"`` (TensorRT histogram KL). MSE and
    KL keep at most ``max_values`` activation values per quantizer (a uniform
    random subsample, fixed seed).

    Args:
        model: a built Sequential or Functional model; its weights are copied
            (the original is not modified).
        dataset: representative inputs (see :func:`iter_batches`).
        bits: activation bit width, integer in ``[2, 8]``.
        symmetric: activation grid (affine by default, which suits ReLU outputs).
        calibration: ``"minmax"``, ``"absmax"``, ``"mse"`` or ``"kl"``.
        skip: layers whose input stays in float: a name, names, or a predicate.
        bits_overrides: ``{layer_name: bits}`` for the input of that layer.
        num_batches: calibrate on at most this many batches.
        batch_size: batch size when ``dataset`` is an array.
        max_values: cap on stored values per quantizer for MSE/KL.
        ema: let the inserted quantizers update their range when trained
            (fine-tuning); ``False`` keeps the calibrated range frozen.
        **calibration_kwargs: passed to the MSE / KL calibration.

    Returns:
        A new functional ``keras.Model`` with ``FakeQuantActivation`` layers
        named ``"<layer>_input_quant"``.

    Raises:
        ValueError: bad arguments, an empty dataset, or a quantizable layer
            inside a nested model or called more than once (not supported).

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
        ...                           keras.layers.Dense(2)])
        >>> data = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        >>> qa_model = quantize_activations(model, data, bits=4)
        >>> [l.name for l in qa_model.layers if isinstance(l, FakeQuantActivation)]
        ... # doctest: +ELLIPSIS
        ['dense..._input_quant', 'dense..._input_quant']
    """
    symmetric = q._check_symmetric(symmetric)
    _check_method(calibration)
    if not isinstance(max_values, int) or max_values < 1:
        raise ValueError(f"max_values must be a positive int; received: max_values={max_values!r}")
    skip_fn, bits_for = reg.resolve_skip(model, skip, bits_overrides, bits)
    top = {id(layer) for layer in model.layers}
    plan = {}
    for layer in reg.iter_layers(model):
        if reg.kernel_specs(layer) is None or skip_fn(layer):
            continue
        if id(layer) not in top:
            raise ValueError(
                f"quantize_activations does not reach layer {layer.name!r} inside a nested "
                "model; flatten the model or pass it in skip."
            )
        plan[layer.name] = bits_for(layer)

    base = reg.clone_with_weights(model)
    base = reg.as_functional(base)

    # 1. Probe: the float input tensor of every planned layer.
    recorded = {}

    def record(layer, *args, **kwargs):
        if layer.name in plan:
            if layer.name in recorded:
                raise ValueError(
                    f"Layer {layer.name!r} is called more than once in the model; "
                    "quantize_activations needs one quantizer per call. Pass it in skip."
                )
            recorded[layer.name] = args[0]
        return layer(*args, **kwargs)

    graph = clone_model(base, clone_function=lambda l: l, call_function=record)
    names = list(recorded)
    probe = keras.Model(graph.input, [recorded[n] for n in names])

    # 2. Collect statistics.
    online = calibration in ("absmax", "minmax")
    stats = {n: [np.inf, -np.inf] for n in names} if online else {n: [] for n in names}
    seen = 0
    for batch in iter_batches(dataset, batch_size, num_batches):
        outs = probe(batch, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for n, o in zip(names, outs):
            o = np.asarray(keras.ops.convert_to_numpy(o), dtype=np.float32).ravel()
            if online:
                stats[n][0] = min(stats[n][0], float(o.min()))
                stats[n][1] = max(stats[n][1], float(o.max()))
            else:
                stats[n].append(o)
        seen += 1
    if not seen:
        raise ValueError("dataset yielded no batches; quantize_activations needs calibration data.")

    # 3. Ranges.
    ranges = {}
    rng = np.random.default_rng(0)
    for n in names:
        if online:
            lo, hi = stats[n]
            if calibration == "absmax":
                a = max(abs(lo), abs(hi))
                lo, hi = -a, a
        else:
            values = np.concatenate(stats[n])
            if values.size > max_values:
                values = rng.choice(values, size=max_values, replace=False)
            lo, hi = calibrate_range(values, plan[n], symmetric, None, calibration, **calibration_kwargs)
        ranges[n] = (float(lo), float(hi))

    # 4. Insert the quantizers.
    quantizers = {}

    def insert(layer, *args, **kwargs):
        if layer.name in plan:
            fq = FakeQuantActivation(
                bits=plan[layer.name], symmetric=symmetric, ema=ema, name=f"{layer.name}_input_quant"
            )
            quantizers[layer.name] = fq
            args = (fq(args[0]),) + args[1:]
        return layer(*args, **kwargs)

    out = clone_model(base, clone_function=lambda l: l, call_function=insert)
    for n, fq in quantizers.items():
        fq.set_range(*ranges[n])
    return out
