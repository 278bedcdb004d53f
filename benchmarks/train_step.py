"""Training throughput: `Pix2PixDefense.fit` against the TF pix2pix tutorial's train_step.

The reference is the TensorFlow pix2pix tutorial's step (a `tf.function` with
`gen_tape` + `disc_tape`, BinaryCrossentropy from logits, L1 * lambda, two Adam
optimizers) on the identical U-Net / PatchGAN (same builders, same seed), fed
by the same tf.data pipeline. With `--perceptual`, both add
lambda_perc * sum_k mean |phi_k(G(x)) - phi_k(y)| from a VGG19 feature
extractor (weights=None: the speed does not depend on the weights).

Rows, timed in one run with the variants interleaved (best and median of
`--repeats` timings of `--steps` steps each, images/s):

    reference fp32        the tutorial step, float32 (the 1.0x baseline)
    fit fp32              Pix2PixDefense.fit, float32
    fit bf16              ... under keras.mixed_precision "mixed_bfloat16"
    reference bf16        the tutorial step under "mixed_bfloat16" (context)
    fit fp32 xla          ... compile(jit_compile=True)   (opt-in: --modes)
    fit bf16 xla          ... both                         (opt-in)

"x ref cpu" is the ratio of images per CPU-second of this process (median),
which other jobs on a shared machine disturb much less than wall time.
GFLOP/s = images/s (best) * (FLOPs of one step / batch). The FLOPs are counted
analytically from the layers (`analytic_step_flops`: the convolutions of the
forward and backward passes the step needs); the tf.compat.v1 profiler's
count on the traced step is printed beside it as an upper bound (the traced
graph still holds gradient ops that Grappler prunes, e.g. VGG19 weight
gradients). Usage:

    python benchmarks/train_step.py                       # 32 px b64 and 256 px b1, +/- VGG19
    python benchmarks/train_step.py --configs 32 --perceptual off --steps 20 --repeats 5
    python benchmarks/train_step.py --modes "reference fp32" "fit bf16" --json out.json
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

CONFIGS = {
    "32": dict(size=32, channels=3, batch=64, generator="small_32", discriminator="small_32"),
    "256": dict(size=256, channels=3, batch=1, generator="pix2pix_256", discriminator="pix2pix_70"),
}
MODES = ("reference fp32", "fit fp32", "fit fp32 xla", "fit bf16", "fit bf16 xla", "reference bf16")
DEFAULT_MODES = ("reference fp32", "fit fp32", "fit bf16", "reference bf16")
LAMBDA_L1 = 100.0
LAMBDA_PERC = 100.0


def _policy(mode):
    return "mixed_bfloat16" if "bf16" in mode else "float32"


def _networks(config, perceptual):
    from tfdefense.models import patchgan_preset, perceptual_feature_extractor, unet_generator_preset

    shape = (config["size"], config["size"], config["channels"])
    generator = unet_generator_preset(config["generator"], input_shape=shape)
    discriminator = patchgan_preset(config["discriminator"], input_shape=shape)
    features = perceptual_feature_extractor("vgg19", weights=None, input_shape=shape) if perceptual else None
    return generator, discriminator, features


def tutorial_step(generator, discriminator, features=None):
    """The TF pix2pix tutorial's train_step (plus the perceptual term when `features`)."""
    import keras
    import tensorflow as tf

    loss_object = keras.losses.BinaryCrossentropy(from_logits=True)
    generator_optimizer = keras.optimizers.Adam(2e-4, beta_1=0.5)
    discriminator_optimizer = keras.optimizers.Adam(2e-4, beta_1=0.5)

    def generator_loss(disc_generated_output, gen_output, target):
        gan_loss = loss_object(tf.ones_like(disc_generated_output), disc_generated_output)
        l1_loss = tf.reduce_mean(tf.abs(target - tf.cast(gen_output, tf.float32)))
        total = gan_loss + LAMBDA_L1 * l1_loss
        if features is not None:
            fake, real = features(gen_output), features(target)
            total += LAMBDA_PERC * tf.add_n(
                [
                    tf.reduce_mean(tf.abs(tf.cast(a, tf.float32) - tf.cast(b, tf.float32)))
                    for a, b in zip(fake, real, strict=False)
                ]
            )
        return total, gan_loss, l1_loss

    def discriminator_loss(disc_real_output, disc_generated_output):
        real_loss = loss_object(tf.ones_like(disc_real_output), disc_real_output)
        generated_loss = loss_object(tf.zeros_like(disc_generated_output), disc_generated_output)
        return real_loss + generated_loss

    @tf.function
    def train_step(input_image, target):
        with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
            gen_output = generator(input_image, training=True)
            disc_real_output = discriminator([input_image, target], training=True)
            disc_generated_output = discriminator([input_image, gen_output], training=True)
            gen_total_loss, _, _ = generator_loss(disc_generated_output, gen_output, target)
            disc_loss = discriminator_loss(disc_real_output, disc_generated_output)
        generator_gradients = gen_tape.gradient(gen_total_loss, generator.trainable_variables)
        discriminator_gradients = disc_tape.gradient(disc_loss, discriminator.trainable_variables)
        generator_optimizer.apply_gradients(zip(generator_gradients, generator.trainable_variables, strict=False))
        discriminator_optimizer.apply_gradients(
            zip(discriminator_gradients, discriminator.trainable_variables, strict=False)
        )
        return gen_total_loss, disc_loss

    return train_step


