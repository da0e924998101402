"""A small CNN (2 convolutions + 2 dense layers) for TFLite export comparisons."""

from tfcompress.models import _common


def small_cnn(
    input_shape=(28, 28, 1),
    num_classes=10,
    filters=(32, 64),
    dense=128,
    framework="keras",
):
    """Builds the "2 conv + 2 dense" CNN used for TFLite/LiteRT comparisons.

    Architecture (the classic Keras MNIST convnet shape, with "same" padding)::

        conv1 3×3 (filters[0]) ReLU → pool1 2×2
        conv2 3×3 (filters[1]) ReLU → pool2 2×2
        flatten → dense1 (dense) ReLU → head (num_classes)

    Convolutions keep their bias and have no BatchNormalization, so every layer
    maps one-to-one onto a TFLite builtin op (CONV_2D, MAX_POOL_2D,
    FULLY_CONNECTED) with nothing to fold. On 28×28×1 with the defaults it has
    421,642 parameters (7×7×64 = 3,136 features into ``dense1``).

    The model outputs **logits** (no softmax).

    Layer names: ``conv1``, ``pool1``, ``conv2``, ``pool2``, ``flatten``,
    ``dense1``, ``head``.

    Args:
        input_shape: ``(height, width, channels)``; height and width must be at
            least 4 (two 2×2 poolings).
        num_classes: Number of output logits.
        filters: Output channels of the two convolutions.
        dense: Width of the hidden dense layer.
        framework: ``"keras"`` (Keras 3) or ``"tf_keras"`` (Keras 2 twin).

    Returns:
        A functional model named ``"small_cnn"``.

    Raises:
        ValueError: on a bad ``input_shape``, ``filters`` that is not two
            positive ints, a non-positive ``dense``/``num_classes``, or an unknown
            ``framework``.

    Example:

    >>> model = small_cnn()
    >>> model.count_params()
    421642
    """
    K = _common.keras_module(framework)
    input_shape = _common.check_input_shape(input_shape, rank=3)
    if min(input_shape[:2]) < 4:
        raise ValueError(
            "input_shape height and width must be >= 4 (two 2x2 poolings); "
            f"received: input_shape={input_shape!r}"
        )
    filters = _common.check_int_sequence("filters", filters)
    if len(filters) != 2:
        raise ValueError(
            f"filters must hold exactly 2 positive integers; received: filters={filters!r}"
        )
    dense = _common.check_positive_int("dense", dense)
    num_classes = _common.check_positive_int("num_classes", num_classes)

    inputs = K.Input(shape=input_shape, name="input")
    x = inputs
    for i, f in enumerate(filters, start=1):
        x = K.layers.Conv2D(
            f, 3, padding="same", activation="relu", name=f"conv{i}"
        )(x)
        x = K.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = K.layers.Flatten(name="flatten")(x)
    x = K.layers.Dense(dense, activation="relu", name="dense1")(x)
    outputs = K.layers.Dense(num_classes, name="head")(x)
    return K.Model(inputs, outputs, name="small_cnn")
