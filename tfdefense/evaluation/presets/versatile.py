"""Versatile-defense preset: one purifier trained on six attacks vs attack-specific ones.

- Table 1: six attack-specific purifiers (FGSM, BIM, PGD, C&W, MI-FGSM,
  AutoAttack), each tested on clean images, the six attacks and the held-out
  DeepFool.
- Table 2: the one versatile purifier (trained on all six, `per_class` images
  per class, each image under one attack, staged loss weights) vs the
  attack-specific purifier of each attack vs the input-transformation baselines
  (random resizing + padding, pixel deflection + wavelet denoising,
  super-resolution + wavelet denoising).
- MAE and PSNR of the purified images; robustness check (PGD and MI-FGSM with
  10 to 100 iterations at eps 2, 5 and 10/255); the adaptive protocol.

Full scale: Inception-v3 on ImageNet at 256 px (`--data-dir` with an ILSVRC
class-folder tree, `--weights` a local Inception-v3 weights file; the VGG19
perceptual loss uses ImageNet weights when `--weights` points at a folder
holding `vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`), 18 training
images per class (3 per attack), 5 test images per class, eps 16/255, 40
iterations of step 0.01, 100 epochs with the staged weights. Quick scale: the
same protocol on the CIFAR-10 subset with model D; the perceptual loss uses
the target classifier's conv layers (no ImageNet weights offline).
"""

from tfdefense.evaluation import accuracy, mean_absolute_error, paper_values, plots, protocols, psnr
from tfdefense.evaluation.preset_registry import PresetUnavailable, register_preset
from tfdefense.evaluation.presets import common, recipes

TRAIN_ATTACKS = ("fgsm", "bim", "pgd", "cw_l2", "mifgsm", "autoattack")
HELD_OUT = "deepfool"
TABLE1 = "Table 1: attack-specific purifiers (rows: trained on; columns: tested on)"
TABLE2 = "Table 2: versatile purifier vs attack-specific vs input transformations"
QUALITY = "MAE / PSNR of purified adversarial images (vs clean)"
ROBUSTNESS = "Robustness check: accuracy vs attack iterations (attacks on the classifier)"

SCALES = {
    "tiny": dict(
        dataset="cifar10",
        train=None,
        per_class=6,
        test_per_class=2,
        classifier_epochs=2,
        epochs=3,
        nb_iter=5,
        eps=16 / 255,
        unet=dict(base_filters=8, max_filters=32),
        iterations=(5, 10),
        eps_check=(8 / 255,),
    ),
    "quick": dict(
        dataset="cifar10",
        train=None,
        per_class=60,
        test_per_class=20,
        classifier_epochs=12,
        epochs=20,
        nb_iter=10,
        eps=16 / 255,
        unet=dict(base_filters=16, max_filters=128),
        iterations=(10, 20, 50, 100),
        eps_check=(2 / 255, 5 / 255, 10 / 255),
    ),
    "full": dict(
        dataset="imagenet",
        train=None,
        per_class=18,
        test_per_class=5,
        classifier_epochs=0,
        epochs=100,
        nb_iter=40,
        eps=16 / 255,
        unet=dict(base_filters=64, max_filters=512),
        iterations=(10, 20, 50, 100),
        eps_check=(2 / 255, 5 / 255, 10 / 255),
    ),
}


def attack_params(name, eps, nb_iter, seed, scale):
    step = 0.01 if scale == "full" else 2.5 * eps / nb_iter
    if name in ("bim", "pgd", "mifgsm"):
        params = dict(eps=eps, eps_iter=min(step, eps), nb_iter=nb_iter)
        if name == "pgd":
            params.update(rand_init=True, seed=seed)
        return params
    if name == "fgsm":
        return dict(eps=eps)
    if name == "cw_l2":
        return (
            {}
            if scale == "full"
            else dict(binary_search_steps=2, max_iterations=5 * nb_iter, learning_rate=0.05, initial_const=1.0)
        )
    if name == "autoattack":
        return dict(eps=eps, nb_iter=nb_iter, nb_queries=100 * nb_iter, seed=seed)
    if name == "deepfool":
        return dict(max_iter=50)
    raise ValueError(name)


