"""Does a trained Pix2PixDefense purify real adversarial examples?

The default test is small (a few hundred MNIST digits, FGSM + PGD at eps 0.3
on model C, a tiny U-Net, ~30 s of training) and fails if training does not
work. The slow tests are the fuller runs whose numbers docs/pix2pix.md
reports (`pytest -m slow tfdefense/defenses/pix2pix_quality_test.py -s`);
they print one JSON line of results each.

Protocol (pix2pix paper, "accuracy on successful adversarial examples"): the
held-out test images the classifier gets right and the attack flips; no
defense scores 0% on them by construction. The clean cost is the classifier's
test accuracy on clean images minus its accuracy on purified clean images.
"""

import json
import os
import time

import keras
import numpy as np
import pytest

from tfdefense.defenses import Pix2PixDefense, make_attack_pairs
from tfdefense.inference import predict_labels
from tfdefense.models import patchgan_discriminator, unet_generator

MNIST_ATTACKS = [("fgsm", {"eps": 0.3}), ("pgd", {"eps": 0.3, "eps_iter": 0.03, "nb_iter": 20, "seed": 0})]
CIFAR_EPS = 8 / 255
CIFAR_ATTACKS = [
    ("fgsm", {"eps": CIFAR_EPS}),
    ("pgd", {"eps": CIFAR_EPS, "eps_iter": 2 / 255, "nb_iter": 10, "seed": 0}),
]


def purification_report(defense, classifier, x_test, y_test, attacks, cache_dir=None):
    """Accuracy on successful adversarial examples (overall and per attack) and clean cost."""
    clean_pred = predict_labels(classifier, x_test)
    purified_clean = defense.purify(x_test)
    report = {
        "clean_accuracy": float(np.mean(clean_pred == y_test)),
        "purified_clean_accuracy": float(np.mean(predict_labels(classifier, purified_clean) == y_test)),
        "per_attack": {},
    }
    report["clean_cost_points"] = 100 * (report["clean_accuracy"] - report["purified_clean_accuracy"])
    test = make_attack_pairs(classifier, x_test, y_test, attacks, mode="all", cache_dir=cache_dir)
    correct_before = clean_pred[test.source_index] == test.y
    successful = test.success & correct_before
    restored = predict_labels(classifier, defense.purify(test.x_adv[successful])) == test.y[successful]
    report["successful_adversarial"] = int(successful.sum())
    undefended = predict_labels(classifier, test.x_adv[successful]) == test.y[successful]
    report["no_defense_accuracy"] = float(np.mean(undefended))
    report["purified_accuracy"] = float(np.mean(restored))
    for k, name in enumerate(test.attack_names):
        mask = test.attack_index[successful] == k
        report["per_attack"][name] = {
            "successful": int(mask.sum()),
            "attack_success_rate": float(np.mean(test.success[test.attack_index == k])),
            "purified_accuracy": float(np.mean(restored[mask])) if mask.any() else None,
        }
    return report


