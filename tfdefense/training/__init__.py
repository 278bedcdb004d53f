"""Training helpers: callbacks for `fit` (loss-weight schedules)."""

from tfdefense.training.callbacks import VERSATILE_STAGES, StagedLossWeights, check_stages, versatile_stages

__all__ = ["VERSATILE_STAGES", "StagedLossWeights", "check_stages", "versatile_stages"]
