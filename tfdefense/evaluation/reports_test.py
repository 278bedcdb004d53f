import json

import pytest

from tfdefense.evaluation import plots, reports


def _results(rows):
    return {
        "schema_version": reports.SCHEMA_VERSION,
        "preset": "demo",
        "scale": "tiny",
        "seed": 0,
        "data": {"dataset": "digits", "description": "scikit-learn digits"},
        "wall_seconds": 1.5,
        "environment": reports.environment(),
        "rows": rows,
    }


ROW = {
    "table": "Table 1",
    "protocol": "whole_test_set",
    "defense": "none",
    "attack": "fgsm",
    "attack_config": {"eps": 0.3},
    "metric": "accuracy",
    "value": 0.25,
    "paper_value": None,
    "n": 100,
    "eval_mode": "tensor",
}


def test_writers_produce_valid_consistent_files(tmp_path):
    results = _results([ROW, {**ROW, "defense": "pix2pix", "value": 0.9, "paper_value": 0.98}])
    reports.validate_results(results)
    reports.write_reports(tmp_path, results, plots=["acc.png"])
    loaded = json.loads((tmp_path / "results.json").read_text())
    assert loaded["rows"][1]["value"] == 0.9
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("table,protocol") and len(csv_lines) == 3
    report = (tmp_path / "report.md").read_text()
    assert "| pix2pix | fgsm | whole_test_set | accuracy | 90.0% | 98.0% | 100 | tensor |" in report
    assert "scikit-learn digits" in report and "![acc.png](acc.png)" in report
    assert not list(tmp_path.glob(".*tmp*"))


def test_schema_rejects_bad_rows():
    with pytest.raises(ValueError, match="protocol"):
        reports.validate_results(_results([{**ROW, "protocol": "made_up"}]))
    bad = _results([ROW])
    del bad["data"]
    with pytest.raises(ValueError, match="data"):
        reports.validate_results(bad)


def test_plots_write_png(tmp_path, rng):
    curve = plots.plot_curves(tmp_path / "acc.png", {"none": ([0, 0.1, 0.3], [0.99, 0.5, 0.1])}, "eps")
    grid = plots.plot_sample_grid(
        tmp_path / "grid.png", {"clean": rng.random((4, 8, 8, 1)), "adv": rng.random((4, 8, 8, 1))}
    )
    bars = plots.plot_bars(tmp_path / "bars.png", {"a": 1.0, "b": 2.0}, "seconds")
    for path in (curve, grid, bars):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
