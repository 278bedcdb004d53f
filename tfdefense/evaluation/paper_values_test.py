"""Every published number of paper_values.py occurs in its paper's text, in its table's row and column.

The papers' texts are not part of the repository. They are looked for in $TFDEFENSE_PAPERS_DIR, then in
`shared/papers` beside the repository; where neither holds them (a user's clone) the checks against the
text are skipped with that reason. A $TFDEFENSE_PAPERS_DIR that lacks a text fails the check, and so does
a missing folder under $TFDEFENSE_TESTS_STRICT=1 (CI sets both).
"""

import os
import pathlib

import pytest

from tfdefense.evaluation import paper_values
from tfdefense.evaluation.paper_values import NOT_IN_TEXT, PaperValue

PAPERS_DIR_ENV = "TFDEFENSE_PAPERS_DIR"
SHARED_PAPERS = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "papers"
TABLE_LINES = 40  # a table's rows follow its anchor within this many lines
PROSE_CHARS = 40  # a number in the prose follows its anchor within this many characters


def papers_dir():
    """The folder holding the papers' texts: $TFDEFENSE_PAPERS_DIR, else shared/papers beside the repository."""
    from_env = os.environ.get(PAPERS_DIR_ENV)
    return pathlib.Path(from_env).expanduser() if from_env else SHARED_PAPERS


@pytest.fixture
def papers():
    """Skips (with the reason) when the texts are found nowhere and $TFDEFENSE_PAPERS_DIR is unset."""
    folder = papers_dir()
    if not os.environ.get(PAPERS_DIR_ENV) and not (folder / "ape-gan.txt").is_file():
        reason = (
            f"the papers' texts are not here: set ${PAPERS_DIR_ENV} to the folder holding ape-gan.txt "
            f"and the other papers' .txt files (looked in {folder})"
        )
        if os.environ.get("TFDEFENSE_TESTS_STRICT", "") not in ("", "0"):  # CI: never skipped
            pytest.fail(reason)
        pytest.skip(reason)
    return folder


def _text(paper):
    path = papers_dir() / paper
    assert path.is_file(), f"the papers' text is missing: {path} (set ${PAPERS_DIR_ENV} to the papers' folder)"
    return path.read_text(encoding="utf-8")


def _cells(line):
    separator = "|" if "|" in line else "\t"
    return [cell.strip() for cell in line.split(separator)]


def _check(value):
    text = _text(value.paper)
    assert text.count(value.anchor) == 1, f"anchor of {value.source} not found exactly once: {value.anchor!r}"
    start = text.index(value.anchor)
    if value.row is None:
        window = text[start : start + len(value.anchor) + PROSE_CHARS]
        assert value.text in window, f"{value.source}: {value.text!r} not in {window!r}"
        return
    lines = text[start:].splitlines()[:TABLE_LINES]
    rows = [_cells(line) for line in lines if _cells(line)[0] == value.row]
    assert rows, f"{value.source}: no row {value.row!r} within {TABLE_LINES} lines of {value.anchor!r}"
    cells = rows[0]
    assert len(cells) > value.column, f"{value.source}: row has only {cells}"
    assert cells[value.column].rstrip("%") == value.text, f"{value.source}: the text has {cells[value.column]!r}"


def test_every_value_is_in_its_papers_text(papers):
    values = paper_values.all_values()
    assert len(values) > 150
    failures = []
    for value in values:
        try:
            _check(value)
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, "\n".join(failures)


def test_a_value_not_in_the_text_fails_the_check(papers):
    real = paper_values.apegan_values("mnist")["table1"][("apegan", "fgsm")]
    assert real.value == pytest.approx(0.028)
    _check(real)
    for wrong in (
        PaperValue(real.paper, real.table, real.anchor, real.row, real.column, real.column_name, "3.5"),
        PaperValue(real.paper, real.table, real.anchor, real.row, 1, real.column_name, "2.8"),  # wrong column
        PaperValue(real.paper, real.table, real.anchor, "L-BFGS", real.column, real.column_name, "2.8"),  # wrong row
        PaperValue(real.paper, real.table, "Table 9: not a caption", real.row, real.column, real.column_name, "2.8"),
    ):
        with pytest.raises(AssertionError):
            _check(wrong)


