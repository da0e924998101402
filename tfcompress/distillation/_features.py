"""Finding and reading a model's feature maps (the layers distillation taps)."""

import keras


def check_functional(model, arg):
    """Raises unless ``model`` is a Keras model with symbolic inputs and outputs."""
    if not isinstance(model, keras.Model) or getattr(model, "inputs", None) is None:
        raise ValueError(
            f"{arg} must be a functional or Sequential keras Model (distillation reads "
            f"its intermediate feature maps); received: {arg}={model!r}"
        )


def last_feature_map(model):
    """Name of the last layer of ``model`` whose output is a 4-D feature map.

    For the models of :mod:`tfcompress.models` this is the output of the last
    convolution group, just before global pooling or flattening — where 002 §3.2.2
    attaches the paraphraser and the translator.

    Raises:
        ValueError: if no layer outputs a 4-D tensor.
    """
    for layer in reversed(model.layers):
        output = getattr(layer, "output", None)
        if output is not None and not isinstance(output, (list, tuple)) and len(output.shape) == 4:
            return layer.name
    raise ValueError(
        f"Model {model.name!r} has no layer with a 4-D (batch, height, width, channels) "
        "output; pass the feature layer's name explicitly."
    )


def feature_extractor(model, layer_name, arg):
    """A functional model ``inputs -> (features of layer_name, model outputs)``.

    It shares its layers (and weights) with ``model``.

    Raises:
        ValueError: if ``layer_name`` names no layer of ``model`` or its output is not
            a 4-D feature map.
    """
    check_functional(model, arg)
    try:
        layer = model.get_layer(layer_name)
    except ValueError:
        raise ValueError(
            f"{arg}_layer must name a layer of {arg} {model.name!r}; received: "
            f"{arg}_layer={layer_name!r}"
        ) from None
    if len(layer.output.shape) != 4:
        raise ValueError(
            f"{arg}_layer must output a 4-D feature map; layer {layer_name!r} outputs "
            f"shape {tuple(layer.output.shape)}"
        )
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    outputs = model.outputs[0] if len(model.outputs) == 1 else model.outputs
    return keras.Model(inputs, [layer.output, outputs],
                       name=f"{model.name}_{layer_name}_features")
