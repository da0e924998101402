"""Multi-layer perceptron: the 784-50-20-10 MLP of the dissertation §4.4.1."""

from tfcompress.models import _common


def mlp(
    input_shape=(28, 28, 1),
    hidden=(50, 20),
    num_classes=10,
    framework="keras",
):
    """Builds a fully connected classifier (Flatten → Dense+ReLU … → Dense head).

    With the defaults this is the MLP 784-50-20-10 used in the dissertation
    (Kim 2022, §4.4.1) for the PSGD sparsity/quantization experiments on
    (Fashion-)MNIST: ``Flatten → Dense(50) ReLU → Dense(20) ReLU → Dense(10)``,
    40,480 parameters.

    The model outputs **logits** (no softmax): train it with
    ``SparseCategoricalCrossentropy(from_logits=True)``.

    Layer names: ``flatten``, ``dense1`` … ``dense{len(hidden)}``, ``head``.

    Args:
        input_shape: Shape of one example, without the batch dimension. Any rank;
            it is flattened.
        hidden: Widths of the hidden ReLU layers (may be empty: a linear model).
        num_classes: Number of output logits.
        framework: ``"keras"`` (Keras 3) or ``"tf_keras"`` (the identical Keras 2
            twin, for TFMOT comparisons).

    Returns:
        A functional model named ``"mlp"``.

    Raises:
        ValueError: on a non-positive width, class count, input dimension, or an
            unknown ``framework``.

    Example:

    >>> model = mlp()
    >>> model.count_params()
    40480
    """
    K = _common.keras_module(framework)
    input_shape = _common.check_input_shape(input_shape)
    hidden = _common.check_int_sequence("hidden", hidden)
    num_classes = _common.check_positive_int("num_classes", num_classes)

    inputs = K.Input(shape=input_shape, name="input")
    x = K.layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(hidden, start=1):
        x = K.layers.Dense(units, activation="relu", name=f"dense{i}")(x)
    outputs = K.layers.Dense(num_classes, name="head")(x)
    return K.Model(inputs, outputs, name="mlp")
