"""Builds models by name (``"resnet20"``, ``"wrn16_4"``, …) and makes tf_keras twins.

The CLI, recipes and benchmarks refer to models by these names. Every builder
accepts ``framework="tf_keras"`` to build the identical Keras 2 architecture
(same layer names, same weight shapes and order); :func:`copy_weights_to_twin`
then copies the weights layer by layer so both models compute the same function
— benchmarks run TFMOT on that twin side by side with tfcompress on the Keras 3
model.
"""

import re

from tfcompress.models import _common
from tfcompress.models.cnn import small_cnn
from tfcompress.models.mlp import mlp
from tfcompress.models.resnet import check_resnet_depth
from tfcompress.models.resnet import resnet
from tfcompress.models.vgg import CONFIGS as VGG_CONFIGS
from tfcompress.models.vgg import vgg
from tfcompress.models.wide_resnet import check_wrn_depth
from tfcompress.models.wide_resnet import wide_resnet

_RESNET = re.compile(r"^resnet(\d+)$")
_WRN = re.compile(r"^wrn(\d+)_(\d+)$")

#: Names listed by :func:`available_models` (``resnet{6n+2}`` and
#: ``wrn{6n+4}_{k}`` accept any valid depth and width, not just these).
MODEL_NAMES = (
    "mlp",
    "small_cnn",
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet56",
    "wrn16_1",
    "wrn16_2",
    "wrn16_4",
    "wrn16_8",
    "wrn28_10",
    *sorted(VGG_CONFIGS),
)


def available_models():
    """Returns the common model names accepted by :func:`build`."""
    return MODEL_NAMES


def _parse(name):
    """Maps a model name to ``(builder, fixed_kwargs)``."""
    if not isinstance(name, str):
        raise ValueError(f"name must be a model name string; received: name={name!r}")
    if name == "mlp":
        return mlp, {}
    if name == "small_cnn":
        return small_cnn, {}
    if name == "vgg":  # explicit config=... (a VGG name or a list)
        return vgg, {}
    if name in VGG_CONFIGS:
        return vgg, {"config": name}
    match = _RESNET.match(name)
    if match:
        depth = int(match.group(1))
        check_resnet_depth(depth)
        return resnet, {"depth": depth}
    match = _WRN.match(name)
    if match:
        depth, k = int(match.group(1)), int(match.group(2))
        check_wrn_depth(depth)
        _common.check_positive_int("k", k)
        return wide_resnet, {"depth": depth, "k": k}
    raise ValueError(
        "name must be 'mlp', 'small_cnn', 'resnet{6n+2}' (e.g. 'resnet20'), "
        f"'wrn{{6n+4}}_{{k}}' (e.g. 'wrn16_4'), 'vgg' (with config=...) or one "
        f"of {sorted(VGG_CONFIGS)}; "
        f"received: name={name!r}"
    )


def build(name, **kwargs):
    """Builds a model by name.

    Names: ``"mlp"``, ``"small_cnn"``, ``"resnet{depth}"`` (depth 6n+2: 8, 14,
    20, 32, 56, …), ``"wrn{depth}_{k}"`` (depth 6n+4, e.g. ``"wrn16_4"``),
    ``"vgg11"``, ``"vgg13"``, ``"vgg16"``, ``"vgg19"``, and ``"vgg"`` with an
    explicit ``config=`` (e.g. a small list for tests). Keyword arguments go to
    the builder (:func:`~tfcompress.models.mlp`,
    :func:`~tfcompress.models.small_cnn`, :func:`~tfcompress.models.resnet`,
    :func:`~tfcompress.models.wide_resnet`, :func:`~tfcompress.models.vgg`),
    e.g. ``input_shape``, ``num_classes``, ``width``, ``dropout``,
    ``framework``. Every model outputs logits.

    Args:
        name: The model name.
        **kwargs: Builder arguments. Arguments the name already fixes
            (``depth``, ``k``, ``config``) may be repeated only with the same
            value.

    Returns:
        A functional model (Keras 3, or tf_keras with ``framework="tf_keras"``).

    Raises:
        ValueError: on an unknown name, a name with an invalid depth, an
            argument that contradicts the name, or any builder argument error.

    Example:

    >>> model = build("resnet20", input_shape=(32, 32, 3))
    >>> model.name
    'resnet20'
    >>> build("wrn16_4", dropout=0.3).get_layer("stage1_block1_dropout").rate
    0.3
    """
    builder, fixed = _parse(name)
    for key, value in fixed.items():
        if key in kwargs and kwargs[key] != value:
            raise ValueError(
                f"{key} contradicts the model name {name!r} (which means "
                f"{key}={value!r}); received: {key}={kwargs[key]!r}"
            )
    return builder(**{**kwargs, **fixed})


