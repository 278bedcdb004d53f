"""Robustness against training CPU-hours for the long run (docs/robust.md): the purifier and Madry training.

Reads what the package wrote: each training's epoch log (a finished `train purifier` / `train adversarial`
summary, `<out>.json`, or while it still runs its backup folder `<out>.backup/`, whose `epochs.json` holds
the same rows), and optionally `python -m tfdefense.evaluate` run folders of its epoch snapshots
(`<out stem>.epoch<E>.keras`). Prints one markdown table per training (epoch, cumulative CPU-hours,
held-out PGD-20 and clean accuracy from the monitor, and the worst case of the evaluated snapshots with
their 95% Wilson interval) and, with --plot, draws all of them against CPU-hours on one figure, so the
trainings can be compared at equal compute. Nothing is recomputed: every number is a run's own.

    python experiments/long_run_curve.py --training "TRADES purifier=experiments/long_run/trades.json" \\
        --training "Madry AT=experiments/long_run/madry.keras.backup" \\
        --evaluated "TRADES purifier@40=runs/trades-epoch40" --plot long_run.png
"""

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from robustness_table import percent_with_interval, summary, with_interval  # noqa: E402 (the sibling script's)

HOUR = 3600.0


def epoch_log(path):
    """The epoch rows of a training: a summary's `epoch_log`, or a backup folder's `epochs.json`."""
    path = pathlib.Path(path)
    if path.is_dir():
        rows = json.loads((path / "epochs.json").read_text())
    else:
        rows = json.loads(path.read_text()).get("epoch_log")
    if not rows or any(row.get("cpu_seconds") is None for row in rows):
        raise ValueError(f"{path}: no epoch log with cpu_seconds (train with --kind robust or train adversarial)")
    return rows


def cpu_seconds_between(rows, start, end):
    """Training CPU seconds spent from the end of epoch `start` to the end of epoch `end` (start 0: from the outset)."""
    spent = {0: 0.0} | {int(row["epoch"]): float(row["cpu_seconds"]) for row in rows}
    if start not in spent or end not in spent or end <= start:
        raise ValueError(f"the epoch log has epochs 1-{max(spent)}: cannot take epochs {start} to {end}")
    return spent[end] - spent[start]


def curve(rows, evaluated=()):
    """[{epoch, cpu_hours, monitor_pgd, monitor_clean, worst_case, n}] for each epoch row.

    evaluated: [(epoch, evaluate summary)] of the training's snapshots; an epoch without a row is refused.
    """
    by_epoch = {int(row["epoch"]): row for row in rows}
    points = [
        {
            "epoch": epoch,
            "cpu_hours": float(row["cpu_seconds"]) / HOUR,
            "monitor_pgd": row.get("monitor_pgd"),
            "monitor_clean": row.get("monitor_clean"),
            "worst_case": None,
            "clean": None,
            "n": None,
        }
        for epoch, row in sorted(by_epoch.items())
    ]
    index = {point["epoch"]: point for point in points}
    for epoch, run in evaluated:
        if epoch not in index:
            raise ValueError(f"epoch {epoch} has an evaluation but no row in the epoch log (epochs {sorted(index)})")
        index[epoch].update(worst_case=run["worst_case"], clean=run["clean"], n=run["n"])
    return points


def _percent(value):
    return "-" if value is None else f"{100 * value:.1f}"


def table(name, points):
    lines = [
        f"**{name}**",
        "",
        "| epoch | training CPU-hours | held-out PGD-20 (%) | held-out clean (%) | clean, test (%) "
        "| worst case, test (%) (95% Wilson) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p in points:
        worst = "-" if p["worst_case"] is None else f"{percent_with_interval(p['worst_case'], p['n'])}, n={p['n']}"
        lines.append(
            f"| {p['epoch']} | {p['cpu_hours']:.2f} | {_percent(p['monitor_pgd'])} | {_percent(p['monitor_clean'])} "
            f"| {_percent(p['clean'])} | {worst} |"
        )
    return "\n".join(lines)


def plot(path, curves, ymin=None):
    """Held-out PGD-20 (lines) and evaluated worst cases (points with intervals) against CPU-hours.

    ymin: the lowest accuracy (%) shown (None: matplotlib's own range); the epochs of the eps ramp,
    far below the rest, then fall off the chart, and the axis label says so.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfdefense._io import atomic_path

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, points in curves:
        monitored = [p for p in points if p["monitor_pgd"] is not None]
        (line,) = axis.plot(
            [p["cpu_hours"] for p in monitored],
            [100 * p["monitor_pgd"] for p in monitored],
            "-",
            label=f"{name}: held-out PGD-20",
        )
        evaluated = [p for p in points if p["worst_case"] is not None]
        if evaluated:
            bars = [with_interval(p["worst_case"], p["n"]) for p in evaluated]
            axis.errorbar(
                [p["cpu_hours"] for p in evaluated],
                [value for value, _, _ in bars],
                yerr=[[value - low for value, low, _ in bars], [high - value for value, _, high in bars]],
                fmt="o",
                color=line.get_color(),
                label=f"{name}: worst case, standard suite (test)",
            )
    axis.set_xlabel("training CPU-hours")
    axis.set_ylabel("robust accuracy (%), eps 0.3" + ("" if ymin is None else f" (axis from {ymin:g}%)"))
    if ymin is not None:
        axis.set_ylim(ymin, 100)
    axis.legend(fontsize=7)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=pathlib.Path(path).suffix.lstrip(".") or "png")
    plt.close(figure)


def _parse(parser, args):
    trainings = {}
    for item in args.training:
        name, sep, path = item.partition("=")
        if not sep or not name or not pathlib.Path(path).exists():
            parser.error(f"argument --training: expected NAME=PATH (a summary .json or a backup folder), got {item!r}")
        trainings[name] = (path, [])
    for item in args.evaluated:
        left, sep, folder = item.partition("=")
        name, at, epoch = left.rpartition("@")
        if not sep or not at or name not in trainings or not epoch.isdigit():
            parser.error(f"argument --evaluated: expected NAME@EPOCH=FOLDER with NAME a --training, got {item!r}")
        if not (pathlib.Path(folder) / "results.json").is_file():
            parser.error(f"argument --evaluated: {folder!r} holds no results.json (not an evaluate run)")
        trainings[name][1].append((int(epoch), summary(folder)))
    return trainings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--training", action="append", required=True, help="NAME=PATH: a summary .json or backup")
    parser.add_argument(
        "--evaluated", action="append", default=[], help="NAME@EPOCH=FOLDER: an evaluate run of that snapshot"
    )
    parser.add_argument("--plot", default=None, help="write the figure here (.png)")
    parser.add_argument("--ymin", type=float, default=None, help="lowest accuracy (%%) the plot shows")
    args = parser.parse_args(argv)
    if args.ymin is not None and not 0 <= args.ymin < 100:
        parser.error(f"argument --ymin: expected a percentage in [0, 100), got {args.ymin:g}")
    trainings = _parse(parser, args)
    curves = []
    for name, (path, evaluated) in trainings.items():
        try:
            points = curve(epoch_log(path), evaluated)
        except ValueError as error:
            parser.error(f"argument --training: {error}")
        curves.append((name, points))
        print(table(name, points), end="\n\n")
    if args.plot:
        plot(args.plot, curves, ymin=args.ymin)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
