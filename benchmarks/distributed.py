"""Scale-out throughput: training images/s and attack images/s with 1 and 2 workers.

Layouts, each in fresh processes (logical devices and collectives are fixed
when TensorFlow starts):

    1 worker              one process, no strategy (the 1.0x reference)
    mirrored x2           one process, MirroredStrategy over 2 logical CPU devices
    multiworker x2        two processes on localhost, MultiWorkerMirroredStrategy (TF_CONFIG each)

Workloads, both on scikit-learn's real digits resized to 28x28:

    train   Pix2PixDefense (tiny U-Net + PatchGAN) `fit` on (FGSM, clean) pairs,
            global batch --batch; one warm-up epoch, then --epochs timed epochs
    attack  `generate(pgd, model C, strategy=...)`: PGD-20, --attack-images
            images in batches of --attack-batch (one warm-up call first)

The numbers are images/s of the whole layout (all workers together), best of
the timed repeats, with the ratio to "1 worker". On a machine whose 2 cores
already run one TensorFlow process at full width, 2 workers cannot gain:
they split the same cores and add the all-reduce. Usage:

    python benchmarks/distributed.py                     # all layouts, both workloads
    python benchmarks/distributed.py --layouts "1 worker" "multiworker x2" --json out.json
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

from tfdefense.distribute import free_local_ports  # noqa: E402

LAYOUTS = ("1 worker", "mirrored x2", "multiworker x2")


def measure(args, strategy_name, logical_cpus):
    """Runs in a worker process: returns {"train": images/s, "attack": images/s, ...} (same on every worker)."""
    import tensorflow as tf

    if logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    from tfdefense import distribute

    strategy = distribute.make_strategy(strategy_name)
    import keras
    import numpy as np

    from tfdefense.attacks import generate, get_attack
    from tfdefense.data import load_dataset, make_paired_pipeline, make_pipeline
    from tfdefense.defenses import Pix2PixDefense
    from tfdefense.models import compile_classifier, model_c, patchgan_preset, unet_generator_preset

    (x, y), (x_test, y_test) = load_dataset("digits", image_size=28)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        classifier = compile_classifier(model_c())
    classifier.fit(make_pipeline(x, y, batch_size=64), epochs=2, verbose=0)
    classifier.trainable = False
    x_adv = generate(get_attack("fgsm", eps=0.3), classifier, x, y, progress=False)
    n_train = min(len(x), args.train_images)
    pairs = make_paired_pipeline(x_adv[:n_train], x[:n_train], batch_size=args.batch, shuffle=False)
    with strategy.scope():
        defense = Pix2PixDefense(unet_generator_preset("tiny"), patchgan_preset("tiny"))
        defense.compile()
    defense.fit(pairs, epochs=1, verbose=0)  # trace + warm up
    train = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        defense.fit(pairs, epochs=args.epochs, verbose=0)
        train.append(args.epochs * n_train / (time.perf_counter() - start))

    images = np.concatenate([x_test] * (-(-args.attack_images // len(x_test))))[: args.attack_images]
    labels = np.concatenate([y_test] * (-(-args.attack_images // len(y_test))))[: args.attack_images]
    pgd = get_attack("pgd", eps=0.3, eps_iter=0.3 / 8, nb_iter=20, rand_init=True, seed=0)
    use = strategy if distribute.is_distributed(strategy) else None
    generate(
        pgd,
        classifier,
        images[: args.attack_batch * distribute.num_replicas(strategy)],
        labels[: args.attack_batch * distribute.num_replicas(strategy)],
        batch_size=args.attack_batch,
        progress=False,
        strategy=use,
    )  # trace on every replica
    attack = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        generate(pgd, classifier, images, labels, batch_size=args.attack_batch, progress=False, strategy=use)
        attack.append(len(images) / (time.perf_counter() - start))
    return {
        "train": max(train),
        "attack": max(attack),
        "train_all": train,
        "attack_all": attack,
        "describe": distribute.describe(strategy),
        "chief": distribute.is_chief(strategy),
    }


def run_layout(layout, args):
    """Launches the processes of `layout`; returns the chief's measurement."""
    strategy, cpus, workers = {
        "1 worker": ("none", 1, 1),
        "mirrored x2": ("mirrored", 2, 1),
        "multiworker x2": ("multiworker", 1, 2),
    }[layout]
    with tempfile.TemporaryDirectory() as folder:
        common = [
            sys.executable,
            __file__,
            "--worker",
            strategy,
            "--logical-cpus",
            str(cpus),
            "--batch",
            str(args.batch),
            "--epochs",
            str(args.epochs),
            "--repeats",
            str(args.repeats),
            "--train-images",
            str(args.train_images),
            "--attack-images",
            str(args.attack_images),
            "--attack-batch",
            str(args.attack_batch),
        ]
        processes = []
        cluster = {"worker": [f"localhost:{p}" for p in free_local_ports(workers)]}
        for index in range(workers):
            env = dict(os.environ)
            if strategy == "multiworker":
                env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            out = pathlib.Path(folder) / f"{index}.json"
            processes.append((subprocess.Popen(common + ["--result", str(out)], env=env, cwd=ROOT), out))
        for process, _ in processes:
            if process.wait() != 0:
                raise RuntimeError(f"layout {layout!r}: a worker exited with {process.returncode}")
        return json.loads(processes[0][1].read_text())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    parser.add_argument("--batch", type=int, default=64, help="global training batch")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per repeat")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=1024)
    parser.add_argument("--attack-images", type=int, default=512)
    parser.add_argument("--attack-batch", type=int, default=64, help="images per attack batch (per replica)")
    parser.add_argument("--json", default=None, help="also write the table as JSON")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--logical-cpus", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        result = measure(args, args.worker, args.logical_cpus)
        pathlib.Path(args.result).write_text(json.dumps(result))
        return 0
    rows = {}
    for layout in args.layouts:
        rows[layout] = run_layout(layout, args)
        print(
            f"{layout}: train {rows[layout]['train']:.0f} img/s, attack {rows[layout]['attack']:.0f} img/s", flush=True
        )
    base = rows.get("1 worker")
    print(
        f"\nmachine: {os.cpu_count()} CPU cores; pix2pix tiny, global batch {args.batch}; PGD-20 on model C, "
        f"batch {args.attack_batch} per replica"
    )
    print("| layout | replicas | workers | train img/s | x 1 worker | attack img/s | x 1 worker |")
    print("|---|---|---|---|---|---|---|")
    for layout, r in rows.items():
        ratio = (lambda key, r=r: f"{r[key] / base[key]:.2f}x") if base else (lambda key: "n/a")
        print(
            f"| {layout} | {r['describe']['replicas']} | {r['describe']['workers']} | {r['train']:.0f} | "
            f"{ratio('train')} | {r['attack']:.0f} | {ratio('attack')} |"
        )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
