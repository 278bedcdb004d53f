"""`python -m tfdefense.evaluate`: reproduce the papers' tables and the adaptive evaluation.

    python -m tfdefense.evaluate --list
    python -m tfdefense.evaluate --preset quickstart --out runs/quickstart
    python -m tfdefense.evaluate --classifier model.keras [--purifier PATH|TRANSFORM] --dataset mnist \
        --eps 0.3 --out DIR

With --classifier: exit status 0 when every sanity check passed, 3 when one
failed (the report is written either way), 2 for a bad command line or model.
"""

import argparse
import json
import pathlib
import sys

from tfdefense import __version__


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tfdefense.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list the presets and exit")
    parser.add_argument("--version", action="version", version=f"tfdefense {__version__}")
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
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one setting of the chosen scale, e.g. --set epochs=3 (VALUE is read as JSON, "
        "else as a string); repeatable; the report lists every change",
    )
    user = parser.add_argument_group("evaluate your own model (tfdefense.evaluate_model)")
    user.add_argument(
        "--classifier", help="your classifier: a .keras or .h5 file, a SavedModel folder or a tfdefense export"
    )
    user.add_argument(
        "--purifier",
        help="your purifier (a path as above) or a transform name, e.g. jpeg, "
        "bit_depth:bits=2 (see tfdefense.defenses.list_transforms())",
    )
    user.add_argument(
        "--dataset",
        help="dataset name (its test split), npz:PATH (x_test, y_test) or "
        "tfds:NAME[:SPLIT] (a tensorflow-datasets dataset on disk)",
    )
    user.add_argument(
        "--eps",
        type=float,
        help="radius in [0, 1] pixel units, e.g. Linf 0.3 (MNIST), 0.031 (CIFAR-10); L2 0.5 (CIFAR-10)",
    )
    user.add_argument(
        "--norm", default="linf", choices=["linf", "l2"], help="threat model (l2: AutoAttack's L2 version of the suite)"
    )
    user.add_argument(
        "--per-attack",
        action="store_true",
        help="run every attack on every image (the per-attack table); default: AutoAttack's cascade, "
        "each attack only on the images every earlier one failed to break (same worst case)",
    )
    user.add_argument(
        "--attack-precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="bf16: craft the attacks in bfloat16 where they can (Square, FAB-T stay float32), judge every image in "
        "float32; faster on CPUs and GPUs with bfloat16 units",
    )
    user.add_argument("--n", type=int, default=None, help="evaluate the first N test images (default: all)")
    user.add_argument("--suite", default="standard", choices=["standard", "quick"])
    user.add_argument("--signature", default=None, help="SavedModel signature of the classifier (default: serving)")
    user.add_argument(
        "--eot-samples",
        type=int,
        default=None,
        help="EOT samples for a stochastic pipeline (default: 8 when one is detected)",
    )
    user.add_argument(
        "--input-range",
        default=None,
        choices=["0-1", "0-255", "-1-1"],
        help="the input range your classifier expects; the [0, 1] images are rescaled in front of it "
        "and --eps stays in [0, 1] units (write --input-range=-1-1 for [-1, 1])",
    )
    user.add_argument(
        "--trust-saved-model",
        action="store_true",
        help="load SavedModels whose graph holds file, Python, network or debug ops (refused otherwise)",
    )
    parser.add_argument(
        "--distribute",
        default="none",
        choices=["none", "mirrored", "multiworker", "tpu"],
        help="tf.distribute strategy (multiworker reads TF_CONFIG); --batch-size is the global batch; "
        "only the chief writes the report",
    )
    return parser