def _classifier(run, settings, x_train, y_train):
    if settings["dataset"] == "imagenet":
        from tfdefense.models import get_classifier

        if not run.weights:
            raise PresetUnavailable("the full versatile preset needs --weights (a local Inception-v3 weights file)")
        model = get_classifier("inception_v3", input_shape=x_train.shape[1:], num_classes=1000, weights=run.weights)
        model.trainable = False
        return model
    return common.target_classifier(run, "D", x_train, y_train, settings["classifier_epochs"], augment="flip_shift")


def _feature_extractor(run, settings, classifier):
    import keras

    from tfdefense.models.perceptual import perceptual_feature_extractor

    if settings["dataset"] == "imagenet":
        return perceptual_feature_extractor(
            "vgg19", weights="imagenet" if run.weights else None, input_shape=classifier.input_shape[1:]
        )
    convs = [layer.name for layer in classifier.layers if isinstance(layer, keras.layers.Conv2D)]
    return perceptual_feature_extractor(classifier, convs)


def _purifier(run, name, pairs, classifier, settings):
    """A pix2pix purifier with the perceptual loss and staged loss weights, trained on `pairs`."""
    from tfdefense.models import patchgan_discriminator, unet_generator
    from tfdefense.training import StagedLossWeights, versatile_stages

    shape, unet = pairs.x_adv.shape[1:], settings["unet"]
    config = recipes.key(run, settings["epochs"], pairs=[list(pairs.attack_names), int(len(pairs))], unet=unet)
    return recipes.pix2pix(
        run,
        name,
        config,
        lambda: dict(
            generator=unet_generator(shape, **unet),
            discriminator=patchgan_discriminator(shape, base_filters=unet["base_filters"], n_layers=2),
            feature_extractor=_feature_extractor(run, settings, classifier),
        ),
        lambda: pairs.dataset(batch_size=run.batch_size or 16, seed=run.seed, with_labels=False),
        settings["epochs"],
        depends_on=(classifier, pairs.x_adv),
        callbacks=[StagedLossWeights(versatile_stages(settings["epochs"]))],
        lambda_l1=100.0,
        lambda_perc=100.0,
    )


def _transform_baselines(run, x_train):
    try:
        from tfdefense.defenses import transforms
        from tfdefense.defenses.transforms import superres
    except ImportError as error:
        raise PresetUnavailable(f"Table 2 needs the input-transformation baselines ({error})") from error
    baselines = {}
    if run.wants_defense("random_resize_pad"):
        baselines["random resizing + padding"] = transforms.get_transform("random_resize_pad", seed=run.seed)
    if run.wants_defense("pixel_deflection"):
        baselines["pixel deflection + wavelet"] = transforms.get_transform("pixel_deflection", seed=run.seed)
    if run.wants_defense("sr_wavelet"):
        epochs = 2 if run.scale == "tiny" else 10
        sr = run.model(
            "super_resolution",
            {"data": run.data, "n": len(x_train), "epochs": epochs, "seed": run.seed},
            lambda: superres.train_super_resolution(x_train, epochs=epochs, seed=run.seed),
            lambda model: None,
        )
        baselines["super-resolution + wavelet"] = superres.SuperResolutionWavelet(sr)
    return baselines


def _load(run, settings):
    from tfdefense.data import take_balanced

    (x_train, y_train), (x_test, y_test) = common.load_data(run, settings["dataset"])
    x_test, y_test = take_balanced(x_test, y_test, settings["test_per_class"], run.seed)
    if settings["dataset"] != "imagenet" and run.scale == "tiny":
        x_train, y_train = x_train[:600], y_train[:600]
    run.set_data(run.data["dataset"], run.data["description"] + f"; evaluated on {len(x_test)} balanced test images")
    return (x_train, y_train), (x_test, y_test)


