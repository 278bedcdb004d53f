"""`python -m tfdefense.train adversarial`: Madry adversarial training of a saved classifier.

    python -m tfdefense.train adversarial --classifier model_c.keras --dataset mnist --eps 0.3 \\
        --epochs 16 --out madry_c.keras

The classifier-side baseline of the robust purifier (docs/robust.md): the
classifier (loaded with `safe_mode=True`, every layer made trainable) is
trained by `AdversarialTrainer` on PGD-`--attack-steps` examples crafted on
itself at every step (step 2.5 eps / steps, at most eps; random start, `--mix` of the clean
loss), with the eps ramp (`EpsilonRamp`) and Adam cosine-decayed to 2%, from
its pretrained weights. The same bookkeeping as `train purifier --kind
robust`: an atomic epoch backup in `<out>.backup/` that a rerun resumes
(refused if made with other settings), `--holdout` (held-out clean / PGD-20
accuracy after every epoch), `--max-cpu-seconds` (equal-compute comparisons,
summed over resumed runs), `--precision bf16`, and `<out stem>.json`: the
epoch log, training CPU seconds and the classifier's accuracy under the
summary's attack suite (white-box on the classifier) on the first `--eval-n`
test images.

`<out>` is the adversarially trained classifier itself (a plain Keras model,
logits), which `--classifier` of `train purifier` (e.g. with
`--finetune-classifier`) and `evaluate --classifier` take.
"""

import json
import pathlib
import time

DEFAULT_EPOCHS = 16
DEFAULT_STEPS = {"cifar10": 5}  # PGD steps of the training attack (7 elsewhere)
SETTING_KEYS = (
    "classifier",
    "dataset",
    "data_dir",
    "eps",
    "epochs",
    "batch_size",
    "learning_rate",
    "attack_steps",
    "mix",
    "ramp_epochs",
    "precision",
    "seed",
    "n_train",
    "holdout",
)


def add_parser(subparsers):
    from tfdefense import train_purifier
    from tfdefense.train import add_distribute_argument

    parser = subparsers.add_parser(
        "adversarial",
        help="Madry adversarial training of a saved classifier (PGD on itself at every step)",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--classifier", required=True, help="the pretrained classifier (.keras, returns logits)")
    parser.add_argument("--dataset", required=True, help="mnist, cifar10, digits or npz:PATH")
    parser.add_argument("--out", required=True, help="output .keras path (summary: same stem, .json)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--eps", type=float, default=None, help="Linf radius (default 0.3 mnist/digits, 8/255 cifar10)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam, cosine-decayed to 2%%")
    parser.add_argument("--attack-steps", type=int, default=None, help="PGD steps (7; 5 on cifar10)")
    parser.add_argument("--mix", type=float, default=0.0, help="weight of the clean loss (0: Madry)")
    parser.add_argument("--ramp-epochs", type=int, default=None, help="eps ramp (min(3, max(1, epochs // 2)))")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=None, help="train on the first N training images only")
    parser.add_argument("--holdout", type=int, default=None, help="as for train purifier --kind robust")
    parser.add_argument("--max-cpu-seconds", type=float, default=None, help="as for train purifier --kind robust")
    parser.add_argument(
        "--save-every",
        type=int,
        default=None,
        help="also save the classifier after every N-th epoch (<out stem>.epoch<E>.keras)",
    )
    parser.add_argument("--eval-n", type=int, default=200, help="test images of the summary's evaluation")
    parser.add_argument("--eval-suite", default="quick", choices=train_purifier.EVAL_SUITES)
    add_distribute_argument(parser)
    parser.set_defaults(run=run)


