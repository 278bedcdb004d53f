"""Evaluation: metrics, protocols, runner and reports."""

from tfdefense.evaluation.metrics import (
    accuracy,
    attack_success_rate,
    l2_distances,
    mean_absolute_error,
    psnr,
    seconds_per_image,
    ssim,
)

__all__ = [
    "accuracy",
    "attack_success_rate",
    "l2_distances",
    "mean_absolute_error",
    "psnr",
    "seconds_per_image",
    "ssim",
]
