import keras
import numpy as np
import pytest

import tfdefense.attacks.advgan_attack  # noqa: F401  (registers "advgan")
from tfdefense.attacks import get_attack, list_attacks
from tfdefense.defenses.trainers.advgan import AdvGAN, advgan_perturb
from tfdefense.evaluation import accuracy
from tfdefense.models import advgan_generator, model_c
from tfdefense.testing import assert_fit_rejects_bad_data, assert_keras_round_trip, assert_purify_rejects_bad_images

METRICS = {"g_loss", "d_loss", "clean_acc", "adv_acc"}


def _copy(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


@pytest.fixture(scope="module")
def data(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    return x_train[:2000], y_train[:2000], x_test[:500], y_test[:500]


def _trained_advgan(data, classifier, train_classifier, seed):
    """G (eps 0.3) trained 3 epochs on 2000 images against a copy of `classifier`, trained too or fixed."""
    keras.utils.set_random_seed(seed)
    gan = AdvGAN(advgan_generator(), _copy(classifier), eps=0.3, train_classifier=train_classifier)
    gan.compile()
    history = gan.fit(data[0], data[1], batch_size=64, epochs=3, verbose=0)
    return gan, history.history


@pytest.fixture(scope="module")
def attacker(data, mnist_model_c):
    """G trained against a fixed copy of model C."""
    return _trained_advgan(data, mnist_model_c, train_classifier=False, seed=0)


@pytest.fixture(scope="module")
def defender(data, mnist_model_c):
    """Generative adversarial training: G and a copy of model C alternate."""
    return _trained_advgan(data, mnist_model_c, train_classifier=True, seed=1)


def test_generator_learns_to_fool_a_fixed_classifier(attacker, data, mnist_model_c):
    gan, history = attacker
    x_test, y_test = data[2:]
    assert set(history) == METRICS
    assert history["adv_acc"][-1] < history["adv_acc"][0] - 0.3  # the attack gets stronger
    assert history["g_loss"][-1] < history["g_loss"][0]
    x_adv = gan.perturb(x_test)
    assert np.abs(x_adv - x_test).max() <= 0.3 + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1
    clean, under_g = accuracy(mnist_model_c, x_test, y_test), accuracy(mnist_model_c, x_adv, y_test)
    print(f"model C: clean {clean:.3f}, under G (eps 0.3) {under_g:.3f}")
    assert under_g < clean - 0.4
    # The fixed classifier was never updated.
    for a, b in zip(gan.classifier.get_weights(), mnist_model_c.get_weights(), strict=False):
        np.testing.assert_array_equal(a, b)


def test_registry_attack_is_one_forward_pass_of_the_generator(attacker, data, mnist_model_c):
    gan = attacker[0]
    x_test, y_test = data[2:]
    assert "advgan" in list_attacks()
    attack = get_attack("advgan", generator=gan.generator, eps=0.3)
    x_adv = attack(mnist_model_c, x_test[:100], y_test[:100])
    assert x_adv.dtype == np.float32 and x_adv.shape == (100, 28, 28, 1)
    np.testing.assert_allclose(x_adv, gan.perturb(x_test[:100]), atol=1e-6)
    np.testing.assert_allclose(x_adv, advgan_perturb(gan.generator, x_test[:100], 0.3), atol=1e-6)
    # An AdvGAN or a smaller eps work too; the config names the generator by its weights.
    weaker = get_attack("advgan", generator=gan, eps=0.1)(mnist_model_c, x_test[:100])
    assert np.abs(weaker - x_test[:100]).max() <= 0.1 + 1e-6
    assert len(attack.config()["params"]["generator"]["sha256"]) == 64
    with pytest.raises(ValueError, match="`generator`.*Received: generator=None"):
        get_attack("advgan", eps=0.3)
    with pytest.raises(ValueError, match="`eps`.*Received: eps=1.5"):
        get_attack("advgan", generator=gan.generator, eps=1.5)
    with pytest.raises(ValueError, match="`generator`"):
        get_attack("advgan", generator=model_c())


def test_adversarial_training_makes_the_classifier_robust_to_g(defender, attacker, data, mnist_model_c):
    gan, history = defender
    x_test, y_test = data[2:]
    robust = gan.classifier
    clean = accuracy(robust, x_test, y_test)
    own_g = accuracy(robust, gan.perturb(x_test), y_test)
    plain_own_g = accuracy(mnist_model_c, attacker[0].perturb(x_test), y_test)
    transfer = accuracy(robust, attacker[0].perturb(x_test), y_test)
    print(
        f"adv-trained: clean {clean:.3f}, under its G {own_g:.3f}, under the plain model's G {transfer:.3f}; "
        f"plain model C under its G {plain_own_g:.3f}"
    )
    assert clean > 0.95
    assert own_g > plain_own_g + 0.3
    assert transfer > plain_own_g + 0.3
    # advgan(x) is the trained classifier's logits.
    np.testing.assert_allclose(np.asarray(gan(x_test[:8])), np.asarray(robust(x_test[:8])), atol=1e-6)


def _perturbations_and_logits(gan, x):
    return np.concatenate([gan.perturb(x).ravel(), np.asarray(gan(x)).ravel()])


def test_keras_round_trip(tmp_path, defender, data):
    gan = defender[0]
    x = data[2][:32]
    gan.eps.assign(0.2)
    try:
        loaded = assert_keras_round_trip(gan, x, tmp_path, outputs=_perturbations_and_logits)
        assert loaded.train_classifier and float(loaded.eps) == pytest.approx(0.2)
        attack = get_attack("advgan", generator=str(tmp_path / "advgan.keras"), eps=0.2)
        np.testing.assert_allclose(attack(gan.classifier, x), gan.perturb(x), atol=1e-6)
    finally:
        gan.eps.assign(0.3)


def test_labels_are_optional_and_inputs_checked(data):
    x, y = data[0][:64], data[1][:64]
    keras.utils.set_random_seed(0)
    gan = AdvGAN(advgan_generator(preset="tiny"), model_c(), eps=0.1)
    gan.compile()
    history = gan.fit(x, batch_size=32, epochs=1, verbose=0)  # y=None: the classifier's predictions
    assert gan.g_optimizer.iterations.numpy() == 2 and gan.d_optimizer.iterations.numpy() == 2
    assert all(np.isfinite(v).all() for v in history.history.values())
    with pytest.raises(ValueError, match="`eps`.*Received: eps=1.5"):
        AdvGAN(advgan_generator(preset="tiny"), model_c(), eps=1.5)
    with pytest.raises(ValueError, match="`classifier`"):
        AdvGAN(advgan_generator(preset="tiny"), model_c(input_shape=(32, 32, 3)))
    with pytest.raises(ValueError, match="`train_classifier`"):
        AdvGAN(advgan_generator(preset="tiny"), model_c(), train_classifier="yes")
    assert_fit_rejects_bad_data(gan, x, y, y_required=False)
    assert_purify_rejects_bad_images(gan, x, method="perturb")


@pytest.mark.paper
def test_poster_table_fgsm_vs_generator(mnist, mnist_model_c):
    """One-step accuracy under FGSM and under G at eps 0.1, 0.3, 0.5, 0.7, plain vs adversarially trained.

    Per eps (3 epochs of the 8000-image split each, ~5 min per eps on 2 shared cores):
    G_plain is trained against the frozen plain model C; generative adversarial
    training alternates a fresh G with a copy of model C; a third G is trained
    against the final adversarially trained classifier (G_fresh, the stronger
    evaluation). Accuracy on the 2000 held-out images. See docs/gans.md.
    """
    (x_train, y_train), (x_test, y_test) = mnist
    rows = []
    for eps in (0.1, 0.3, 0.5, 0.7):

        def train(classifier, train_classifier, eps=eps):
            keras.utils.set_random_seed(0)
            gan = AdvGAN(advgan_generator(), _copy(classifier), eps=eps, train_classifier=train_classifier)
            gan.compile()
            gan.fit(x_train, y_train, batch_size=64, epochs=3, verbose=0)
            return gan

        plain_gan = train(mnist_model_c, False)
        robust_gan = train(mnist_model_c, True)
        plain, robust = mnist_model_c, robust_gan.classifier
        fresh_gan = train(robust, False)
        fgsm = get_attack("fgsm", eps=eps)
        row = {
            "eps": eps,
            "plain_clean": accuracy(plain, x_test, y_test),
            "plain_fgsm": accuracy(plain, fgsm(plain, x_test, y_test), y_test),
            "plain_G": accuracy(plain, plain_gan.perturb(x_test), y_test),
            "robust_clean": accuracy(robust, x_test, y_test),
            "robust_fgsm": accuracy(robust, fgsm(robust, x_test, y_test), y_test),
            "robust_own_G": accuracy(robust, robust_gan.perturb(x_test), y_test),
            "robust_plain_G": accuracy(robust, plain_gan.perturb(x_test), y_test),
            "robust_fresh_G": accuracy(robust, fresh_gan.perturb(x_test), y_test),
        }
        rows.append(row)
        print(" | ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    for row in rows:
        assert row["robust_own_G"] >= row["plain_G"]
        assert row["robust_fresh_G"] >= row["plain_G"] - 0.02
        assert row["robust_clean"] > 0.9
