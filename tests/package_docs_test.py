"""Every name and path CONTRIBUTING.md shows in backticks exists in the repository.

A span is read as:
- a path (has a `/` or ends in .py/.md/.toml/.cfg/.json): a file or folder of the repository whose path ends
  that way (`presets/recipes.py`); spans with `<placeholder>` or `*` are patterns and are skipped;
- a `$VARIABLE`: named in the package's or the tests' source;
- a Python name, dotted, optionally called or assigned (`common.load_data`, `run.pick(scales)`,
  `fit_data = "pairs"`): `tfdefense.x.y` (or `keras.x.y`) is imported and looked up; `module.attr` with a
  module of the package is looked up in it; any other name must be defined in the source (def, class,
  assignment, string key);
- commands (`python -m ...`, `--flags`) are checked only for the paths they name.
"""

import importlib
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]
PLACEHOLDERS = {"_private"}  # words CONTRIBUTING.md uses as examples, not as names
LIBRARIES = ("keras", "tensorflow", "numpy")  # names rooted here are looked up in the library
NAME = re.compile(r"@?([A-Za-z_][\w.]*)(?:$|\(|\[|\s*=|;|\s*\{)")
FILE_SUFFIXES = (".py", ".md", ".toml", ".cfg", ".json")


def _sources():
    files = [REPO / "conftest.py", *REPO.glob("tfdefense/**/*.py"), *REPO.glob("tests/*.py")]
    this = pathlib.Path(__file__).resolve()  # its made-up names must not count as defined
    return {
        path: path.read_text(encoding="utf-8") for path in files if "__pycache__" not in path.parts and path != this
    }


def _modules_by_name():
    found = {}
    for path in REPO.glob("tfdefense/**/*.py"):
        if path.name == "__init__.py" or path.stem.endswith("_test"):
            continue
        dotted = ".".join(path.relative_to(REPO).with_suffix("").parts)
        found.setdefault(path.stem, []).append(dotted)
    return found


def _defined(name, text):
    pattern = (
        rf"(?:def|class)\s+{name}\b|^\s*{name}\s*[:=]|\bself\.{name}\s*=|[\"']{name}[\"']|\b{name}="
        rf"|import .*\b{name}\b"
    )
    return re.search(pattern, text, re.MULTILINE) is not None


def _lookup(dotted, modules, text):
    parts = dotted.split(".")
    roots = []
    if parts[0] in ("tfdefense", *LIBRARIES):
        roots = [(".".join(parts[:i]), parts[i:]) for i in range(len(parts), 0, -1)]
    elif parts[0] in modules and len(parts) > 1:
        roots = [(module, parts[1:]) for module in modules[parts[0]]]
    for module_name, attributes in roots:
        try:
            obj = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            for attribute in attributes:
                obj = getattr(obj, attribute)
        except AttributeError:
            continue
        return True
    if roots:
        return False
    return _defined(re.escape(parts[-1]), text)


def _path_exists(span):
    span = span.rstrip("/")
    if (REPO / span).exists():
        return True
    return any(
        str(p.relative_to(REPO)).endswith("/" + span)
        for p in REPO.rglob(pathlib.Path(span).name)
        if ".git" not in p.parts
    )


def missing(markdown):
    """The backticked spans of `markdown` that name nothing in the repository."""
    sources = _sources()
    text = "\n".join(sources.values())
    modules = _modules_by_name()
    problems = []
    for span in re.findall(r"`([^`\n]+)`", markdown):
        span = span.strip()
        if not span or span in PLACEHOLDERS or span.startswith(("~", '"', "'", "-")):
            continue
        words = span.split()
        if len(words) > 1 and words[0] in ("python", "pytest", "ruff", "pip"):  # a command: the paths it names
            problems += [w for w in words if "/" in w and w.endswith(".py") and not _path_exists(w)]
            continue
        if span.startswith("$"):
            if not re.search(rf"\b{re.escape(span[1:])}\b", text):
                problems.append(span)
            continue
        looks_like_path = ("/" in span or span.endswith(FILE_SUFFIXES)) and " " not in span
        if looks_like_path:
            if "<" in span or "*" in span:
                continue
            if not _path_exists(span):
                problems.append(span)
            continue
        match = NAME.match(span)
        if match is None:
            continue
        dotted = match.group(1).rstrip(".")
        if dotted in PLACEHOLDERS or not dotted.replace(".", "").replace("_", "").isalnum():
            continue
        if not _lookup(dotted, modules, text):
            problems.append(span)
    return problems


def test_every_name_contributing_shows_exists():
    markdown = (REPO / "CONTRIBUTING.md").read_text(encoding="utf-8")
    assert len(re.findall(r"`[^`\n]+`", markdown)) > 50
    problems = missing(markdown)
    assert not problems, f"CONTRIBUTING.md names what the repository does not have: {problems}"


def test_the_check_catches_a_renamed_hook_a_moved_module_and_a_missing_file():
    assert (
        missing(
            "`_run_cleverhans` `common.load_data` `tfdefense.attacks.base.Attack` `presets/recipes.py` "
            "`keras.saving.register_keras_serializable`"
        )
        == []
    )
    wrong = (
        "`_cleverhans_hook_that_was_renamed`",
        "`common.no_such_function`",
        "`tfdefense.attacks.base.Nope`",
        "`presets/no_such_file.py`",
        "`$TFDEFENSE_NO_SUCH_VARIABLE`",
        "`python benchmarks/no_such_benchmark.py check X.json`",
        "`keras.saving.no_such_decorator`",
    )
    assert len(missing(" ".join(wrong))) == len(wrong)
