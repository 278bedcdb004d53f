"""Evaluation speed: AutoAttack's cascade (the default) against the per-attack run, and the engine's floor.

Two cases, each run both ways on the same images in one process:

- A: model C alone, `--n` MNIST test digits, the standard suite at eps 0.3;
- B: a robust purifier (U-Net trained through model C, or --purifier PATH) in
  front of model C, the same digits and suite.

"per-attack" is the protocol before the engine: every attack on every image and
the sanity checks' attacks (eps sweep, convergence) on all images
(`evaluate_model(per_attack=True, sanity_n=n)`). "cascade" is the default:
each attack only on the images every earlier attack failed to break, the
checks' attacks on a fixed subsample of --sanity-n (200) images, crafted in
--attack-precision (fp32; bf16: the gradient attacks in bfloat16, every image
judged in float32). Both go through
`tfdefense.evaluate_model` (no output folder, so nothing is cached).

Then the floor of the engine's own schedule: the pipeline is wrapped in a layer
counting the images of every forward and backward pass, the engine
(`engine.run_suite` + `sanity_checks`, cascade) runs through it, and its time
is compared with (forward images / batch) x (time of one forward pass at the
batch size) + (backward images / batch) x (time of one backward pass), both
measured on the bare pipeline in one tf.function.

    python benchmarks/evaluation.py --n 1000             # the targets' setting (long on 2 CPU cores)
    python benchmarks/evaluation.py --n 50 --suite quick # a smoke run
    python benchmarks/evaluation.py --skip-purifier --out timings.json

Targets: case A at least 5x faster with the identical worst case; case B at
least 2x faster with the worst case within 0.3 points of the per-attack run;
the engine at most 1.15x its floor.
"""

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="MNIST test digits (the first n)")
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--suite", default="standard", choices=["standard", "quick"])
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--sanity-n", type=int, default=200, help="the cascade's sanity-check subsample")
    parser.add_argument(
        "--attack-precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="the cascade's crafting precision (the per-attack run stays fp32)",
    )
    parser.add_argument("--classifier", help="a .keras model C (default: train one, 3 epochs on 8000 digits)")
    parser.add_argument("--purifier", help="a .keras robust purifier (default: train one through model C)")
    parser.add_argument("--skip-purifier", action="store_true", help="case A and the floor only")
    parser.add_argument("--skip-classifier", action="store_true", help="leave case A (model C alone) out")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--data-dir", default=None, help="folder holding mnist.npz (default: load_dataset's search)")
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    if args.skip_classifier and args.skip_purifier:
        parser.error("--skip-classifier and --skip-purifier leave no case to run")
    if min(args.n, args.batch_size, args.sanity_n) < 1 or not 0 < args.eps <= 1:
        parser.error("--n, --batch-size and --sanity-n must be >= 1 and --eps in (0, 1]")
    return args


def load_models(args, x_train, y_train):
    import keras

    import tfdefense.defenses  # noqa: F401  (registers the purifier classes a .keras file may hold)
    from tfdefense.models import model_c, train_classifier

    if args.classifier:
        classifier = keras.saving.load_model(args.classifier)
    else:
        keras.utils.set_random_seed(0)
        classifier = model_c()
        train_classifier(classifier, x_train[:8000], y_train[:8000], epochs=3, batch_size=128, seed=0, verbose=0)
    classifier.trainable = False
    purifier = None
    if not args.skip_purifier:
        if args.purifier:
            purifier = keras.saving.load_model(args.purifier)
        else:
            from tfdefense.defenses import EpsilonRamp, RobustPurifier
            from tfdefense.models.unet import unet_generator

            keras.utils.set_random_seed(0)
            generator = unet_generator((28, 28, 1), base_filters=8, max_filters=32, depth=3, dropout=0.0)
            purifier = RobustPurifier(generator, classifier, attack_eps=args.eps, attack_steps=5, seed=0)
            purifier.compile()
            purifier.fit(x_train[:1536], y_train[:1536], batch_size=64, epochs=3, verbose=0, callbacks=[EpsilonRamp(2)])
    return classifier, purifier


def both_ways(classifier, purifier, x, y, args):
    """Per-attack and cascade `evaluate_model` on (x, y): times, worst cases, checks."""
    from tfdefense.evaluation.user_model import evaluate_model

    out = {}
    cascade = {"sanity_n": args.sanity_n, "attack_precision": args.attack_precision}
    for name, options in (("per_attack", {"per_attack": True, "sanity_n": len(x)}), ("cascade", cascade)):
        start = time.perf_counter()
        result = evaluate_model(
            classifier,
            (x, y),
            args.eps,
            purifier=purifier,
            suite=args.suite,
            batch_size=args.batch_size,
            progress=False,
            **options,
        )
        seconds = time.perf_counter() - start
        out[name] = {
            "seconds": seconds,
            "worst_case": result.worst_case,
            "clean": result.clean_accuracy,
            "attacked_images": result.robustness.extra["attacked_images"],
            "worst_case_examples": result.per_example["worst_case"],
            "checks": {c["name"]: c["verdict"] for c in result.checks},
            "step_seconds": {label: round(sec, 2) for label, sec in result.robustness.seconds.items()},
        }
        print(
            f"  {name:10s} {seconds:8.1f} s   worst case {100 * result.worst_case:5.1f}%   "
            f"images attacked {sum(out[name]['attacked_images'].values())}",
            flush=True,
        )
        print("    " + ", ".join(f"{label} {sec:.1f} s" for label, sec in out[name]["step_seconds"].items()))
    per, cas = out["per_attack"], out["cascade"]
    out["speedup"] = per["seconds"] / cas["seconds"]
    out["worst_case_gap_points"] = 100 * (cas["worst_case"] - per["worst_case"])
    out["identical_worst_case"] = bool(np.array_equal(per.pop("worst_case_examples"), cas.pop("worst_case_examples")))
    print(
        f"  speed-up {out['speedup']:.2f}x; worst case cascade - per-attack {out['worst_case_gap_points']:+.2f} "
        f"points; identical per example: {out['identical_worst_case']}",
        flush=True,
    )
    return out


def counting_model(inner):
    """`inner` behind a layer that counts the images of its forward and backward passes (tf.Variables)."""
    import keras

    class Counted(keras.Model):
        def __init__(self, model):
            super().__init__()
            self.model = model
            self.forward_images = tf.Variable(0.0, trainable=False, dtype=tf.float32)
            self.backward_images = tf.Variable(0.0, trainable=False, dtype=tf.float32)

        def call(self, images, training=False):
            batch = tf.cast(tf.shape(images)[0], tf.float32)
            counter = self.backward_images

            @tf.custom_gradient
            def mark(t):
                def grad(dy):
                    with tf.control_dependencies([counter.assign_add(batch)]):
                        return tf.identity(dy)

                return tf.identity(t), grad

            with tf.control_dependencies([self.forward_images.assign_add(batch)]):
                images = mark(images)
            return self.model(images, training=False)

    return Counted(inner)


def pass_times(model, x, batch_size, repeats=5):
    """Seconds of one forward and of one forward+backward pass of `model` at `batch_size` (median of repeats)."""
    batch = tf.constant(np.resize(x, (batch_size, *x.shape[1:])))
    labels = tf.zeros([batch_size], tf.int64)

    @tf.function(autograph=False)
    def forward(images):
        return model(images, training=False)

    @tf.function(autograph=False)
    def forward_backward(images):
        with tf.GradientTape() as tape:
            tape.watch(images)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, model(images, training=False)))
        return tape.gradient(loss, images)

    times = {}
    for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
        fn(batch).numpy()  # trace
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(batch).numpy()
            runs.append(time.perf_counter() - start)
        times[name] = float(np.median(runs))
    return times


