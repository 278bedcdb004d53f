"""EGAN preset (Perez-Bravo et al.): accuracy vs FGSM eps 0..1 and accuracy vs purification time.

Defenses: none, APE-GAN, EGAN (DCGAN with z of 30, then an encoder inverting
the frozen generator; purification G(E(x))), the input transformations,
MagNet (reformer alone, and detector + reformer with detected inputs counted
as defended, the MagNet paper's convention), a convolutional autoencoder and a
DnCNN (8 layers of 32 filters; the paper's 17 x 64 at full scale) trained on
the same FGSM pairs as APE-GAN, and Defense-GAN (tiny and full
scales: its WGAN needs CPU-hours). FGSM is crafted on the bare classifier
(the paper's protocol); the adaptive protocol adds PGD through each learned
purifier (EOT for Defense-GAN).
"""

import numpy as np

from tfdefense.evaluation import accuracy, paper_values, plots, protocols, seconds_per_image
from tfdefense.evaluation.preset_registry import register_preset
from tfdefense.evaluation.presets import baselines, common, recipes

EPS_GRID = tuple(np.round(np.arange(0.0, 1.01, 0.1), 1))
TABLE = "Accuracy vs FGSM eps (attacks on the classifier)"
TIME_TABLE = "Accuracy vs purification time at FGSM eps 0.5"

SCALES = {
    "tiny": dict(
        train=400,
        test=60,
        classifier_epochs=2,
        dcgan_epochs=1,
        encoder_epochs=1,
        apegan_epochs=1,
        net="tiny",
        encoder="tiny",
        eps_grid=(0.0, 0.3, 0.5),
        precision="fp32",
    ),
    # 8000 of the 60000 training digits and 1000 of the 10000 test digits.
    "quick": dict(
        train=8000,
        test=1000,
        classifier_epochs=3,
        dcgan_epochs=5,
        encoder_epochs=3,
        apegan_epochs=6,
        net="mnist",
        encoder="light",
        eps_grid=EPS_GRID,
        precision="fp32",
    ),
    "full": dict(
        train=None,
        test=None,
        classifier_epochs=10,
        dcgan_epochs=40,
        encoder_epochs=10,
        apegan_epochs=15,
        net="mnist",
        encoder="paper",
        eps_grid=EPS_GRID,
        precision="bf16",  # the DCGAN's and the encoder's train steps in bfloat16 (--set precision=fp32 to compare)
    ),
}


def _apegan(run, settings, x_adv, x_train):
    return recipes.apegan(
        run,
        x_adv,
        x_train,
        settings["net"],
        settings["apegan_epochs"],
        recipes.key(run, settings["apegan_epochs"], net=settings["net"]),
        batch_size=64,
    )


def _transforms(run):
    """The input-transformation baselines (deterministic ones first)."""
    from tfdefense.defenses import transforms

    names = ("bit_depth", "median", "jpeg", "random_resize_pad", "pixel_deflection")
    return {
        name: transforms.get_transform(name)
        for name in names
        if name in transforms.list_transforms() and run.wants_defense(name)
    }


@register_preset(
    "egan",
    "EGAN on MNIST: accuracy vs FGSM eps 0..1 and vs purification time, beside APE-GAN and baselines",
    paper="EGAN (Perez-Bravo et al.)",
    defenses=(
        "egan",
        "apegan",
        "autoencoder",
        "dncnn",
        "magnet",
        "defensegan",
        "bit_depth",
        "median",
        "jpeg",
        "random_resize_pad",
        "pixel_deflection",
    ),
)
def egan(run):
    from tfdefense.defenses import DefendedClassifier

    settings = run.pick(SCALES)
    (x_train, y_train), (x_test, y_test) = common.load_data(run, "mnist", settings["train"], settings["test"])
    classifier = common.target_classifier(run, "C", x_train, y_train, settings["classifier_epochs"])
    purifiers = _purifiers(run, settings, classifier, x_train, y_train)
    models = {"none": classifier, **{name: DefendedClassifier(p, classifier) for name, p in purifiers.items()}}
    by_eps = _accuracy_vs_eps(run, settings, models, purifiers, x_test, y_test)
    _accuracy_vs_time(run, models, purifiers, by_eps.get(0.5), y_test)
    _adaptive(run, models, purifiers, x_test, y_test)
    if "egan" in purifiers:
        x_fgsm = by_eps.get(0.3, x_test)
        plots.plot_sample_grid(
            run.add_plot("samples.png"),
            {"clean": x_test, "fgsm": x_fgsm, "G(E(x))": purifiers["egan"].purify(x_fgsm[:8])},
        )
    run.note(
        "Purification time: best of 3 wall times of `purify` over the test set after a warm-up call, per image, on "
        "this machine."
    )
    _fill_paper_column(run)


def _purifiers(run, settings, classifier, x_train, y_train):
    """EGAN, APE-GAN, the input transformations and the learned baselines the run asks for."""
    purifiers = {}
    if run.wants_defense("egan"):
        purifiers["egan"] = recipes.egan(
            run,
            x_train,
            settings["net"],
            settings["encoder"],
            settings["dcgan_epochs"],
            settings["encoder_epochs"],
            precision=settings["precision"],
        )
    x_fgsm_train = None
    if run.wants_defense("apegan") or run.wants_defense("autoencoder") or run.wants_defense("dncnn"):
        x_fgsm_train = common.attacked(run, "fgsm", {"eps": 0.3}, classifier, x_train, y_train)
    if run.wants_defense("apegan"):
        purifiers["apegan"] = _apegan(run, settings, x_fgsm_train, x_train)
    purifiers.update(_transforms(run))
    if run.wants_defense("magnet"):
        purifiers["magnet"] = baselines.magnet(run, x_train)
    for kind in ("autoencoder", "dncnn"):
        if run.wants_defense(kind):
            purifiers[kind] = baselines.denoiser(run, kind, x_fgsm_train, x_train, {"fgsm": {"eps": 0.3}})
    if run.wants_defense("defensegan"):
        defense_gan = baselines.defense_gan(run, x_train)
        if defense_gan is not None:
            purifiers["defensegan"] = defense_gan
        baselines.defense_gan_note(run)
    return purifiers


