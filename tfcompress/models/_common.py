"""Shared helpers for the model builders: framework selection and validation.

Every builder writes its architecture once against a *Keras module* ``K`` (either
``keras`` — Keras 3, the default — or ``tf_keras`` — Keras 2) and uses only the
API the two share (``K.Input``, ``K.Model``, ``K.layers.*``). ``tf_keras`` is
imported lazily, inside :func:`keras_module`, and only when a caller asks for it:
importing it switches TensorFlow into Keras-2 mode, so only benchmark processes
that compare against TFMOT ever do.
"""

import numbers

import keras

FRAMEWORKS = ("keras", "tf_keras")

# BatchNormalization settings shared by every builder, chosen to match the
# authors' PyTorch reference code (torch momentum 0.1 == Keras momentum 0.9,
# eps 1e-5) and set explicitly so Keras 3 and tf_keras twins agree exactly.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# He et al. (2015) initialisation for ReLU networks, as in the reference code.
CONV_INITIALIZER = "he_normal"


def keras_module(framework):
    """Returns the Keras module that builds the model.

    Args:
        framework: ``"keras"`` (Keras 3, default everywhere) or ``"tf_keras"``
            (Keras 2, for TFMOT comparisons; imported here, lazily).

    Returns:
        The ``keras`` or ``tf_keras`` module.

    Raises:
        ValueError: if ``framework`` is not one of the two.
    """
    if framework == "keras":
        return keras
    if framework == "tf_keras":
        import tf_keras  # noqa: PLC0415 (lazy on purpose, see module docstring)

        return tf_keras
    raise ValueError(
        f"framework must be one of {FRAMEWORKS}; received: framework={framework!r}"
    )


def check_positive_int(name, value):
    """Raises ``ValueError`` unless ``value`` is an int ``>= 1`` (bools rejected)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < 1
    ):
        raise ValueError(
            f"{name} must be a positive integer; received: {name}={value!r}"
        )
    return int(value)


def check_int_sequence(name, value, allow_empty=True):
    """Validates a sequence of positive ints and returns it as a tuple."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        items = None
    if (
        items is None
        or (not allow_empty and not items)
        or any(
            isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1
            for v in items
        )
    ):
        raise ValueError(
            f"{name} must be a sequence of positive integers; "
            f"received: {name}={value!r}"
        )
    return tuple(int(v) for v in items)


def check_input_shape(input_shape, rank=None):
    """Validates ``input_shape`` (positive ints; ``rank`` of them if given)."""
    shape = check_int_sequence("input_shape", input_shape, allow_empty=False)
    if rank is not None and len(shape) != rank:
        raise ValueError(
            f"input_shape must have {rank} dimensions (height, width, channels); "
            f"received: input_shape={input_shape!r}"
        )
    return shape


def check_rate(name, value):
    """Validates a dropout-like rate in ``[0, 1)``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= value < 1.0
    ):
        raise ValueError(f"{name} must be in [0, 1); received: {name}={value!r}")
    return float(value)


def conv_bn(K, x, filters, kernel_size, strides, name_conv, name_bn):
    """3×3 (or k×k) bias-free convolution followed by BatchNormalization."""
    x = K.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=CONV_INITIALIZER,
        name=name_conv,
    )(x)
    return batch_norm(K, x, name_bn)


def batch_norm(K, x, name):
    return K.layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
    )(x)


def check_six_n_depth(depth, offset, examples):
    """Validates a depth of the form ``6n + offset`` (n >= 1) and returns ``n``.

    CIFAR ResNets use ``offset=2`` (8, 14, 20, ...), WRNs ``offset=4`` (10, 16, ...).
    """
    if (
        isinstance(depth, bool)
        or not isinstance(depth, numbers.Integral)
        or depth < 6 + offset
        or (depth - offset) % 6
    ):
        raise ValueError(
            f"depth must be 6n+{offset} ({examples}, ...); received: depth={depth!r}"
        )
    return (int(depth) - offset) // 6
