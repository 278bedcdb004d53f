"""`python -m tfdefense.train purifier`: train a purifier in front of a saved classifier.

    python -m tfdefense.train purifier --kind robust --classifier model.keras --dataset mnist \\
        --eps 0.3 --epochs 30 --out robust.keras

Kinds:

- `robust`: `RobustPurifier` (docs/robust.md): PGD through purifier + frozen
  classifier at every step; U-Net `base_filters=--width, max_filters=4 * width,
  depth 4, no dropout`, `EpsilonRamp`, cosine-decayed Adam.
- `pix2pix`: `Pix2PixDefense` trained the papers' way, on pairs crafted against
  the bare classifier: FGSM, PGD-`--attack-steps` and identity pairs; the same
  U-Net size (dropout 0.5), a one-layer PatchGAN, lambda_l1 100.
- `apegan`: `APEGAN` with the paper's networks on FGSM pairs (`--width 16` is
  the paper's size; other widths scale its filters).

The classifier is loaded with `safe_mode=True` and never updated (unless
`--finetune-classifier`). `--classifier` given several times trains one robust
purifier for the ensemble (`--ensemble random|all`, `RobustPurifier`'s
`ensemble`). `--eval-classifier` (repeatable) adds classifiers the purifier
never saw to the summary's evaluation. `--finetune-classifier` trains the
classifier(s) jointly with the purifier and saves each fine-tuned one beside
`<out>` (`<out stem>.classifier.keras`, or `.classifier-<i>.keras` for an
ensemble). Training
backs itself up every epoch into `<out>.backup/` (an atomic keras
`BackupAndRestore`, `tfdefense.distribute.AtomicBackupAndRestore`, plus the
pairs of the GAN kinds): rerunning the same command after an interruption
resumes from the last complete epoch checkpoint. The folder is removed once
the purifier, evaluated, is saved. A backup folder made with other settings is
refused, never overwritten.

After training: `<out>` (the purifier, `.keras`), then `<out stem>.json`
beside it: clean accuracy of `DefendedClassifier(purifier, classifier)` and
its accuracy under each attack of a small `robustness_suite` (white-box
attacks through the whole pipeline, transfer from the bare classifier) and the
per-example worst case, on the first `--eval-n` test images; the top-level
numbers are the first classifier's, `per_classifier` has one entry for every
classifier trained against and every `--eval-classifier` (role "trained" or
"held-out"; a fine-tuned classifier's entry names its saved file and, in
"fine_tuned_from", the file it started from).

`--distribute none|mirrored|multiworker|tpu` (docs/distributed.md): the
classifier is loaded and the purifier built and compiled inside the
strategy's scope, `--batch-size` is the global batch, the training pairs and
the summary's attacks are sharded over the replicas. Only the chief writes
`<out>`, the summary (which names the strategy and its replicas) and the
backup folder; another worker restores from a temporary copy of the chief's
backup (a shared file system resumes the whole worker group).
"""

import contextlib
import json
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np

