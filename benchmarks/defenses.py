"""Purification time per image of every tfdefense defense, in one run (EGAN paper's accuracy-vs-time).

Times `defense(x)` (compiled with tf.function; eager when it cannot be traced)
on the same batch of real MNIST test digits (28x28x1) for every input
transformation of `tfdefense.defenses.transforms.classic` and every learned purifier
that can be built: Pix2PixDefense, APE-GAN and EGAN untrained presets, and the
MagNet / Defense-GAN / DnCNN / autoencoder modules when they are importable
(skipped with a printed note otherwise; Defense-GAN, ~1000x slower, is timed
on `--slow-batch` images in one pass). Prints seconds per image (wall and CPU
time of this process, best of `--repeats`) and the ratio to the fastest defense:

    python benchmarks/defenses.py                         # all defenses, batch 100
    python benchmarks/defenses.py --only "*wavelet*" --batch-size 20 --out timing.json
    python benchmarks/defenses.py --sr sr.keras           # a trained super-resolution net

Time does not depend on the weights for the networks, so untrained networks of the
papers' architectures are timed (the super-resolution net too, unless --sr is
given). The iterative / numpy transforms (TV minimisation, wavelets) do depend on
the content, hence real digits (random pixels when the data set is not found).
"""

import argparse
import fnmatch
import importlib
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SLOW = ("defensegan",)  # timed on --slow-batch images, once


def _note(text):
    print(f"note: {text}", flush=True)


def _transforms(args):
    import keras

    from tfdefense.defenses.transforms.classic import get_transform, list_transforms
    from tfdefense.models import super_resolution_net

    models = {}
    for name in list_transforms():
        params = {}
        if name == "superres_wavelet":
            params["sr_model"] = keras.saving.load_model(args.sr) if args.sr else super_resolution_net((28, 28, 1))
        if name in ("random_resize_pad", "pixel_deflection", "tv_min"):
            params["seed"] = 0
        models[name] = get_transform(name, **params)
    return models


def _learned(args):
    import keras

    models = {}
    keras.utils.set_random_seed(0)
    try:
        from tfdefense.defenses.purifiers.pix2pix import Pix2PixDefense
        from tfdefense.models import patchgan_preset, unet_generator_preset

        models["pix2pix (small_32)"] = Pix2PixDefense(
            unet_generator_preset("small_32", input_shape=(28, 28, 1)),
            patchgan_preset("small_32", input_shape=(28, 28, 1)),
        )
    except Exception as e:  # noqa: BLE001  (an optional entry of the benchmark)
        _note(f"Pix2PixDefense skipped: {type(e).__name__}: {e}")
    try:
        from tfdefense.defenses.purifiers.apegan import APEGAN

        models["apegan (mnist)"] = APEGAN.from_preset("mnist")
    except Exception as e:  # noqa: BLE001
        _note(f"APEGAN skipped: {type(e).__name__}: {e}")
    try:
        from tfdefense.defenses.purifiers.egan import EGAN
        from tfdefense.models.dcgan import dcgan_preset
        from tfdefense.models.egan_encoder import egan_encoder_preset

        generator, _ = dcgan_preset("mnist")
        models["egan (paper encoder)"] = EGAN(generator, egan_encoder_preset("paper"))
    except Exception as e:  # noqa: BLE001
        _note(f"EGAN skipped: {type(e).__name__}: {e}")
    models.update(_optional_defenses())
    return models


def _optional_defenses():
    """MagNet, Defense-GAN, DnCNN and the autoencoder, when their modules are importable."""
    import keras

    builders = {
        "magnet": [("magnet (mnist)", lambda m: m.MagNet.from_preset("mnist"))],
        # Defense-GAN's paper settings: L=200 steps x R=10 restarts per image (slow: fewer images timed).
        "defensegan": [("defensegan (L=200,R=10)", lambda m: m.DefenseGAN(m.WGANGP.from_preset("mnist").generator))],
        "denoisers": [
            ("dncnn (paper)", lambda m: m.Denoiser.dncnn("paper")),
            ("autoencoder (default)", lambda m: m.Denoiser.autoencoder("default")),
        ],
    }
    found = {}
    for module_name, entries in builders.items():
        try:
            module = importlib.import_module(f"tfdefense.defenses.{module_name}")
        except ImportError as e:
            _note(f"{module_name} skipped: module not importable ({e})")
            continue
        for label, build in entries:
            try:
                keras.utils.set_random_seed(0)
                found[label] = build(module)
            except Exception as e:  # noqa: BLE001
                _note(f"{label} skipped: {type(e).__name__}: {e}")
    return found