def test_apegan_tables_1_to_3_for_mnist():
    values = paper_values.apegan_values("mnist")
    table1 = {key: v.value for key, v in values["table1"].items()}
    assert set(table1) == {
        (c, a) for c in ("target", "apegan") for a in ("lbfgs", "fgsm", "deepfool", "jsma", "cw_l0", "cw_l2", "cw_linf")
    }
    assert table1[("target", "fgsm")] == pytest.approx(0.963) and table1[("apegan", "jsma")] == pytest.approx(0.386)
    assert values["table2"][("target", "clean")].value == pytest.approx(0.008)
    assert values["table2"][("apegan", "clean")].value == pytest.approx(0.012)
    table3 = [values["table3"][("apegan", eps)].text for eps in ("0.1", "0.2", "0.3", "0.4")]
    assert table3 == ["0.8", "1.1", "2.8", "21.0"]
    assert {k: v.text for k, v in values["clean"].items()} == {"A": "0.9", "B": "0.5", "C": "0.8"}
    assert "ape-gan.txt Table 1, row 'FGSM'" in values["table1"][("apegan", "fgsm")].source


class _Run:
    def __init__(self, rows):
        self.rows, self.notes = rows, []

    def note(self, text):
        self.notes.append(text)


def test_annotate_rows_fills_values_notes_and_leaves_the_rest():
    value = paper_values.apegan_values("mnist")["table1"][("apegan", "fgsm")]
    rows = [
        {"attack": "fgsm", "paper_value": None},
        {"attack": "jsma", "paper_value": None},
        {"attack": "pgd", "paper_value": None},
    ]
    run = _Run(rows)
    lookup = {"fgsm": value, "jsma": NOT_IN_TEXT}.get
    paper_values.annotate_rows(run, lambda row: lookup(row["attack"]), note="from the text")
    assert rows[0]["paper_value"] == pytest.approx(0.028) and "Table 1" in rows[0]["paper_source"]
    assert rows[1]["paper_value"] is None and rows[1]["paper_note"] == NOT_IN_TEXT
    assert rows[2] == {"attack": "pgd", "paper_value": None}
    assert run.notes == ["from the text"]


def test_apegan_mnist_preset_labels_get_the_papers_tables_1_to_3():
    from tfdefense.evaluation.presets import apegan

    def row(table, defense, attack):
        return {"table": table, "defense": defense, "attack": attack, "metric": "error_rate", "paper_value": None}

    rows = [
        row(apegan.TABLE1, "none (model A)", "lbfgs"),
        row(apegan.TABLE1, "apegan (model B)", "cw_l2"),
        row(apegan.TABLE1, "apegan (model C)", "fgsm"),
        row(apegan.CLEAN_TABLE, "model B", "clean"),
        row(f"{apegan.TABLE2} (target: model C)", "none", "gaussian_noise var 0.05"),
        row(f"{apegan.TABLE2} (target: model C)", "apegan", "clean"),
        row(f"{apegan.TABLE3} (target: model C)", "apegan", "fgsm eps 0.4"),
        row("Papers' protocol vs adaptive", "apegan", "pgd"),
    ]
    run = _Run(rows)
    apegan._fill_paper_column(run, "mnist")
    assert [r["paper_value"] for r in rows[:-1]] == pytest.approx([0.934, 0.015, 0.028, 0.005, 0.017, 0.012, 0.21])
    assert rows[-1]["paper_value"] is None and "paper_note" not in rows[-1]
    assert "model A for L-BFGS and DeepFool" in run.notes[0]