@register_preset(
    "versatile",
    "Versatile defense: six attack-specific purifiers vs one versatile purifier vs input transforms",
    paper="Versatile defense (pix2pix + VGG19 perceptual loss, staged weights)",
    attacks=TRAIN_ATTACKS,
    defenses=("random_resize_pad", "pixel_deflection", "sr_wavelet"),
)
def versatile(run):
    from tfdefense.defenses import DefendedClassifier

    settings = run.pick(SCALES)
    if settings["dataset"] == "imagenet" and not run.weights:
        raise PresetUnavailable(
            "the full versatile preset needs --weights (a local Inception-v3 weights file) "
            "and --data-dir with an ILSVRC class-folder tree"
        )
    (x_train, y_train), (x_test, y_test) = _load(run, settings)
    classifier = _classifier(run, settings, x_train, y_train)
    train_attacks = [a for a in TRAIN_ATTACKS if run.wants_attack(a)]
    if not train_attacks:
        raise ValueError(f"versatile needs at least one of the attacks {TRAIN_ATTACKS} (see --attacks)")
    params = {
        a: attack_params(a, settings["eps"], settings["nb_iter"], run.seed, run.scale)
        for a in [*train_attacks, HELD_OUT]
    }
    purifiers = _purifiers(run, settings, classifier, x_train, y_train, train_attacks, params)
    tests = {"clean": x_test}
    for attack in [*train_attacks, HELD_OUT]:
        tests[attack] = common.attacked(run, attack, params[attack], classifier, x_test, y_test)
    models = {"none": classifier, **{name: DefendedClassifier(p, classifier) for name, p in purifiers.items()}}
    _table1(run, models, tests, params, y_test)
    _table2(run, models, tests, params, x_train, y_test)
    _quality(run, purifiers["versatile"], tests, x_test)
    _robustness_check(run, settings, models["versatile"], classifier, train_attacks, params, x_test, y_test)
    _adaptive(run, settings, models["versatile"], purifiers["versatile"], classifier, x_test, y_test)
    first = train_attacks[0]
    plots.plot_sample_grid(
        run.add_plot("samples.png"),
        {"clean": x_test, first: tests[first], "versatile": purifiers["versatile"].purify(tests[first][:8])},
    )
    run.note(
        f"Training attacks (each image under one of them, {settings['per_class']} images per class): "
        f"{', '.join(train_attacks)}; "
        f"{HELD_OUT} is held out. AutoAttack components (APGD-CE, APGD-T, FAB-T, Square): see attack_config."
    )
    run.note(f"Staged loss weights over {settings['epochs']} epochs (the versatile schedule rescaled).")
    _fill_paper_column(run, settings)


def _purifiers(run, settings, classifier, x_train, y_train, train_attacks, params):
    """The versatile purifier (each image under one training attack) and one attack-specific purifier per attack."""
    from tfdefense.defenses import make_attack_pairs

    pair_args = dict(per_class=settings["per_class"], seed=run.seed, cache_dir=run.cache_dir / "adversarial")
    versatile_pairs = make_attack_pairs(
        classifier, x_train, y_train, [(a, params[a]) for a in train_attacks], mode="split", **pair_args
    )
    purifiers = {"versatile": _purifier(run, "versatile", versatile_pairs, classifier, settings)}
    for attack in train_attacks:
        pairs = make_attack_pairs(classifier, x_train, y_train, [(attack, params[attack])], mode="all", **pair_args)
        purifiers[f"{attack}-specific"] = _purifier(run, f"purifier_{attack}", pairs, classifier, settings)
    return purifiers


def _table1(run, models, tests, params, y_test):
    """Table 1: each attack-specific purifier on every attack (the undefended classifier's row goes to Table 2)."""
    for name, model in models.items():
        if name == "versatile":
            continue
        table = TABLE1 if name != "none" else TABLE2
        for attack, images in tests.items():
            run.add_row(
                table,
                "per_attack",
                name,
                attack,
                "accuracy",
                accuracy(model, images, y_test),
                len(y_test),
                attack_config=params.get(attack, {}),
            )


def _table2(run, models, tests, params, x_train, y_test):
    """Table 2: the versatile purifier vs the attack-specific one of each attack vs the input transformations."""
    from tfdefense.defenses import DefendedClassifier

    for attack, images in tests.items():
        run.add_row(
            TABLE2,
            "per_attack",
            "versatile",
            attack,
            "accuracy",
            accuracy(models["versatile"], images, y_test),
            len(y_test),
            attack_config=params.get(attack, {}),
        )
        specific = models.get(f"{attack}-specific")
        if specific is not None:
            run.add_row(
                TABLE2,
                "per_attack",
                "attack-specific",
                attack,
                "accuracy",
                accuracy(specific, images, y_test),
                len(y_test),
                attack_config=params[attack],
            )
    for name, transform in _transform_baselines(run, x_train).items():
        defended = DefendedClassifier(transform, models["none"])
        for attack, images in tests.items():
            run.add_row(
                TABLE2,
                "per_attack",
                name,
                attack,
                "accuracy",
                accuracy(defended, images, y_test),
                len(y_test),
                attack_config=params.get(attack, {}),
            )


