"""Built-in evaluation presets (each module registers its presets on import)."""

from tfdefense.evaluation.presets import quickstart  # noqa: F401
