"""Scans the package source: nothing in it can unpickle data or turn off Keras' safe mode."""

import io
import pathlib
import re
import tokenize

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tfdefense"
SCANNED_DIRS = (PACKAGE, PACKAGE.parent / "benchmarks")

# Plain text, anywhere in a file (code, strings and comments alike).
FORBIDDEN_TEXT = {
    "import pickle": re.compile(r"\bimport\s+(c|_)?pickle\b|\bfrom\s+(c|_)?pickle\s+import\b"),
    "pickle.load": re.compile(r"\b(c|_)?pickle\s*\.\s*(loads?|Unpickler)\b"),
    "allow_pickle=True": re.compile(r"\ballow_pickle\s*=\s*True\b"),
    "safe_mode=False": re.compile(r"\bsafe_mode\s*=\s*False\b"),
}
# Modules that unpickle (or load code objects); none may be named in code.
UNPICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal", "joblib"}


def _source_files():
    for folder in SCANNED_DIRS:
        for path in sorted(folder.rglob("*.py")):
            if not path.name.endswith("_test.py") and path.name != "conftest.py":
                yield path


def _text_findings(text, name):
    for label, pattern in FORBIDDEN_TEXT.items():
        for match in pattern.finditer(text):
            yield f"{name}:{text.count(chr(10), 0, match.start()) + 1} has {label}"


def _code_findings(text, name):
    """Uses of unpickling modules and unsafe keyword values, found in code tokens (not prose)."""
    tokens = [
        t
        for t in tokenize.generate_tokens(io.StringIO(text).readline)
        if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
    ]
    for i, token in enumerate(tokens):
        where = f"{name}:{token.start[0]}"
        if token.type == tokenize.NAME and token.string in UNPICKLING_MODULES:
            yield f"{where} names {token.string}"
        if token.type == tokenize.STRING and token.string.strip("'\"") in UNPICKLING_MODULES:
            yield f"{where} names {token.string}"  # importlib.import_module("pickle")
        if token.type == tokenize.NAME and token.string == "enable_unsafe_deserialization":
            yield f"{where} calls enable_unsafe_deserialization"
        if token.type == tokenize.NAME and token.string in ("allow_pickle", "safe_mode"):
            if i + 2 < len(tokens) and tokens[i + 1].string == "=":
                safe = "False" if token.string == "allow_pickle" else "True"
                if tokens[i + 2].string != safe:
                    yield f"{where} sets {token.string}={tokens[i + 2].string}"


def test_scan_covers_the_package():
    files = {p.relative_to(PACKAGE).as_posix() for p in _source_files() if PACKAGE in p.parents}
    assert {"data/datasets.py", "data/cifar_batches.py", "export/saved_model.py", "evaluation/runner.py"} <= files
    assert not any(name.endswith("_test.py") for name in files)


def test_no_pickle_or_unsafe_loading_in_the_package():
    findings = []
    for path in _source_files():
        text, name = path.read_text(), str(path.relative_to(PACKAGE.parent))
        findings += [*_text_findings(text, name), *_code_findings(text, name)]
    assert findings == []


def test_scan_catches_each_forbidden_form():
    samples = {  # source -> findings (text pattern + code token)
        "import pickle\n": 2,
        "from pickle import loads\n": 2,
        "import _pickle as p\n": 2,
        "x = pickle.loads(b)\n": 2,
        "np.load(f, allow_pickle=True)\n": 2,
        "np.load(f, allow_pickle=flag)\n": 1,
        "keras.saving.load_model(p, safe_mode=False)\n": 2,
        "importlib.import_module('pickle')\n": 1,
        "keras.config.enable_unsafe_deserialization()\n": 1,
        "import dill\n": 1,
        "np.load(f, allow_pickle=False)\nload_model(p, safe_mode=True)\n# about pickle streams\n": 0,
    }
    for source, expected in samples.items():
        findings = [*_text_findings(source, "sample.py"), *_code_findings(source, "sample.py")]
        assert len(findings) == expected, (source, findings)
