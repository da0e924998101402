"""Feature-distillation losses: factor transfer (002 eq. 3.1, 3.4) and attention transfer.

All take NHWC feature maps and return a scalar (``keras.ops``, any backend).
"""

import numbers

import keras
from keras import ops


def check_norm_order(p, arg="p"):
    """``p`` of an ℓp distance: 1 or 2."""
    if isinstance(p, bool) or not isinstance(p, numbers.Integral) or p not in (1, 2):
        raise ValueError(f"{arg} must be 1 or 2; received: {arg}={p!r}")
    return int(p)


def _lp_mean(difference, p):
    return ops.mean(ops.abs(difference)) if p == 1 else ops.mean(ops.square(difference))


def _normalized_rows(x):
    """Each sample flattened and divided by its ℓ2 norm (F / ‖F‖₂ of eq. 3.4)."""
    flat = ops.reshape(x, (ops.shape(x)[0], -1))
    return flat / ops.maximum(ops.norm(flat, axis=1, keepdims=True), 1e-12)


def reconstruction_loss(features, reconstruction, p=2):
    """Paraphraser reconstruction loss ``‖x − P(x)‖`` (002 eq. 3.1).

    Eq. 3.1 is the squared ℓ2 norm (``p=2``, the default); the authors' code uses
    the ℓ1 distance (``p=1``). Both are averaged over every element.

    Example::

        loss = reconstruction_loss(features, paraphraser(features), p=1)
    """
    return _lp_mean(features - reconstruction, check_norm_order(p))


def factor_transfer_loss(teacher_factor, student_factor, p=1):
    """Factor transfer loss ``‖F_T/‖F_T‖₂ − F_S/‖F_S‖₂‖_p`` (002 eq. 3.4).

    Each sample's factor is flattened and ℓ2-normalized; the ℓp distance (``p=1``
    as reported in the dissertation) is averaged over every element, as in the
    authors' code (``β = 500`` on CIFAR is tuned for that averaging). The teacher
    factor is a target: no gradient flows into it.

    Example::

        loss = factor_transfer_loss(paraphraser.encode(t_features), translator(s_features))

    Raises:
        ValueError: if the two factors differ in shape.
    """
    p = check_norm_order(p)
    if tuple(teacher_factor.shape[1:]) != tuple(student_factor.shape[1:]):
        raise ValueError(
            "The teacher and student factors must have the same shape (the translator's "
            "output matches the paraphraser's factor channels, and the two feature maps "
            f"the same spatial size); received {tuple(teacher_factor.shape)} and "
            f"{tuple(student_factor.shape)}"
        )
    target = ops.stop_gradient(_normalized_rows(teacher_factor))
    return _lp_mean(target - _normalized_rows(student_factor), p)


def attention_map(features, p=2):
    """Spatial attention map ``Q = mean_c |A_c|^p``, flattened and ℓ2-normalized.

    Zagoruyko & Komodakis (2017), the AT baseline of 002 §3.3.

    Example::

        q = attention_map(features)               # (N, H, W, C) -> (N, H·W)
    """
    powered = ops.abs(features) if p == 1 else ops.square(features)
    return _normalized_rows(ops.mean(powered, axis=-1))


def attention_transfer_loss(teacher_features, student_features, p=2):
    """Attention transfer loss ``mean((Q_S − Q_T)²)`` over batch and positions.

    Multiply by ``β/2`` (``β = 1000`` in 002 §3.3) and sum over the tapped groups
    for the AT objective. Channel counts may differ; spatial sizes must match.

    Example::

        loss = 500.0 * attention_transfer_loss(teacher_features, student_features)

    Raises:
        ValueError: if the two feature maps differ in spatial size.
    """
    if tuple(teacher_features.shape[1:3]) != tuple(student_features.shape[1:3]):
        raise ValueError(
            "Attention transfer compares maps of the same spatial size; received "
            f"teacher features {tuple(teacher_features.shape)} and student features "
            f"{tuple(student_features.shape)}"
        )
    target = ops.stop_gradient(attention_map(teacher_features, p))
    return ops.mean(ops.square(attention_map(student_features, p) - target))


@keras.saving.register_keras_serializable(package="tfcompress")
class AttentionTransfer(keras.distillation.DistillationLoss):
    """Attention transfer as a ``keras.distillation.DistillationLoss``.

    For ``keras.distillation.Distiller``: one instance per tapped pair of layers
    (002 §3.3's AT baseline taps every group), weighted by ``β/2`` through the
    distiller's ``distillation_loss_weights``.

    Example::

        at = [AttentionTransfer(f"stage{i}_out", f"stage{i}_out") for i in (1, 2, 3)]
        distiller = keras.distillation.Distiller(
            teacher=teacher, student=student, distillation_losses=at,
            distillation_loss_weights=[500.0] * 3, student_loss_weight=0.5)

    Args:
        teacher_layer_name, student_layer_name: the tapped layers (4-D outputs of
            the same spatial size).
        p: exponent of the attention map (2 as in the AT paper).
    """

    def __init__(self, teacher_layer_name, student_layer_name, p=2):
        for arg, value in (("teacher_layer_name", teacher_layer_name),
                           ("student_layer_name", student_layer_name)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{arg} must be a layer name; received: {arg}={value!r}")
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.p = check_norm_order(p)

    def validate_outputs(self, teacher_outputs, student_outputs):
        for arg, value in (("teacher", teacher_outputs), ("student", student_outputs)):
            if len(value.shape) != 4:
                raise ValueError(
                    f"AttentionTransfer needs 4-D feature maps; the {arg} layer gives "
                    f"shape {tuple(value.shape)}"
                )

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return attention_transfer_loss(teacher_outputs, student_outputs, self.p)

    def get_config(self):
        return {"teacher_layer_name": self.teacher_layer_name,
                "student_layer_name": self.student_layer_name, "p": self.p}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
