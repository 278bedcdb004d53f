"""`quickstart`: the whole job on scikit-learn's bundled digits, offline, in minutes.

Trains target model C on the real 8x8 digits resized to 28x28, crafts FGSM and
PGD examples on the training split, trains a pix2pix purifier on the
(x_adv, x_clean) pairs with `model.fit`, and evaluates on the held-out split:
the papers' protocols (attacks on the bare classifier, whole test set and
successful examples only) and the adaptive one (PGD through purifier +
classifier, with doubled iterations and restarts as the convergence check).
Writes the table, plots and a SavedModel of the defended classifier.
"""

from tfdefense.evaluation import protocols
from tfdefense.evaluation.preset_registry import register_preset
from tfdefense.evaluation.presets import common, recipes

EPS = 0.3
SCALES = {
    "tiny": dict(
        train_images=300, test_images=100, classifier_epochs=8, purifier_epochs=3, pgd_iter=10, eps_grid=(0.0, 0.3)
    ),
    "quick": dict(
        train_images=None,
        test_images=None,
        classifier_epochs=25,
        purifier_epochs=15,
        pgd_iter=20,
        eps_grid=(0.0, 0.1, 0.2, 0.3),
    ),
    "full": dict(
        train_images=None,
        test_images=None,
        classifier_epochs=40,
        purifier_epochs=60,
        pgd_iter=40,
        eps_grid=(0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3),
    ),
}


def _attack_set(run, settings):
    attacks = {"fgsm": dict(eps=EPS), "pgd": recipes.pgd_settings(run, EPS, settings["pgd_iter"])}
    return {name: params for name, params in attacks.items() if run.wants_attack(name)}


@register_preset(
    "quickstart",
    "digits (offline): model C + pix2pix purifier, FGSM/PGD, adaptive PGD, SavedModel export",
    attacks=("fgsm", "pgd"),
)
def quickstart(run):
    from tfdefense.defenses import DefendedClassifier
    from tfdefense.evaluation import plots
    from tfdefense.export import export_saved_model

    settings = run.pick(SCALES)
    (x_train, y_train), (x_test, y_test) = _load(run, settings)
    classifier, purifier, attacks = _train(run, settings, x_train, y_train, x_test, y_test)
    defended = DefendedClassifier(purifier, classifier)
    test_adv = {
        name: (common.attacked(run, name, params, classifier, x_test, y_test), params)
        for name, params in attacks.items()
    }
    evaluated_on = (classifier, purifier, x_test, y_test)
    _papers_protocols(run, attacks, classifier, defended, test_adv, x_test, y_test, evaluated_on)
    if "pgd" in attacks:
        _adaptive(run, settings, attacks["pgd"], classifier, defended, x_test, y_test, evaluated_on)
    first = next(iter(test_adv))
    plots.plot_sample_grid(
        run.add_plot("samples.png"),
        {"clean": x_test, first: test_adv[first][0], "purified": purifier.purify(test_adv[first][0][:8])},
    )
    saved = export_saved_model(purifier, run.out_dir / "saved_model", classifier=classifier)
    run.artifacts["saved_model"] = str(saved.relative_to(run.out_dir))


def _load(run, settings):
    from tfdefense.data import load_dataset

    (x_train, y_train), (x_test, y_test) = load_dataset("digits", image_size=28)
    if settings["train_images"]:
        x_train, y_train = x_train[: settings["train_images"]], y_train[: settings["train_images"]]
        x_test, y_test = x_test[: settings["test_images"]], y_test[: settings["test_images"]]
    run.set_data(
        "digits",
        f"scikit-learn's bundled real 8x8 digits resized to 28x28 (seeded 80/20 split): "
        f"{len(x_train)} train / {len(x_test)} test images",
    )
    return (x_train, y_train), (x_test, y_test)


