"""Attack generation speed: native vs cleverhans vs ART, against the compute floor.

One run, one model (APE-GAN model C on MNIST: trained briefly here, or
loaded with --model), one batch of correctly classified test digits, the same
iteration counts and random-start setting for every backend. Prints images/s
and ratios for PGD, C&W-L2 and DeepFool, the compute floor (the same number
of bare forward+backward passes of the model at that batch, in one
tf.function), and the native attacks under the mixed_bfloat16 policy
(`compute_dtype="bfloat16"`) with their success rates.

    python benchmarks/attacks.py                 # about 10 minutes on 2 CPU cores
    python benchmarks/attacks.py --quick         # fewer repeats / iterations
    python benchmarks/attacks.py --model model_c.keras --n 200 --out results.json

Timings come from --repeats interleaved runs after one warm-up call (tracing
excluded, reported separately), each through the public `attack(model, x, y)`
call (input checks, final projection and the success-rate forward pass
included). Ratios are printed three ways: from the best wall times, as the
median over repeats of the wall-time ratio of two runs made one after the
other ("paired"), and from the median process CPU times. The last is the
reliable one when other jobs share the cores (wall times then swing by 2x
from run to run while CPU times stay within a few percent).

Targets on 2 CPU cores: native PGD within 10% of the floor and never slower
than cleverhans or ART; native C&W-L2 and DeepFool at least 5x ART at equal
iterations.
"""

