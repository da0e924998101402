"""``factorize``: replace Dense and Conv2D layers by chains of smaller ordinary layers.

Each factorized layer becomes a nested ``keras.Sequential`` of the layer's name
holding plain Keras layers (``Dense``, ``Conv2D``, ``DepthwiseConv2D``), so the
result trains, saves (``.keras``) and exports (SavedModel, TFLite) like any model:

* ``svd`` (Dense): ``Dense(r, no bias) → Dense(out)``;
* ``tucker`` (Conv2D): ``1×1 Conv(r_in) → k×k Conv(r_out, strides, padding) →
  1×1 Conv(out)``;
* ``cp`` (Conv2D): ``1×1 Conv(R) → k×1 Depthwise → 1×k Depthwise → 1×1 Conv(out)``
  (the strides split between the two depthwise layers; exact for "same" and "valid").

The original bias and activation go to the last layer of each chain.
"""

import warnings

import keras

from tfcompress._cloning import clone_model
from tfcompress.lowrank import decompositions
from tfcompress.lowrank.calibration import recalibrate_batch_norms

METHODS = ("auto", "svd", "tucker", "cp")


def _is_dense(layer):
    return type(layer) is keras.layers.Dense and len(layer.kernel.shape) == 2


def _is_conv(layer):
    return type(layer) is keras.layers.Conv2D


def _unsupported_conv(layer):
    """Why a Conv2D cannot be factorized here, or ``None``."""
    if layer.groups != 1:
        return f"groups={layer.groups}"
    if tuple(layer.dilation_rate) != (1, 1):
        return f"dilation_rate={tuple(layer.dilation_rate)}"
    if layer.data_format != "channels_last":
        return f"data_format={layer.data_format!r}"
    return None


def _check_budget(rank, ratio, energy, method):
    given = [name for name, value in (("rank", rank), ("ratio", ratio), ("energy", energy))
             if value is not None]
    if len(given) != 1:
        raise ValueError(
            "Give exactly one of rank, ratio or energy; received: "
            f"rank={rank!r}, ratio={ratio!r}, energy={energy!r}")
    if ratio is not None:
        decompositions.check_fraction(ratio, "ratio")
    if energy is not None:
        decompositions.check_fraction(energy, "energy")
        if method == "cp":
            raise ValueError("energy does not define a CP rank; use rank or ratio with "
                             "method='cp'")


def _explicit_rank(rank, layer, limits):
    """``rank`` (an int, or a pair for Tucker) checked against the layer's ``limits``."""
    ranks = tuple(rank) if isinstance(rank, (tuple, list)) else (rank,) * len(limits)
    if len(ranks) != len(limits) or any(
            isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= limit
            for r, limit in zip(ranks, limits)):
        raise ValueError(
            f"rank must be an int (or, for Tucker, a pair) between 1 and {limits} for "
            f"layer {layer.name!r}; received: rank={rank!r}")
    return ranks


def _chain(layer, specs, weights):
    """A Sequential named like ``layer``: ``specs`` are (class, kwargs), built and loaded."""
    chain = keras.Sequential(
        [keras.Input(shape=tuple(layer.input.shape[1:]), dtype=layer.input.dtype)]
        + [kind(**kwargs) for kind, kwargs in specs], name=layer.name)
    for sublayer, values in zip(chain.layers, weights):
        sublayer.set_weights(values)
    return chain


def _tail_weights(layer, kernel):
    return [kernel] + ([layer.bias.numpy()] if layer.use_bias else [])


