"""Factor Transfer (002 ch. 3, eq. 3.1–3.4): paraphraser, translator and their training.

Two steps, each an ordinary ``model.fit``:

1. :class:`ParaphraserTraining` trains a :class:`Paraphraser` — a convolutional
   autoencoder that keeps the spatial size — to reconstruct the frozen teacher's
   last-group feature map (eq. 3.1, with the ℓ1 distance of the authors' code by
   default). Its encoder output is the *teacher factor*.
2. :class:`FactorTransfer` trains the student and a :class:`Translator` jointly with
   ``L = CE + β·‖F_T/‖F_T‖₂ − F_S/‖F_S‖₂‖_p`` (eq. 3.2–3.4), the translator
   mapping the student's last-group feature map to the *student factor*.

Afterwards :attr:`FactorTransfer.student` is the model to strip, quantize and
export: the paraphraser and translator are training-time modules only.

Example::

    teacher = tfcompress.models.build("resnet20")      # trained beforehand
    student = tfcompress.models.build("resnet8")
    paraphraser = Paraphraser(rate=0.5)
    stage1 = ParaphraserTraining(teacher, paraphraser)
    stage1.compile(keras.optimizers.SGD(0.1, momentum=0.9))
    stage1.fit(x_train, epochs=5)
    ft = FactorTransfer(student, teacher, paraphraser, beta=500.0)
    ft.compile(keras.optimizers.SGD(0.1, momentum=0.9), metrics=["accuracy"])
    ft.fit(x_train, y_train, epochs=30)
    ft.student.save("student.keras")
"""

import math
import numbers

import keras
from keras import ops

from tfcompress.distillation import losses
from tfcompress.distillation._features import feature_extractor
from tfcompress.distillation._features import last_feature_map

DEFAULT_NEGATIVE_SLOPE = 0.1


def _check_positive_real(value, arg):
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(float(value)) or value <= 0):
        raise ValueError(f"{arg} must be a finite number > 0; received: {arg}={value!r}")
    return float(value)


def _check_slope(value):
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not 0 <= float(value) <= 1):
        raise ValueError(
            f"negative_slope must be a number in [0, 1]; received: negative_slope={value!r}"
        )
    return float(value)


def _leaky_chain(layers, x, slope):
    """``layers`` applied in turn, each followed by LeakyReLU(``slope``)."""
    for layer in layers:
        x = layer(x)
        # max(x, slope·x) equals LeakyReLU for slope in [0, 1]; TensorFlow's graph
        # optimizer fails (with an error log) to fuse its LeakyRelu op after a
        # convolution's bias in a gradient graph.
        x = ops.maximum(x, x * slope)
    return x


def _conv(filters, transposed, name):
    kind = keras.layers.Conv2DTranspose if transposed else keras.layers.Conv2D
    return kind(filters, 3, padding="same", name=name)


def _build_chain(owner, layers, input_shape):
    """Builds ``layers`` one after the other from ``input_shape``.

    Sublayers made in ``build`` take the owner's ``trainable``: a layer
    deserialized frozen is built after its flag was set, and Keras does not pass
    an unchanged flag on again.
    """
    shape = tuple(input_shape)
    for layer in layers:
        layer.build(shape)
        layer.trainable = owner.trainable
        shape = layer.compute_output_shape(shape)


def _feature_channels(input_shape, arg):
    if len(input_shape) != 4 or input_shape[-1] is None:
        raise ValueError(
            f"{arg} takes a 4-D (batch, height, width, channels) feature map with known "
            f"channels; received shape {tuple(input_shape)}"
        )
    return int(input_shape[-1])


