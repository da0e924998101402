"""The three gradient modes and two paths — the one place where they are defined.

DESIGN.md "Pruning: one wrapper, three gradient modes":

| mode | path | forward weight | gradient reaching the dense ``w`` |
| --- | --- | --- | --- |
| ``hard`` | ``pruned`` | ``w * m`` | ``g * m`` |
| ``feedback`` (DPF) | ``pruned`` | ``w + stop_gradient(w*m - w)`` | ``g`` (straight-through, eq. 5.2 with ∂w̄/∂w ≈ 1) |
| ``dual`` (DCIL) | ``pruned`` | ``w * m`` | ``g_P * m`` |
| ``dual`` (DCIL) | ``super`` | ``stop_gradient(w*m) + w*(1-m)`` | ``g_S * (1-m)`` |

Summed over both DCIL paths the update is eq. 5.3 of 002:
``W ← W − η{M ⊙ ∇_W̄ L + (1−M) ⊙ ∇_W L}``. The super path's *value* is the dense
``w`` (the S-net), its gradient reaches only the inactive weights.

Mask-update policy per mode (``keep_updating``): ``hard`` and ``feedback`` freeze the
masks after the schedule's ``end_step`` (DPF); ``dual`` keeps recomputing them every
``frequency`` steps at the final sparsity through the end of training (DCIL).

Extension point for the DCIL transform: ``tfcompress.pruning.dcil`` calls every
wrapper twice, ``wrapper(x, path="pruned")`` and ``wrapper(x, path="super")``; only
the ``pruned`` call advances the wrapper's step counter.
"""

from keras import ops

MODES = ("hard", "feedback", "dual")
PATHS = ("pruned", "super")
PRIMARY_PATH = "pruned"

# Whether masks keep being recomputed after the schedule's end_step.
KEEP_UPDATING = {"hard": False, "feedback": False, "dual": True}


def check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; received: mode={mode!r}")
    return mode


def check_path(path, mode):
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}; received: path={path!r}")
    if path == "super" and mode != "dual":
        raise ValueError(
            "path='super' exists only in mode='dual' (DCIL); received: "
            f"path={path!r} with mode={mode!r}"
        )
    return path


def effective_weight(w, m, mode, path=PRIMARY_PATH):
    """The weight the wrapped layer computes with (see the table above).

    Args:
        w: the dense weight (variable or tensor).
        m: its mask, broadcastable to ``w`` (same dtype).
        mode: ``"hard"``, ``"feedback"`` or ``"dual"``.
        path: ``"pruned"`` or ``"super"`` (``"super"`` only for ``"dual"``).

    Returns:
        A tensor with ``w``'s shape.
    """
    w = ops.convert_to_tensor(w)
    m = ops.cast(m, w.dtype)
    if path == "super":
        return ops.stop_gradient(w * m) + w * (1.0 - m)
    if mode == "feedback":
        return w + ops.stop_gradient(w * m - w)
    return w * m