def copy_weights_to_twin(model, twin):
    """Copies weights layer by layer (matched by name) from ``model`` to ``twin``.

    Typically ``model`` is a Keras 3 model and ``twin`` the same architecture
    built with ``framework="tf_keras"`` (or the other way round: the function
    only uses ``layers``, ``get_weights`` and ``set_weights``, which both
    frameworks share). Trainable and non-trainable weights (BN moving
    statistics) are copied, so both models produce the same outputs.

    Args:
        model: Source model.
        twin: Destination model with the same layer names and weight shapes.

    Returns:
        ``twin``, with its weights replaced.

    Raises:
        ValueError: if a layer with weights is missing from ``twin`` or its
            weight shapes differ (the layer is named), or if ``twin`` has
            weighted layers that ``model`` lacks.

    Example:

    >>> model = build("resnet8")
    >>> twin = build("resnet8", framework="tf_keras")  # doctest: +SKIP
    >>> copy_weights_to_twin(model, twin)              # doctest: +SKIP
    """
    twin_layers = {layer.name: layer for layer in twin.layers}
    source_names = set()
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        source_names.add(layer.name)
        target = twin_layers.get(layer.name)
        if target is None:
            raise ValueError(
                f"twin has no layer named {layer.name!r}; received: "
                f"twin={twin.name!r} with layers {sorted(twin_layers)}"
            )
        target_shapes = [tuple(w.shape) for w in target.get_weights()]
        source_shapes = [tuple(w.shape) for w in weights]
        if target_shapes != source_shapes:
            raise ValueError(
                f"layer {layer.name!r} has weight shapes {source_shapes} in the "
                f"model but {target_shapes} in the twin; received: twin={twin.name!r}"
            )
        target.set_weights(weights)
    extra = sorted(
        layer.name
        for layer in twin.layers
        if layer.get_weights() and layer.name not in source_names
    )
    if extra:
        raise ValueError(
            f"twin has weighted layers the model lacks: {extra}; "
            f"received: twin={twin.name!r}"
        )
    return twin


def to_tf_keras(model, name, **kwargs):
    """Builds the tf_keras twin of ``model`` and copies its weights into it.

    ``name`` and ``kwargs`` must be those ``model`` was built with (see
    :func:`build`). Importing tf_keras switches TensorFlow into Keras-2 mode for
    the whole process: call this only in a benchmark process of its own.

    Args:
        model: A Keras 3 model built by :func:`build` (or a builder).
        name: Its model name, e.g. ``"resnet20"``.
        **kwargs: Its builder arguments (``framework`` must not be given).

    Returns:
        A ``tf_keras.Model`` computing the same function as ``model``.

    Raises:
        ValueError: if ``framework`` is passed, or the twin does not match.

    Example:

    >>> model = build("small_cnn")
    >>> twin = to_tf_keras(model, "small_cnn")  # doctest: +SKIP
    """
    if "framework" in kwargs:
        raise ValueError(
            "framework is fixed to 'tf_keras' by to_tf_keras; "
            f"received: framework={kwargs['framework']!r}"
        )
    twin = build(name, framework="tf_keras", **kwargs)
    return copy_weights_to_twin(model, twin)