def time_per_image(model, x, repeats):
    """(wall, cpu) seconds per image: best of `repeats` forward passes of `model` over `x`."""
    import numpy as np
    import tensorflow as tf

    batch = tf.constant(x)
    fn = tf.function(lambda b: model(b, training=False), autograph=False)
    try:
        np.asarray(fn(batch))  # trace and warm up
    except Exception:  # noqa: BLE001  (not traceable: time the eager call)
        fn = lambda b: model(b, training=False)  # noqa: E731
        np.asarray(fn(batch))
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        np.asarray(fn(batch))
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall / len(x), best_cpu / len(x)


def _images(batch_size, data_dir=None):
    import pathlib

    import numpy as np

    if data_dir is None and not os.environ.get("TFDEFENSE_DATA_DIR"):
        shared = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "data"
        data_dir = str(shared) if shared.is_dir() else None
    try:
        from tfdefense.data import load_dataset

        _, (x_test, _) = load_dataset("mnist", data_dir=data_dir, download=False)
        if len(x_test) >= batch_size:
            return x_test[:batch_size], "real MNIST test digits"
    except Exception as e:  # noqa: BLE001
        _note(f"MNIST not found ({type(e).__name__}); timing random pixels")
    return np.random.default_rng(0).random((batch_size, 28, 28, 1), dtype=np.float32), "random pixels"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=100, help="images per forward pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (the best is kept)")
    parser.add_argument("--only", default=None, help="wildcard on defense names, e.g. '*wavelet*'")
    parser.add_argument("--sr", default=None, help="a saved super-resolution .keras for superres_wavelet")
    parser.add_argument("--slow-batch", type=int, default=5, help="images (and 1 pass) for Defense-GAN")
    parser.add_argument("--no-learned", action="store_true", help="time the input transformations only")
    parser.add_argument("--threads", type=int, default=None, help="TensorFlow intra/inter-op threads")
    parser.add_argument("--data-dir", default=None, help="dir with mnist_t10k.npz (default: TFDEFENSE_DATA_DIR)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.repeats < 1:
        parser.error("--batch-size and --repeats must be >= 1")

    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    x, source = _images(args.batch_size, args.data_dir)
    models = _transforms(args)
    if not args.no_learned:
        models.update(_learned(args))
    if args.only:
        models = {k: v for k, v in models.items() if fnmatch.fnmatch(k, args.only)}
    if not models:
        parser.error(f"no defense matches --only {args.only!r}")
    results = {}
    for name, model in models.items():
        slow = name.startswith(SLOW)
        batch = x[: args.slow_batch] if slow else x
        try:
            wall, cpu = time_per_image(model, batch, 1 if slow else args.repeats)
        except Exception as e:  # noqa: BLE001
            _note(f"{name} skipped: forward pass failed ({type(e).__name__}: {e})")
            continue
        results[name] = {
            "images": len(batch),
            "wall_s_per_image": wall,
            "cpu_s_per_image": cpu,
            "stochastic": bool(getattr(model, "stochastic", False)),
            "differentiable": bool(getattr(model, "differentiable", True)),
        }
        print(f"  timed {name}: {wall:.3g} s/image", flush=True)
    fastest_wall = min(r["wall_s_per_image"] for r in results.values())
    fastest_cpu = min(r["cpu_s_per_image"] for r in results.values())
    for r in results.values():
        r["wall_ratio_to_fastest"] = r["wall_s_per_image"] / fastest_wall
        r["cpu_ratio_to_fastest"] = r["cpu_s_per_image"] / fastest_cpu
    print(
        f"\npurification time per image, {len(x)} {source} (28x28x1) per pass, best of {args.repeats}; "
        f"ratio = time / fastest defense"
    )
    print(f"{'defense':<28}{'wall s/img':>12}{'x fastest':>11}{'cpu s/img':>12}{'x fastest':>11}  flags")
    for name, r in sorted(results.items(), key=lambda kv: kv[1]["wall_s_per_image"]):
        flags = ",".join(f for f, on in (("stochastic", r["stochastic"]), ("bpda", not r["differentiable"])) if on)
        print(
            f"{name:<28}{r['wall_s_per_image']:>12.3e}{r['wall_ratio_to_fastest']:>11.1f}"
            f"{r['cpu_s_per_image']:>12.3e}{r['cpu_ratio_to_fastest']:>11.1f}  {flags}"
        )
    if args.out:
        from tfdefense._io import write_json

        write_json(
            args.out,
            {"batch_size": len(x), "images": source, "repeats": args.repeats, "results": results},
        )
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
