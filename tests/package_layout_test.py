"""The package's import structure: no private names cross modules, lower layers never import higher ones."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tfdefense"

# Lowest first; a module may import its own layer and any lower one. The base modules sit
# below every layer; `training` holds the generic fit tools (optimizers, callbacks, resume).
LAYERS = ["data", "training", "models", "attacks", "defenses", "export", "evaluation", "cli"]
CLI_MODULES = {"evaluate", "train", "train_purifier", "_cli", "__init__"}
BASE_MODULES = {"_validation", "_io", "_mixed_precision", "config", "distribute", "inference"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield path, parts


def _layer(parts):
    """parts: ("tfdefense", "attacks", "fab") -> "attacks"."""
    if len(parts) < 2:
        return "cli"
    top = parts[1]
    if top in LAYERS:
        return top
    if top in CLI_MODULES:
        return "cli"
    if top in BASE_MODULES:
        return "base"
    return "cli"


def _rank(layer):
    return -1 if layer == "base" else LAYERS.index(layer)


def _imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("tfdefense"):
            yield node.lineno, node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tfdefense"):
                    yield node.lineno, alias.name, []


def _is_test(path):
    return path.name.endswith("_test.py") or path.name == "conftest.py"


def test_no_private_name_is_imported_from_another_module():
    """A private module's public names may be imported (`from tfdefense._io import write_json`);
    unit tests may import the private helpers of the module they test."""
    problems = []
    for path, _parts in _modules():
        if _is_test(path):
            continue
        for line, module, names in _imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: from {module} import {', '.join(private)}")
    assert not problems, "\n".join(problems)


def test_lower_layers_never_import_higher_ones():
    problems = []
    for path, parts in _modules():
        if _is_test(path):
            continue
        layer = _layer(parts)
        for line, module, names in _imports(path):
            targets = [f"{module}.{name}" for name in names] if module == "tfdefense" else [module]
            for target in targets:
                target_layer = _layer(tuple(target.split(".")))
                if _rank(target_layer) > _rank(layer):
                    where = f"{path.relative_to(PACKAGE.parent)}:{line}"
                    problems.append(f"{where} ({layer}) imports {target} ({target_layer})")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("role", ["purifiers", "transforms", "trainers", "detectors"])
def test_defenses_are_grouped_by_role(role):
    assert (PACKAGE / "defenses" / role / "__init__.py").is_file()


def test_public_defense_names_stay_importable_from_the_package():
    import tfdefense.defenses as defenses

    for name in defenses.__all__:
        assert getattr(defenses, name) is not None, name