def train_purifier(
    classifier,
    x_train,
    y_train,
    attacks,
    epochs,
    base_filters=8,
    max_filters=32,
    learning_rate=2e-3,
    batch_size=16,
    include_clean=False,
    lambda_cls=0.0,
    d_layers=1,
    cache_dir=None,
    seed=0,
    verbose=0,
    policy="float32",
):
    pairs = make_attack_pairs(
        classifier, x_train, y_train, attacks, mode="all", include_clean=include_clean, cache_dir=cache_dir
    )
    keras.utils.set_random_seed(seed)
    shape = x_train.shape[1:]
    keras.mixed_precision.set_global_policy(policy)
    try:
        defense = Pix2PixDefense(
            unet_generator(shape, base_filters=base_filters, max_filters=max_filters),
            patchgan_discriminator(shape, base_filters=base_filters, n_layers=d_layers),
            classifier=classifier if lambda_cls else None,
            lambda_cls=lambda_cls,
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    defense.compile(
        g_optimizer=keras.optimizers.Adam(learning_rate, beta_1=0.5),
        d_optimizer=keras.optimizers.Adam(learning_rate, beta_1=0.5),
    )
    start = time.perf_counter()
    history = defense.fit(pairs.dataset(batch_size=batch_size, seed=seed), epochs=epochs, verbose=verbose)
    return defense, history.history, {"pairs": len(pairs), "train_seconds": time.perf_counter() - start}


def test_purifier_learns_on_real_mnist_attacks(mnist, mnist_model_c):
    (x_train, y_train), (x_test, y_test) = mnist
    defense, history, _ = train_purifier(mnist_model_c, x_train[:600], y_train[:600], MNIST_ATTACKS, epochs=8)
    l1 = history["l1"]
    assert l1[-1] < 0.6 * l1[0] and l1[-1] < 0.08, l1
    report = purification_report(defense, mnist_model_c, x_test[:300], y_test[:300], MNIST_ATTACKS)
    assert report["successful_adversarial"] > 400 and report["no_defense_accuracy"] == 0.0
    # Far above no defense (0%) after ~30 s of training of a tiny U-Net.
    assert report["purified_accuracy"] > 0.6, report
    assert report["purified_clean_accuracy"] > 0.85, report


def _cache_dir():
    return os.environ.get("TFDEFENSE_ATTACK_CACHE")


def _policy():
    """TFDEFENSE_QUALITY_POLICY=mixed_bfloat16 trains the slow runs in bf16 (quality check of bf16)."""
    return os.environ.get("TFDEFENSE_QUALITY_POLICY", "float32")


@pytest.mark.paper
def test_mnist_full_quality(mnist, mnist_model_c):
    """8000 training digits x (FGSM, PGD, identity) pairs; held-out 2000 test digits."""
    (x_train, y_train), (x_test, y_test) = mnist
    epochs = int(os.environ.get("TFDEFENSE_QUALITY_EPOCHS", 10))
    defense, history, info = train_purifier(
        mnist_model_c,
        x_train,
        y_train,
        MNIST_ATTACKS,
        epochs=epochs,
        base_filters=16,
        max_filters=128,
        learning_rate=1e-3,
        batch_size=32,
        include_clean=True,
        cache_dir=_cache_dir(),
        verbose=2,
        policy=_policy(),
    )
    report = purification_report(defense, mnist_model_c, x_test, y_test, MNIST_ATTACKS, cache_dir=_cache_dir())
    print(
        json.dumps(
            {
                "experiment": "mnist_model_c_fgsm_pgd_eps0.3",
                **info,
                "epochs": epochs,
                "policy": _policy(),
                "final_l1": history["l1"][-1],
                **report,
            }
        )
    )
    assert report["purified_accuracy"] >= 0.95
    assert report["clean_cost_points"] <= 1.5


@pytest.mark.paper
def test_cifar10_with_and_without_consistency_loss(cifar10):
    """Model D trained briefly on the CIFAR-10 subset; FGSM + PGD at eps 8/255."""
    from tfdefense.models import model_d, train_classifier

    (x_train, y_train), (x_test, y_test) = cifar10
    keras.utils.set_random_seed(0)
    classifier = model_d()
    train_classifier(
        classifier,
        x_train,
        y_train,
        epochs=int(os.environ.get("TFDEFENSE_CIFAR_CLF_EPOCHS", 15)),
        batch_size=64,
        augment="flip_shift",
        seed=0,
        verbose=0,
    )
    epochs = int(os.environ.get("TFDEFENSE_QUALITY_EPOCHS", 10))
    results = {}
    for name, lambda_cls in (("without_cls", 0.0), ("with_cls", 1.0)):
        defense, history, info = train_purifier(
            classifier,
            x_train,
            y_train,
            CIFAR_ATTACKS,
            epochs=epochs,
            base_filters=32,
            max_filters=256,
            learning_rate=1e-3,
            batch_size=32,
            include_clean=True,
            lambda_cls=lambda_cls,
            cache_dir=_cache_dir(),
            verbose=2,
            policy=_policy(),
        )
        results[name] = {
            **info,
            "final_l1": history["l1"][-1],
            "final_cls": history["cls"][-1],
            **purification_report(defense, classifier, x_test, y_test, CIFAR_ATTACKS, _cache_dir()),
        }
    print(
        json.dumps(
            {
                "experiment": "cifar10_model_d_fgsm_pgd_eps8",
                "epochs": epochs,
                "policy": _policy(),
                "classifier_clean_accuracy": results["without_cls"]["clean_accuracy"],
                **results,
            }
        )
    )
    for result in results.values():
        assert result["purified_accuracy"] > 0.05  # above no defense (0%)
        assert result["clean_cost_points"] <= 1.5
    # The consistency loss is what makes the CIFAR purifier useful (10% -> 30% here).
    assert results["with_cls"]["purified_accuracy"] > results["without_cls"]["purified_accuracy"]
