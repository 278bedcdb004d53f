"""SavedModel export of purifiers and defended classifiers."""

from tfdefense.export.saved_model import export_saved_model

__all__ = ["export_saved_model"]