KINDS = ("robust", "pix2pix", "apegan")
EVAL_SUITES = ("quick", "tiny", "none")
DEFAULT_EPS = {"mnist": 0.3, "digits": 0.3, "cifar10": 8 / 255}
# Defaults by kind (docs/robust.md's recipe; the robust preset's pix2pix and APE-GAN).
DEFAULT_EPOCHS = {"robust": 30, "pix2pix": 5, "apegan": 2}
DEFAULT_LEARNING_RATE = {"robust": 1e-3, "pix2pix": 2e-4, "apegan": 2e-4}
DEFAULT_WIDTH = 16
ROBUST_STEPS = {"cifar10": 5}  # PGD steps of the robust training attack (7 elsewhere)
PIX2PIX_PGD_STEPS = 20
SETTINGS_FILE = "settings.json"
ROBUST_ONLY = (
    "attack_loss",
    "lambda_trades",
    "lambda_adv_cls",
    "precision",
    "ramp_epochs",
    "ensemble",
    "holdout",
    "max_cpu_seconds",
    "save_every",
)
EPOCH_LOG_FILE = "epochs.json"
MONITOR_PGD_IMAGES = 500  # the held-out monitor's PGD-20 runs on at most this many images


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "purifier",
        help="train a purifier (robust, pix2pix or apegan) in front of a saved classifier",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--kind", default="robust", choices=KINDS)
    parser.add_argument(
        "--classifier",
        required=True,
        action="append",
        help="the target classifier (.keras, returns logits); repeat it to train one robust purifier for an ensemble",
    )
    parser.add_argument(
        "--ensemble",
        default=None,
        choices=["random", "all"],
        help="robust, several --classifier: each example through one member at random (random, the cost of one) "
        "or through every member (all)",
    )
    parser.add_argument(
        "--finetune-classifier",
        action="store_true",
        help="robust: train the classifier(s) jointly with the purifier (e.g. on top of adversarial training); "
        "each is saved beside --out",
    )
    parser.add_argument(
        "--eval-classifier",
        action="append",
        default=[],
        help="a classifier the purifier is not trained against, added to the summary's evaluation (repeatable)",
    )
    parser.add_argument("--dataset", required=True, help="mnist, cifar10, digits or npz:PATH")
    parser.add_argument("--out", required=True, help="output .keras path (summary: same stem, .json)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--eps",
        type=float,
        default=None,
        help="Linf radius in [0, 1] units (default: 0.3 for mnist/digits, 8/255 for cifar10)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="default: robust 30, pix2pix 5, apegan 2")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="generator Adam lr (default: robust 1e-3 with cosine decay to 2%%; GANs 2e-4)",
    )
    parser.add_argument(
        "--attack-steps",
        type=int,
        default=None,
        help="robust: PGD steps of the training attack (7; 5 on cifar10); pix2pix: PGD steps of "
        "the PGD pairs (20); not used by apegan (FGSM pairs)",
    )
    parser.add_argument("--attack-loss", default=None, choices=["ce", "kl"], help="robust: PGD objective (ce)")
    parser.add_argument("--lambda-trades", type=float, default=None, help="robust: TRADES KL weight (0)")
    parser.add_argument(
        "--lambda-adv-cls",
        type=float,
        default=None,
        help="robust: weight of the cross-entropy on purified adversarial images (1; 0 with --attack-loss kl "
        "and --lambda-trades 6 is the TRADES objective)",
    )
    parser.add_argument(
        "--ramp-epochs",
        type=int,
        default=None,
        help="robust: epochs of the eps ramp (default min(3, max(1, epochs // 2)))",
    )
    parser.add_argument(
        "--width",
        type=int,
        default=None,
        help="base filters: U-Net base_filters (max 4x; default 16), apegan filter scale (16 = paper)",
    )
    parser.add_argument(
        "--precision", default=None, choices=["fp32", "bf16"], help="robust: attack and train step in bfloat16 (fp32)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=None, help="train on the first N training images only")
    parser.add_argument(
        "--holdout",
        type=int,
        default=None,
        help="robust: hold the last N training images out and log, after every epoch, the pipeline's accuracy on "
        f"them, clean and under PGD-20 (on at most {MONITOR_PGD_IMAGES}); the summary's `epoch_log`",
    )
    parser.add_argument(
        "--save-every",
        type=int,
        default=None,
        help="robust: also save the purifier after every N-th epoch as <out stem>.epoch<E>.keras (a curve's points)",
    )
    parser.add_argument(
        "--max-cpu-seconds",
        type=float,
        default=None,
        help="robust: stop after the epoch in which training's CPU time (all runs of this backup) reaches this",
    )
    parser.add_argument("--eval-n", type=int, default=200, help="test images of the summary's evaluation")
    parser.add_argument(
        "--eval-suite",
        default="quick",
        choices=EVAL_SUITES,
        help="attacks of the summary (the robust preset's quick / tiny suites; none: clean only)",
    )
    from tfdefense.train import add_distribute_argument

    add_distribute_argument(parser)
    parser.set_defaults(run=run)


def check_args(args):
    """Checks the command line before anything is loaded or trained; fills the per-kind defaults."""
    from tfdefense._cli import check_output_file, check_positive_int, check_seed, fail

    check_dataset_and_eps(args)
    for flag, paths in (("--classifier", args.classifier), ("--eval-classifier", args.eval_classifier)):
        for path in paths:
            if pathlib.Path(path).suffix != ".keras" or not pathlib.Path(path).is_file():
                fail(f"argument {flag}: expected an existing .keras file, got {path!r}")
    resolved = [str(pathlib.Path(path).resolve()) for path in args.classifier + args.eval_classifier]
    if len(set(resolved)) != len(resolved):
        fail("argument --classifier/--eval-classifier: a classifier is named twice")
    if args.kind != "robust":
        for name in ROBUST_ONLY:
            if getattr(args, name) is not None:
                fail(f"argument --{name.replace('_', '-')}: only for --kind robust (got --kind {args.kind})")
        if args.finetune_classifier:
            fail(f"argument --finetune-classifier: only for --kind robust (got --kind {args.kind})")
        if len(args.classifier) > 1:
            fail(
                f"argument --classifier: one classifier for --kind {args.kind} (its training pairs are crafted "
                f"against it); got {len(args.classifier)}. Several are for --kind robust"
            )
    if args.ensemble is not None and len(args.classifier) < 2:
        fail("argument --ensemble: needs --classifier given at least twice")
    if args.kind == "apegan" and args.attack_steps is not None:
        fail("argument --attack-steps: --kind apegan trains on FGSM pairs (the paper's recipe); leave it out")
    args.epochs = DEFAULT_EPOCHS[args.kind] if args.epochs is None else args.epochs
    args.learning_rate = DEFAULT_LEARNING_RATE[args.kind] if args.learning_rate is None else args.learning_rate
    args.width = DEFAULT_WIDTH if args.width is None else args.width
    if args.kind == "robust":
        args.attack_steps = ROBUST_STEPS.get(args.dataset, 7) if args.attack_steps is None else args.attack_steps
        args.attack_loss = args.attack_loss or "ce"
        args.lambda_trades = 0.0 if args.lambda_trades is None else args.lambda_trades
        args.precision = args.precision or "fp32"
        args.ensemble = args.ensemble or "random"
        args.ramp_epochs = min(3, max(1, args.epochs // 2)) if args.ramp_epochs is None else args.ramp_epochs
        check_positive_int("--ramp-epochs", args.ramp_epochs)
        if args.attack_steps < 1:
            fail(f"argument --attack-steps: expected a positive integer, got {args.attack_steps}")
        args.lambda_adv_cls = 1.0 if args.lambda_adv_cls is None else args.lambda_adv_cls
        for flag in ("--lambda-trades", "--lambda-adv-cls", "--max-cpu-seconds"):
            value = getattr(args, flag[2:].replace("-", "_"))
            if value is not None and not 0 <= value < float("inf"):
                fail(f"argument {flag}: expected a number >= 0, got {value}")
    elif args.kind == "pix2pix":
        args.attack_steps = PIX2PIX_PGD_STEPS if args.attack_steps is None else args.attack_steps
        check_positive_int("--attack-steps", args.attack_steps)
    for flag in ("--epochs", "--batch-size", "--width", "--eval-n"):
        check_positive_int(flag, getattr(args, flag[2:].replace("-", "_")))
    check_positive_int("--n-train", args.n_train, allow_none=True)
    check_positive_int("--holdout", args.holdout, allow_none=True)
    check_positive_int("--save-every", args.save_every, allow_none=True)
    if not 0 < args.learning_rate < float("inf"):
        fail(f"argument --learning-rate: expected a positive number, got {args.learning_rate}")
    check_seed(args.seed)
    out = check_output_file("--out", args.out, (".keras",))
    check_output_file("--out", out.with_suffix(".json"), (".json",))
    for path in finetuned_paths(out, len(args.classifier)) if args.finetune_classifier else ():
        check_output_file("--out", path, (".keras",))
    check_backup(backup_dir(out), settings_of(args))
    return args


def backup_dir(out):
    out = pathlib.Path(out)
    return out.with_name(out.name + ".backup")


def settings_of(args):
    """What the backup depends on: a resumed run must use the same values."""
    keys = (
        "kind",
        "classifier",
        "dataset",
        "data_dir",
        "eps",
        "epochs",
        "batch_size",
        "learning_rate",
        "attack_steps",
        "attack_loss",
        "lambda_trades",
        "ramp_epochs",
        "width",
        "precision",
        "seed",
        "n_train",
    )
    settings = {k: getattr(args, k) for k in keys}
    for key in ("holdout", "lambda_adv_cls"):  # in the settings only when given (older backups lack them)
        if getattr(args, key) not in (None, 1.0 if key == "lambda_adv_cls" else None):
            settings[key] = getattr(args, key)
    paths = [str(pathlib.Path(path).resolve()) for path in args.classifier]
    settings["classifier"] = paths[0] if len(paths) == 1 else paths
    if len(paths) > 1:
        settings["ensemble"] = args.ensemble
    if args.finetune_classifier:
        settings["finetune_classifier"] = True
    return settings


def finetuned_paths(out, count):
    """Where the fine-tuned classifier(s) are saved: beside `out`."""
    out = pathlib.Path(out)
    if count == 1:
        return [out.with_name(out.stem + ".classifier.keras")]
    return [out.with_name(f"{out.stem}.classifier-{i}.keras") for i in range(count)]


def check_dataset_and_eps(args):
    """--dataset names a known dataset or an existing npz; --eps defaults by dataset and lies in (0, 1]."""
    from tfdefense._cli import fail
    from tfdefense.data import list_datasets

    known = [name for name in list_datasets() if name != "npz:PATH"]
    if args.dataset not in known and not args.dataset.startswith("npz:"):
        fail(f"argument --dataset: unknown dataset {args.dataset!r}; expected one of: {', '.join(known)} or npz:PATH")
    if args.dataset.startswith("npz:") and not pathlib.Path(args.dataset[4:]).expanduser().is_file():
        fail(f"argument --dataset: {args.dataset!r} does not name an existing .npz file")
    if args.eps is None:
        if args.dataset not in DEFAULT_EPS:
            fail(f"argument --eps: required for dataset {args.dataset!r} (no default radius)")
        args.eps = DEFAULT_EPS[args.dataset]
    if not 0 < args.eps <= 1:
        fail(f"argument --eps: expected a number in (0, 1] (pixel units in [0, 1]), got {args.eps}")


def load_splits(args):
    """((x_train, y_train), (x_held, y_held), (x_eval, y_eval), num_classes): --n-train first training
    images, the last --holdout of them held out (None without it), the first --eval-n test images."""
    from tfdefense._cli import fail
    from tfdefense.data import load_dataset

    (x_train, y_train), (x_test, y_test) = load_dataset(args.dataset, data_dir=args.data_dir)
    if args.n_train is not None:
        if args.n_train > len(x_train):
            fail(f"argument --n-train: the dataset has {len(x_train)} training images, got {args.n_train}")
        x_train, y_train = x_train[: args.n_train], y_train[: args.n_train]
    x_held = y_held = None
    if args.holdout is not None:
        if args.holdout >= len(x_train):
            fail(f"argument --holdout: the training set has {len(x_train)} images, got {args.holdout}")
        x_held, y_held = x_train[-args.holdout :], y_train[-args.holdout :]
        x_train, y_train = x_train[: -args.holdout], y_train[: -args.holdout]
    num_classes = int(max(y_train.max(), y_test.max()) + 1)
    return (x_train, y_train), (x_held, y_held), (x_test[: args.eval_n], y_test[: args.eval_n]), num_classes


def check_backup(folder, settings):
    """A backup folder may be resumed only if this command made it, with the same settings."""
    from tfdefense._cli import fail

    if not folder.exists():
        return
    marker = folder / SETTINGS_FILE
    if not folder.is_dir() or not marker.is_file():
        fail(f"argument --out: {str(folder)!r} exists and is not a backup of this command; move it away")
    try:
        saved = json.loads(marker.read_text())
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, dict):
        fail(
            f"argument --out: {str(marker)!r} is not a readable settings file of this command; move "
            f"{str(folder)!r} away"
        )
    changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        fail(
            f"argument --out: the backup {str(folder)!r} was made with other settings ({detail}); rerun with "
            "the same settings to resume, or remove the folder to start over"
        )


def _ignore_missing(function, path, error):
    error = error[1] if isinstance(error, tuple) else error
    if not isinstance(error, FileNotFoundError):
        raise error


def remove_backup_folder(folder):
    """Removes a backup folder this command made; files already gone (another worker's) are fine."""
    if sys.version_info >= (3, 12):
        shutil.rmtree(folder, onexc=_ignore_missing)
    else:
        shutil.rmtree(folder, onerror=_ignore_missing)


def open_backup(folder, settings, chief):
    """Creates the backup folder with its settings file (the chief) and returns the epoch it resumes from."""
    from tfdefense._io import write_json

    if chief:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / SETTINGS_FILE, settings)
    return resumed_epoch(folder)


def resumed_epoch(folder):
    """The epoch the backup in `folder` resumes from: its newest complete checkpoint's (0: none)."""
    from tfdefense import distribute

    return distribute.backup_epoch(folder)


@contextlib.contextmanager
def backup_callback(folder, strategy):
    """The epoch backup (`tfdefense.distribute.AtomicBackupAndRestore`), safe under several workers.

    The chief backs up into `folder` (kept until the purifier is saved);
    another worker restores from a copy of the chief's backup files in a
    temporary folder of its own, backs up there, and removes it on exit.
    """
    from tfdefense import distribute

    if distribute.is_chief(strategy):
        yield distribute.atomic_backup(folder, delete_checkpoint=False)
        return
    task_type, task_id = distribute.task(strategy)
    temporary = pathlib.Path(tempfile.mkdtemp(prefix=f"tfdefense-purifier-backup-{task_type}-{task_id}-"))
    try:
        if folder.is_dir():
            for item in folder.iterdir():
                if item.is_file():
                    shutil.copy2(item, temporary / item.name)
        yield distribute.atomic_backup(temporary, delete_checkpoint=True)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)  # made here


