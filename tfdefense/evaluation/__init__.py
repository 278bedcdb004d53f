"""Evaluation: metrics, protocols, runner and reports."""

from tfdefense.evaluation.metrics import accuracy, predict_labels

__all__ = ["accuracy", "predict_labels"]
