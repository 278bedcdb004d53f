"""`python -m tfdefense.train`: train target classifiers and purifiers.

python -m tfdefense.train classifier --model C --dataset mnist --out model_c.keras
python -m tfdefense.train purifier --kind robust --classifier model_c.keras --dataset mnist --out robust.keras
python -m tfdefense.train adversarial --classifier model_c.keras --dataset mnist --out madry_c.keras
"""

import argparse
import json
import pathlib
import sys
import time

from tfdefense import __version__

# What `train classifier --dataset` accepts (and its --help lists), besides npz:PATH.
DATASETS = ("digits", "mnist", "cifar10", "imagenet")


def _classifier_parser(subparsers):
    parser = subparsers.add_parser("classifier", help="train a target classifier, write a .keras file")
    parser.add_argument("--model", required=True, help="registered classifier name (A, B, C, D, resnet20, ...)")
    parser.add_argument(
        "--dataset",
        required=True,
        help=f"{', '.join(DATASETS)} or npz:PATH (imagenet: a local folder of class sub-folders, "
        "DATA_DIR/imagenet; needs --image-size)",
    )
    parser.add_argument("--out", required=True, help="output .keras path")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--image-size", type=int, default=None, help="resize images to this size")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--optimizer", default="adam", choices=["adam", "sgd", "sgd_momentum", "rmsprop"], help="sgd_momentum: 0.9"
    )
    parser.add_argument("--augment", default=None, choices=["shift", "flip_shift"])
    parser.add_argument("--schedule", default=None, choices=["cosine"], help="learning-rate schedule")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--holdout",
        type=int,
        default=None,
        help="leave the last N training images out of training (e.g. for a purifier's --holdout monitor later)",
    )
    add_distribute_argument(parser)
    parser.set_defaults(run=run_classifier)


def add_distribute_argument(parser):
    parser.add_argument(
        "--distribute",
        default="none",
        choices=["none", "mirrored", "multiworker", "tpu"],
        help="tf.distribute strategy (multiworker reads TF_CONFIG); --batch-size is the global batch",
    )


def check_classifier_args(args):
    """Checks every argument of `train classifier` before any data is loaded or model trained."""
    from tfdefense._cli import check_output_file, check_positive_int, check_seed, fail
    from tfdefense.models import list_classifiers

    if args.model not in list_classifiers():
        fail(f"argument --model: unknown classifier {args.model!r}; expected one of: {', '.join(list_classifiers())}")
    known = DATASETS
    if args.dataset not in known and not args.dataset.startswith("npz:"):
        fail(f"argument --dataset: unknown dataset {args.dataset!r}; expected one of: {', '.join(known)} or npz:PATH")
    if args.dataset == "imagenet" and args.image_size is None:
        fail("argument --image-size: required with --dataset imagenet (e.g. 299 for Inception-v3)")
    if args.dataset.startswith("npz:") and not pathlib.Path(args.dataset[4:]).expanduser().is_file():
        fail(f"argument --dataset: {args.dataset!r} does not name an existing .npz file")
    check_positive_int("--epochs", args.epochs)
    check_positive_int("--batch-size", args.batch_size)
    check_positive_int("--image-size", args.image_size, allow_none=True)
    check_positive_int("--holdout", args.holdout, allow_none=True)
    if not args.learning_rate > 0 or args.learning_rate == float("inf"):
        fail(f"argument --learning-rate: expected a positive number, got {args.learning_rate}")
    check_seed(args.seed)
    out = check_output_file("--out", args.out, (".keras",))
    check_output_file("--out", out.with_suffix(".json"), (".json",))
    backup = out.with_name(out.name + ".backup")
    if backup.exists() and not backup.is_dir():
        fail(f"argument --out: {str(backup)!r} (the resume backup folder) is an existing file")


def run_classifier(args):
    check_classifier_args(args)
    from tfdefense import distribute

    strategy = distribute.make_strategy(args.distribute)  # before any TF op (multiworker needs it so)
    import keras

    from tfdefense._io import save_model, write_json
    from tfdefense.data import load_dataset
    from tfdefense.evaluation import accuracy
    from tfdefense.models import get_classifier, train_classifier

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = load_dataset(
        args.dataset, data_dir=args.data_dir, image_size=args.image_size
    )
    num_classes = int(max(y_train.max(), y_test.max()) + 1)
    if args.holdout is not None:
        if args.holdout >= len(x_train):
            from tfdefense._cli import fail

            fail(f"argument --holdout: the training set has {len(x_train)} images, got {args.holdout}")
        x_train, y_train = x_train[: -args.holdout], y_train[: -args.holdout]
    with strategy.scope():
        model = get_classifier(args.model, input_shape=x_train.shape[1:], num_classes=num_classes)
    out = pathlib.Path(args.out)
    start = time.perf_counter()
    history = train_classifier(
        model,
        x_train,
        y_train,
        validation_data=(x_test, y_test),
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        augment=args.augment,
        schedule=args.schedule,
        seed=args.seed,
        optimizer=args.optimizer,
        backup_dir=out.with_name(out.name + ".backup"),
        verbose=2,
        strategy=strategy,
    )
    seconds = time.perf_counter() - start
    chief = distribute.is_chief(strategy)
    if chief:  # other workers hold the same weights and write nothing
        save_model(model, out)
    summary = {
        "model": args.model,
        "dataset": args.dataset,
        "train_examples": int(len(x_train)),
        "holdout": args.holdout,
        "test_examples": int(len(x_test)),
        "optimizer": args.optimizer,
        "learning_rate": args.learning_rate,
        "schedule": args.schedule,
        # Epochs in this model's training history: those restored from the backup plus those run now
        # (none run: the backup held the last epoch).
        "epochs": history.epoch[-1] + 1 if history.epoch else args.epochs,
        "resumed_from_epoch": history.epoch[0] if history.epoch else args.epochs,
        "epochs_this_run": len(history.epoch),
        "test_accuracy": accuracy(model, x_test, y_test),
        "train_seconds": round(seconds, 1),
        "out": str(out),
        "distribute": distribute.describe(strategy),
    }
    if chief:
        write_json(out.with_suffix(".json"), summary)
    print(json.dumps(summary))
    return summary


def main(argv=None):
    from tfdefense._cli import quiet_tensorflow, run_main

    quiet_tensorflow()
    return run_main(_main, argv)


def _main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tfdefense.train", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tfdefense {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _classifier_parser(subparsers)
    from tfdefense import train_adversarial, train_purifier

    train_purifier.add_parser(subparsers)
    train_adversarial.add_parser(subparsers)
    args = parser.parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
