"""Built-in evaluation presets (each module registers its presets on import)."""

from tfdefense.evaluation.presets import apegan, egan, pix2pix, quickstart, versatile  # noqa: F401
from tfdefense.evaluation.presets import robust  # noqa: F401
