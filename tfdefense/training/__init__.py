"""Training helpers: callbacks for `fit` (loss-weight schedules, the training attack's eps ramp, a CPU-time budget,
a resumable epoch log) and optimizers (`FusedAdam`)."""

from tfdefense.training.callbacks import (
    VERSATILE_STAGES,
    ComputeBudget,
    EpsilonRamp,
    StagedLossWeights,
    check_stages,
    versatile_stages,
)
from tfdefense.training.epoch_log import EpochLog, read_epoch_log
from tfdefense.training.optimizers import FusedAdam, cosine_fused_adam, default_optimizer

__all__ = [
    "VERSATILE_STAGES",
    "ComputeBudget",
    "EpochLog",
    "EpsilonRamp",
    "FusedAdam",
    "StagedLossWeights",
    "check_stages",
    "cosine_fused_adam",
    "default_optimizer",
    "read_epoch_log",
    "versatile_stages",
]
