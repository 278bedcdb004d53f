"""Records every preset's tiny-scale numbers, or checks that a checkout still gives the same ones.

    python benchmarks/preset_numbers.py record numbers.json     # on the reference checkout
    python benchmarks/preset_numbers.py check numbers.json      # on the changed checkout

Each preset runs at tiny scale with seed 0, in its own process and a fresh temporary folder; a
row's identity is (table, defense, attack, metric, eval_mode) and its value must be equal (1e-9)
in both runs. Timing rows (wall-clock) and the rows of defenses trained to a CPU-time budget
(`CPU_BUDGETED`) are left out. A preset whose sanity checks fail at tiny scale (`robust`) is
compared on the results it writes before raising. Exit status 1 names every row that changed.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# Defenses trained to a CPU-time budget (`ComputeBudget`): their epoch count depends on the
# machine's load, so their rows are not compared.
CPU_BUDGETED = {"robust": {"madry"}}
KEY_FIELDS = ("table", "defense", "attack", "metric", "eval_mode")


def _compared(preset, rows):
    """`rows` (key -> value) without those of the preset's CPU-budgeted defenses."""
    skip = CPU_BUDGETED.get(preset, ())
    return {key: value for key, value in rows.items() if key.split(" | ")[KEY_FIELDS.index("defense")] not in skip}


def _numbers(name, data_dir):
    from tfdefense.evaluation.robustness import SanityCheckError
    from tfdefense.evaluation.runner import run_preset

    with tempfile.TemporaryDirectory() as folder:
        out = pathlib.Path(folder) / "run"
        try:
            results = run_preset(name, out, scale="tiny", seed=0, data_dir=data_dir, progress=False)
        except SanityCheckError:  # tiny models may fail a check; the results are written before it raises
            results = json.loads((out / "results.json").read_text())
    rows = {
        " | ".join(str(row[k]) for k in KEY_FIELDS): row["value"]
        for row in results["rows"]
        if row["protocol"] != "timing"
    }
    return _compared(name, rows)


def _all_numbers(presets, data_dir):
    """Each preset in its own process: keras' global state (layer-name counters, seed generators)
    carries from one preset to the next within a process, so the numbers would depend on the order."""
    numbers = {}
    for name in presets:
        start = time.time()
        with tempfile.TemporaryDirectory() as folder:
            out = pathlib.Path(folder) / "numbers.json"
            command = [sys.executable, __file__, "one", str(out), "--presets", name]
            if data_dir:
                command += ["--data-dir", data_dir]
            subprocess.run(command, check=True)
            numbers[name] = json.loads(out.read_text())[name]
        print(f"{name}: {len(numbers[name])} rows, {time.time() - start:.0f} s", flush=True)
    return numbers


def _differences(expected, actual):
    problems = []
    for name, rows in expected.items():
        rows = _compared(name, rows)  # a baseline recorded with them
        got = actual.get(name, {})
        for key in sorted(set(rows) | set(got)):
            a, b = rows.get(key, "missing"), got.get(key, "missing")
            same = a == b or (isinstance(a, float) and isinstance(b, float) and abs(a - b) <= 1e-9)
            if not same:
                problems.append(f"{name}: {key}: {a} -> {b}")
    return problems


def main(argv=None):
    from tfdefense.evaluation.runner import list_presets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("record", "check", "one"))  # "one": a child process, one preset
    parser.add_argument("path", type=pathlib.Path)
    parser.add_argument("--presets", default=",".join(list_presets()), help="comma-separated preset names")
    parser.add_argument("--data-dir", default=os.environ.get("TFDEFENSE_DATA_DIR"))
    args = parser.parse_args(argv)
    presets = [p for p in args.presets.split(",") if p]
    if args.mode == "one":
        args.path.write_text(json.dumps({name: _numbers(name, args.data_dir) for name in presets}))
        return 0
    if args.mode == "record":
        numbers = _all_numbers(presets, args.data_dir)
        tmp = args.path.with_name(args.path.name + ".tmp")
        tmp.write_text(json.dumps(numbers, indent=1, sort_keys=True))
        os.replace(tmp, args.path)
        return 0
    expected = json.loads(args.path.read_text())
    presets = [p for p in presets if p in expected]
    problems = _differences({p: expected[p] for p in presets}, _all_numbers(presets, args.data_dir))
    for line in problems:
        print("CHANGED", line)
    print(
        f"{len(presets)} presets, {sum(len(_compared(p, expected[p])) for p in presets)} rows, {len(problems)} changed"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