@keras.saving.register_keras_serializable(package="tfcompress")
class Paraphraser(keras.layers.Layer):
    """The teacher-side autoencoder of Factor Transfer (002 §3.2.1).

    Encoder: three 3×3 stride-1 convolutions ``C → C → kC → kC``; decoder: three 3×3
    stride-1 transposed convolutions ``kC → kC → C → C``; LeakyReLU after each
    (as in the authors' code, no BatchNormalization). The spatial size is kept, the
    channels become ``kC`` (``k`` = paraphrase rate) in the factor.

    ``call`` returns the reconstruction ``P(x)`` (trained with eq. 3.1);
    :meth:`encode` returns the teacher factor ``F_T``.

    Example::

        paraphraser = Paraphraser(rate=0.5)
        factor = paraphraser.encode(features)      # (N, H, W, 64) -> (N, H, W, 32)

    Args:
        rate: paraphrase rate ``k`` (> 0); the factor has ``max(1, round(k·C))``
            channels for a ``C``-channel feature map.
        negative_slope: LeakyReLU slope (0.1 in the authors' code).
        **kwargs: base ``Layer`` arguments.
    """

    def __init__(self, rate=0.5, negative_slope=DEFAULT_NEGATIVE_SLOPE, **kwargs):
        super().__init__(**kwargs)
        self.rate = _check_positive_real(rate, "rate")
        self.negative_slope = _check_slope(negative_slope)
        self.factor_channels = None

    def build(self, input_shape):
        channels = _feature_channels(input_shape, "Paraphraser")
        self.factor_channels = max(1, int(round(channels * self.rate)))
        factor = self.factor_channels
        self.encoder_layers = [_conv(channels, False, "encode0"), _conv(factor, False, "encode1"),
                               _conv(factor, False, "encode2")]
        self.decoder_layers = [_conv(factor, True, "decode0"), _conv(channels, True, "decode1"),
                               _conv(channels, True, "decode2")]
        _build_chain(self, self.encoder_layers + self.decoder_layers, input_shape)

    def encode(self, features):
        """The teacher factor ``F_T`` of a feature map (the encoder alone)."""
        if not self.built:
            self.build(tuple(features.shape))
        return _leaky_chain(self.encoder_layers, features, self.negative_slope)

    def call(self, features):
        return _leaky_chain(self.decoder_layers, self.encode(features), self.negative_slope)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate,
                "negative_slope": self.negative_slope}


@keras.saving.register_keras_serializable(package="tfcompress")
class Translator(keras.layers.Layer):
    """The student-side module of Factor Transfer (002 §3.2.2).

    Three 3×3 stride-1 convolutions ``C_S → C_S → F → F`` with LeakyReLU, mapping the
    student's feature map to a student factor with the teacher factor's ``F``
    channels.

    Example::

        translator = Translator(paraphraser.factor_channels)
        student_factor = translator(student_features)   # (N, H, W, C_S) -> (N, H, W, F)

    Args:
        factor_channels: ``F``, the paraphraser's :attr:`Paraphraser.factor_channels`.
        negative_slope: LeakyReLU slope.
        **kwargs: base ``Layer`` arguments.
    """

    def __init__(self, factor_channels, negative_slope=DEFAULT_NEGATIVE_SLOPE, **kwargs):
        super().__init__(**kwargs)
        if (isinstance(factor_channels, bool) or not isinstance(factor_channels, numbers.Integral)
                or factor_channels < 1):
            raise ValueError(
                f"factor_channels must be an int >= 1; received: "
                f"factor_channels={factor_channels!r}"
            )
        self.factor_channels = int(factor_channels)
        self.negative_slope = _check_slope(negative_slope)

    def build(self, input_shape):
        channels = _feature_channels(input_shape, "Translator")
        self.conv_layers = [_conv(channels, False, "translate0"),
                            _conv(self.factor_channels, False, "translate1"),
                            _conv(self.factor_channels, False, "translate2")]
        _build_chain(self, self.conv_layers, input_shape)

    def call(self, features):
        return _leaky_chain(self.conv_layers, features, self.negative_slope)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.factor_channels,)

    def get_config(self):
        return {**super().get_config(), "factor_channels": self.factor_channels,
                "negative_slope": self.negative_slope}


def _frozen_features(teacher, teacher_layer):
    teacher_layer = teacher_layer or last_feature_map(teacher)
    extractor = feature_extractor(teacher, teacher_layer, "teacher")
    teacher.trainable = False
    return teacher_layer, extractor


def _teacher_factor(extractor, paraphraser, inputs):
    features, _ = extractor(inputs, training=False)
    return ops.stop_gradient(paraphraser.encode(features))


def _serialized(model, keys):
    return {key: keras.saving.serialize_keras_object(getattr(model, key)) for key in keys}


