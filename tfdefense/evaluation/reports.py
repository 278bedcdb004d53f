"""Report writers: results.json (validated schema), results.csv and report.md, all atomic.

A result row is one measured number with its full configuration:

    {"table": "Table 1", "protocol": "whole_test_set", "defense": "pix2pix",
     "attack": "fgsm", "attack_config": {...}, "metric": "accuracy",
     "value": 0.93, "paper_value": 0.98, "n": 2000, "eval_mode": "tensor"}
"""

import csv
import io
import json
import math
import pathlib
import platform

import numpy as np

from tfdefense._io import write_json, write_text

SCHEMA_VERSION = 1
PROTOCOLS = (
    "whole_test_set",  # 1: accuracy / error rate on the whole test set
    "successful_only",  # 2: accuracy on successful adversarial examples only
    "per_attack",  # 3: versatile per-attack and generalizability matrix
    "transfer",  # 4: crafted on model A, defended model B
    "benign",  # 5: clean and Gaussian-noise inputs
    "adaptive",  # 7: attacks through purifier + classifier
    "timing",
    "quality",  # MAE / PSNR / SSIM of purified images
)
EVAL_MODES = ("tensor", "png")

RESULTS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "tfdefense evaluation results",
    "type": "object",
    "required": ["schema_version", "preset", "scale", "seed", "data", "wall_seconds", "environment", "rows"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "preset": {"type": "string"},
        "scale": {"enum": ["tiny", "quick", "full"]},
        "seed": {"type": "integer"},
        "data": {
            "type": "object",
            "required": ["dataset", "description"],
            # split: which split of the dataset ran, e.g. "MNIST official 60000/10000 (...)" (MNIST presets)
            "properties": {
                "dataset": {"type": "string"},
                "description": {"type": "string"},
                "split": {"type": "string"},
            },
        },
        "wall_seconds": {"type": "number", "minimum": 0},
        "environment": {"type": "object"},
        "notes": {"type": "array", "items": {"type": "string"}},
        "artifacts": {"type": "object", "additionalProperties": {"type": "string"}},
        "settings": {"type": "object"},  # the scale's settings changed with --set (absent: none)
        "rows": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["table", "protocol", "defense", "attack", "metric", "value", "n", "eval_mode"],
                "properties": {
                    "table": {"type": "string"},
                    "protocol": {"enum": list(PROTOCOLS)},
                    "defense": {"type": "string"},
                    "attack": {"type": "string"},
                    "attack_config": {"type": "object"},
                    "metric": {"type": "string"},
                    "value": {"type": ["number", "null"]},
                    "paper_value": {"type": ["number", "null"]},
                    "paper_source": {"type": "string"},  # paper file, table, row and column of paper_value
                    "paper_note": {"type": "string"},  # e.g. "not in the paper's text" where paper_value is null
                    "n": {"type": "integer", "minimum": 0},
                    "eval_mode": {"enum": list(EVAL_MODES)},
                },
            },
        },
    },
}

ROW_COLUMNS = ("table", "protocol", "defense", "attack", "metric", "value", "paper_value", "n", "eval_mode")


def environment():
    """Versions and machine facts recorded with every result."""
    import keras
    import tensorflow as tf

    import tfdefense

    return {
        "tfdefense": tfdefense.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "devices": [d.device_type for d in tf.config.list_physical_devices()],
    }


def _format(value, metric):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if metric in ("accuracy", "error_rate", "success_rate", "detection_rate"):
        return f"{100 * value:.1f}%"
    return f"{value:.4g}"


def to_csv(rows):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*ROW_COLUMNS, "attack_config"], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "attack_config": json.dumps(row.get("attack_config", {}), sort_keys=True)})
    return buffer.getvalue()


