"""Purification time per image: EGAN (and its lighter encoder) against APE-GAN.

Runs each purifier's deterministic forward pass (`defense(x)`, compiled with
tf.function) on the same MNIST-shaped batches (one image, and `--batch-size`
images) and prints milliseconds per image (wall and CPU time of this process) and the
CPU-time ratio to APE-GAN (the reference), in one run:

    python benchmarks/purification_time.py                   # untrained nets (timing only)
    python benchmarks/purification_time.py --apegan a.keras --egan e.keras --batch-size 1

Time does not depend on the weights, so untrained networks of the papers'
architectures are timed unless saved models are given. `--threads` pins the
TensorFlow thread pools (default: TensorFlow's choice).
"""

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout


def _build(args):
    import keras

    from tfdefense.defenses.purifiers.apegan import APEGAN
    from tfdefense.defenses.purifiers.egan import EGAN
    from tfdefense.models.dcgan import dcgan_preset
    from tfdefense.models.egan_encoder import egan_encoder_preset

    keras.utils.set_random_seed(0)
    models = {}
    models["APE-GAN (mnist)"] = keras.saving.load_model(args.apegan) if args.apegan else APEGAN.from_preset("mnist")
    if args.egan:
        models["EGAN (loaded)"] = keras.saving.load_model(args.egan)
    else:
        generator, _ = dcgan_preset("mnist")
        models["EGAN (paper encoder)"] = EGAN(generator, egan_encoder_preset("paper"))
        models["EGAN (light encoder)"] = EGAN(generator, egan_encoder_preset("light"))
    return models


def time_per_image(model, x, repeats):
    """(wall, cpu) seconds per image: best of `repeats` compiled forward passes over `x`.

    The CPU time (all threads of this process) is disturbed much less than the
    wall time by other jobs on a shared machine.
    """
    import numpy as np
    import tensorflow as tf

    fn = tf.function(lambda batch: model(batch, training=False), autograph=False)
    batch = tf.constant(x)
    np.asarray(fn(batch))  # trace and warm up
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        np.asarray(fn(batch))
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall / len(x), best_cpu / len(x)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apegan", help="a saved APEGAN .keras (default: untrained mnist preset)")
    parser.add_argument("--egan", help="a saved EGAN .keras (default: untrained paper and light encoders)")
    parser.add_argument("--batch-size", type=int, default=100, help="images per forward pass (batch 1 is also timed)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="TensorFlow intra/inter-op threads")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.repeats < 1:
        parser.error("--batch-size and --repeats must be >= 1")

    import numpy as np
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    rng = np.random.default_rng(0)
    models = _build(args)
    results = {}
    for batch_size in sorted({1, args.batch_size}):
        x = rng.random((batch_size, 28, 28, 1), dtype=np.float32)
        results[batch_size] = {name: time_per_image(model, x, args.repeats) for name, model in models.items()}
    print(f"purification time per image (28x28x1), best of {args.repeats}; params = purifier only (no discriminator)")
    header = "".join(f"{f'wall ms b={b}':>14}{'cpu ms':>9}{'x APE':>7}" for b in results)
    print(f"{'purifier':<22}{header}{'params':>12}")
    for name, model in models.items():
        cells = ""
        for r in results.values():
            (wall, cpu), (_, ref_cpu) = r[name], r["APE-GAN (mnist)"]
            cells += f"{wall * 1e3:>14.3f}{cpu * 1e3:>9.3f}{cpu / ref_cpu:>7.1f}"
        print(f"{name:<22}{cells}{_inference_params(model):>12,}")
    return results


def _inference_params(model):
    """Parameters used by `model(x)`: the generator (APE-GAN) or encoder + generator (EGAN)."""
    parts = [getattr(model, "encoder", None), getattr(model, "generator", None)]
    parts = [p for p in parts if p is not None] or [model]
    return sum(p.count_params() for p in parts)


if __name__ == "__main__":
    main()