import argparse
import json
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
    parser.add_argument("--model", help="a .keras logits model for 28x28x1 inputs (default: train model C)")
    parser.add_argument("--data-dir", default=None, help="folder holding mnist.npz (default: load_dataset's search)")
    parser.add_argument("--n", type=int, default=100, help="images per batch (one batch)")
    parser.add_argument("--pgd-iter", type=int, default=40)
    parser.add_argument("--cw-steps", type=int, default=2, help="C&W binary search steps")
    parser.add_argument("--cw-iter", type=int, default=25, help="C&W iterations per binary search step")
    parser.add_argument("--deepfool-iter", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--art-repeats", type=int, default=1, help="repeats of the (slow) ART runs")
    parser.add_argument("--quick", action="store_true", help="1 repeat, fewer C&W iterations")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.cw_iter, args.deepfool_iter = 2, 20, 20
    return args


def load_model_and_data(args):
    import keras

    from tfdefense.data import load_dataset
    from tfdefense.inference import predict_labels
    from tfdefense.models import model_c, train_classifier

    (x_train, y_train), (x_test, y_test) = load_dataset("mnist", data_dir=args.data_dir, download=False)
    if args.model:
        model = keras.models.load_model(args.model)
        source = args.model
    else:
        keras.utils.set_random_seed(0)
        model = model_c()
        start = time.perf_counter()
        train_classifier(model, x_train, y_train, epochs=2, batch_size=128, seed=0, verbose=0)
        source = f"model C trained 2 epochs here ({time.perf_counter() - start:.0f} s)"
    correct = predict_labels(model, x_test) == y_test
    print(f"model: {source}; clean test accuracy {correct.mean():.4f}")
    x, y = x_test[correct][: args.n], y_test[correct][: args.n]
    return model, x, y


def compute_floor(model, x, y, passes):
    """Seconds for `passes` bare forward+backward passes (input gradient) in one tf.function."""

    @tf.function(input_signature=[tf.TensorSpec([None, *x.shape[1:]], tf.float32), tf.TensorSpec([None], tf.int64)])
    def run(x, y):
        def body(i, acc):
            with tf.GradientTape() as tape:
                tape.watch(x)
                logits = tf.cast(model(x, training=False), tf.float32)
                loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            return i + 1, acc + tf.reduce_sum(tape.gradient(loss, x))  # consume the gradient

        return tf.while_loop(lambda i, acc: i < passes, body, (tf.constant(0), tf.constant(0.0)))[1]

    xt, yt = tf.constant(x), tf.constant(y)
    return lambda: float(run(xt, yt))


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None):
    args = parse_args(argv)
    from tfdefense.attacks import get_attack, success_rate

    print(
        f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores visible, load average "
        f"{os.getloadavg()[0]:.1f} at start"
    )
    model, x, y = load_model_and_data(args)
    n = len(x)
    cw = dict(
        binary_search_steps=args.cw_steps,
        max_iterations=args.cw_iter,
        learning_rate=0.1,
        initial_const=1.0,
        abort_early=False,
    )
    cw_art = {k: v for k, v in cw.items() if k != "abort_early"}  # ART never aborts early
    pgd = dict(eps=0.3, eps_iter=0.01, nb_iter=args.pgd_iter, rand_init=True)
    deepfool = dict(max_iter=args.deepfool_iter, nb_candidate=10, overshoot=0.02)

    floors = {"floor/pgd": args.pgd_iter, "floor/cw_l2": args.cw_steps * args.cw_iter}
    attacks = {
        "pgd/native": get_attack("pgd", backend="native", seed=0, **pgd),
        "pgd/cleverhans": get_attack("pgd", backend="cleverhans", **pgd),
        "pgd/art": get_attack("pgd", backend="art", **pgd),
        "pgd/native-bf16": get_attack("pgd", backend="native", seed=0, compute_dtype="bfloat16", **pgd),
        "cw_l2/native": get_attack("cw_l2", backend="native", **cw),
        "cw_l2/cleverhans": get_attack("cw_l2", backend="cleverhans", **cw),
        "cw_l2/art": get_attack("cw_l2", backend="art", **cw_art),
        "deepfool/native": get_attack("deepfool", backend="native", **deepfool),
        "deepfool/art": get_attack("deepfool", backend="art", **deepfool),
    }
    runs = {}  # each floor right before the attacks compared with it, so paired runs see similar load
    for name, attack in attacks.items():
        floor = f"floor/{name.split('/')[0]}"
        if floor in floors and floor not in runs:
            runs[floor] = compute_floor(model, x, y, floors[floor])
        runs[name] = (lambda a: lambda: a(model, x, y))(attack)

    results = {}
    for name, fn in runs.items():  # warm-up: tracing and first call, timed separately
        x_adv, wall, _ = _timed(fn)
        results[name] = {"first_call_s": wall, "wall_s": [], "cpu_s": []}
        if name in attacks:
            delta = (x_adv - x).reshape(n, -1).astype(np.float64)
            results[name]["success_rate"] = success_rate(model, x, x_adv, y)
            results[name]["mean_l2"] = float(np.sqrt((delta**2).sum(1)).mean())
        print(f"  warm-up {name}: {wall:.1f} s", flush=True)
    for repeat in range(args.repeats):  # interleaved, so a busy spell hits every run alike
        for name, fn in runs.items():
            if name.endswith("/art") and repeat >= args.art_repeats:
                continue
            _, wall, cpu = _timed(fn)
            results[name]["wall_s"].append(wall)
            results[name]["cpu_s"].append(cpu)
        print(f"  repeat {repeat + 1}/{args.repeats} done (load average {os.getloadavg()[0]:.1f})", flush=True)
    for r in results.values():
        r["best_wall_s"] = min(r["wall_s"])
        r["median_cpu_s"] = float(np.median(r["cpu_s"]))
        r["images_per_s"] = n / r["best_wall_s"]
        r["images_per_cpu_s"] = n / r["median_cpu_s"]

    print(
        f"\nbatch of {n} MNIST test digits; PGD eps=0.3 eps_iter=0.01 nb_iter={args.pgd_iter} random start; "
        f"C&W-L2 {args.cw_steps}x{args.cw_iter} iterations (lr 0.1, c0 1, no early abort); "
        f"DeepFool max_iter={args.deepfool_iter}, 10 candidates, overshoot 0.02\n"
    )
    print(
        f"{'run':20s} {'img/s wall':>11s} {'img/CPU-s':>10s} {'best s':>8s} {'CPU s':>8s} {'first s':>8s} "
        f"{'success':>8s} {'mean L2':>8s}"
    )
    for name, r in results.items():
        success = f"{r['success_rate']:.3f}" if "success_rate" in r else "-"
        l2 = f"{r['mean_l2']:.3f}" if "mean_l2" in r else "-"
        print(
            f"{name:20s} {r['images_per_s']:11.1f} {r['images_per_cpu_s']:10.1f} {r['best_wall_s']:8.3f} "
            f"{r['median_cpu_s']:8.3f} {r['first_call_s']:8.2f} {success:>8s} {l2:>8s}"
        )

    def ratio(a, b, key):
        if key == "paired":  # median over repeats of the wall-time ratio of two runs made close together
            pairs = [tb / ta for ta, tb in zip(results[a]["wall_s"], results[b]["wall_s"], strict=False)]
            return float(np.median(pairs))
        return results[a][key] / results[b][key]

    checks = [
        ("native PGD / compute floor", "pgd/native", "floor/pgd", 0.90),
        ("native PGD / cleverhans PGD", "pgd/native", "pgd/cleverhans", 1.00),
        ("native PGD / ART PGD", "pgd/native", "pgd/art", 1.00),
        ("native C&W-L2 / ART C&W-L2", "cw_l2/native", "cw_l2/art", 5.00),
        ("native C&W-L2 / cleverhans C&W-L2", "cw_l2/native", "cw_l2/cleverhans", None),
        ("native C&W-L2 / compute floor", "cw_l2/native", "floor/cw_l2", None),
        ("native DeepFool / ART DeepFool", "deepfool/native", "deepfool/art", 5.00),
        ("bf16 / fp32 native PGD", "pgd/native-bf16", "pgd/native", None),
    ]
    print(
        "\nratios of throughput: best wall times; paired = median over repeats of the wall-time ratio of the "
        "two runs made one after the other; CPU = median process CPU times (robust on a shared machine)"
    )
    summary = {}
    for label, a, b, target in checks:
        wall, paired, cpu = ratio(a, b, "images_per_s"), ratio(a, b, "paired"), ratio(a, b, "images_per_cpu_s")
        verdict = ""
        if target is not None:
            verdict = "target >= {:.2f}: {}".format(
                target, "/".join("PASS" if v >= target else "MISS" for v in (wall, paired, cpu))
            )
        print(f"  {label:36s} wall {wall:7.2f}  paired {paired:7.2f}  CPU {cpu:7.2f}  {verdict}")
        summary[label] = {"wall": wall, "paired_wall": paired, "cpu": cpu, "target": target}
    print(
        f"\nPGD success fp32 -> bf16: {results['pgd/native']['success_rate']:.3f} -> "
        f"{results['pgd/native-bf16']['success_rate']:.3f}"
    )
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"results": results, "ratios": summary, "n": n}, indent=2))
    return results


if __name__ == "__main__":
    main()
