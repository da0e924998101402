"""``PositionBias``: a fixed per-position bias map, added after a shrunk convolution.

:func:`~tfcompress.pruning.shrink` removes pruned channels whose output is a nonzero
constant. Where such a channel feeds a convolution with spatial zero padding, its
contribution to the convolution's output depends on the position (border pixels see
fewer non-padded taps), so it cannot be folded into the convolution's bias. For a
fixed input size it is, however, a fixed ``(*spatial_out, channels_out)`` tensor:
the convolution applied to the constant input. ``PositionBias`` adds that tensor
(and then applies the activation that was fused into the convolution, which must
come after the addition).
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfcompress")
class PositionBias(keras.layers.Layer):
    """Adds a fixed bias map of one value per position and channel, then an activation.

    ``outputs = activation(inputs + bias_map)``, with ``bias_map`` of shape
    ``shape = (*spatial, channels)`` broadcast over the batch. The map is a
    non-trainable weight (saved with the model, not in the config); it is zero
    until assigned (``layer.bias_map.assign(...)`` or ``set_weights``).

    Args:
        shape: the map's shape, the input shape without the batch dimension, e.g.
            ``(28, 28, 8)`` (channels last). Every dimension must be a positive int.
        activation: applied after the addition (name, callable or ``None`` for the
            identity).
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype`` …).

    Raises:
        ValueError: if ``shape`` is empty or has a non-positive dimension, or (when
            built) if the input shape does not end with ``shape``.

    Example:
        >>> layer = PositionBias((4, 4, 2), activation="relu")
        >>> y = layer(keras.ops.zeros((3, 4, 4, 2)))
        >>> layer.bias_map.shape
        (4, 4, 2)
    """

    def __init__(self, shape, activation=None, **kwargs):
        super().__init__(**kwargs)
        try:
            dims = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            dims = ()
        if not dims or any(d <= 0 for d in dims) or len(dims) != len(tuple(shape)):
            raise ValueError(
                "PositionBias: shape must be a non-empty sequence of positive ints "
                f"(the input shape without the batch dimension); received: shape={shape!r}"
            )
        self.map_shape = dims
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        if tuple(input_shape[1:]) != self.map_shape:
            raise ValueError(
                f"PositionBias '{self.name}': the input shape without the batch "
                f"dimension must equal shape={self.map_shape}; received: "
                f"input_shape={tuple(input_shape)}"
            )
        self.bias_map = self.add_weight(
            name="bias_map", shape=self.map_shape, initializer="zeros", trainable=False
        )

    def call(self, inputs):
        return self.activation(ops.add(inputs, ops.cast(self.bias_map, inputs.dtype)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "shape": list(self.map_shape),
            "activation": keras.activations.serialize(self.activation),
        })
        return config
