"""A markdown table of `python -m tfdefense.evaluate --classifier ...` runs, read from their results.json.

One row per run folder: clean accuracy, the per-example worst case with its 95% Wilson interval,
the number of images, the sanity checks' verdicts, the wall time of the last invocation and the
steps' own seconds (a resumed run's earlier invocations included); the numbers are the runs' own
(nothing is recomputed).

`--paired A,B` compares two of the runs made on the same images, image by image: how many digits
only A keeps under every attack, how many only B keeps, and the exact two-sided McNemar p-value of
that difference (a binomial test of the discordant digits at 1/2). Two runs' Wilson intervals can
overlap while the paired test still separates them, and the other way round.

    python experiments/robustness_table.py "model A=runs/transfer-model_a" "model B=runs/transfer-model_b" \
        --paired "model A,model B"
"""

import argparse
import csv
import json
import math
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORST_CASE = "worst_case"


def summary(folder):
    """{clean, worst_case, n, checks, wall_seconds, step_seconds, mode, suite} of one evaluate run folder.

    wall_seconds: the last invocation's wall time; step_seconds: the steps' own times from the report's
    timing table, steps finished by earlier invocations of a resumed run included (None without one).
    """
    from tfdefense.evaluation.user_model import step_seconds

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
        "step_seconds": step_seconds(results),
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


def _seconds(value):
    return "-" if value is None else f"{value:.0f}"


def table(labelled_folders):
    lines = [
        "| classifier | clean (%) | worst case (%) (95% Wilson) | images | checks | wall s | steps' own s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, folder in labelled_folders:
        row = summary(folder)
        lines.append(
            f"| {label} | {100 * row['clean']:.1f} | {percent_with_interval(row['worst_case'], row['n'])} "
            f"| {row['n']} | {row['checks']} | {row['wall_seconds']:.0f} | {_seconds(row['step_seconds'])} |"
        )
    return "\n".join(lines)


def per_example_worst_case(folder):
    """{image index: (label, 1 if the model kept it under every attack else 0)} from per_example.csv."""
    with open(pathlib.Path(folder) / "per_example.csv", newline="") as handle:
        return {int(row["index"]): (int(row["label"]), int(row[WORST_CASE])) for row in csv.DictReader(handle)}


def paired(folder_a, folder_b):
    """Two runs on the same images: {both, only_a, only_b, neither, n, p_value} of the per-example worst case.

    p_value: the exact two-sided McNemar test, a binomial test of the only_a + only_b discordant
    images at probability 1/2 (1.0 when there is none). A ValueError when the runs' images differ.
    """
    a, b = per_example_worst_case(folder_a), per_example_worst_case(folder_b)
    if a.keys() != b.keys() or any(a[i][0] != b[i][0] for i in a):
        raise ValueError(f"{folder_a} and {folder_b} were not run on the same images (indices or labels differ)")
    only_a = sum(1 for i in a if a[i][1] and not b[i][1])
    only_b = sum(1 for i in a if b[i][1] and not a[i][1])
    both = sum(1 for i in a if a[i][1] and b[i][1])
    discordant = only_a + only_b
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1))
    p_value = min(1.0, 2 * tail / 2**discordant) if discordant else 1.0
    return {
        "both": both,
        "only_a": only_a,
        "only_b": only_b,
        "neither": len(a) - both - discordant,
        "n": len(a),
        "p_value": p_value,
    }


def paired_table(labelled_pairs):
    """Markdown rows of `paired` for ((label A, folder A), (label B, folder B)) pairs."""
    lines = [
        "| A vs B | kept by both | only by A | only by B | A - B (points) | McNemar exact p |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (label_a, folder_a), (label_b, folder_b) in labelled_pairs:
        c = paired(folder_a, folder_b)
        lines.append(
            f"| {label_a} vs {label_b} | {c['both']} | {c['only_a']} | {c['only_b']} "
            f"| {100 * (c['only_a'] - c['only_b']) / c['n']:+.1f} | {c['p_value']:.3g} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="LABEL=FOLDER of an evaluate run")
    parser.add_argument("--paired", action="append", default=[], help="A,B: two LABELs to compare image by image")
    args = parser.parse_args(argv)
    pairs = []
    for item in args.runs:
        label, sep, folder = item.partition("=")
        if not sep or not (pathlib.Path(folder) / "results.json").is_file():
            parser.error(f"expected LABEL=FOLDER holding results.json, got {item!r}")
        pairs.append((label, folder))
    folders = dict(pairs)
    compared = []
    for item in args.paired:
        label_a, sep, label_b = item.partition(",")
        if not sep or label_a not in folders or label_b not in folders:
            parser.error(f"argument --paired: expected A,B with both LABELs among the runs, got {item!r}")
        compared.append(((label_a, folders[label_a]), (label_b, folders[label_b])))
    print(table(pairs))
    if compared:
        try:
            print("\n" + paired_table(compared))
        except ValueError as error:
            parser.error(f"argument --paired: {error}")


if __name__ == "__main__":
    main()