def _train(run, settings, x_train, y_train, x_test, y_test):
    """Model C, then the pix2pix purifier on its FGSM / PGD examples plus identity pairs.

    Returns (classifier, purifier, attacks).
    """
    from tfdefense.data import make_paired_pipeline
    from tfdefense.evaluation import accuracy
    from tfdefense.models import model_c
    from tfdefense.models.patchgan import patchgan_preset
    from tfdefense.models.unet import unet_generator_preset

    epochs = settings["classifier_epochs"]
    classifier = recipes.classifier(run, "model_c", model_c, x_train, y_train, epochs, recipes.key(run, epochs))
    run.log(f"model C clean test accuracy {accuracy(classifier, x_test, y_test):.3f}")
    attacks = _attack_set(run, settings)
    train_adv = [common.attacked(run, name, params, classifier, x_train, y_train) for name, params in attacks.items()]
    if not train_adv:
        raise ValueError("quickstart needs at least one of the attacks fgsm, pgd (see --attacks)")
    # Identity pairs (clean -> clean) teach the purifier to leave clean digits alone.
    x_adv_train, x_clean_train = common.paired_training_data(train_adv, x_train, include_clean=True)
    purifier_config = {
        "classifier": run.data,
        "attacks": attacks,
        "identity_pairs": True,
        "epochs": settings["purifier_epochs"],
        "seed": run.seed,
    }
    purifier = recipes.pix2pix(
        run,
        "pix2pix",
        purifier_config,
        lambda: dict(generator=unet_generator_preset("tiny"), discriminator=patchgan_preset("tiny")),
        lambda: make_paired_pipeline(x_adv_train, x_clean_train, batch_size=run.batch_size or 64, seed=run.seed),
        settings["purifier_epochs"],
        depends_on=(classifier,),
        loss_note=True,
        lambda_l1=100.0,
    )
    return classifier, purifier, attacks


def _papers_protocols(run, attacks, classifier, defended, test_adv, x_test, y_test, evaluated_on):
    """The papers' protocols: attacks on the bare classifier, whole test set and successful examples only."""
    models = {"none": classifier, "pix2pix": defended}

    def evaluate():
        protocols.whole_test_set(
            run, "Accuracy, attacks on the bare classifier", models, {"clean": (x_test, {}), **test_adv}, y_test
        )
        protocols.successful_only(
            run, "Accuracy on successful adversarial examples", classifier, models, test_adv, y_test, x_clean=x_test
        )

    # Evaluation steps: stored in steps/ and reused by a rerun (keyed by the models' and test images' fingerprints).
    run.step(
        "quickstart-papers-protocols",
        {"attacks": attacks, "png_roundtrip": run.png_roundtrip},
        evaluate,
        depends_on=evaluated_on,
    )


def _adaptive(run, settings, pgd, classifier, defended, x_test, y_test, evaluated_on):
    """The adaptive protocol (the attacker differentiates through purifier + classifier) and accuracy vs PGD eps."""
    from tfdefense.attacks import get_attack
    from tfdefense.evaluation import accuracy, plots

    def evaluate():
        protocols.adaptive(run, "pix2pix", defended, classifier, x_test, y_test, "pgd", pgd)
        curves = {}
        for name, model, target in (
            ("none", classifier, classifier),
            ("pix2pix (attack on classifier)", defended, classifier),
            ("pix2pix (adaptive)", defended, defended),
        ):
            values = []
            for eps in settings["eps_grid"]:
                if eps == 0:
                    values.append(accuracy(model, x_test, y_test))
                    continue
                params = dict(pgd, eps=eps, eps_iter=2.5 * eps / pgd["nb_iter"])
                values.append(accuracy(model, get_attack("pgd", **params)(target, x_test, y_test), y_test))
            curves[name] = (list(settings["eps_grid"]), values)
        return curves

    curves = run.step_value(
        "quickstart-adaptive", {"pgd": pgd, "eps_grid": list(settings["eps_grid"])}, evaluate, depends_on=evaluated_on
    )
    plots.plot_curves(run.add_plot("accuracy_vs_eps.png"), curves, "PGD eps (Linf)", title="digits: accuracy vs eps")
    run.note(
        "In the adaptive protocol the attacker differentiates through the purifier; the papers' protocol attacks the "
        "bare classifier."
    )