def check_args(args):
    """Checks the command line before anything is loaded or trained; fills the defaults."""
    from tfdefense import train_purifier
    from tfdefense._cli import check_output_file, check_positive_int, check_seed, fail

    train_purifier.check_dataset_and_eps(args)
    if pathlib.Path(args.classifier).suffix != ".keras" or not pathlib.Path(args.classifier).is_file():
        fail(f"argument --classifier: expected an existing .keras file, got {args.classifier!r}")
    args.attack_steps = DEFAULT_STEPS.get(args.dataset, 7) if args.attack_steps is None else args.attack_steps
    args.ramp_epochs = min(3, max(1, args.epochs // 2)) if args.ramp_epochs is None else args.ramp_epochs
    for flag in ("--epochs", "--batch-size", "--attack-steps", "--ramp-epochs", "--eval-n"):
        check_positive_int(flag, getattr(args, flag[2:].replace("-", "_")))
    check_positive_int("--n-train", args.n_train, allow_none=True)
    check_positive_int("--holdout", args.holdout, allow_none=True)
    check_positive_int("--save-every", args.save_every, allow_none=True)
    if not 0 <= args.mix <= 1:
        fail(f"argument --mix: expected a number in [0, 1], got {args.mix}")
    if not 0 < args.learning_rate < float("inf"):
        fail(f"argument --learning-rate: expected a positive number, got {args.learning_rate}")
    if args.max_cpu_seconds is not None and not 0 <= args.max_cpu_seconds < float("inf"):
        fail(f"argument --max-cpu-seconds: expected a number >= 0, got {args.max_cpu_seconds}")
    check_seed(args.seed)
    out = check_output_file("--out", args.out, (".keras",))
    check_output_file("--out", out.with_suffix(".json"), (".json",))
    train_purifier.check_backup(train_purifier.backup_dir(out), settings_of(args))
    return args


def settings_of(args):
    """What the backup depends on: a resumed run must use the same values."""
    settings = {key: getattr(args, key) for key in SETTING_KEYS}
    settings["classifier"] = str(pathlib.Path(args.classifier).resolve())
    settings["command"] = "adversarial"
    return settings


def run(args):
    check_args(args)
    from tfdefense import distribute, train_purifier

    strategy = distribute.make_strategy(args.distribute)  # before any TF op (multiworker needs it so)
    chief = distribute.is_chief(strategy)
    import keras

    from tfdefense._io import save_model, write_json
    from tfdefense.defenses import AdversarialTrainer
    from tfdefense.training import EpsilonRamp, cosine_fused_adam, read_epoch_log

    started = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_held, y_held), (x_eval, y_eval), num_classes = train_purifier.load_splits(args)
    shape = x_train.shape[1:]
    out = pathlib.Path(args.out)
    folder = train_purifier.backup_dir(out)
    with strategy.scope():
        classifier = train_purifier.load_classifier(args.classifier, shape, num_classes, trainable=True)
        trainer = AdversarialTrainer(
            classifier,
            eps=args.eps,
            eps_iter=min(1.0, 2.5 / args.attack_steps) * args.eps,
            nb_iter=args.attack_steps,
            mix=args.mix,
            seed=args.seed,
            precision=args.precision,
        )
        trainer.compile(optimizer=cosine_fused_adam(args.learning_rate, args.epochs, len(x_train), args.batch_size))
    start_epoch = train_purifier.open_backup(folder, settings_of(args), chief)
    verb = f"resuming from epoch {start_epoch} of" if start_epoch else "starting"
    print(
        f"{verb} adversarial training (PGD-{args.attack_steps}, eps {args.eps:.4g}): {len(x_train)} "
        f"{args.dataset} images, {args.epochs} epochs; backup in {folder}",
        flush=True,
    )
    clock = time.perf_counter(), time.process_time()
    with train_purifier.backup_callback(folder, strategy) as backup:
        distribute.check_backup_consistent(backup, strategy)
        callbacks = [EpsilonRamp(args.ramp_epochs)]
        callbacks += train_purifier.progress_callbacks(
            args, folder, x_held, y_held, chief, snapshot=lambda model: model.classifier
        )
        history = trainer.fit(
            x_train,
            y_train,
            batch_size=args.batch_size,
            epochs=args.epochs,
            verbose=2,
            callbacks=[*callbacks, backup],
        )
    summary = {
        "command": "adversarial",
        "dataset": args.dataset,
        "classifier": str(args.classifier),
        "out": str(out),
        "train_examples": int(len(x_train)),
        "epochs": history.epoch[-1] + 1 if history.epoch else args.epochs,
        "resumed_from_epoch": backup.restored_epoch,
        "eps": args.eps,
        "settings": settings_of(args),
        "train_seconds": round(time.perf_counter() - clock[0], 1),
        "train_cpu_seconds": round(time.process_time() - clock[1], 1),
        "distribute": distribute.describe(strategy),
    }
    if chief:
        save_model(trainer.classifier, out)
        summary["epoch_log"] = read_epoch_log(folder / train_purifier.EPOCH_LOG_FILE)
        print(f"saved {out}; evaluating on {len(x_eval)} test images", flush=True)
    eval_start = time.perf_counter()
    classifier = trainer.classifier
    summary.update(train_purifier.evaluate(args, classifier, classifier, x_eval, y_eval, strategy, transfer=False))
    summary["eval_seconds"] = round(time.perf_counter() - eval_start, 1)
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    if chief:
        write_json(out.with_suffix(".json"), summary)
        train_purifier.remove_backup_folder(folder)  # made by this command (checked by check_backup)
    print(json.dumps({k: summary[k] for k in ("clean_accuracy", "robust_accuracy", "attacks", "out") if k in summary}))
    return summary