def load_classifier(path, image_shape, num_classes, flag="--classifier", trainable=False):
    import keras

    from tfdefense._cli import fail

    classifier = keras.models.load_model(path, safe_mode=True, compile=False)  # no optimizer needed
    if not isinstance(classifier, keras.Model):
        fail(f"argument {flag}: {path!r} does not hold a keras.Model")
    shape = tuple(classifier.input_shape[1:]) if not isinstance(classifier.input_shape, list) else None
    if shape != tuple(image_shape):
        fail(
            f"argument {flag}: {path!r} takes inputs of shape {classifier.input_shape}; the dataset's "
            f"images have shape {tuple(image_shape)}"
        )
    outputs = classifier.output_shape[-1] if not isinstance(classifier.output_shape, list) else None
    if outputs is None or outputs < num_classes:
        fail(f"argument {flag}: {path!r} returns {outputs} logits; the dataset has {num_classes} classes")
    classifier.trainable = trainable
    if trainable:
        from tfdefense.inference import all_layers

        for layer in all_layers(classifier):  # a model saved frozen has frozen layers
            layer.trainable = True
    if trainable and not classifier.trainable_variables:
        fail(f"argument --finetune-classifier: {path!r} has no trainable variables")
    return classifier


def snapshot_path(out, epoch):
    """Where --save-every keeps the model after `epoch` (1-based)."""
    out = pathlib.Path(out)
    return out.with_name(f"{out.stem}.epoch{epoch}.keras")


