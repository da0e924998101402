"""Pruning criteria: pluggable objects that score weights.

A criterion answers "how important is each element of this weight?":

    scores = criterion.score(wrapper, weight)

``weight`` is the dense (unmasked) ``keras.Variable`` of ``wrapper.layer``;
``scores`` is an array of the same shape (numpy or backend tensor) of **additive**
importances, higher = more important: threshold granularities sum them over a unit
(a filter for structured pruning, a block for block pruning) to score the unit and
prune the lowest-scoring units; N:M ranks them within each group of M. So
``MagnitudeCriterion("l2")`` returns ``w**2`` — its filter sums are squared L2 norms,
the filter-norm criterion of L1/L2-norm filter pruning (003/004), and elementwise it
orders exactly like ``|w|`` (the L2 magnitude criterion of DPF/DCIL, 002 §5.2.2).

Saliency criteria (SNIP ``|g ⊙ w|``, OBD ``½ h w²``, GraSP …) slot in by subclassing
:class:`Criterion`: they receive the wrapper (and thereby its layer, masks and step)
and may return backend tensors. Statistics they need from data (accumulated
gradients, Fisher/Hessian diagonals) belong in non-trainable weights they create on
the wrapper's layer or in a callback of their own that runs before
:class:`~tfcompress.pruning.UpdateMasks` — the controller only calls ``score``.
"""

import keras
import numpy as np

from tfcompress.pruning._utils import to_numpy


class Criterion:
    """Base class of pruning criteria.

    Subclasses implement :meth:`score` and, if they take arguments, ``get_config``.
    """

    def score(self, wrapper, weight):
        """Elementwise importance of ``weight`` (same shape, additive, higher = keep).

        Args:
            wrapper: the :class:`~tfcompress.pruning.PruneWrapper` owning ``weight``.
            weight: the dense ``keras.Variable`` being pruned.

        Returns:
            An array (numpy or backend tensor) with ``weight``'s shape.
        """
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(type(self).__name__)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="tfcompress")
class MagnitudeCriterion(Criterion):
    """Magnitude criterion: ``|w|`` (``norm="l1"``) or ``w²`` (``norm="l2"``).

    Elementwise both prune the smallest ``|w|``; over a unit (filter, block) they
    give the L1 norm and the squared L2 norm respectively. DCIL/DPF use L2
    (002 §5.2.2), filter pruning (Li et al., 003/004) uses L1.

    Args:
        norm: ``"l1"`` or ``"l2"``.

    Raises:
        ValueError: if ``norm`` is not one of them.
    """

    def __init__(self, norm="l2"):
        if norm not in ("l1", "l2"):
            raise ValueError(f"norm must be 'l1' or 'l2'; received: norm={norm!r}")
        self.norm = norm

    def score(self, wrapper, weight):
        w = np.asarray(to_numpy(weight), dtype=np.float64)
        return np.abs(w) if self.norm == "l1" else np.square(w)

    def get_config(self):
        return {"norm": self.norm}


def get(identifier):
    """Returns a criterion from an instance, a name (``"magnitude"``, ``"l1"``,
    ``"l2"``) or a serialized config."""
    if identifier is None:
        return MagnitudeCriterion("l2")
    if isinstance(identifier, Criterion):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in ("magnitude", "l2"):
            return MagnitudeCriterion("l2")
        if key == "l1":
            return MagnitudeCriterion("l1")
    if isinstance(identifier, dict):
        obj = keras.saving.deserialize_keras_object(identifier)
        if isinstance(obj, Criterion):
            return obj
    raise ValueError(
        "criterion must be a Criterion (e.g. MagnitudeCriterion('l2')) or one of "
        f"'magnitude', 'l1', 'l2'; received: criterion={identifier!r}"
    )
