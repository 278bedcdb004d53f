"""Built-in evaluation presets (registered on import)."""