def engine_floor(classifier, purifier, x, y, args):
    """The engine (cascade + sanity checks) through a pass-counting pipeline, against its floor."""
    from tfdefense.evaluation.engine import run_suite
    from tfdefense.evaluation.robustness import robustness_suite, sanity_checks
    from tfdefense.evaluation.user_inputs import pipeline_class
    from tfdefense.evaluation.user_model import QUICK_SUITE, SWEEP_ITER

    pipeline = pipeline_class()(classifier, purifier, name="pipeline")
    counted = counting_model(pipeline)
    source = None if purifier is None else classifier
    suite = robustness_suite(args.eps, transfer=source is not None, **(QUICK_SUITE if args.suite == "quick" else {}))
    start = time.perf_counter()
    result = run_suite(counted, x, y, suite, source=source, batch_size=args.batch_size, eval_batch_size=args.batch_size)
    sanity_checks(
        counted,
        x,
        y,
        result,
        args.eps,
        sweep_iter=SWEEP_ITER[args.suite],
        batch_size=args.batch_size,
        sanity_n=args.sanity_n,
    )
    seconds = time.perf_counter() - start
    forward, backward = float(counted.forward_images.numpy()), float(counted.backward_images.numpy())
    times = pass_times(pipeline, x, args.batch_size)
    t_backward = max(times["forward_backward"] - times["forward"], 0.0)
    floor = forward / args.batch_size * times["forward"] + backward / args.batch_size * t_backward
    out = {
        "seconds": seconds,
        "forward_images": forward,
        "backward_images": backward,
        "pass_seconds": times,
        "floor_seconds": floor,
        "ratio_to_floor": seconds / floor if floor else float("nan"),
    }
    print(
        f"  engine {seconds:.1f} s; {forward:.0f} forward and {backward:.0f} backward images; one forward pass "
        f"{1000 * times['forward']:.1f} ms, forward+backward {1000 * times['forward_backward']:.1f} ms at batch "
        f"{args.batch_size}; floor {floor:.1f} s; ratio {out['ratio_to_floor']:.2f}x (target <= 1.15)",
        flush=True,
    )
    return out


def main(argv=None):
    args = parse_args(argv)
    from tfdefense.data import load_dataset

    (x_train, y_train), (x_test, y_test) = load_dataset("mnist", data_dir=args.data_dir, download=False)
    x, y = x_test[: args.n], y_test[: args.n]
    classifier, purifier = load_models(args, x_train, y_train)
    print(
        f"{args.n} MNIST test digits, eps {args.eps}, {args.suite} suite, batch {args.batch_size}, "
        f"cascade crafting in {args.attack_precision}; "
        f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, devices "
        f"{[d.name for d in tf.config.list_logical_devices()]}",
        flush=True,
    )
    numbers = {
        "n": args.n,
        "eps": args.eps,
        "suite": args.suite,
        "batch_size": args.batch_size,
        "attack_precision": args.attack_precision,
    }
    if not args.skip_classifier:
        print("A: model C alone (target: >= 5x, identical worst case)", flush=True)
        numbers["model_c"] = both_ways(classifier, None, x, y, args)
    if purifier is not None:
        print("B: robust purifier + model C (target: >= 2x, worst case within 0.3 points)", flush=True)
        numbers["purifier"] = both_ways(classifier, purifier, x, y, args)
    if not args.skip_floor:
        print(
            "Engine vs the floor of its schedule (cascade, " + ("purifier + C" if purifier is not None else "C") + ")",
            flush=True,
        )
        numbers["floor"] = engine_floor(classifier, purifier, x, y, args)
    if args.out:
        from tfdefense._io import write_json

        write_json(pathlib.Path(args.out), numbers)
    return numbers


if __name__ == "__main__":
    main()