def _deserialized(config, keys, custom_objects):
    config = dict(config)
    for key in keys:
        config[key] = keras.saving.deserialize_keras_object(config[key],
                                                            custom_objects=custom_objects)
    return config


def _build_on(layer, extractor):
    """Builds ``layer`` on the feature map ``extractor`` yields (batch dimension open)."""
    if not layer.built:
        layer.build((None,) + tuple(extractor.outputs[0].shape[1:]))


@keras.saving.register_keras_serializable(package="tfcompress")
class ParaphraserTraining(keras.Model):
    """Step 1 of Factor Transfer: fits a :class:`Paraphraser` to a frozen teacher.

    ``call`` returns ``(teacher features, reconstruction)``; the loss is eq. 3.1 on
    them, so ``compile(optimizer)`` and ``fit(x, epochs=...)`` (labels ignored) are
    all it takes. Only the paraphraser's weights train.

    Example::

        stage1 = ParaphraserTraining(teacher, Paraphraser(rate=0.5))
        stage1.compile(keras.optimizers.SGD(0.1, momentum=0.9))
        stage1.fit(x_train, epochs=5)             # labels, if given, are ignored

    Args:
        teacher: a trained functional or Sequential model (frozen here).
        paraphraser: the :class:`Paraphraser` to train.
        teacher_layer: name of the teacher layer whose output is paraphrased;
            defaults to the last layer with a 4-D output (the last group).
        p: 1 (default) for the ℓ1 reconstruction loss of the authors' code, 2 for
            the squared ℓ2 norm that eq. 3.1 writes. ℓ1's bounded gradient keeps
            SGD at the reference learning rate (0.1) stable; the squared loss on
            ResNet-20 feature maps diverged to NaN at that rate.
        **kwargs: base ``Model`` arguments.
    """

    def __init__(self, teacher, paraphraser, teacher_layer=None, p=1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(paraphraser, Paraphraser):
            raise ValueError(
                f"paraphraser must be a tfcompress Paraphraser; received: "
                f"paraphraser={paraphraser!r}"
            )
        self.p = losses.check_norm_order(p)
        self.teacher = teacher
        self.teacher_layer, self._teacher_features = _frozen_features(teacher, teacher_layer)
        self.paraphraser = paraphraser
        _build_on(paraphraser, self._teacher_features)
        self.built = True

    def call(self, inputs, training=None):
        features, _ = self._teacher_features(inputs, training=False)
        features = ops.stop_gradient(features)
        return features, self.paraphraser(features, training=training)

    def teacher_factor(self, inputs):
        """``F_T``: the paraphraser's encoding of the teacher's feature map."""
        return _teacher_factor(self._teacher_features, self.paraphraser, inputs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Eq. 3.1 (plus any regularization losses)."""
        features, reconstruction = self(x, training=training) if y_pred is None else y_pred
        total = losses.reconstruction_loss(features, reconstruction, self.p)
        for extra in self.losses:
            total = total + self._aggregate_additional_loss(extra)
        return total

    def get_config(self):
        return {**super().get_config(), **_serialized(self, ("teacher", "paraphraser")),
                "teacher_layer": self.teacher_layer, "p": self.p}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**_deserialized(config, ("teacher", "paraphraser"), custom_objects))


@keras.saving.register_keras_serializable(package="tfcompress")
class FactorTransfer(keras.Model):
    """Step 2 of Factor Transfer: the student trained with a translator (eq. 3.2–3.4).

    ``L = CE(student(x), y) + β·L_FT(P_enc(T_feat(x)), Tr(S_feat(x)))`` where the
    teacher and the paraphraser (trained by :class:`ParaphraserTraining`) are
    frozen and the translator ``Tr`` trains with the student. ``call`` runs the
    student (``predict`` and ``evaluate`` give the student's outputs and
    metrics); during training it also returns the student factor, which
    ``compute_loss`` compares with the teacher factor. ``ft_loss`` (the unweighted
    ``L_FT``) is logged besides the loss.

    Example::

        ft = FactorTransfer(student, teacher, paraphraser, beta=500.0)
        ft.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
        ft.fit(x_train, y_train, epochs=30)
        ft.student.save("student.keras")          # the model to export

    Args:
        student: the functional or Sequential model to train; it must output
            logits, or probabilities through a softmax (the compiled loss decides).
        teacher: the trained teacher (frozen).
        paraphraser: a trained, built :class:`Paraphraser`.
        translator: a :class:`Translator`; by default a new one with the
            paraphraser's factor channels.
        beta: ``β`` of eq. 3.2 (500 on CIFAR in 002 §3.3).
        p: norm of eq. 3.4 (1 as in the dissertation, or 2).
        teacher_layer, student_layer: names of the tapped layers; default to each
            model's last layer with a 4-D output. Their spatial sizes must match.
        **kwargs: base ``Model`` arguments.

    Attributes:
        student: the model to export (shares its weights with this model).
        translator: the trained translator (dropped after training).
    """

    def __init__(self, student, teacher, paraphraser, translator=None, beta=500.0, p=1,
                 teacher_layer=None, student_layer=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(paraphraser, Paraphraser) or not paraphraser.built:
            raise ValueError(
                "paraphraser must be a built tfcompress Paraphraser (train it first with "
                f"ParaphraserTraining); received: paraphraser={paraphraser!r}"
            )
        self.beta = _check_positive_real(beta, "beta")
        self.p = losses.check_norm_order(p)
        self.teacher = teacher
        self.teacher_layer, self._teacher_features = _frozen_features(teacher, teacher_layer)
        self.paraphraser = paraphraser
        paraphraser.trainable = False
        self.student = student
        self.student_layer = student_layer or last_feature_map(student)
        self._student_features = feature_extractor(student, self.student_layer, "student")
        if translator is None:
            translator = Translator(paraphraser.factor_channels, name="translator")
        if not isinstance(translator, Translator):
            raise ValueError(
                f"translator must be a tfcompress Translator; received: translator={translator!r}"
            )
        if translator.factor_channels != paraphraser.factor_channels:
            raise ValueError(
                f"translator.factor_channels ({translator.factor_channels}) must equal "
                f"paraphraser.factor_channels ({paraphraser.factor_channels})"
            )
        teacher_size = tuple(self._teacher_features.outputs[0].shape[1:3])
        student_size = tuple(self._student_features.outputs[0].shape[1:3])
        if teacher_size != student_size:
            raise ValueError(
                f"The tapped feature maps must have the same spatial size; teacher layer "
                f"{self.teacher_layer!r} gives {teacher_size}, student layer "
                f"{self.student_layer!r} gives {student_size}"
            )
        self.translator = translator
        _build_on(translator, self._student_features)
        self.ft_tracker = keras.metrics.Mean(name="ft_loss")
        self.built = True

    def call(self, inputs, training=None):
        features, outputs = self._student_features(inputs, training=training)
        if training:
            return outputs, self.translator(features, training=training)
        return outputs

    def teacher_factor(self, inputs):
        """``F_T``: the paraphraser's encoding of the teacher's feature map."""
        return _teacher_factor(self._teacher_features, self.paraphraser, inputs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Eq. 3.2: the compiled loss on the student's outputs + ``β·L_FT`` (eq. 3.4).

        In evaluation (``call`` gave the outputs alone) the student factor is
        computed again, so ``val_loss`` and ``val_ft_loss`` are the same objective.
        """
        if y_pred is None:
            y_pred = self(x, training=training)
        if isinstance(y_pred, (tuple, list)):
            outputs, student_factor = y_pred
        else:
            features, outputs = self._student_features(x, training=False)
            student_factor = self.translator(features, training=False)
        ft = losses.factor_transfer_loss(self.teacher_factor(x), student_factor, self.p)
        self.ft_tracker.update_state(ft)
        return super().compute_loss(x, y, outputs, sample_weight, training) + self.beta * ft

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(y_pred, (tuple, list)):
            y_pred = y_pred[0]
        return super().compute_metrics(x, y, y_pred, sample_weight)

    _MODULES = ("student", "teacher", "paraphraser", "translator")

    def get_config(self):
        return {**super().get_config(), **_serialized(self, self._MODULES),
                "beta": self.beta, "p": self.p, "teacher_layer": self.teacher_layer,
                "student_layer": self.student_layer}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Keras rebuilds the paraphraser from its build config, so it arrives built
        return cls(**_deserialized(config, cls._MODULES, custom_objects))
