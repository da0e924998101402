"""Wide Residual Networks, WRN-d-k (Zagoruyko & Komodakis 2016)."""

from tfcompress.models import _common


def check_wrn_depth(depth):
    """Validates a WRN depth (6n+4, n >= 1) and returns ``n``."""
    return _common.check_six_n_depth(depth, 4, "10, 16, 22, 28, 40")


def wide_resnet(
    depth=16,
    k=4,
    input_shape=(28, 28, 1),
    num_classes=10,
    dropout=0.0,
    framework="keras",
):
    """Builds WRN-depth-k, the pre-activation wide ResNet.

    "Wide Residual Networks" (Zagoruyko & Komodakis, BMVC 2016): a 3×3 stem
    convolution with 16 channels, three groups of ``n = (depth − 4) / 6``
    pre-activation blocks with ``16k``, ``32k``, ``64k`` channels (stride 2 at
    the first block of groups 2 and 3), a final BN-ReLU, global average pooling
    and a dense head. The teacher/student pairs of the dissertation's Factor
    Transfer experiments (ch. 3) are WRNs.

    Block (B(3,3), pre-activation, as in the authors' code)::

        BN → ReLU → conv3×3(stride) → BN → ReLU → [dropout] → conv3×3  (+ shortcut)

    The shortcut is the identity when the shape is kept; otherwise a 1×1
    strided convolution applied to the block's pre-activated input (the
    authors' code shares that first BN-ReLU between the residual branch and the
    projection). All convolutions have ``use_bias=False``.

    The model outputs **logits** (no softmax).

    Layer names::

        stem_conv
        stage{s}_block{b}_bn1, _relu1, _conv1, _bn2, _relu2, [_dropout,] _conv2,
        stage{s}_block{b}_proj_conv (when the shape changes), stage{s}_block{b}_out
        final_bn, final_relu, pool, head

    ``stage{s}_block{n}_out`` (the residual sum) is the output of group ``s``.

    Args:
        depth: ``6n + 4`` with ``n >= 1``: 10, 16, 22, 28, 40, …
        k: Widening factor (``k = 1`` is a thin pre-activation ResNet).
        input_shape: ``(height, width, channels)``.
        num_classes: Number of output logits.
        dropout: Dropout rate between the two convolutions of each block, in
            ``[0, 1)``; ``0`` adds no Dropout layer at all.
        framework: ``"keras"`` (Keras 3) or ``"tf_keras"`` (Keras 2 twin).

    Returns:
        A functional model named ``f"wrn{depth}_{k}"``.

    Raises:
        ValueError: if ``depth`` is not 6n+4, on a non-positive ``k`` or
            ``num_classes``, a ``dropout`` outside ``[0, 1)``, a bad
            ``input_shape``, or an unknown ``framework``.

    Example:

    >>> model = wide_resnet(depth=16, k=4, input_shape=(32, 32, 3))
    >>> model.name
    'wrn16_4'
    >>> model.get_layer("stage3_block2_conv2").filters
    256
    """
    K = _common.keras_module(framework)
    n = check_wrn_depth(depth)
    k = _common.check_positive_int("k", k)
    input_shape = _common.check_input_shape(input_shape, rank=3)
    num_classes = _common.check_positive_int("num_classes", num_classes)
    dropout = _common.check_rate("dropout", dropout)

    inputs = K.Input(shape=input_shape, name="input")
    x = K.layers.Conv2D(
        16,
        3,
        padding="same",
        use_bias=False,
        kernel_initializer=_common.CONV_INITIALIZER,
        name="stem_conv",
    )(inputs)

    in_channels = 16
    for stage in range(1, 4):
        channels = 16 * k * 2 ** (stage - 1)
        for block in range(1, n + 1):
            strides = 2 if (stage > 1 and block == 1) else 1
            prefix = f"stage{stage}_block{block}"
            x = _preact_block(
                K, x, in_channels, channels, strides, dropout, prefix
            )
            in_channels = channels

    x = _common.batch_norm(K, x, "final_bn")
    x = K.layers.ReLU(name="final_relu")(x)
    x = K.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = K.layers.Dense(num_classes, name="head")(x)
    return K.Model(inputs, outputs, name=f"wrn{depth}_{k}")


def _conv(K, x, filters, kernel_size, strides, name):
    return K.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=_common.CONV_INITIALIZER,
        name=name,
    )(x)


def _preact_block(K, x, in_channels, channels, strides, dropout, prefix):
    pre = _common.batch_norm(K, x, f"{prefix}_bn1")
    pre = K.layers.ReLU(name=f"{prefix}_relu1")(pre)
    if strides != 1 or in_channels != channels:
        shortcut = _conv(K, pre, channels, 1, strides, f"{prefix}_proj_conv")
    else:
        shortcut = x
    y = _conv(K, pre, channels, 3, strides, f"{prefix}_conv1")
    y = _common.batch_norm(K, y, f"{prefix}_bn2")
    y = K.layers.ReLU(name=f"{prefix}_relu2")(y)
    if dropout > 0:
        y = K.layers.Dropout(dropout, name=f"{prefix}_dropout")(y)
    y = _conv(K, y, channels, 3, 1, f"{prefix}_conv2")
    return K.layers.Add(name=f"{prefix}_out")([y, shortcut])
