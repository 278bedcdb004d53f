"""APE-GAN presets (Shen et al., https://arxiv.org/abs/1707.05474): Tables 1-4 on MNIST and CIFAR-10.

- Table 1: error rate of the target model and of target + APE-GAN under
  L-BFGS, FGSM, DeepFool, JSMA, C&W-L0, C&W-L2 and C&W-Linf.
- Table 2: benign input (clean, Gaussian noise of variance 0.05).
- Table 3 (MNIST) / Table 4 (CIFAR-10): FGSM error rate over eps.
- The adaptive protocol: PGD through APE-GAN + classifier beside PGD on the classifier.

APE-GAN is trained on FGSM examples of the training split (MNIST eps 0.3,
CIFAR-10 eps 0.1, as in the paper). Attacks with a cost per image (the C&W
family, L-BFGS, JSMA, DeepFool) run on the first `expensive_images` test
images; the quick scale uses shortened optimisation budgets (in every row's
attack_config).
"""

from tfdefense.evaluation import accuracy, protocols
from tfdefense.evaluation.presets import _common
from tfdefense.evaluation.runner import register_preset

TABLE1 = "Table 1: error rate under attack (attacks on the target model)"
TABLE2 = "Table 2: benign input"
# Values stated in the APE-GAN paper for MNIST (target model error rates, full 60k MNIST).
PAPER_MNIST = {
    TABLE1: {("apegan", "fgsm"): 0.028},
    TABLE2: {("none", "clean"): 0.008, ("apegan", "clean"): 0.012},
}

SETTINGS = {
    "mnist": dict(
        classifier="C", augment=None, train_eps=0.3, eps_grid=(0.1, 0.2, 0.3, 0.4), pgd_eps=0.3,
        scales={
            "tiny": dict(train=300, test=40, expensive=4, cw_l0=1, classifier_epochs=2, epochs=1, budget="tiny"),
            "quick": dict(train=None, test=None, expensive=200, cw_l0=10, cw_linf=50, classifier_epochs=3, epochs=10, budget="quick"),
            "full": dict(train=None, test=None, expensive=None, cw_l0=100, classifier_epochs=10, epochs=15, budget="paper"),
        },
    ),
    "cifar10": dict(
        classifier="D", augment="flip_shift", train_eps=0.1, eps_grid=(4 / 255, 8 / 255, 12 / 255, 16 / 255),
        pgd_eps=8 / 255,
        scales={
            "tiny": dict(train=300, test=40, expensive=4, cw_l0=1, classifier_epochs=2, epochs=1, budget="tiny"),
            # ART's C&W-L0 / C&W-Linf cost ~1 min / ~8 s per 32x32x3 image on one core: few images at quick scale.
            "quick": dict(train=None, test=None, expensive=100, cw_l0=3, cw_linf=20, classifier_epochs=15, epochs=10, budget="quick"),
            "full": dict(train=None, test=None, expensive=None, cw_l0=100, classifier_epochs=40, epochs=30, budget="paper"),
        },
    ),
}

BUDGETS = {  # iteration budgets of the optimisation attacks
    "tiny": dict(cw=dict(binary_search_steps=1, max_iterations=10, learning_rate=0.1, initial_const=1.0),
                 cw_l0=dict(binary_search_steps=1, max_iterations=5, learning_rate=0.1, initial_const=1.0),
                 lbfgs=dict(binary_search_steps=1, max_iterations=20), deepfool=dict(max_iter=10),
                 cw_linf=dict(max_iterations=5)),
    "quick": dict(cw=dict(binary_search_steps=3, max_iterations=100, learning_rate=0.05, initial_const=1.0),
                  cw_l0=dict(binary_search_steps=2, max_iterations=20, learning_rate=0.1, initial_const=1.0),
                  lbfgs=dict(binary_search_steps=3, max_iterations=100), deepfool=dict(max_iter=50),
                  cw_linf=dict(max_iterations=10)),
    "paper": dict(cw=dict(), cw_l0=dict(), lbfgs=dict(), deepfool=dict(), cw_linf=dict()),
}


TABLE1_ATTACKS = ("lbfgs", "fgsm", "deepfool", "jsma", "cw_l0", "cw_l2", "cw_linf")  # names --attacks selects


def _table1_attacks(dataset, budget, seed):
    b = BUDGETS[budget]
    eps = SETTINGS[dataset]["train_eps"]
    return {
        "lbfgs": dict(b["lbfgs"], seed=seed),
        "fgsm": dict(eps=eps),
        "deepfool": dict(b["deepfool"]),
        "jsma": dict(seed=seed),  # targeted, random wrong label per image
        "cw_l0": dict(b["cw_l0"]),
        "cw_l2": dict(b["cw"]),
        "cw_linf": dict(b["cw_linf"]),
    }


def _train_apegan(run, dataset, classifier, x_train, y_train, settings):
    from tfdefense.data import make_paired_pipeline
    from tfdefense.defenses import APEGAN

    eps = SETTINGS[dataset]["train_eps"]
    x_adv = _common.attacked(run, "fgsm", {"eps": eps}, classifier, x_train, y_train)
    history = {}

    def build():
        defense = APEGAN.from_preset("tiny" if run.scale == "tiny" else dataset, input_shape=x_train.shape[1:])
        defense.compile()
        return defense

    def train(defense):
        pairs = make_paired_pipeline(x_adv, x_train, batch_size=run.batch_size or 64, seed=run.seed)
        history.update(defense.fit(pairs, epochs=settings["epochs"], verbose=0).history)
        run.note("APE-GAN g_mse per epoch: " + ", ".join(f"{v:.4f}" for v in history["g_mse"]))

    config = {"data": run.data, "train_eps": eps, "epochs": settings["epochs"], "scale": run.scale, "seed": run.seed}
    return run.model("apegan", config, build, train, depends_on=(x_adv,))


