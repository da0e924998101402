"""DPF: Dynamic Pruning with Feedback (Lin et al. 2020) — the baseline of DCIL (002 §5.2.1).

DPF prunes with a mask ``M`` recomputed every ``F`` steps (eq. 5.1 schedule, L2
magnitude, one global threshold) and trains the dense weights with the
straight-through gradient of eq. 5.2 (``∂w̄/∂w ≈ 1``): the forward pass uses
``W̄ = M ⊙ W``, the update reaches every weight, so pruned weights keep moving and
can be revived at the next mask update. Unlike DCIL, the masks are frozen once the
schedule reaches its target (``end_step``). In tfcompress this is
``PruneWrapper(mode="feedback")``; see :mod:`tfcompress.pruning.modes`.
"""

import numbers

from tfcompress.pruning import schedules as schedules_lib
from tfcompress.pruning.dcil import DEFAULT_FREQUENCY
from tfcompress.pruning.dcil import _select_layers
from tfcompress.pruning.dcil import find_classifier_head
from tfcompress.pruning.prune_model import prune_model


def dpf(
    model,
    schedule=None,
    granularity="unstructured",
    threshold="global",
    criterion="l2",
    layers=None,
    prune_head=False,
):
    """Returns ``model`` pruned for DPF training (eq. 5.1–5.2, the DCIL baseline).

    Equivalent to ``prune_model(model, mode="feedback", threshold="global", ...)``
    with the classifier head left dense by default, as in DPF's and DCIL's
    experiments (002 §5.3: "all convolutional layers except … the last fully
    connected layer"), so the two methods prune the same weights. Masks are
    recomputed every ``schedule.frequency`` steps until ``schedule.end_step`` and
    then frozen. Train with ``fit(..., callbacks=[UpdateMasks()])``.

    Args:
        model: a Sequential or functional model.
        schedule: a :class:`~tfcompress.pruning.PruningSchedule` (e.g.
            ``PolynomialDecay(0.0, 0.9, 0, target_step, frequency=16)``) or a
            float (``ConstantSparsity`` with ``frequency=16``).
        granularity: ``"unstructured"`` or ``"structured"`` (or any granularity).
        threshold: ``"global"`` (DPF) or ``"layer"``.
        criterion: pruning criterion (DPF: L2 magnitude).
        layers: layers to prune (``prune_model`` semantics); default every
            prunable layer except the classifier head.
        prune_head: also prune the classifier head when ``layers`` is ``None``.

    Returns:
        The pruned model (``mode="feedback"`` wrappers), not compiled.

    Raises:
        ValueError: on a missing schedule or an invalid argument of
            :func:`~tfcompress.pruning.prune_model`.

    Example:
        >>> pruned = dpf(model, schedule=PolynomialDecay(0.0, 0.9, 0, 2000, frequency=16))
        >>> pruned.compile("sgd", "sparse_categorical_crossentropy")
        >>> # pruned.fit(x, y, epochs=3, callbacks=[UpdateMasks()])
    """
    if schedule is None:
        raise ValueError(
            "schedule is required, e.g. PolynomialDecay(0.0, 0.9, begin_step=0, "
            "end_step=<target step>, frequency=16); received: schedule=None"
        )
    if isinstance(schedule, numbers.Real) and not isinstance(schedule, bool):
        schedule = schedules_lib.ConstantSparsity(float(schedule), frequency=DEFAULT_FREQUENCY)
    if layers is None and not prune_head:
        head, _ = find_classifier_head(model)
        layers = _select_layers(model, head, None)
    return prune_model(
        model,
        schedule=schedule,
        granularity=granularity,
        mode="feedback",
        criterion=criterion,
        threshold=threshold,
        layers=layers,
    )
