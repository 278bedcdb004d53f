"""The trained models of the presets, one cached recipe each (built on `Run.model`).

Every preset trains its target classifiers with `classifier` and its
APE-GAN, pix2pix, EGAN, robust purifier and Madry baseline with the recipe of
that defense; a preset passes its paper's settings (network preset, epochs,
batch size) and its cache key. The key names the saved model
(`models/NAME-HASH.keras`) and seeds its initial weights (`Run.model`), so a
preset keeps its key to keep its numbers; `key` builds the common shape of
one. Data pipelines are made inside the seeded training call. The learned
baselines of the comparison tables (MagNet, denoisers, Defense-GAN, FGSM
adversarial training) are in `presets.baselines`.

The PGD settings of every preset's adaptive protocol come from `pgd_settings`.
"""

import json

from tfdefense._io import write_json
from tfdefense.evaluation.cache_keys import config_hash, with_dependencies


def key(run, epochs, data=None, **settings):
    """A model's cache key: the run's data (or `data`), `epochs`, the run's seed and the preset's `settings`."""
    return {"data": run.data if data is None else data, "epochs": epochs, "seed": run.seed, **settings}


def pgd_settings(run, eps, nb_iter=None):
    """The presets' PGD settings: `nb_iter` steps of 2.5 eps / nb_iter from a random start, the run's seed.

    nb_iter None: the adaptive protocol's 10 at tiny scale, else 40.
    """
    if nb_iter is None:
        nb_iter = 10 if run.scale == "tiny" else 40
    return dict(eps=eps, eps_iter=2.5 * eps / nb_iter, nb_iter=nb_iter, rand_init=True, seed=run.seed)


def _batch(run, batch_size, default=64):
    """A recipe's batch size: the preset's fixed one, else --batch-size, else `default`."""
    return batch_size or run.batch_size or default


def _fit(run, model, data, epochs, callbacks=(), loss_note=None):
    """`model.fit(data(), epochs)`; loss_note=(label, metric) notes that metric's value per epoch."""
    history = model.fit(data(), epochs=epochs, verbose=0, callbacks=[*callbacks, *run.training_backup()]).history
    if loss_note is not None:
        label, metric = loss_note
        run.note(f"{label} per epoch: " + ", ".join(f"{v:.4f}" for v in history[metric]))
    return history


def classifier(
    run,
    name,
    build,
    x_train,
    y_train,
    epochs,
    config,
    batch_size=None,
    augment=None,
    schedule=None,
    optimizer="adam",
    learning_rate=1e-3,
):
    """Target classifier `name`: `build()` trained with `train_classifier` (or reused); frozen.

    config: its cache key (`key`); batch_size: fixed batch (None: --batch-size or 64);
    augment, schedule, optimizer, learning_rate: as in `train_classifier`.
    """
    from tfdefense.models import train_classifier

    def train(model):
        train_classifier(
            model,
            x_train,
            y_train,
            epochs=epochs,
            batch_size=_batch(run, batch_size),
            augment=augment,
            schedule=schedule,
            seed=run.seed,
            optimizer=optimizer,
            learning_rate=learning_rate,
            verbose=0,
            backup_dir=run.training_backup_dir(),
        )

    model = run.model(name, config, build, train)
    model.trainable = False
    return model


def apegan(
    run,
    x_adv,
    x_clean,
    preset,
    epochs,
    config,
    name="apegan",
    input_shape=None,
    batch_size=None,
    depends_on=None,
    loss_note=False,
):
    """APE-GAN (`APEGAN.from_preset(preset)`) trained on (x_adv, x_clean) pairs for `epochs` (or reused).

    config: its cache key; depends_on: what else it is keyed by (default: x_adv);
    loss_note: note the generator's MSE per epoch.
    """
    from tfdefense.data import make_paired_pipeline
    from tfdefense.defenses import APEGAN

    def build():
        model = APEGAN.from_preset(preset, input_shape=input_shape)
        model.compile()
        return model

    def train(model):
        _fit(
            run,
            model,
            lambda: make_paired_pipeline(x_adv, x_clean, batch_size=_batch(run, batch_size), seed=run.seed),
            epochs,
            loss_note=("APE-GAN g_mse", "g_mse") if loss_note else None,
        )

    return run.model(name, config, build, train, depends_on=(x_adv,) if depends_on is None else depends_on)


def pix2pix(run, name, config, networks, data, epochs, depends_on=(), callbacks=(), loss_note=False, **settings):
    """A `Pix2PixDefense` trained on `data()` (a paired tf.data pipeline) for `epochs` (or reused).

    networks: () -> dict of its networks (generator, discriminator, optionally
    feature_extractor), built in that order inside the seeded build;
    settings: its other arguments (classifier, lambda_l1, lambda_cls, ...);
    loss_note: note the L1 loss per epoch.
    """
    from tfdefense.defenses import Pix2PixDefense

    def build():
        model = Pix2PixDefense(**networks(), **settings)
        model.compile()
        return model

    def train(model):
        _fit(run, model, data, epochs, callbacks, loss_note=("pix2pix L1 loss", "l1") if loss_note else None)

    return run.model(name, config, build, train, depends_on=depends_on)


