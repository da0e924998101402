"""CIFAR-style ResNet (He et al. 2016, §4.2): ResNet-8/14/20/32/56/110."""

from tfcompress.models import _common


def check_resnet_depth(depth):
    """Validates a CIFAR ResNet depth (6n+2, n >= 1) and returns ``n``."""
    return _common.check_six_n_depth(depth, 2, "8, 14, 20, 32, 56")


def resnet(
    depth=20,
    width=16,
    input_shape=(28, 28, 1),
    num_classes=10,
    framework="keras",
):
    """Builds the CIFAR-style ResNet of He et al. (2016), post-activation.

    "Deep Residual Learning for Image Recognition" (He, Zhang, Ren, Sun, CVPR
    2016), §4.2: a 3×3 stem convolution, then three stages of ``n`` BasicBlocks
    with ``width``, ``2·width`` and ``4·width`` channels (stride 2 at the first
    block of stages 2 and 3), global average pooling and a dense head:
    ``depth = 6n + 2`` weighted layers (1 stem conv + 6n block convs + head). This
    is the network of the dissertation's DCIL and PSG experiments (ResNet-20/32/56
    on CIFAR, ResNet-20 on Fashion-MNIST).

    BasicBlock: ``conv3×3 → BN → ReLU → conv3×3 → BN``, plus the shortcut, then
    ReLU. Convolutions followed by BN have ``use_bias=False``.

    **Shortcut choice.** When a block changes shape (first block of stages 2 and
    3) the shortcut is a 1×1 strided convolution + BN ("option B", a projection)
    rather than the paper's parameter-free option A (stride-2 subsampling +
    zero-padded channels): a projection maps onto plain TFLite CONV_2D ops and
    is prunable like every other conv. It adds ``width·2w + 2w·4w = 10·width²``
    conv weights plus their BN: ResNet-20 width 16 on 32×32×3 has 274,042
    parameters (272,474 trainable), against 271,098 (269,722 trainable — the
    "0.27M" of the paper) with option A. All other blocks use an identity
    shortcut.

    The model outputs **logits** (no softmax).

    Layer names (deterministic; pruning code and tests look layers up by name)::

        stem_conv, stem_bn, stem_relu
        stage{s}_block{b}_conv1, _bn1, _relu1, _conv2, _bn2, _add, _out
        stage{s}_block1_proj_conv, stage{s}_block1_proj_bn   (s = 2, 3)
        pool, head

    with ``s`` in 1..3 and ``b`` in 1..n; ``stage{s}_block{n}_out`` is the output
    of stage ``s`` (the feature map attention transfer and factor transfer read;
    ``stage3_block{n}_out`` is the last group).

    Args:
        depth: ``6n + 2`` with ``n >= 1``: 8, 14, 20, 32, 56, 110, …
        width: Channels of the first stage (16 in the paper).
        input_shape: ``(height, width, channels)``, e.g. ``(28, 28, 1)`` for
            Fashion-MNIST or ``(32, 32, 3)`` for CIFAR.
        num_classes: Number of output logits.
        framework: ``"keras"`` (Keras 3) or ``"tf_keras"`` (the identical Keras 2
            twin, for TFMOT comparisons).

    Returns:
        A functional model named ``f"resnet{depth}"``.

    Raises:
        ValueError: if ``depth`` is not 6n+2, on a non-positive ``width`` or
            ``num_classes``, a bad ``input_shape``, or an unknown ``framework``.

    Example:

    >>> model = resnet(depth=20, width=16, input_shape=(32, 32, 3))
    >>> model.count_params()
    274042
    >>> model.get_layer("stage2_block1_conv1").strides
    (2, 2)
    """
    K = _common.keras_module(framework)
    n = check_resnet_depth(depth)
    width = _common.check_positive_int("width", width)
    input_shape = _common.check_input_shape(input_shape, rank=3)
    num_classes = _common.check_positive_int("num_classes", num_classes)

    inputs = K.Input(shape=input_shape, name="input")
    x = _common.conv_bn(K, inputs, width, 3, 1, "stem_conv", "stem_bn")
    x = K.layers.ReLU(name="stem_relu")(x)

    in_channels = width
    for stage in range(1, 4):
        channels = width * 2 ** (stage - 1)
        for block in range(1, n + 1):
            strides = 2 if (stage > 1 and block == 1) else 1
            prefix = f"stage{stage}_block{block}"
            x = _basic_block(K, x, in_channels, channels, strides, prefix)
            in_channels = channels

    x = K.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = K.layers.Dense(num_classes, name="head")(x)
    return K.Model(inputs, outputs, name=f"resnet{depth}")


def _basic_block(K, x, in_channels, channels, strides, prefix):
    shortcut = x
    y = _common.conv_bn(
        K, x, channels, 3, strides, f"{prefix}_conv1", f"{prefix}_bn1"
    )
    y = K.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = _common.conv_bn(K, y, channels, 3, 1, f"{prefix}_conv2", f"{prefix}_bn2")
    if strides != 1 or in_channels != channels:
        shortcut = _common.conv_bn(
            K,
            x,
            channels,
            1,
            strides,
            f"{prefix}_proj_conv",
            f"{prefix}_proj_bn",
        )
    y = K.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return K.layers.ReLU(name=f"{prefix}_out")(y)
