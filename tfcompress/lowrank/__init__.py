"""Low-rank factorization: SVD for Dense, Tucker-2 and CP for Conv2D (TensorLy).

:func:`factorize` rewrites a model with each selected layer replaced by a chain
of smaller ordinary Keras layers; :mod:`~tfcompress.lowrank.decompositions` holds
the kernel decompositions and the rank selection by rank, parameter ratio or
kept energy; :func:`recalibrate_batch_norms` re-estimates BatchNormalization
statistics after the rewrite.
"""

from tfcompress.lowrank import decompositions
from tfcompress.lowrank.calibration import recalibrate_batch_norms
from tfcompress.lowrank.factorize import factorize

__all__ = ["decompositions", "factorize", "recalibrate_batch_norms"]