def forward_flops(model):
    """Forward FLOPs per image of a functional model's Conv2D / Conv2DTranspose / Dense layers (2 per MAC)."""
    import keras

    from tfdefense.inference import all_layers

    flops = 0
    for layer in all_layers(model, include_self=False):
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, h, w, c_in = layer.input.shape
            kh, kw = layer.kernel_size
            flops += 2 * h * w * c_in * kh * kw * layer.filters
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            flops += 2 * h * w * c_out * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * layer.input.shape[-1] * layer.units
    return flops


def analytic_step_flops(generator, discriminator, features, batch):
    """Useful FLOPs of one pix2pix training step (convolutions and matmuls).

    G: forward + input gradient + weight gradient = 3 F(G). D: two forward
    passes (real, fake), weight and input gradients of both for d_loss, and the
    input gradient of the fake pass for g_loss = 7 F(D). Perceptual: two
    forward passes + the input gradient of the purified one = 3 F(VGG).
    """
    total = 3 * forward_flops(generator) + 7 * forward_flops(discriminator)
    if features is not None:
        total += 3 * forward_flops(features)
    return total * batch


def step_flops(train_step, config):
    """FLOPs of one step, counted by the tf.compat.v1 profiler on its concrete function.

    An upper bound: the traced graph still holds gradient ops that Grappler
    prunes at run time (e.g. weight gradients of the frozen VGG19).
    """
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    spec = tf.TensorSpec((config["batch"], config["size"], config["size"], config["channels"]), tf.float32)
    graph = train_step.get_concrete_function(spec, spec).graph
    options = (
        option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation())
        .with_empty_output()
        .build()
    )
    return model_analyzer.profile(graph=graph, options=options).total_float_ops


def _clock():
    """(wall seconds, CPU seconds of this process, all threads)."""
    return time.perf_counter(), time.process_time()