def egan(run, x_train, net, encoder, dcgan_epochs, encoder_epochs, batch_size=64, precision="fp32"):
    """EGAN: a DCGAN (`DCGAN.from_preset(net)`) on clean images, then its encoder on the frozen generator;
    `precision` of both train steps ("bf16" joins the models' keys, "fp32" keeps the keys it always had)."""
    from tfdefense.defenses import DCGAN, EGAN
    from tfdefense.models.egan_encoder import egan_encoder_preset

    extra = {} if precision == "fp32" else {"precision": precision}
    dcgan_config = key(run, dcgan_epochs, net=net, **extra)

    def build_dcgan():
        model = DCGAN.from_preset(net, seed=run.seed, precision=precision)
        model.compile()
        return model

    dcgan = run.model(
        "dcgan",
        dcgan_config,
        build_dcgan,
        lambda m: m.fit(
            x_train, batch_size=batch_size, epochs=dcgan_epochs, verbose=0, callbacks=run.training_backup()
        ),
    )

    def build_egan():
        model = EGAN(dcgan.generator, egan_encoder_preset(encoder), seed=run.seed, precision=precision)
        model.compile()
        return model

    egan_config = {"dcgan": dcgan_config, "encoder": encoder, "epochs": encoder_epochs, "seed": run.seed, **extra}
    return run.model(
        "egan",
        egan_config,
        build_egan,
        lambda m: m.fit(
            x_train, batch_size=batch_size, epochs=encoder_epochs, verbose=0, callbacks=run.training_backup()
        ),
    )


def cosine_adam(epochs, n, batch):
    """FusedAdam(1e-3) with cosine decay to 2% over `epochs` passes of `n` images (the measured recipe)."""
    from tfdefense.training import cosine_fused_adam

    return cosine_fused_adam(1e-3, epochs, n, batch)


def _cpu_seconds(run, name, config):
    """The training CPU seconds recorded beside model `name` (None where not recorded)."""
    record = _cpu_record(run, name, config)
    return json.loads(record.read_text())["cpu_seconds"] if record.is_file() else None


def _cpu_record(run, name, config):
    return run.models_dir / f"{name}-{config_hash(config)}.cpu.json"


def _budget_callbacks(run, ramp, budget):
    """The eps ramp, the CPU budget and the run's epoch checkpoint (`Run.training_backup`) of a robust fit."""
    from tfdefense.training import EpsilonRamp

    return [EpsilonRamp(ramp), budget, *run.training_backup()]


def robust_purifier(run, name, config, classifier, x_train, y_train, generator, eps, steps, epochs, ramp):
    """`RobustPurifier` (PGD through purifier + frozen `classifier`, eps ramped over `ramp` epochs); (model, CPU s).

    generator: () -> the U-Net; trained with `cosine_adam` under a `ComputeBudget`
    whose CPU seconds are recorded beside the model (the Madry baseline's budget).
    """
    from tfdefense.defenses import RobustPurifier
    from tfdefense.training import ComputeBudget

    config = with_dependencies(config, [classifier])
    batch = _batch(run, None)

    def build():
        model = RobustPurifier(generator(), classifier, attack_eps=eps, attack_steps=steps, seed=run.seed)
        model.compile(g_optimizer=cosine_adam(epochs, len(x_train), batch))
        return model

    def train(model):
        budget = ComputeBudget()
        history = model.fit(
            x_train, y_train, batch_size=batch, epochs=epochs, verbose=0, callbacks=_budget_callbacks(run, ramp, budget)
        )
        write_json(
            _cpu_record(run, name, config),
            {"cpu_seconds": budget.spent, "history": {k: [float(v) for v in vs] for k, vs in history.history.items()}},
        )

    model = run.model(name, config, build, train)
    return model, _cpu_seconds(run, name, config)


def madry(run, name, config, classifier, x_train, y_train, eps, steps, epochs, ramp, cpu_budget):
    """Madry PGD adversarial training of a copy of `classifier`, stopped at `cpu_budget` CPU s; (classifier, CPU s)."""
    from tfdefense.defenses import AdversarialTrainer
    from tfdefense.models import trainable_copy
    from tfdefense.training import ComputeBudget

    config = with_dependencies(config, [classifier])
    batch = _batch(run, None)

    def build():
        clone = trainable_copy(classifier)  # the target classifier is frozen; Madry trains a copy
        model = AdversarialTrainer(
            clone, attack="pgd", eps=eps, eps_iter=2.5 * eps / steps, nb_iter=steps, seed=run.seed
        )
        model.compile(optimizer=cosine_adam(epochs, len(x_train), batch))
        return model

    def train(model):
        budget = ComputeBudget(cpu_budget)
        model.fit(
            x_train, y_train, batch_size=batch, epochs=epochs, verbose=0, callbacks=_budget_callbacks(run, ramp, budget)
        )
        write_json(_cpu_record(run, name, config), {"cpu_seconds": budget.spent})

    model = run.model(name, config, build, train)
    return model.classifier, _cpu_seconds(run, name, config)