def _run(run, dataset):
    from tfdefense.defenses import DefendedClassifier
    from tfdefense.evaluation import mean_absolute_error, plots, psnr

    spec = SETTINGS[dataset]
    settings = run.pick(spec["scales"])
    (x_train, y_train), (x_test, y_test) = _common.load_data(run, dataset, settings["train"], settings["test"])
    classifier = _common.target_classifier(
        run, spec["classifier"], x_train, y_train, settings["classifier_epochs"], augment=spec["augment"]
    )
    purifier = _train_apegan(run, dataset, classifier, x_train, y_train, settings)
    defended = DefendedClassifier(purifier, classifier)
    models = {"none": classifier, "apegan": defended}
    paper = PAPER_MNIST if dataset == "mnist" else {}

    # Table 1 (whole set for FGSM; the optimisation attacks on the first `expensive` images).
    attacks = _table1_attacks(dataset, settings["budget"], run.seed)
    for name, params in attacks.items():
        if not run.wants_attack(name):
            continue
        # ART's C&W-L0 and C&W-Linf cost seconds per image on a CPU: fewer images at the small scales.
        n = {"fgsm": None, "cw_l0": settings["cw_l0"], "cw_linf": settings.get("cw_linf", settings["expensive"])}.get(
            name, settings["expensive"])
        x, y = _common.subset(x_test, y_test, n)
        run.log(f"Table 1: {name} on {len(x)} images")
        x_adv = _common.attacked(run, name, params, classifier, x, y)
        protocols.whole_test_set(
            run, TABLE1, models, {name: (x_adv, params)}, y, paper=paper.get(TABLE1), metric="error_rate"
        )

    # Table 2: benign input.
    noisy = _common.attacked(run, "gaussian_noise", {"variance": 0.05, "seed": run.seed}, classifier, x_test, y_test)
    protocols.whole_test_set(
        run, TABLE2, models, {"clean": (x_test, {}), "gaussian_noise var 0.05": (noisy, {"variance": 0.05})}, y_test,
        paper=paper.get(TABLE2), protocol="benign", metric="error_rate",
    )
    purified = purifier.purify(x_test)
    run.add_row("Purified image quality (clean inputs)", "quality", "apegan", "clean", "mae",
                mean_absolute_error(purified, x_test), len(x_test))
    run.add_row("Purified image quality (clean inputs)", "quality", "apegan", "clean", "psnr_db",
                psnr(purified, x_test), len(x_test))

    # Table 3 / 4: FGSM over eps.
    table = f"Table {3 if dataset == 'mnist' else 4}: FGSM error rate vs eps"
    curves = {"none": ([0.0], [1 - accuracy(classifier, x_test, y_test)]), "apegan": ([0.0], [1 - accuracy(defended, x_test, y_test)])}
    for eps in spec["eps_grid"]:
        x_adv = _common.attacked(run, "fgsm", {"eps": float(eps)}, classifier, x_test, y_test)
        label = f"fgsm eps {eps:.3g}"
        protocols.whole_test_set(run, table, models, {label: (x_adv, {"eps": float(eps)})}, y_test, metric="error_rate")
        for name, model in models.items():
            curves[name][0].append(float(eps))
            curves[name][1].append(1 - accuracy(model, x_adv, y_test))
    plots.plot_curves(run.add_plot("error_vs_eps.png"), curves, "FGSM eps (Linf)", ylabel="error rate",
                      title=f"{dataset}: APE-GAN, FGSM crafted on the classifier")

    # Adaptive protocol.
    eps = spec["pgd_eps"]
    nb_iter = 10 if run.scale == "tiny" else 40
    pgd = dict(eps=eps, eps_iter=2.5 * eps / nb_iter, nb_iter=nb_iter, rand_init=True, seed=run.seed)
    x, y = _common.subset(x_test, y_test, None if run.scale == "full" else max(settings["expensive"], 40))
    protocols.adaptive(run, "apegan", defended, classifier, x, y, "pgd", pgd)

    x_fgsm = _common.attacked(run, "fgsm", {"eps": SETTINGS[dataset]["train_eps"]}, classifier, x_test, y_test)
    plots.plot_sample_grid(
        run.add_plot("samples.png"), {"clean": x_test, "fgsm": x_fgsm, "apegan(fgsm)": purifier.purify(x_fgsm[:8])}
    )
    run.note("Error rate = 1 - accuracy on the images listed in n; APE-GAN is deterministic (stored BN statistics).")


@register_preset("apegan-mnist", "APE-GAN Tables 1-3 on MNIST (model C), plus adaptive PGD", paper="APE-GAN (Shen et al. 2017)",
                 attacks=TABLE1_ATTACKS)
def apegan_mnist(run):
    _run(run, "mnist")


@register_preset("apegan-cifar10", "APE-GAN Tables 1, 2 and 4 on the CIFAR-10 subset (model D), plus adaptive PGD",
                 paper="APE-GAN (Shen et al. 2017)", attacks=TABLE1_ATTACKS)
def apegan_cifar10(run):
    _run(run, "cifar10")
