"""What a run reports: its rows, plots, notes, artifacts and data, and the results.json / results.csv /
report.md written from them (`tfdefense.evaluation.reports`)."""

import pathlib

from tfdefense import distribute
from tfdefense._validation import check_choice
from tfdefense.evaluation import reports


class ReportWriter:
    """The report of one run written into `out_dir` (plots are files of `out_dir` named by `add_plot`)."""

    def __init__(self, out_dir):
        self.out_dir = pathlib.Path(out_dir)
        self.rows = []
        self.plots = []
        self.notes = []
        self.artifacts = {}
        self.data = {"dataset": "", "description": ""}

    def set_data(self, dataset, description):
        self.data = {"dataset": dataset, "description": description}

    def add_row(
        self,
        table,
        protocol,
        defense,
        attack,
        metric,
        value,
        n,
        attack_config=None,
        paper_value=None,
        eval_mode="tensor",
    ):
        row = {
            "table": table,
            "protocol": check_choice("protocol", protocol, reports.PROTOCOLS),
            "defense": defense,
            "attack": attack,
            "attack_config": attack_config or {},
            "metric": metric,
            "value": None if value is None else float(value),
            "paper_value": paper_value,
            "n": int(n),
            "eval_mode": check_choice("eval_mode", eval_mode, reports.EVAL_MODES),
        }
        self.rows.append(row)
        return row

    def add_plot(self, filename):
        """Lists plot `filename` in the report; returns the path to draw it at."""
        self.plots.append(filename)
        return self.out_dir / filename

    def note(self, text):
        self.notes.append(text)

    def results(self, preset, scale, seed, wall_seconds, strategy=None, settings=None):
        """The results.json dict (`reports.RESULTS_SCHEMA`); `settings` (the --set changes) only when some."""
        return {
            "schema_version": reports.SCHEMA_VERSION,
            "preset": preset,
            "scale": scale,
            "seed": seed,
            "data": self.data,
            "wall_seconds": float(wall_seconds),
            "environment": {**reports.environment(), "distribute": distribute.describe(strategy)},
            "notes": self.notes,
            "artifacts": self.artifacts,
            "rows": self.rows,
            **({"settings": settings} if settings else {}),
        }

    def write(self, results):
        """Validates `results` and writes results.json, results.csv and report.md; returns report.md's path."""
        reports.validate_results(results)
        return reports.write_reports(self.out_dir, results, self.plots)
