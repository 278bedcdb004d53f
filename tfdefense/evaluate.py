"""`python -m tfdefense.evaluate`: reproduce the papers' tables and the adaptive evaluation.

    python -m tfdefense.evaluate --list
    python -m tfdefense.evaluate --preset quickstart --out runs/quickstart
"""

import argparse
import fnmatch
import pathlib
import sys


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tfdefense.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list the presets and exit")
    parser.add_argument("--preset", help="preset to run (see --list)")
    parser.add_argument("--scale", default="quick", choices=["tiny", "quick", "full"])
    parser.add_argument("--out", help="output folder (report.md, results.json, results.csv, plots, models)")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $TFDEFENSE_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default=None, help="local ImageNet weights file for full-scale presets")
    parser.add_argument("--attacks", default=None, help="comma-separated attack names to keep")
    parser.add_argument("--defenses", default=None, help="comma-separated defense names to keep")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--png-roundtrip", action="store_true", help="also evaluate after 8-bit PNG quantization")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--distribute", default="none", choices=["none", "mirrored", "multiworker", "tpu"],
                        help="tf.distribute strategy (multiworker reads TF_CONFIG); --batch-size is the global batch; "
                             "only the chief writes the report")
    return parser


def _split(text):
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def check_args(args):
    """Checks every argument (names, numbers, output folder) before any data is loaded or model trained."""
    from tfdefense import _cli
    from tfdefense.evaluation.runner import get_preset, list_presets

    if args.preset not in list_presets():
        _cli.fail(f"argument --preset: unknown preset {args.preset!r}; expected one of: {', '.join(list_presets())}")
    preset = get_preset(args.preset)
    for flag, text, known in (("--attacks", args.attacks, preset.attacks), ("--defenses", args.defenses, preset.defenses)):
        if text is None:
            continue
        if not known:
            _cli.fail(f"argument {flag}: preset {args.preset!r} has no {flag[2:]} filter")
        names = _split(text)
        if not names:
            _cli.fail(f"argument {flag}: expected comma-separated names, got {text!r}")
        unknown = [n for n in names if not any(fnmatch.fnmatchcase(n, pattern) for pattern in known)]
        if unknown:
            _cli.fail(f"argument {flag}: unknown name(s) {', '.join(map(repr, unknown))} for preset {args.preset!r}; "
                      f"expected some of: {', '.join(known)}")
    _cli.check_positive_int("--batch-size", args.batch_size, allow_none=True)
    _cli.check_seed(args.seed)
    if args.data_dir is not None and pathlib.Path(args.data_dir).exists() and not pathlib.Path(args.data_dir).is_dir():
        _cli.fail(f"argument --data-dir: {args.data_dir!r} is a file; expected a folder")
    if args.weights is not None and not pathlib.Path(args.weights).is_file():
        _cli.fail(f"argument --weights: {args.weights!r} is not an existing file")
    _cli.check_output_dir("--out", args.out)


def main(argv=None):
    from tfdefense import _cli

    _cli.quiet_tensorflow()
    return _cli.run_main(_main, argv)


def _main(argv=None):
    from tfdefense.evaluation.runner import PresetUnavailable, get_preset, list_presets, run_preset

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for name in list_presets():
            preset = get_preset(name)
            print(f"{name:22s} {preset.description}")
        return 0
    if not args.preset or not args.out:
        parser.error("--preset and --out are required (or use --list)")
    check_args(args)
    from tfdefense import distribute

    strategy = distribute.make_strategy(args.distribute)
    split = _split
    try:
        results = run_preset(
            args.preset,
            args.out,
            scale=args.scale,
            seed=args.seed,
            data_dir=args.data_dir,
            batch_size=args.batch_size,
            attacks=split(args.attacks),
            defenses=split(args.defenses),
            weights=args.weights,
            png_roundtrip=args.png_roundtrip,
            progress=not args.quiet,
            strategy=strategy,
        )
    except PresetUnavailable as error:
        print(f"error: preset {args.preset!r} cannot run: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}/report.md ({len(results['rows'])} rows, {results['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