def _accuracy_vs_eps(run, settings, models, purifiers, x_test, y_test):
    """Accuracy vs FGSM eps (crafted on the classifier), MagNet's detector counted as defended; {eps: images}."""
    classifier = models["none"]
    curves = {name: ([], []) for name in models}
    by_eps = {}
    for eps in settings["eps_grid"]:
        eps = float(eps)
        x = x_test if eps == 0 else common.attacked(run, "fgsm", {"eps": eps}, classifier, x_test, y_test)
        by_eps[eps] = x
        for name, model in models.items():
            value = accuracy(model, x, y_test)
            run.add_row(
                TABLE,
                "whole_test_set",
                name,
                f"fgsm eps {eps:.1f}",
                "accuracy",
                value,
                len(y_test),
                attack_config={"eps": eps},
            )
            curves[name][0].append(eps)
            curves[name][1].append(value)
        if "magnet" in purifiers:  # detected inputs count as defended when attacked, as errors when clean
            scores = purifiers["magnet"].defended_accuracy(classifier, x, y_test, detected_counts_as_correct=eps > 0)
            run.add_row(
                TABLE,
                "whole_test_set",
                "magnet (detector + reformer)",
                f"fgsm eps {eps:.1f}",
                "accuracy",
                scores["accuracy"],
                len(y_test),
                attack_config={"eps": eps},
            )
            run.add_row(
                TABLE,
                "whole_test_set",
                "magnet (detector + reformer)",
                f"fgsm eps {eps:.1f}",
                "detection_rate",
                scores["detection_rate"],
                len(y_test),
                attack_config={"eps": eps},
            )
            curves.setdefault("magnet (detector + reformer)", ([], []))
            curves["magnet (detector + reformer)"][0].append(eps)
            curves["magnet (detector + reformer)"][1].append(scores["accuracy"])
    plots.plot_curves(
        run.add_plot("accuracy_vs_eps.png"), curves, "FGSM eps (Linf)", title="MNIST: accuracy vs FGSM eps"
    )
    return by_eps


def _accuracy_vs_time(run, models, purifiers, x_half, y_test):
    """Accuracy vs purification time at FGSM eps 0.5 (where the eps grid holds 0.5)."""
    if x_half is None:
        return
    points = {}
    for name, purifier in purifiers.items():
        # Defense-GAN's projection costs ~1 s per image: timed on 64 images, once.
        timed = x_half[:64] if name == "defensegan" else x_half
        seconds = seconds_per_image(purifier.purify, timed, repeats=1 if name == "defensegan" else 3)
        run.add_row(TIME_TABLE, "timing", name, "purification", "seconds_per_image", seconds, len(timed))
        points[name] = ([seconds * 1e3], [accuracy(models[name], x_half, y_test)])
    if points:
        plots.plot_curves(
            run.add_plot("accuracy_vs_time.png"),
            points,
            "purification time per image (ms)",
            title="FGSM eps 0.5: accuracy vs cost",
        )


def _adaptive(run, models, purifiers, x_test, y_test):
    """The adaptive protocol: PGD through each learned purifier (EOT for Defense-GAN)."""
    classifier = models["none"]
    pgd = recipes.pgd_settings(run, 0.3)
    x, y = common.subset(x_test, y_test, None if run.scale == "full" else 200)
    for name in ("egan", "apegan", "magnet", "autoencoder", "dncnn", "defensegan"):
        if name in models:
            run.step(
                f"egan-adaptive-{name}",
                {"pgd": pgd, "defense": name},  # stored in steps/: a rerun reuses it
                lambda name=name: protocols.adaptive(run, name, models[name], classifier, x, y, "pgd", pgd),
                depends_on=(purifiers.get(name, models[name]), classifier, x, y),
            )


def _fill_paper_column(run):
    """EGAN's accuracy-vs-eps and accuracy-vs-time results are figures (4 and 5): not in the paper's text."""
    clean = paper_values.EGAN_PROSE["classifier clean accuracy"]

    def lookup(row):
        if row["table"] == TABLE and row["metric"] == "accuracy":
            return clean if (row["defense"], row["attack"]) == ("none", "fgsm eps 0.0") else paper_values.NOT_IN_TEXT
        if row["table"] == TIME_TABLE:
            return paper_values.NOT_IN_TEXT
        return None

    claim = paper_values.EGAN_PROSE["EGAN best above eps"]
    paper_values.annotate_rows(
        run,
        lookup,
        note=(
            "Paper column: the EGAN paper gives accuracy vs eps and accuracy vs time only as figures (Figures 4 and "
            "5), "
            "so those cells are not in the paper's text; its text states that EGAN is the best method for eps above "
            f"{claim.text} and that its own classifier (not model C) reaches {clean.text}% on clean digits "
            f"({clean.source}). "
            "The text gives the eps range 0 to 1 but not its step: 0.1 is chosen here."
        ),
    )