def _quality(run, purifier, tests, x_test):
    """MAE and PSNR of the versatile purifier's purified adversarial images (and their bar plots)."""
    quality = {"mae": {}, "psnr_db": {}}
    for attack, images in tests.items():
        if attack == "clean":
            continue
        purified = purifier.purify(images)
        quality["mae"][attack] = mean_absolute_error(purified, x_test)
        quality["psnr_db"][attack] = psnr(purified, x_test)
        for metric, values in quality.items():
            run.add_row(QUALITY, "quality", "versatile", attack, metric, values[attack], len(x_test))
    plots.plot_bars(
        run.add_plot("purified_mae.png"),
        quality["mae"],
        "MAE vs clean",
        title="versatile purifier: purified adversarial images",
    )
    plots.plot_bars(
        run.add_plot("purified_psnr.png"),
        quality["psnr_db"],
        "PSNR vs clean (dB)",
        title="versatile purifier: purified adversarial images",
    )


def _robustness_check(run, settings, versatile, classifier, train_attacks, params, x_test, y_test):
    """Accuracy vs attack iterations of PGD and MI-FGSM at the check radii (crafted on the classifier)."""
    curves = {}
    for attack in ("pgd", "mifgsm"):
        if attack not in train_attacks:
            continue
        for check_eps in settings["eps_check"]:
            values = []
            for iterations in settings["iterations"]:
                p = dict(
                    params[attack],
                    eps=check_eps,
                    nb_iter=iterations,
                    eps_iter=min(0.01, check_eps) if run.scale == "full" else 2.5 * check_eps / iterations,
                )
                x_adv = common.attacked(run, attack, p, classifier, x_test, y_test)
                value = accuracy(versatile, x_adv, y_test)
                values.append(value)
                run.add_row(
                    ROBUSTNESS,
                    "per_attack",
                    "versatile",
                    f"{attack} eps {check_eps * 255:.0f}/255, {iterations} it",
                    "accuracy",
                    value,
                    len(y_test),
                    attack_config=p,
                )
            curves[f"{attack} eps {check_eps * 255:.0f}/255"] = (list(settings["iterations"]), values)
    if curves:
        plots.plot_curves(
            run.add_plot("accuracy_vs_iterations.png"), curves, "attack iterations", title="versatile purifier"
        )


def _adaptive(run, settings, versatile, purifier, classifier, x_test, y_test):
    """The adaptive protocol on the versatile purifier."""
    pgd = recipes.pgd_settings(run, settings["eps"], settings["nb_iter"])
    run.step(
        "versatile-adaptive",
        {"pgd": pgd},  # stored in steps/: a rerun reuses it
        lambda: protocols.adaptive(run, "versatile", versatile, classifier, x_test, y_test, "pgd", pgd),
        depends_on=(purifier, classifier, x_test, y_test),
    )


def _fill_paper_column(run, settings):
    """The versatile paper's Tables 1 and 2 (ImageNet, Inception-v3) beside ours; its MAE/PSNR, robustness figures."""
    values = paper_values.versatile_values()

    def lookup(row):
        table, defense, attack = row["table"], row["defense"], row["attack"]
        if table == TABLE1 and defense.endswith("-specific"):
            return values["table1"].get((defense[: -len("-specific")], attack))
        if table == TABLE2:
            return values["table2"].get((defense, attack))
        if table in (QUALITY, ROBUSTNESS):
            return paper_values.NOT_IN_TEXT
        return None

    data = "" if settings["dataset"] == "imagenet" else f" (ours: {settings['dataset']}, not the paper's ImageNet)"
    paper_values.annotate_rows(
        run,
        lookup,
        note=(
            f"Paper column: the versatile paper's Tables 1 and 2 (Inception-v3 on ImageNet){data}, from its text; "
            "Table 1's "
            "column headers are lost in the text, their order (FGSM, BIM, PGD, MI-FGSM, C&W, AutoAttack) follows from "
            "Table 2's attack-specific column, which repeats Table 1's diagonal. Its MAE / PSNR and robustness "
            "results are "
            "figures: not in the paper's text. The C&W norm is lost from the text; C&W-L2 is chosen here."
        ),
    )
