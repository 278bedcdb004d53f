"""The learned baselines of the papers' comparison tables, trained (or reused) inside a preset run.

Each function trains one baseline on the run's training images through
`run.model` (so a re-run reuses it) and returns the trained defense:

- `magnet`: MagNet's autoencoders on clean images (noise 0.1), thresholds
  calibrated on held-out clean training images at the paper's 0.1% per
  detector;
- `denoiser`: a convolutional autoencoder (or DnCNN) on (adversarial, clean)
  pairs, the same footing as APE-GAN's training data;
- `defense_gan`: a WGAN-GP on clean images and the Defense-GAN projection
  (L steps x R restarts) onto its generator;
- `fgsm_adversarial_training`: a copy of a target classifier fine-tuned with
  Goodfellow-style FGSM adversarial training (the "Adv. Tr." column of the
  Defense-GAN paper).
"""

# MagNet's small autoencoders need a few thousand steps before their errors separate clean from
# perturbed images: batch 64 at tiny / quick scale (20 epochs of 256 on 7,200 digits flagged nothing),
# the paper's 100 epochs of 256 at full scale.
MAGNET_EPOCHS = {"tiny": 2, "quick": 30, "full": 100}
MAGNET_BATCH = {"tiny": 64, "quick": 64, "full": 256}
DENOISER_EPOCHS = {"tiny": 1, "quick": 4, "full": 20}
# WGAN epochs over the run's training images, then the projection's L steps x R restarts.
DEFENSE_GAN = {
    "tiny": dict(preset="tiny", epochs=1, iterations=5, restarts=1),
    "full": dict(preset="mnist", epochs=200, iterations=200, restarts=10),
}
ADV_TRAINING_EPOCHS = {"tiny": 1, "quick": 2, "full": 10}


def magnet(run, x_train):
    """MagNet (Meng and Chen 2017) MNIST preset: reformer = autoencoder I, detectors with the L2 and L1 errors."""
    from tfdefense.defenses import MagNet

    epochs = MAGNET_EPOCHS[run.scale]
    held_out = max(len(x_train) // 10, 1)
    batch = MAGNET_BATCH[run.scale]
    config = {
        "data": run.data,
        "n": len(x_train),
        "epochs": epochs,
        "batch": batch,
        "held_out": held_out,
        "seed": run.seed,
    }

    def build():
        model = MagNet.from_preset("mnist", image_shape=tuple(x_train.shape[1:]), seed=run.seed)
        model.compile()
        return model

    def train(model):
        model.fit(x_train[:-held_out], batch_size=batch, epochs=epochs, verbose=0, callbacks=run.training_backup())
        model.calibrate(x_train[-held_out:])

    return run.model("magnet", config, build, train)


def denoiser(run, kind, x_adv_train, x_train, attack_config):
    """A `Denoiser` ("autoencoder" or "dncnn") trained on (x_adv_train, x_train) pairs."""
    from tfdefense.data import make_paired_pipeline
    from tfdefense.defenses import Denoiser

    epochs = DENOISER_EPOCHS[run.scale]
    if run.scale == "tiny":
        preset = "tiny"
    else:
        preset = "default" if kind == "autoencoder" else ("paper" if run.scale == "full" else "small")
    config = {
        "data": run.data,
        "n": len(x_train),
        "kind": kind,
        "preset": preset,
        "epochs": epochs,
        "pairs": attack_config,
        "seed": run.seed,
    }

    def build():
        factory = Denoiser.autoencoder if kind == "autoencoder" else Denoiser.dncnn
        model = factory(preset, image_shape=tuple(x_train.shape[1:]), seed=run.seed)
        model.compile()
        return model

    def train(model):
        model.fit(
            make_paired_pipeline(x_adv_train, x_train, batch_size=64, seed=run.seed),
            epochs=epochs,
            verbose=0,
            callbacks=run.training_backup(),
        )

    return run.model(kind, config, build, train, depends_on=(x_adv_train,))


def defense_gan(run, x_train):
    """Defense-GAN (Samangouei et al. 2018) on a WGAN-GP trained here; None where the scale has no setting."""
    from tfdefense.defenses import WGANGP, DefenseGAN

    settings = DEFENSE_GAN.get(run.scale)
    if settings is None:
        return None
    config = {
        "data": run.data,
        "n": len(x_train),
        "preset": settings["preset"],
        "epochs": settings["epochs"],
        "seed": run.seed,
    }

    def build():
        model = WGANGP.from_preset(settings["preset"], image_shape=tuple(x_train.shape[1:]), seed=run.seed)
        model.compile()
        return model

    gan = run.model(
        "wgan_gp",
        config,
        build,
        lambda m: m.fit(x_train, batch_size=50, epochs=settings["epochs"], verbose=0, callbacks=run.training_backup()),
    )
    return DefenseGAN(gan.generator, iterations=settings["iterations"], restarts=settings["restarts"], seed=run.seed)


def defense_gan_note(run):
    if run.scale not in DEFENSE_GAN:
        run.note(
            "Defense-GAN is run at the tiny (code path) and full scales only: its WGAN-GP needs CPU-hours "
            "and its projection (L = 200 steps x R = 10 restarts) ~0.5-1.5 CPU s per image."
        )


def fgsm_adversarial_training(run, name, classifier, x_train, y_train, eps):
    """A copy of `classifier` fine-tuned with FGSM adversarial training at `eps` (50/50 clean/FGSM loss)."""
    from tfdefense.defenses import adversarial_training
    from tfdefense.models import trainable_copy

    epochs = ADV_TRAINING_EPOCHS[run.scale]
    config = {"data": run.data, "target": name, "n": len(x_train), "eps": eps, "epochs": epochs, "seed": run.seed}

    def build():
        return trainable_copy(classifier)  # the target classifier is frozen; its copy is fine-tuned

    def train(model):
        adversarial_training(
            model,
            x_train,
            y_train,
            attack="fgsm",
            eps=eps,
            epochs=epochs,
            batch_size=64,
            learning_rate=1e-3,
            seed=run.seed,
            verbose=0,
            backup_dir=run.training_backup_dir(),
        )

    model = run.model(f"{name}_fgsm_adv_trained", config, build, train, depends_on=(classifier,))
    model.trainable = False
    return model
