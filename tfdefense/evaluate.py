"""`python -m tfdefense.evaluate`: reproduce the papers' tables and the adaptive evaluation.

    python -m tfdefense.evaluate --list
    python -m tfdefense.evaluate --preset quickstart --out runs/quickstart
"""

import argparse
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
    return parser


def main(argv=None):
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
    split = lambda text: None if text is None else [t.strip() for t in text.split(",") if t.strip()]  # noqa: E731
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
        )
    except PresetUnavailable as error:
        print(f"error: preset {args.preset!r} cannot run: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}/report.md ({len(results['rows'])} rows, {results['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