class _StepTimer:
    """Keras callback: wall time from the end of the first batch of a fit call to the end of its last."""

    def __new__(cls):
        import keras

        class StepTimer(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.start = self.end = None

            def on_train_batch_end(self, batch, logs=None):
                float(logs["g_total"])  # wait for the step's result
                now = _clock()
                if self.start is None:
                    self.start = now
                self.end = now

        return StepTimer()


class Runner:
    """One variant: builds its networks under its dtype policy, then times `steps` steps.

    Every timing is one `fit` call (or one loop of the tutorial step) over
    1 + `steps` batches; the clock runs from the end of the first batch to the
    end of the last, so per-call setup (callbacks, iterator) is left out and
    both sides are measured in steady state.
    """

    def __init__(self, mode, config, perceptual, dataset, seed=0):
        import keras

        from tfdefense.defenses import Pix2PixDefense

        self.mode, self.dataset, self.config = mode, dataset, config
        keras.mixed_precision.set_global_policy(_policy(mode))
        try:
            keras.utils.set_random_seed(seed)
            generator, discriminator, features = _networks(config, perceptual)
            self.analytic_flops = analytic_step_flops(generator, discriminator, features, config["batch"])
            if mode.startswith("reference"):
                self.step = tutorial_step(generator, discriminator, features)
                self.iterator = iter(dataset)
                self.defense = None
            else:
                self.defense = Pix2PixDefense(
                    generator,
                    discriminator,
                    feature_extractor=features,
                    lambda_l1=LAMBDA_L1,
                    lambda_perc=LAMBDA_PERC if perceptual else 0.0,
                )
                self.defense.compile(jit_compile="xla" in mode)
                self.timer = _StepTimer()
        finally:
            keras.mixed_precision.set_global_policy("float32")
        self.losses = []

    def run(self, steps):
        """Runs 1 + `steps` steps; returns (wall, CPU) seconds of the last `steps`."""
        if self.defense is None:
            x, y = next(self.iterator)
            g_loss, d_loss = self.step(x, y)
            float(g_loss)
            start = _clock()
            for _ in range(steps):
                x, y = next(self.iterator)
                g_loss, d_loss = self.step(x, y)
            self.losses.append((float(g_loss), float(d_loss)))
            end = _clock()
            return end[0] - start[0], end[1] - start[1]
        history = self.defense.fit(self.dataset, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[self.timer])
        self.losses.append((history.history["g_total"][-1], history.history["d_loss"][-1]))
        return self.timer.end[0] - self.timer.start[0], self.timer.end[1] - self.timer.start[1]


def benchmark(config_name, perceptual, modes, steps, repeats, warmup):
    import numpy as np
    import tensorflow as tf

    config = CONFIGS[config_name]
    rng = np.random.default_rng(0)
    shape = (config["batch"], config["size"], config["size"], config["channels"])
    x_clean = rng.random(shape, dtype=np.float32)
    x_adv = np.clip(x_clean + rng.uniform(-0.1, 0.1, shape).astype(np.float32), 0, 1)
    dataset = tf.data.Dataset.from_tensors((x_adv, x_clean)).repeat().prefetch(2)

    runners = {mode: Runner(mode, config, perceptual, dataset) for mode in modes}
    flops = runners["reference fp32"].analytic_flops
    profiler_flops = step_flops(runners["reference fp32"].step, config)
    for runner in runners.values():
        runner.run(warmup)  # trace / compile
    times = {mode: [] for mode in modes}
    for _ in range(repeats):
        for mode, runner in runners.items():  # interleaved: load changes hit every variant alike
            times[mode].append(runner.run(steps))
    rows = []
    base = None
    images = steps * config["batch"]
    for mode in modes:
        wall = [t[0] for t in times[mode]]
        cpu = [t[1] for t in times[mode]]
        best = images / min(wall)
        median = images / statistics.median(wall)
        per_cpu = images / statistics.median(cpu)
        finite = all(np.isfinite(v).all() for v in runners[mode].losses)
        if mode == "reference fp32":
            base = (best, median, per_cpu)
        rows.append(
            {
                "config": f"{config['size']}px b{config['batch']}",
                "perceptual": perceptual,
                "mode": mode,
                "images_per_s_best": best,
                "images_per_s_median": median,
                "ratio_best": best / base[0] if base else None,
                "ratio_median": median / base[1] if base else None,
                "images_per_cpu_s_median": per_cpu,
                "ratio_cpu": per_cpu / base[2],
                "gflop_per_step": flops / 1e9,
                "profiler_gflop_per_step": profiler_flops / 1e9,
                "gflops_best": flops * best / config["batch"] / 1e9,
                "finite_losses": bool(finite),
                "last_losses": runners[mode].losses[-1],
            }
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--perceptual", default="both", choices=("both", "on", "off"))
    parser.add_argument(
        "--modes",
        nargs="+",
        default=list(DEFAULT_MODES),
        choices=list(MODES),
        help="variants (the xla ones are off by default: XLA on CPU was ~7x slower here)",
    )
    parser.add_argument("--steps", type=int, default=None, help="steps per timing (default 10 at 32 px, 3 at 256 px)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="pin TF intra/inter-op threads")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if "reference fp32" not in args.modes:
        args.modes = ["reference fp32", *args.modes]
    args.modes = [m for m in MODES if m in args.modes]

    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    perceptual = {"both": (False, True), "on": (True,), "off": (False,)}[args.perceptual]
    rows = []
    header = (
        f"{'config':<11} {'VGG19':<6} {'variant':<15} {'img/s best':>10} {'median':>8} "
        f"{'x ref':>6} {'x ref med':>9} {'x ref cpu':>9} {'GFLOP/s':>8}  finite"
    )
    print(header)
    print("-" * len(header))
    for name in args.configs:
        steps = args.steps or (10 if CONFIGS[name]["batch"] > 1 else 3)
        for with_vgg in perceptual:
            for row in benchmark(name, with_vgg, args.modes, steps, args.repeats, args.warmup):
                rows.append(row)
                gflops = f"{row['gflops_best']:8.1f}"
                print(
                    f"{row['config']:<11} {'yes' if with_vgg else 'no':<6} {row['mode']:<15} "
                    f"{row['images_per_s_best']:10.2f} {row['images_per_s_median']:8.2f} "
                    f"{row['ratio_best']:6.2f} {row['ratio_median']:9.2f} {row['ratio_cpu']:9.2f} {gflops}  "
                    f"{row['finite_losses']}",
                    flush=True,
                )
            print(
                f"  ({rows[-1]['gflop_per_step']:.1f} GFLOP per step of {CONFIGS[name]['batch']} images, analytic; "
                f"the profiler counts {rows[-1]['profiler_gflop_per_step']:.1f} on the traced graph, before pruning)"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
