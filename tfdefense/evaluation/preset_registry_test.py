"""The preset registry imports no preset until it is read, and knows every built-in preset module."""

import pathlib
import subprocess
import sys

from tfdefense.evaluation import preset_registry, runner

PRESETS_DIR = pathlib.Path(preset_registry.__file__).parent / "presets"


def test_every_preset_module_is_listed_as_a_builtin():
    registering = {
        f"tfdefense.evaluation.presets.{p.stem}"
        for p in PRESETS_DIR.glob("*.py")
        if "@register_preset(" in p.read_text()
    }
    assert registering and registering == set(preset_registry.BUILTIN_PRESET_MODULES)


def test_presets_are_imported_on_the_first_read_of_the_registry():
    script = (
        "import sys\n"
        "from tfdefense.evaluation import preset_registry, runner\n"
        "import tfdefense.evaluation.presets.common\n"
        "loaded = lambda: sorted(m for m in preset_registry.BUILTIN_PRESET_MODULES if m in sys.modules)\n"
        "print(loaded())\n"
        "print(len(preset_registry.list_presets()), len(loaded()))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    before, after = result.stdout.split("\n")[:2]
    assert before == "[]"  # importing the registry, the runner and a preset helper module loads no preset
    assert after == f"{len(runner.list_presets())} {len(preset_registry.BUILTIN_PRESET_MODULES)}"


def test_runner_offers_the_registry_names():
    for name in (
        "Preset",
        "PresetUnavailable",
        "register_preset",
        "list_presets",
        "get_preset",
        "check_preset_filters",
        "SCALES",
    ):
        assert getattr(runner, name) is getattr(preset_registry, name)
    assert runner.get_preset("quickstart").name == "quickstart"