def _factor_dense(layer, rank, ratio, energy):
    kernel = layer.kernel.numpy()
    n_in, n_out = kernel.shape
    if rank is not None:
        (r,) = _explicit_rank(rank, layer, (min(n_in, n_out),))
    else:
        r = decompositions.svd_rank(kernel, ratio, energy)
    if r * (n_in + n_out) >= n_in * n_out:
        return None, f"rank {r} keeps {r * (n_in + n_out)} of {n_in * n_out} weights"
    first, last = decompositions.svd(kernel, r)
    specs = [(keras.layers.Dense, {"units": r, "use_bias": False, "name": f"{layer.name}_in"}),
             (keras.layers.Dense, {"units": n_out, "activation": layer.activation,
                                   "use_bias": layer.use_bias, "name": f"{layer.name}_out"})]
    return _chain(layer, specs, [[first], _tail_weights(layer, last)]), None


def _factor_conv(layer, method, rank, ratio, energy):
    kernel = layer.kernel.numpy()
    kh, kw, n_in, n_out = kernel.shape
    strides, padding = tuple(layer.strides), layer.padding
    size = kh * kw * n_in * n_out
    tail = {"filters": n_out, "kernel_size": 1, "activation": layer.activation,
            "use_bias": layer.use_bias, "name": f"{layer.name}_out"}
    if method == "tucker":
        if rank is not None:
            r_in, r_out = _explicit_rank(rank, layer, (n_in, n_out))
        else:
            r_in, r_out = decompositions.tucker2_ranks(kernel, ratio, energy)
        kept = n_in * r_in + kh * kw * r_in * r_out + r_out * n_out
        if kept >= size:
            return None, f"ranks ({r_in}, {r_out}) keep {kept} of {size} weights"
        first, core, last = decompositions.tucker2(kernel, (r_in, r_out))
        specs = [(keras.layers.Conv2D, {"filters": r_in, "kernel_size": 1, "use_bias": False,
                                        "name": f"{layer.name}_in"}),
                 (keras.layers.Conv2D, {"filters": r_out, "kernel_size": (kh, kw),
                                        "strides": strides, "padding": padding,
                                        "use_bias": False, "name": f"{layer.name}_core"}),
                 (keras.layers.Conv2D, tail)]
        return _chain(layer, specs, [[first], [core], _tail_weights(layer, last)]), None
    if rank is not None:
        (r,) = _explicit_rank(rank, layer, (size,))
    else:
        r = decompositions.cp_rank(kernel, ratio)
    kept = r * (kh + kw + n_in + n_out)
    if kept >= size:
        return None, f"rank {r} keeps {kept} of {size} weights"
    first, vertical, horizontal, last = decompositions.cp(kernel, r)
    depthwise = {"use_bias": False, "padding": padding}
    specs = [(keras.layers.Conv2D, {"filters": r, "kernel_size": 1, "use_bias": False,
                                    "name": f"{layer.name}_in"}),
             (keras.layers.DepthwiseConv2D, {"kernel_size": (kh, 1), "strides": (strides[0], 1),
                                             "name": f"{layer.name}_vertical", **depthwise}),
             (keras.layers.DepthwiseConv2D, {"kernel_size": (1, kw), "strides": (1, strides[1]),
                                             "name": f"{layer.name}_horizontal", **depthwise}),
             (keras.layers.Conv2D, tail)]
    return _chain(layer, specs, [[first], [vertical], [horizontal],
                                 _tail_weights(layer, last)]), None


