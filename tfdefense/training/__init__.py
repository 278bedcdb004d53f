"""Training helpers: callbacks for `fit` (loss-weight schedules, the training attack's eps ramp, a CPU-time budget)."""

from tfdefense.training.callbacks import (
    VERSATILE_STAGES,
    ComputeBudget,
    EpsilonRamp,
    StagedLossWeights,
    check_stages,
    versatile_stages,
)

__all__ = ["VERSATILE_STAGES", "ComputeBudget", "EpsilonRamp", "StagedLossWeights", "check_stages", "versatile_stages"]
