"""The cost of protecting N classifiers: one robust purifier trained once vs one adversarial training per classifier.

Reads what the package wrote: the purifier's `train purifier --kind robust` summary (its training CPU
seconds), the `python -m tfdefense.evaluate` run folders of the purifier in front of each classifier
(in the order they are counted: the first N are "N classifiers protected"), and optionally the
`train adversarial` summaries and evaluate runs of adversarially trained classifiers. Prints a
markdown table (N, CPU-hours of each way, the purifier's worst case over the first N classifiers)
and, with --plot, draws worst case and CPU-hours against N. Training the classifiers themselves is
paid by both ways alike and is not counted. Nothing is recomputed: every number is a run's own.

    python experiments/protection_cost.py --purifier robust.json \\
        --protected "C=runs/c" --protected "A=runs/transfer-model_a" \\
        --adversarial madry.json --adversarial-run "C (Madry)=runs/madry-c" --plot cost.png
"""

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from long_run_curve import cpu_seconds_between, epoch_log  # noqa: E402
from robustness_table import summary, with_interval  # noqa: E402 (the sibling script's readers)

HOUR = 3600.0


def snapshot_of(path):
    """(training log path, epoch) for `PATH@EPOCH`, else None."""
    head, at, epoch = str(path).rpartition("@")
    return (head, int(epoch)) if at and epoch.isdigit() else None


def training_cpu_seconds(path):
    """CPU seconds of a `train purifier` / `train adversarial` summary: over every resumed run when the
    summary has an epoch log (its cumulative `cpu_seconds`), else this run's `train_cpu_seconds`.

    `PATH@EPOCH`: up to the end of that epoch of a longer training (PATH a summary or its backup folder),
    the cost of its snapshot `<out stem>.epoch<EPOCH>.keras`.
    """
    snapshot = snapshot_of(path)
    if snapshot is not None:
        return cpu_seconds_between(epoch_log(snapshot[0]), 0, snapshot[1])
    record = json.loads(pathlib.Path(path).read_text())
    log = record.get("epoch_log") or []
    if log and log[-1].get("cpu_seconds") is not None:
        return float(log[-1]["cpu_seconds"])
    if record.get("train_cpu_seconds") is None:
        raise ValueError(f"{path}: no train_cpu_seconds and no epoch_log (not a train purifier/adversarial summary?)")
    return float(record["train_cpu_seconds"])


def cost_rows(purifier_cpu, protected, adversarial_cpu):
    """One row per N = 1..len(protected).

    protected: [(label, evaluate summary)] in counting order; adversarial_cpu: measured CPU seconds of
    adversarial trainings (one per classifier; their mean is the cost of one more), or empty.
    """
    per_training = sum(adversarial_cpu) / len(adversarial_cpu) if adversarial_cpu else None
    rows = []
    for n in range(1, len(protected) + 1):
        worst = [run["worst_case"] for _, run in protected[:n]]
        rows.append(
            {
                "n": n,
                "classifiers": [label for label, _ in protected[:n]],
                "purifier_cpu_hours": purifier_cpu / HOUR,
                "adversarial_cpu_hours": None if per_training is None else n * per_training / HOUR,
                "worst_case_mean": sum(worst) / n,
                "worst_case_lowest": min(worst),
            }
        )
    return rows


def table(rows):
    lines = [
        "| classifiers protected (N) | one purifier: CPU-h | N adversarial trainings: CPU-h "
        "| purifier worst case (%): mean over the N / lowest |",
        "| --- | --- | --- | --- |",
    ]
    for row in rows:
        adversarial = "-" if row["adversarial_cpu_hours"] is None else f"{row['adversarial_cpu_hours']:.2f}"
        lines.append(
            f"| {row['n']} ({', '.join(row['classifiers'])}) | {row['purifier_cpu_hours']:.2f} | {adversarial} "
            f"| {100 * row['worst_case_mean']:.1f} / {100 * row['worst_case_lowest']:.1f} |"
        )
    return "\n".join(lines)


def plot(path, rows, protected, adversarial_runs):
    """Worst case (each classifier's, with its Wilson interval) and CPU-hours against N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfdefense._io import atomic_path

    figure, (robust, cost) = plt.subplots(1, 2, figsize=(10, 4))
    ns = [row["n"] for row in rows]
    points = [with_interval(run["worst_case"], run["n"]) for _, run in protected]
    robust.errorbar(
        ns,
        [value for value, _, _ in points],
        yerr=[[value - low for value, low, _ in points], [high - value for value, _, high in points]],
        fmt="o",
        label="one purifier, the N-th classifier",
    )
    robust.plot(ns, [100 * row["worst_case_mean"] for row in rows], "-", label="one purifier, mean over the N")
    for label, run in adversarial_runs:
        value, low, high = with_interval(run["worst_case"], run["n"])
        robust.errorbar(
            [1], [value], yerr=[[value - low], [high - value]], fmt="s", label=f"adversarial training: {label}"
        )
    robust.set_xlabel("classifiers protected (N)")
    robust.set_ylabel("worst case (%) with 95% Wilson interval")
    robust.set_xticks(ns, [f"{n}\n{label}" for n, (label, _) in zip(ns, protected, strict=True)])
    robust.legend(fontsize=7)
    cost.plot(ns, [row["purifier_cpu_hours"] for row in rows], "o-", label="one purifier")
    if rows[0]["adversarial_cpu_hours"] is not None:
        cost.plot(ns, [row["adversarial_cpu_hours"] for row in rows], "s-", label="one adversarial training each")
    cost.set_xlabel("classifiers protected (N)")
    cost.set_ylabel("training CPU-hours")
    cost.set_xticks(ns)
    cost.legend(fontsize=7)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=pathlib.Path(path).suffix.lstrip(".") or "png")
    plt.close(figure)


def _labelled(parser, items, flag):
    pairs = []
    for item in items:
        label, sep, folder = item.partition("=")
        if not sep or not label or not (pathlib.Path(folder) / "results.json").is_file():
            parser.error(f"argument {flag}: expected LABEL=FOLDER holding results.json, got {item!r}")
        pairs.append((label, summary(folder)))
    return pairs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--purifier", required=True, help="the purifier's train purifier summary (.json)")
    parser.add_argument(
        "--protected", action="append", required=True, help="LABEL=FOLDER: an evaluate run of the purifier (in order)"
    )
    parser.add_argument(
        "--adversarial",
        action="append",
        default=[],
        help="a train adversarial summary (.json), or SUMMARY_OR_BACKUP@EPOCH for a snapshot of a longer run",
    )
    parser.add_argument("--adversarial-run", action="append", default=[], help="LABEL=FOLDER: evaluate run of one")
    parser.add_argument("--plot", default=None, help="write the figure here (.png, .svg, .pdf)")
    args = parser.parse_args(argv)
    for path in (args.purifier, *args.adversarial):
        snapshot = snapshot_of(path)
        if not pathlib.Path(path).is_file() and not (snapshot and pathlib.Path(snapshot[0]).exists()):
            parser.error(f"expected a summary .json file (or SUMMARY_OR_BACKUP@EPOCH), got {path!r}")
    protected = _labelled(parser, args.protected, "--protected")
    adversarial_runs = _labelled(parser, args.adversarial_run, "--adversarial-run")
    try:
        rows = cost_rows(
            training_cpu_seconds(args.purifier), protected, [training_cpu_seconds(p) for p in args.adversarial]
        )
    except ValueError as error:
        parser.error(str(error))
    print(table(rows))
    if args.plot:
        plot(args.plot, rows, protected, adversarial_runs)


if __name__ == "__main__":
    main()
