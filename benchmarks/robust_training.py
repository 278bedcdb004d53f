"""Robust-purifier training in bfloat16 vs float32: images/s, GFLOP/s, and robustness at equal epochs.

The docs/robust.md recipe at small size: `RobustPurifier` with a U-Net 16..64
(depth 4, no dropout) in front of model C, PGD-7 through the whole pipeline at
eps 0.3, `EpsilonRamp`, cosine-decayed Adam 1e-3, batch 64, on the first
`--n-train` digits of the MNIST split. Two parts, both run for
`RobustPurifier(precision="fp32")` and `precision="bf16"`:

1. Speed. Both variants are built, traced, then timed interleaved
   (`--repeats` timings of `--steps` steps each; the clock runs from the end of
   the first batch of a `fit` call to the end of its last). Reported: images/s
   (best and median wall time), images per CPU-second of this process (steadier
   on a shared machine), GFLOP/s and the bf16 / fp32 ratios.
2. Robustness at equal epochs. Each variant trains from the same initial
   weights for `--epochs` epochs; then clean accuracy and PGD-20 (eps 0.3,
   step 2.5 eps / 20, random start) through `DefendedClassifier` on the first
   `--eval-n` held-out test digits (float32 inference for both).

FLOPs are counted analytically from the Conv2D / Conv2DTranspose / Dense layers
(`forward_flops` of benchmarks/train_step.py, 2 per MAC). Per image, one step
costs 2 k (F_G + F_C) for PGD-k (forward + input gradient through generator
and classifier at every iteration) plus 6 F_G + 4 F_C for the update (forward
of the adversarial and clean images, input gradient of the frozen classifier,
activation and weight gradients of the generator).

    python benchmarks/robust_training.py                      # ~5 min on an idle 2-core machine
    python benchmarks/robust_training.py --skip-robustness --steps 10
    python benchmarks/robust_training.py --json out.json
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout
sys.path.insert(0, str(HERE))

from train_step import forward_flops  # noqa: E402

PRECISIONS = ("fp32", "bf16")
UNET = dict(base_filters=16, max_filters=64, depth=4, dropout=0.0)


def step_flops_per_image(generator, classifier, attack_steps):
    """Useful FLOPs of one RobustPurifier training step per image (attack_loss "ce")."""
    f_g, f_c = forward_flops(generator), forward_flops(classifier)
    return 2 * attack_steps * (f_g + f_c) + 6 * f_g + 4 * f_c


def _clock():
    return time.perf_counter(), time.process_time()


def _step_timer():
    import keras

    class StepTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = self.end = None

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # wait for the step's result
            now = _clock()
            if self.start is None:
                self.start = now
            self.end = now

    return StepTimer()


def build_purifier(classifier, precision, args, total_steps, seed=0):
    import keras

    from tfdefense.defenses import RobustPurifier
    from tfdefense.models.unet import unet_generator
    from tfdefense.training import FusedAdam

    keras.utils.set_random_seed(seed)  # same initial weights for both precisions
    generator = unet_generator(classifier.input_shape[1:], **UNET)
    purifier = RobustPurifier(
        generator, classifier, attack_eps=args.eps, attack_steps=args.attack_steps, seed=seed, precision=precision
    )
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, max(total_steps, 1), alpha=0.02)
    purifier.compile(g_optimizer=FusedAdam(schedule))
    return purifier


def speed(classifier, x, y, args):
    """Interleaved timings of both precisions; returns one row per precision."""
    import numpy as np
    import tensorflow as tf

    batch = args.batch_size
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch, drop_remainder=True).prefetch(2)
    runners = {}
    for precision in PRECISIONS:
        purifier = build_purifier(classifier, precision, args, total_steps=10**6)
        purifier.fit(dataset, epochs=1, steps_per_epoch=args.warmup, verbose=0)  # trace
        runners[precision] = (purifier, _step_timer())
    flops = step_flops_per_image(runners["fp32"][0].generator, classifier, args.attack_steps)
    times = {p: [] for p in PRECISIONS}
    losses = {p: [] for p in PRECISIONS}
    for _ in range(args.repeats):
        for precision, (purifier, timer) in runners.items():  # interleaved: load changes hit both alike
            history = purifier.fit(dataset, epochs=1, steps_per_epoch=args.steps + 1, verbose=0, callbacks=[timer])
            times[precision].append((timer.end[0] - timer.start[0], timer.end[1] - timer.start[1]))
            losses[precision].append(history.history["loss"][-1])
    images = args.steps * batch
    rows = {}
    for precision in PRECISIONS:
        wall = [t[0] for t in times[precision]]
        cpu = [t[1] for t in times[precision]]
        rows[precision] = {
            "precision": precision,
            "images_per_s_best": images / min(wall),
            "images_per_s_median": images / statistics.median(wall),
            "images_per_cpu_s_median": images / statistics.median(cpu),
            "gflop_per_image": flops / 1e9,
            "gflops_best": flops * images / min(wall) / 1e9,
            "finite_losses": bool(np.isfinite(losses[precision]).all()),
        }
    for name, key in (
        ("best", "images_per_s_best"),
        ("median", "images_per_s_median"),
        ("cpu", "images_per_cpu_s_median"),
    ):
        for precision in PRECISIONS:
            rows[precision][f"ratio_{name}"] = rows[precision][key] / rows["fp32"][key]
    return [rows[p] for p in PRECISIONS]


def robustness(classifier, x, y, x_test, y_test, args):
    """Trains each precision for `--epochs` epochs from the same weights; clean and PGD-20 accuracy."""
    from tfdefense.attacks import get_attack
    from tfdefense.defenses import DefendedClassifier, EpsilonRamp
    from tfdefense.evaluation import accuracy

    steps_per_epoch = -(-len(x) // args.batch_size)
    pgd = get_attack("pgd", eps=args.eps, eps_iter=2.5 * args.eps / 20, nb_iter=20, rand_init=True, seed=0)
    rows = []
    for precision in PRECISIONS:
        purifier = build_purifier(classifier, precision, args, total_steps=args.epochs * steps_per_epoch)
        start = _clock()
        history = purifier.fit(
            x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0, callbacks=[EpsilonRamp(args.ramp_epochs)]
        )
        end = _clock()
        defended = DefendedClassifier(purifier, classifier)
        x_adv = pgd(defended, x_test, y_test)
        rows.append(
            {
                "precision": precision,
                "epochs": args.epochs,
                "train_images": len(x),
                "train_wall_s": end[0] - start[0],
                "train_cpu_s": end[1] - start[1],
                "train_images_per_s": args.epochs * len(x) / (end[0] - start[0]),
                "final_loss": history.history["loss"][-1],
                "final_adv_acc": history.history["adv_acc"][-1],
                "eval_images": len(x_test),
                "clean_accuracy": accuracy(defended, x_test, y_test),
                "pgd20_accuracy": accuracy(defended, x_adv, y_test),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=2048, help="training digits (first of the MNIST split)")
    parser.add_argument("--eval-n", type=int, default=500, help="held-out test digits for the robustness part")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the robustness part")
    parser.add_argument("--ramp-epochs", type=int, default=3)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--attack-steps", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="steps per speed timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--data-dir", default=None, help="folder holding mnist.npz (default: $TFDEFENSE_DATA_DIR)")
    parser.add_argument(
        "--classifier",
        default=None,
        help=".keras classifier (default: model C, 3 epochs on the first 8000 training digits)",
    )
    parser.add_argument("--skip-robustness", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="pin TF intra/inter-op threads")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from tfdefense import _io
    from tfdefense.data import load_dataset
    from tfdefense.models import model_c, train_classifier

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    started = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = load_dataset("mnist", data_dir=args.data_dir, download=False)
    if args.classifier:
        classifier = keras.models.load_model(args.classifier, safe_mode=True)
    else:
        keras.utils.set_random_seed(0)
        classifier = model_c()
        train_classifier(classifier, x_train[:8000], y_train[:8000], epochs=3, batch_size=128, seed=0, verbose=0)
    classifier.trainable = False
    x, y = x_train[: args.n_train], y_train[: args.n_train]

    speed_rows = speed(classifier, x, y, args)
    print(
        f"{'precision':<10} {'img/s best':>10} {'median':>8} {'img/cpu-s':>10} {'GFLOP/s':>8} {'x fp32':>7} "
        f"{'x med':>6} {'x cpu':>6}"
    )
    for row in speed_rows:
        print(
            f"{row['precision']:<10} {row['images_per_s_best']:>10.1f} {row['images_per_s_median']:>8.1f} "
            f"{row['images_per_cpu_s_median']:>10.1f} {row['gflops_best']:>8.1f} "
            f"{row['ratio_best']:>7.2f} {row['ratio_median']:>6.2f} {row['ratio_cpu']:>6.2f}",
            flush=True,
        )
    robust_rows = []
    if not args.skip_robustness:
        robust_rows = robustness(classifier, x, y, x_test[: args.eval_n], y_test[: args.eval_n], args)
        for row in robust_rows:
            print(
                f"{row['precision']}: {row['epochs']} epochs on {row['train_images']} digits in "
                f"{row['train_wall_s']:.0f} s ({row['train_images_per_s']:.1f} img/s); clean "
                f"{row['clean_accuracy']:.3f}, PGD-20 {row['pgd20_accuracy']:.3f} on {row['eval_images']}"
            )
    result = {
        "settings": vars(args),
        "unet": UNET,
        "machine": {"cpus": os.cpu_count(), "load_average_1m_at_end": os.getloadavg()[0]},
        "speed": speed_rows,
        "robustness": robust_rows,
        "total_s": time.perf_counter() - started,
    }
    if args.json:
        _io.write_json(args.json, result)
    print(f"total {result['total_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