def progress_callbacks(args, folder, x_held, y_held, chief=True, snapshot=lambda model: model):
    """The robust kind's per-epoch bookkeeping: cumulative CPU time (resumed from the epoch log; stops at
    --max-cpu-seconds), the held-out monitor with --holdout, the epoch log and the --save-every snapshots of
    `snapshot(model)` (both written by the chief)."""
    from tfdefense.defenses import RobustAccuracyMonitor
    from tfdefense.training import ComputeBudget, EpochLog, read_epoch_log

    start = resumed_epoch(folder)
    spent = [r["cpu_seconds"] for r in read_epoch_log(folder / EPOCH_LOG_FILE) if r["epoch"] == start]
    callbacks = [ComputeBudget(args.max_cpu_seconds, offset=spent[0] if spent else 0.0)]
    if x_held is not None:
        monitor = RobustAccuracyMonitor(x_held, y_held, args.eps, steps=20, n_pgd=MONITOR_PGD_IMAGES, seed=args.seed)
        callbacks.append(monitor)
    if chief:
        callbacks.append(EpochLog(folder / EPOCH_LOG_FILE))
        if args.save_every is not None:
            callbacks.append(epoch_snapshots(args.save_every, args.out, snapshot))
    return callbacks


def epoch_snapshots(every, out, snapshot):
    """A keras callback saving `snapshot(model)` after every `every`-th epoch to `snapshot_path(out, epoch)`."""
    import keras

    from tfdefense._io import save_model

    class EpochSnapshots(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % every == 0:
                save_model(snapshot(self.model), snapshot_path(out, epoch + 1))

    return EpochSnapshots()


def _unet(shape, width, dropout):
    from tfdefense.models.unet import unet_generator

    return unet_generator(shape, base_filters=width, max_filters=4 * width, depth=4, dropout=dropout)


def build_robust(args, classifiers, shape, n_train):
    from tfdefense.defenses import RobustPurifier
    from tfdefense.training import cosine_fused_adam

    purifier = RobustPurifier(
        _unet(shape, args.width, 0.0),
        classifiers[0] if len(classifiers) == 1 else classifiers,
        attack_eps=args.eps,
        attack_steps=args.attack_steps,
        attack_loss=args.attack_loss,
        lambda_trades=args.lambda_trades,
        lambda_adv_cls=args.lambda_adv_cls,
        seed=args.seed,
        precision=args.precision,
        ensemble=args.ensemble,
        finetune_classifier=args.finetune_classifier,
    )
    purifier.compile(g_optimizer=cosine_fused_adam(args.learning_rate, args.epochs, n_train, args.batch_size))
    return purifier


def build_pix2pix(args, shape):
    from tfdefense.defenses import Pix2PixDefense
    from tfdefense.models.patchgan import patchgan_discriminator
    from tfdefense.training import FusedAdam

    model = Pix2PixDefense(
        _unet(shape, args.width, 0.5), patchgan_discriminator(shape, base_filters=8, n_layers=1), lambda_l1=100.0
    )
    model.compile(g_optimizer=FusedAdam(learning_rate=args.learning_rate, beta_1=0.5))
    return model


def build_apegan(args, shape):
    from tfdefense.defenses import APEGAN
    from tfdefense.defenses.purifiers.apegan import default_optimizer
    from tfdefense.models.apegan_nets import apegan_discriminator_preset, apegan_generator_preset

    preset = "mnist" if shape[-1] == 1 else "cifar10"
    w = args.width
    generator = apegan_generator_preset(preset, shape, down_filters=(4 * w, 8 * w), up_filters=(4 * w,))
    discriminator = apegan_discriminator_preset(preset, shape, filters=(4 * w, 8 * w, 16 * w))
    model = APEGAN(generator, discriminator)
    model.compile(g_optimizer=default_optimizer(args.learning_rate))
    return model


def craft_pairs(args, classifier, x, y, cache_dir, strategy=None):
    """(x_adv, x_clean) crafted against the bare classifier: the papers' training data."""

    from tfdefense.attacks import generate, get_attack

    fgsm = generate(get_attack("fgsm", eps=args.eps), classifier, x, y, cache_dir=cache_dir, strategy=strategy)
    if args.kind == "apegan":
        return fgsm, x
    steps = args.attack_steps
    step = min(args.eps, 2.5 * args.eps / steps)
    pgd = generate(
        get_attack("pgd", eps=args.eps, eps_iter=step, nb_iter=steps, seed=args.seed),
        classifier,
        x,
        y,
        cache_dir=cache_dir,
        strategy=strategy,
    )
    return np.concatenate([fgsm, pgd, x]), np.concatenate([x, x, x])


def evaluate(args, defended, classifier, x, y, strategy=None, transfer=True):
    """Clean and small-suite accuracy of the pipeline on held-out images (`robustness` module); `transfer`:
    the suite's transfer attack crafted on the bare `classifier`."""
    from tfdefense.evaluation import accuracy
    from tfdefense.evaluation.presets.robust import SUITE_QUICK, SUITE_TINY
    from tfdefense.evaluation.robustness import evaluate_robustness, robustness_suite

    summary = {
        "eval_images": int(len(x)),
        "eval_suite": args.eval_suite,
        "classifier_clean_accuracy": accuracy(classifier, x, y),
    }
    if args.eval_suite == "none":
        summary["clean_accuracy"] = accuracy(defended, x, y)
        return summary
    params = SUITE_QUICK if args.eval_suite == "quick" else SUITE_TINY
    suite = robustness_suite(args.eps, seed=args.seed, transfer=transfer, **params)
    from tfdefense import distribute

    batch_size = 500
    if distribute.is_distributed(strategy):  # the evaluation images split into one attack call per replica
        batch_size = -(-min(batch_size, len(x)) // distribute.num_replicas(strategy))
    result = evaluate_robustness(
        defended,
        x,
        y,
        suite,
        source=classifier if transfer else None,
        strategy=strategy,
        batch_size=batch_size,
        log=lambda m: print(f"  eval: {m}", flush=True),
        per_attack=True,
    )
    summary.update(
        {
            "clean_accuracy": result.clean_accuracy,
            "robust_accuracy": result.worst_case,
            "attacks": result.accuracies,
            "eval_attack_settings": {spec.label: spec.config() for spec in suite},
        }
    )
    return summary


def run(args):
    check_args(args)
    from tfdefense import distribute

    strategy = distribute.make_strategy(args.distribute)  # before any TF op (multiworker needs it so)
    chief = distribute.is_chief(strategy)
    import keras

    from tfdefense._io import save_model, write_json
    from tfdefense.data import make_paired_pipeline
    from tfdefense.defenses import DefendedClassifier
    from tfdefense.training import EpsilonRamp

    started = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_held, y_held), (x_eval, y_eval), num_classes = load_splits(args)
    shape = x_train.shape[1:]
    with strategy.scope():  # variables mirrored on every replica
        classifiers = [
            load_classifier(path, shape, num_classes, trainable=args.finetune_classifier) for path in args.classifier
        ]
        held_out = [load_classifier(path, shape, num_classes, "--eval-classifier") for path in args.eval_classifier]
    out = pathlib.Path(args.out)
    folder = backup_dir(out)
    start_epoch = open_backup(folder, settings_of(args), chief)
    verb = f"resuming from epoch {start_epoch} of" if start_epoch else "training"
    placement = distribute.describe(strategy)
    print(
        f"{verb} a {args.kind} purifier: {len(x_train)} {args.dataset} images, {args.epochs} epochs, eps "
        f"{args.eps:.4g}; backup in {folder}; strategy {placement['strategy']}, {placement['replicas']} "
        f"replica(s)",
        flush=True,
    )
    verbose = 2
    clock = time.perf_counter(), time.process_time()
    with backup_callback(folder, strategy) as backup:
        distribute.check_backup_consistent(backup, strategy)
        if args.kind == "robust":
            with strategy.scope():
                purifier = build_robust(args, classifiers, shape, len(x_train))
            history = purifier.fit(
                x_train,
                y_train,
                batch_size=args.batch_size,
                epochs=args.epochs,
                verbose=verbose,
                callbacks=[
                    EpsilonRamp(args.ramp_epochs),
                    *progress_callbacks(args, folder, x_held, y_held, chief),
                    backup,
                ],
            )
        else:
            print(f"crafting the training pairs against the classifier (eps {args.eps:.4g})", flush=True)
            x_adv, x_clean = craft_pairs(args, classifiers[0], x_train, y_train, folder / "pairs", strategy)
            with strategy.scope():
                purifier = build_pix2pix(args, shape) if args.kind == "pix2pix" else build_apegan(args, shape)
            pairs = make_paired_pipeline(x_adv, x_clean, batch_size=args.batch_size, seed=args.seed)
            history = purifier.fit(pairs, epochs=args.epochs, verbose=verbose, callbacks=[backup])
    train_seconds = time.perf_counter() - clock[0]
    train_cpu_seconds = time.process_time() - clock[1]
    finetuned = finetuned_paths(out, len(classifiers)) if args.finetune_classifier else []
    if chief:  # other workers hold the same weights and write nothing
        save_model(purifier, out)
        for model, path in zip(classifiers, finetuned, strict=False):
            save_model(model, path)
        print(f"saved {', '.join(map(str, [out, *finetuned]))}; evaluating on {len(x_eval)} test images", flush=True)
    eval_start = time.perf_counter()
    summary = {
        "kind": args.kind,
        "dataset": args.dataset,
        "classifier": str(args.classifier[0]),
        "classifiers": [str(path) for path in args.classifier],
        "eval_classifiers": [str(path) for path in args.eval_classifier],
        "finetuned_classifiers": [str(path) for path in finetuned],
        "out": str(out),
        "train_examples": int(len(x_train)),
        "epochs": history.epoch[-1] + 1 if history.epoch else args.epochs,  # in this purifier's history
        "resumed_from_epoch": backup.restored_epoch,
        "eps": args.eps,
        "settings": settings_of(args),
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(train_cpu_seconds, 1),
        "distribute": placement,
    }
    # A fine-tuned classifier's row names the file it was saved to and the one it started from.
    roles = [
        (tuned or path, model, "trained", {"fine_tuned_from": str(path)} if tuned else {})
        for path, model, tuned in zip(args.classifier, classifiers, finetuned or [None] * len(classifiers), strict=True)
    ]
    roles += [(path, model, "held-out", {}) for path, model in zip(args.eval_classifier, held_out, strict=True)]
    per_classifier = []
    for path, model, role, origin in roles:
        if len(roles) > 1:
            print(f"evaluating in front of {path} ({role})", flush=True)
        with strategy.scope():
            defended = DefendedClassifier(purifier, model)
        per_classifier.append(
            {
                "classifier": str(path),
                "role": role,
                **origin,
                **evaluate(args, defended, model, x_eval, y_eval, strategy),
            }
        )
    summary.update({k: v for k, v in per_classifier[0].items() if k not in ("classifier", "role", "fine_tuned_from")})
    summary["per_classifier"] = per_classifier
    if args.kind == "robust" and chief:
        from tfdefense.training import read_epoch_log

        summary["epoch_log"] = read_epoch_log(folder / EPOCH_LOG_FILE)
    summary["eval_seconds"] = round(time.perf_counter() - eval_start, 1)
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    if chief:
        write_json(out.with_suffix(".json"), summary)
        # made by this command (checked by check_backup); the purifier is saved. Other workers may be
        # removing their own pair caches below it at the same time.
        remove_backup_folder(folder)
    elif args.kind != "robust":  # this worker's own pair cache, and the folders above it left empty
        shutil.rmtree(distribute.worker_dir(folder / "pairs", strategy), ignore_errors=True)
        for empty in (folder / "pairs" / "workers", folder / "pairs", folder):
            try:
                empty.rmdir()  # only an empty folder: nothing of the chief's
            except OSError:
                break
    print(json.dumps({k: summary[k] for k in ("clean_accuracy", "robust_accuracy", "attacks", "out") if k in summary}))
    return summary
