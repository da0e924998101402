"""Position-based scaled gradient (PSG / PSGD, 002 chapter 4).

An optimizer wrapper that scales each kernel gradient by ``λ_s·(|w − Q(w)| + ε)``
(eq. 4.7-4.8) so training converges to weights that sit near a quantization grid
(eq. 4.13) or near zero, plus the targets and a callback that switches it on.
"""

from tfcompress.psg.optimizer import ScaledGradient, default_psg_variables
from tfcompress.psg.schedule import ScaledGradientSchedule, find_scaled_gradient
from tfcompress.psg.targets import PSGTarget, QuantizationGrid, Zero

__all__ = [
    "PSGTarget",
    "QuantizationGrid",
    "ScaledGradient",
    "ScaledGradientSchedule",
    "Zero",
    "default_psg_variables",
    "find_scaled_gradient",
]
