"""Knowledge distillation: Factor Transfer (002 ch. 3) and the attention-transfer baseline.

* :class:`Paraphraser`, :class:`ParaphraserTraining` — step 1 of Factor Transfer
  (eq. 3.1): an autoencoder of the frozen teacher's last-group feature map;
* :class:`Translator`, :class:`FactorTransfer` — step 2 (eq. 3.2–3.4): the student
  trained with ``CE + β·L_FT``;
* :class:`AttentionTransfer` — the AT baseline as a
  ``keras.distillation.DistillationLoss``. The KD baseline is Keras's own
  ``keras.distillation.Distiller`` with ``LogitsDistillation(temperature=4)``.
"""

from tfcompress.distillation.factor_transfer import FactorTransfer
from tfcompress.distillation.factor_transfer import Paraphraser
from tfcompress.distillation.factor_transfer import ParaphraserTraining
from tfcompress.distillation.factor_transfer import Translator
from tfcompress.distillation.losses import AttentionTransfer
from tfcompress.distillation.losses import attention_map
from tfcompress.distillation.losses import attention_transfer_loss
from tfcompress.distillation.losses import factor_transfer_loss
from tfcompress.distillation.losses import reconstruction_loss

__all__ = [
    "AttentionTransfer",
    "FactorTransfer",
    "Paraphraser",
    "ParaphraserTraining",
    "Translator",
    "attention_map",
    "attention_transfer_loss",
    "factor_transfer_loss",
    "reconstruction_loss",
]
