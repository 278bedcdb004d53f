"""A markdown table of `python -m tfdefense.evaluate --classifier ...` runs, read from their results.json.

One row per run folder: clean accuracy, the per-example worst case with its 95% Wilson interval,
the number of images, the sanity checks' verdicts and the wall time; the numbers are the runs'
own (nothing is recomputed).

    python experiments/robustness_table.py "model A=runs/transfer-model_a" "model B=runs/transfer-model_b"
"""

import argparse
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORST_CASE = "worst_case"


def summary(folder):
    """{clean, worst_case, n, checks, wall_seconds, mode, suite} of one evaluate run folder."""
    results = json.loads((pathlib.Path(folder) / "results.json").read_text())
    rows = [r for r in results["rows"] if r["table"].startswith("Accuracy under attack")]
    values = {r["attack"]: r for r in rows}
    if "clean" not in values or WORST_CASE not in values:
        raise ValueError(f"{folder}: results.json has no clean / worst-case row (not an evaluate run?)")
    verdicts = [c.get("verdict", "passed" if c.get("passed") else "failed") for c in results["sanity_checks"]]
    failed = [c["name"] for c, v in zip(results["sanity_checks"], verdicts, strict=True) if v == "failed"]
    return {
        "clean": values["clean"]["value"],
        "worst_case": values[WORST_CASE]["value"],
        "n": values[WORST_CASE]["n"],
        "checks": "all pass" if not failed else "failed: " + ", ".join(failed),
        "wall_seconds": results["wall_seconds"],
        "mode": results["choices"].get("mode"),
        "suite": results["choices"].get("suite"),
    }


def with_interval(fraction, n):
    """(value, low, high) in percent: a fraction measured on n images and its 95% Wilson interval."""
    from tfdefense.evaluation.metrics import wilson_interval

    low, high = wilson_interval(round(fraction * n), n)
    return 100 * fraction, 100 * low, 100 * high


def percent_with_interval(fraction, n):
    """'85.6 (83.3-87.6)': a fraction measured on n images, in percent, with its 95% Wilson interval."""
    return "{:.1f} ({:.1f}-{:.1f})".format(*with_interval(fraction, n))


def table(labelled_folders):
    lines = [
        "| classifier | clean (%) | worst case (%) (95% Wilson) | images | checks | wall s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, folder in labelled_folders:
        row = summary(folder)
        lines.append(
            f"| {label} | {100 * row['clean']:.1f} | {percent_with_interval(row['worst_case'], row['n'])} "
            f"| {row['n']} | {row['checks']} | {row['wall_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="LABEL=FOLDER of an evaluate run")
    args = parser.parse_args(argv)
    pairs = []
    for item in args.runs:
        label, sep, folder = item.partition("=")
        if not sep or not (pathlib.Path(folder) / "results.json").is_file():
            parser.error(f"expected LABEL=FOLDER holding results.json, got {item!r}")
        pairs.append((label, folder))
    print(table(pairs))


if __name__ == "__main__":
    main()
