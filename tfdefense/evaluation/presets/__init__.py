"""Built-in evaluation presets, one module per paper (plus quickstart and robust).

This package imports none of them: `tfdefense.evaluation.preset_registry` imports the modules
listed in its `BUILTIN_PRESET_MODULES` by name when the registry is first read, and each module
registers its presets with `register_preset` on import.
"""