def factorize(model, method="auto", rank=None, ratio=None, energy=None, layers=None,
              calibration_data=None):
    """Returns a copy of ``model`` with its Dense and Conv2D layers factorized.

    Exactly one budget: ``rank`` (an int; for Tucker also a pair ``(r_in, r_out)``),
    ``ratio`` (the fraction of each kernel's weights the factors may hold) or
    ``energy`` (the fraction of squared singular values kept per layer — per channel
    mode for Tucker; not defined for CP). A selected layer whose factors would not
    be smaller than its kernel is kept as it is, with a warning naming it.

    Example::

        small = tfcompress.lowrank.factorize(model, ratio=0.25)   # SVD + Tucker-2
        small.compile(...); small.fit(...)                         # fine-tune

    Args:
        model: a functional or Sequential Keras model (unchanged).
        method: ``"auto"`` (SVD for Dense, Tucker-2 for Conv2D), ``"svd"`` (Dense
            only), ``"tucker"`` or ``"cp"`` (Conv2D only).
        rank, ratio, energy: the budget (see above).
        layers: ``None`` — every layer the method applies to except convolutions
            reading ≤ 3 channels (the image stem) and the model's output layer — or
            a predicate ``layer -> bool``.
        calibration_data: optional inputs (NumPy) on which every BatchNormalization
            of the result re-estimates its moving statistics
            (:func:`~tfcompress.lowrank.recalibrate_batch_norms`): the factorized
            layers change the activations the BatchNormalizations after them see.

    Returns:
        The factorized model (weights of every other layer copied).

    Raises:
        ValueError: on an invalid argument, or when ``layers`` selects a layer the
            method cannot factorize.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; received: method={method!r}")
    _check_budget(rank, ratio, energy, method)
    if layers is not None and not callable(layers):
        raise ValueError(f"layers must be None or a predicate layer -> bool; received: "
                         f"layers={layers!r}")
    handles_dense = method in ("auto", "svd")
    handles_conv = method in ("auto", "tucker", "cp")
    conv_method = "tucker" if method == "auto" else method
    kept, unsupported = [], []

    def applies(layer):
        return (handles_dense and _is_dense(layer)) or (handles_conv and _is_conv(layer))

    output_layers = {id(t._keras_history.operation) for t in model.outputs}
    by_default = []

    def default_choice(layer):
        """Every layer the method applies to, except the image stem and the output
        layer: a convolution reading ≤ 3 channels has no input rank to cut (all its
        saving is in its few filters), and a classifier cut below its class count
        loses classes; factorizing either cost a trained ResNet-8 all its accuracy."""
        if not applies(layer):
            return False
        if id(layer) in output_layers or (_is_conv(layer) and layer.kernel.shape[2] <= 3):
            by_default.append(layer.name)
            return False
        return True

    def clone_function(layer):
        chosen = default_choice(layer) if layers is None else bool(layers(layer))
        if not chosen:
            return layer.__class__.from_config(layer.get_config())
        if not applies(layer):
            raise ValueError(f"method={method!r} cannot factorize layer {layer.name!r} "
                             f"({type(layer).__name__}) selected by layers")
        if _is_conv(layer) and _unsupported_conv(layer):
            if layers is not None:
                raise ValueError(f"layer {layer.name!r} cannot be factorized: "
                                 f"{_unsupported_conv(layer)}")
            unsupported.append(f"{layer.name} ({_unsupported_conv(layer)})")
            return layer.__class__.from_config(layer.get_config())
        if _is_dense(layer):
            chain, why_not = _factor_dense(layer, rank, ratio, energy)
        else:
            chain, why_not = _factor_conv(layer, conv_method, rank, ratio, energy)
        if chain is None:
            kept.append(f"{layer.name} ({why_not})")
            return layer.__class__.from_config(layer.get_config())
        return chain

    if not isinstance(model, keras.Model) or getattr(model, "inputs", None) is None:
        raise ValueError(f"model must be a functional or Sequential keras Model; "
                         f"received: model={model!r}")
    factorized = clone_model(model, clone_function=clone_function)
    _copy_unfactorized_weights(model, factorized)
    if calibration_data is not None:
        recalibrate_batch_norms(factorized, calibration_data)
    for what, names in (("left out by default (image stem, output layer; select them with "
                         "layers= to factorize them)", by_default),
                        ("kept unfactorized, the factors would not be smaller", kept),
                        ("not factorized (unsupported convolution)", unsupported)):
        if names:
            warnings.warn(f"Layers {what}: {', '.join(names)}", stacklevel=2)
    return factorized


def _copy_unfactorized_weights(model, factorized):
    for layer in model.layers:
        try:
            twin = factorized.get_layer(layer.name)
        except ValueError:
            continue
        if type(twin) is type(layer) and layer.weights:
            twin.set_weights(layer.get_weights())
