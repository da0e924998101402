"""Model builders used in tests, tutorials and benchmarks.

Every builder returns a Keras 3 **functional** model that outputs **logits**
(no softmax; use ``from_logits=True`` losses), with deterministic layer names
that pruning code and tests refer to. Pass ``framework="tf_keras"`` to build the
identical Keras 2 twin (tf_keras is imported only then, never by
``import tfcompress.models``) and :func:`copy_weights_to_twin` to make both
compute the same function.

- :func:`mlp` — the 784-50-20-10 MLP of the dissertation §4.4.1.
- :func:`small_cnn` — 2 conv + 2 dense CNN (TFLite comparisons).
- :func:`resnet` — CIFAR ResNet-(6n+2), He et al. 2016.
- :func:`wide_resnet` — WRN-(6n+4)-k, Zagoruyko & Komodakis 2016.
- :func:`vgg` — VGG-11/13/16/19 with BatchNorm, Simonyan & Zisserman 2015.
- :func:`build` — any of the above by name (``"resnet20"``, ``"wrn16_4"``, …).
"""

from tfcompress.models.cnn import small_cnn
from tfcompress.models.mlp import mlp
from tfcompress.models.registry import available_models
from tfcompress.models.registry import build
from tfcompress.models.registry import copy_weights_to_twin
from tfcompress.models.registry import to_tf_keras
from tfcompress.models.resnet import resnet
from tfcompress.models.vgg import vgg
from tfcompress.models.wide_resnet import wide_resnet

__all__ = [
    "available_models",
    "build",
    "copy_weights_to_twin",
    "mlp",
    "resnet",
    "small_cnn",
    "to_tf_keras",
    "vgg",
    "wide_resnet",
]
