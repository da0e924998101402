"""VGG networks for small images (Simonyan & Zisserman 2015), with BatchNorm."""

import numbers

from tfcompress.models import _common

#: Standard VGG configurations (Simonyan & Zisserman 2015, table 1, columns
#: A, B, D, E): an int is a 3×3 convolution with that many channels, ``"M"`` a
#: 2×2 max-pooling.
CONFIGS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (
        64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
        512, 512, 512, "M", 512, 512, 512, "M",
    ),  # fmt: skip
    "vgg19": (
        64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
    ),  # fmt: skip
}


def _resolve_config(config):
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(
                f"config must be one of {sorted(CONFIGS)} or a list of ints and "
                f"'M'; received: config={config!r}"
            )
        return CONFIGS[config]
    try:
        items = tuple(config)
    except TypeError:
        items = None
    if (
        not items
        or not all(
            item == "M"
            or (
                isinstance(item, numbers.Integral)
                and not isinstance(item, bool)
                and item >= 1
            )
            for item in items
        )
        or all(item == "M" for item in items)
    ):
        raise ValueError(
            "config must be a VGG name or a non-empty list of positive ints "
            f"(conv channels) and 'M' (max-pool) with at least one conv; "
            f"received: config={config!r}"
        )
    return tuple(item if item == "M" else int(item) for item in items)


def vgg(
    config="vgg11",
    input_shape=(28, 28, 1),
    num_classes=10,
    batch_norm=True,
    framework="keras",
):
    """Builds a VGG network for small images (the CIFAR variant), with BN.

    "Very Deep Convolutional Networks for Large-Scale Image Recognition"
    (Simonyan & Zisserman, ICLR 2015). As is usual on CIFAR, the three 4096-wide
    fully connected layers are replaced by a single dense head on the flattened
    last feature map (1×1×512 on 32×32 and on 28×28 inputs).

    Each integer in ``config`` is ``conv3×3 ("same") → BN → ReLU`` (with
    ``batch_norm=False``: a biased ``conv3×3`` with ReLU); each ``"M"`` is a
    2×2/2 max-pooling.

    **Small inputs.** A pooling that would bring the height or the width below
    1 (i.e. the map is already 1 pixel high or wide) is skipped, so every
    configuration accepts any input of at least 1×1. On 28×28 the five pools
    of VGG-11 give 14, 7, 3, 1 and the fifth is skipped; on 32×32 they give 16,
    8, 4, 2, 1.

    The model outputs **logits** (no softmax).

    Layer names: ``block{b}_conv{i}``, ``block{b}_bn{i}``, ``block{b}_relu{i}``,
    ``block{b}_pool`` (``b`` counts the groups ended by an ``"M"``, skipped or
    not, so names do not depend on the input size), then ``flatten``, ``head``.

    Args:
        config: ``"vgg11"``, ``"vgg13"``, ``"vgg16"``, ``"vgg19"``, or a list of
            ints and ``"M"``, e.g. ``[16, "M", 32, "M"]`` for a tiny test model.
        input_shape: ``(height, width, channels)``.
        num_classes: Number of output logits.
        batch_norm: Whether each convolution is followed by BatchNormalization
            (then the convolution has no bias).
        framework: ``"keras"`` (Keras 3) or ``"tf_keras"`` (Keras 2 twin).

    Returns:
        A functional model, named after ``config`` when it is a name, else
        ``"vgg"``.

    Raises:
        ValueError: on an unknown or malformed ``config``, a bad
            ``input_shape``, a non-positive ``num_classes``, or an unknown
            ``framework``.

    Example:

    >>> model = vgg("vgg11", input_shape=(28, 28, 1))
    >>> model.get_layer("block5_conv2").output.shape
    (None, 1, 1, 512)
    >>> tiny = vgg([8, "M", 16, "M"], input_shape=(32, 32, 3))
    >>> tiny.output.shape
    (None, 10)
    """
    K = _common.keras_module(framework)
    layers_cfg = _resolve_config(config)
    input_shape = _common.check_input_shape(input_shape, rank=3)
    num_classes = _common.check_positive_int("num_classes", num_classes)
    if not isinstance(batch_norm, bool):
        raise ValueError(
            f"batch_norm must be a bool; received: batch_norm={batch_norm!r}"
        )

    inputs = K.Input(shape=input_shape, name="input")
    x = inputs
    height, width = input_shape[0], input_shape[1]
    block, conv_index = 1, 0
    for item in layers_cfg:
        if item == "M":
            if height >= 2 and width >= 2:
                x = K.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
                height, width = height // 2, width // 2
            block, conv_index = block + 1, 0
            continue
        conv_index += 1
        name = f"block{block}_conv{conv_index}"
        if batch_norm:
            x = _common.conv_bn(
                K, x, item, 3, 1, name, f"block{block}_bn{conv_index}"
            )
        else:
            x = K.layers.Conv2D(
                item,
                3,
                padding="same",
                kernel_initializer=_common.CONV_INITIALIZER,
                name=name,
            )(x)
        x = K.layers.ReLU(name=f"block{block}_relu{conv_index}")(x)

    x = K.layers.Flatten(name="flatten")(x)
    outputs = K.layers.Dense(num_classes, name="head")(x)
    model_name = config if isinstance(config, str) else "vgg"
    return K.Model(inputs, outputs, name=model_name)