def _split(text):
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def parse_settings(items):
    """["epochs=3", "net=mnist"] -> {"epochs": 3, "net": "mnist"}; exits with an error naming --set on a bad item."""

    from tfdefense._cli import fail

    settings = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            fail(f"argument --set: expected KEY=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        settings[key.strip()] = value
    return settings


def check_out(out):
    """--out: a non-empty folder path, new, empty or a tfdefense run folder (see `run_folder`); exits otherwise."""
    from tfdefense._cli import check_output_dir, fail
    from tfdefense.evaluation.run_folder import check_run_folder

    if out == "":
        fail("argument --out: expected a folder path, got '' (an empty path would write into the working directory)")
    check_output_dir("--out", out)
    problem = check_run_folder(out)
    if problem:
        fail(f"argument --out: {problem}")


def check_args(args):
    """Checks every argument (names, numbers, output folder) before any data is loaded or model trained."""
    from tfdefense._cli import check_positive_int, check_seed, fail
    from tfdefense.evaluation.runner import check_preset_filters, list_presets

    if args.preset not in list_presets():
        fail(f"argument --preset: unknown preset {args.preset!r}; expected one of: {', '.join(list_presets())}")
    for flag, text in (("--attacks", args.attacks), ("--defenses", args.defenses)):
        if text is not None and not _split(text):
            fail(f"argument {flag}: expected comma-separated names, got {text!r}")
    for flag, filters in (
        ("--attacks", dict(attacks=_split(args.attacks))),
        ("--defenses", dict(defenses=_split(args.defenses))),
    ):
        try:
            check_preset_filters(args.preset, **filters)
        except ValueError as error:
            fail(f"argument {flag}: {error} (a * in a declared name stands for numbers, e.g. pgd-10x2)")
    check_positive_int("--batch-size", args.batch_size, allow_none=True)
    check_seed(args.seed)
    if args.data_dir is not None and pathlib.Path(args.data_dir).exists() and not pathlib.Path(args.data_dir).is_dir():
        fail(f"argument --data-dir: {args.data_dir!r} is a file; expected a folder")
    if args.weights is not None and not pathlib.Path(args.weights).is_file():
        fail(f"argument --weights: {args.weights!r} is not an existing file")
    check_out(args.out)


def main(argv=None):
    from tfdefense._cli import quiet_tensorflow, run_main

    quiet_tensorflow()
    return run_main(_main, argv)


def _main(argv=None):
    from tfdefense._cli import EXIT_USAGE
    from tfdefense.evaluation.runner import PresetUnavailable, SettingsError, get_preset, list_presets, run_preset

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for name in list_presets():
            preset = get_preset(name)
            print(f"{name:22s} {preset.description}")
        return 0
    if args.classifier is not None:
        return _evaluate_user_model(parser, args)
    if not args.preset or args.out is None:
        parser.error("--preset and --out are required (or use --list)")
    check_args(args)
    settings = parse_settings(args.settings)  # exits on a malformed --set before anything is built
    from tfdefense import distribute

    strategy = distribute.make_strategy(args.distribute)
    try:
        results = run_preset(
            args.preset,
            args.out,
            scale=args.scale,
            seed=args.seed,
            data_dir=args.data_dir,
            batch_size=args.batch_size,
            attacks=_split(args.attacks),
            defenses=_split(args.defenses),
            weights=args.weights,
            png_roundtrip=args.png_roundtrip,
            progress=not args.quiet,
            strategy=strategy,
            settings=settings,
        )
    except SettingsError as error:
        print(f"error: argument --set: {error}", file=sys.stderr)
        return EXIT_USAGE
    except PresetUnavailable as error:
        print(f"error: preset {args.preset!r} cannot run: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not distribute.is_chief(strategy):
        print(
            f"worker done ({len(results['rows'])} rows, {results['wall_seconds']:.0f} s); the chief writes the report"
        )
        return 0
    print(f"wrote {args.out}/report.md ({len(results['rows'])} rows, {results['wall_seconds']:.0f} s)")
    return 0


EXIT_CHECK_FAILED = 3


def _evaluate_user_model(parser, args):
    """`--classifier PATH ...`: tfdefense.evaluate_model on the user's model; 3 when a sanity check failed."""
    from tfdefense._cli import check_positive_int, check_seed, fail

    if args.preset is not None:
        fail("argument --classifier: not allowed with --preset (run one or the other)")
    for flag, value in (("--dataset", args.dataset), ("--eps", args.eps), ("--out", args.out)):
        if value is None:
            fail(f"argument {flag}: required with --classifier")
    if not 0 < args.eps <= (1 if args.norm == "linf" else float("inf")):
        fail(
            f"argument --eps: expected a radius {'in (0, 1]' if args.norm == 'linf' else '> 0'} "
            f"([0, 1] pixel units), got {args.eps}"
        )
    check_positive_int("--n", args.n, allow_none=True)
    check_positive_int("--batch-size", args.batch_size, allow_none=True)
    check_positive_int("--eot-samples", args.eot_samples, allow_none=True)
    if args.settings:
        fail("argument --set: changes a preset's scale settings; it does not apply with --classifier")
    check_seed(args.seed)
    if not pathlib.Path(args.classifier).exists():
        fail(f"argument --classifier: {args.classifier!r} does not exist")
    check_out(args.out)
    from tfdefense import distribute

    strategy = distribute.make_strategy(args.distribute)  # before any TF op (multiworker needs it so)
    from tfdefense.evaluation.user_model import evaluate_model, load_user_model, resolve_purifier

    with distribute.scope(strategy):  # variables mirrored: each replica reads its own copy
        classifier = load_user_model(
            args.classifier, role="classifier", signature=args.signature, trust_saved_model=args.trust_saved_model
        )
        purifier = (
            None if args.purifier is None else resolve_purifier(args.purifier, trust_saved_model=args.trust_saved_model)
        )
    result = evaluate_model(
        classifier,
        args.dataset,
        args.eps,
        purifier=purifier,
        n=args.n,
        suite=args.suite,
        out=args.out,
        seed=args.seed,
        batch_size=args.batch_size,
        eot_samples=args.eot_samples,
        data_dir=args.data_dir,
        progress=not args.quiet,
        strategy=strategy,
        input_range=args.input_range,
        norm=args.norm,
        per_attack=args.per_attack,
        attack_precision=args.attack_precision,
    )
    print(result)
    if distribute.is_chief(strategy):
        print(f"wrote {args.out}/report.md")
    else:
        print("worker done; the chief writes the report")
    if result.failures:
        names = ", ".join(c["name"] for c in result.failures)
        print(
            f"error: sanity check(s) failed: {names}; the numbers may overstate robustness (see {args.out}/report.md)",
            file=sys.stderr,
        )
        return EXIT_CHECK_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