def to_markdown(results, plots=()):
    """A human report: header (data, protocol, scale, wall time) and one table per `table`."""
    lines = [
        f"# tfdefense evaluation: {results['preset']} ({results['scale']} scale)",
        "",
        f"- Data: {results['data']['description']}",
        f"- Seed: {results['seed']}; wall time: {results['wall_seconds']:.1f} s",
        *(
            [
                f"- Settings changed from the {results['scale']} scale's (--set): "
                + ", ".join(f"{k}={json.dumps(v)}" for k, v in results["settings"].items())
            ]
            if results.get("settings")
            else []
        ),
        f"- Environment: TensorFlow {results['environment']['tensorflow']}, Keras {results['environment']['keras']}, "
        f"devices {', '.join(results['environment']['devices'])}",
        "- Every number below was computed by this run; 'paper' is the published value for the paper's full setup, "
        "read from the paper's text (sources at the end); 'not in the paper's text' marks a cell the paper gives only "
        "in a figure or an image table; 'n/a': the paper has no such cell.",
    ]
    lines += [f"- {note}" for note in results.get("notes", [])]
    tables = {}
    for row in results["rows"]:
        tables.setdefault(row["table"], []).append(row)
    for name, rows in tables.items():
        lines += [
            "",
            f"## {name}",
            "",
            "| defense | attack | protocol | metric | ours | paper | n | eval |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            lines.append(
                f"| {row['defense']} | {row['attack']} | {row['protocol']} | {row['metric']} | "
                f"{_format(row['value'], row['metric'])} | {_paper_cell(row)} | "
                f"{row['n']} | {row['eval_mode']} |"
            )
    lines += _png_differences(results["rows"])
    lines += _paper_sources(results["rows"])
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def _paper_cell(row):
    if row.get("paper_value") is None and row.get("paper_note"):
        return row["paper_note"]
    return _format(row.get("paper_value"), row["metric"])


def _paper_sources(rows):
    """Where each number of the paper column was read (paper file, table, row, column)."""
    sources = list(dict.fromkeys(row["paper_source"] for row in rows if row.get("paper_source")))
    if not sources:
        return []
    return ["", "## Sources of the paper column", ""] + [f"- {source}" for source in sources]


def _png_differences(rows):
    """A table of (PNG round trip - tensor) for every row measured both ways."""
    key = lambda row: (row["table"], row["protocol"], row["defense"], row["attack"], row["metric"])  # noqa: E731
    tensor = {key(r): r for r in rows if r["eval_mode"] == "tensor"}
    pairs = [(tensor[key(r)], r) for r in rows if r["eval_mode"] == "png" and key(r) in tensor]
    pairs = [(t, p) for t, p in pairs if t["value"] is not None and p["value"] is not None]
    if not pairs:
        return []
    lines = [
        "",
        "## 8-bit PNG round trip vs tensor-direct",
        "",
        "| table | defense | attack | tensor | PNG | PNG - tensor |",
        "|---|---|---|---|---|---|",
    ]
    for t, p in pairs:
        scale = 100 if t["metric"] in ("accuracy", "error_rate", "success_rate") else 1
        unit = " pt" if scale == 100 else ""
        lines.append(
            f"| {t['table']} | {t['defense']} | {t['attack']} | {_format(t['value'], t['metric'])} | "
            f"{_format(p['value'], p['metric'])} | {scale * (p['value'] - t['value']):+.1f}{unit} |"
        )
    return lines


def validate_results(results):
    """Validates `results` against RESULTS_SCHEMA (needs jsonschema); raises ValueError."""
    import jsonschema

    try:
        jsonschema.validate(results, RESULTS_SCHEMA)
    except jsonschema.ValidationError as error:
        raise ValueError(f"results do not match the schema: {error.message} at {list(error.path)}") from error


def write_reports(out_dir, results, plots=()):
    """Writes results.json, results.csv and report.md into `out_dir` atomically."""

    out_dir = pathlib.Path(out_dir)
    write_json(out_dir / "results.json", results)
    write_text(out_dir / "results.csv", to_csv(results["rows"]))
    write_text(out_dir / "report.md", to_markdown(results, plots))
    return out_dir / "report.md"
