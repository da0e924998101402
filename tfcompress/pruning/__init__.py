"""tfcompress.pruning — masks, schedules, criteria, the prune wrapper and its callbacks.

Typical use (002 ch. 5; DESIGN.md "Pruning: one wrapper, three gradient modes")::

    from tfcompress import pruning

    pruned = pruning.prune_model(
        model,
        schedule=pruning.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=2000, frequency=16),
        mode="feedback",           # "hard" (TFMOT-like), "feedback" (DPF), "dual" (DCIL)
        granularity="unstructured",  # "structured", "n:m"/"2:4", "block"
        threshold="global",
    )
    pruned.compile(...)
    pruned.fit(x, y, callbacks=[pruning.UpdateMasks(), pruning.PruningSummary()])
    print(pruning.sparsity_report(pruned))
    small = pruning.strip(pruned)

Module map (one public class per module):

* ``schedules`` — ``ConstantSparsity``, ``PolynomialDecay`` (eq. 5.1).
* ``criteria`` — ``Criterion`` interface, ``MagnitudeCriterion``.
* ``granularity`` — ``Unstructured``, ``Structured``, ``NM``, ``Block``.
* ``registry`` — prunable weights of Keras layers; ``get_prunable_weights()`` protocol.
* ``modes`` — the forward/gradient rule of each mode and path (the one place for it).
* ``substitution`` — how the wrapped layer is made to compute with the masked weight.
* ``wrapper`` — ``PruneWrapper``, ``prune_layer``.
* ``controller`` — mask recomputation (layer-wise / global), stale-mask detection.
* ``callbacks`` — ``UpdateMasks``, ``PruningSummary``.
* ``prune_model`` / ``strip`` / ``report`` — model-level helpers.
* ``dcil`` — ``DCILModel`` and ``dcil()``: the two-path DCIL transform (eq. 5.3–5.4, Alg. 1).
* ``dpf`` — ``dpf()``: the DPF baseline (feedback mode, global threshold, frozen masks).
* ``shrink`` — ``shrink()``: structured surgery, pruned filters physically removed (exact);
  ``channel_groups()``: the layers feeding one residual ``Add`` (one shared channel mask).
* ``position_bias`` — ``PositionBias``: the fixed per-position bias map ``shrink`` adds
  after a zero-padded convolution whose removed input channels were constants.

Extension points: the DCIL two-path transform calls wrappers with
``path="pruned"|"super"`` (``modes.py``); structured surgery can read
``PruneWrapper.targets`` (per-channel masks) and ``registry.WeightSpec.out_axes``;
saliency criteria subclass ``Criterion``.
"""

from tfcompress.pruning.callbacks import PruningSummary
from tfcompress.pruning.callbacks import UpdateMasks
from tfcompress.pruning.controller import stale_wrappers
from tfcompress.pruning.controller import update_masks
from tfcompress.pruning.criteria import Criterion
from tfcompress.pruning.criteria import MagnitudeCriterion
from tfcompress.pruning.dcil import DCILEpochClock
from tfcompress.pruning.dcil import DCILModel
from tfcompress.pruning.dcil import dcil
from tfcompress.pruning.dpf import dpf
from tfcompress.pruning.granularity import NM
from tfcompress.pruning.granularity import Block
from tfcompress.pruning.granularity import Granularity
from tfcompress.pruning.granularity import Structured
from tfcompress.pruning.granularity import Unstructured
from tfcompress.pruning.position_bias import PositionBias
from tfcompress.pruning.prune_model import prune_model
from tfcompress.pruning.registry import WeightSpec
from tfcompress.pruning.registry import register as register_prunable
from tfcompress.pruning.report import SparsityReport
from tfcompress.pruning.report import sparsity_report
from tfcompress.pruning.schedules import ConstantSparsity
from tfcompress.pruning.schedules import PolynomialDecay
from tfcompress.pruning.schedules import PruningSchedule
from tfcompress.pruning.shrink import channel_groups
from tfcompress.pruning.shrink import shrink
from tfcompress.pruning.strip import strip
from tfcompress.pruning.strip import strip_layer
from tfcompress.pruning.wrapper import PruneWrapper
from tfcompress.pruning.wrapper import prune_layer

__all__ = [
    "Block",
    "ConstantSparsity",
    "Criterion",
    "DCILEpochClock",
    "DCILModel",
    "Granularity",
    "MagnitudeCriterion",
    "NM",
    "PolynomialDecay",
    "PositionBias",
    "PruneWrapper",
    "PruningSchedule",
    "PruningSummary",
    "SparsityReport",
    "Structured",
    "Unstructured",
    "UpdateMasks",
    "WeightSpec",
    "channel_groups",
    "dcil",
    "dpf",
    "prune_layer",
    "prune_model",
    "register_prunable",
    "shrink",
    "sparsity_report",
    "stale_wrappers",
    "strip",
    "strip_layer",
    "update_masks",
]
