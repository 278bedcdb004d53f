import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.attacks import get_attack
from tfdefense.data import make_paired_pipeline
from tfdefense.defenses.purifiers.apegan import APEGAN
from tfdefense.defenses.trainers.paired import make_attack_pairs
from tfdefense.evaluation import accuracy
from tfdefense.models.apegan_nets import apegan_discriminator_preset, apegan_generator_preset
from tfdefense.testing import (
    assert_config_round_trip,
    assert_fit_rejects_bad_data,
    assert_keras_round_trip,
    assert_purify_rejects_bad_images,
    assert_saved_model_round_trip,
    purification_accuracies,
)

METRICS = {"d_loss", "g_mse", "g_adv", "g_total"}


def tiny_apegan(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    return APEGAN.from_preset("tiny", **kwargs)


@pytest.fixture(scope="module")
def fgsm_data(mnist, mnist_model_c):
    """FGSM eps 0.3 on model C: 2000 training pairs (train split), 500 held-out test images."""
    (x_train, y_train), (x_test, y_test) = mnist
    pairs = make_attack_pairs(mnist_model_c, x_train[:2000], y_train[:2000], [("fgsm", {"eps": 0.3})], mode="all")
    np.testing.assert_array_equal(pairs.source_index, np.arange(2000))
    x_test_adv = get_attack("fgsm", eps=0.3)(mnist_model_c, x_test[:500], y_test[:500])
    return pairs.x_adv, pairs.x_clean, x_test_adv, x_test[:500], y_test[:500]


@pytest.fixture(scope="module")
def trained(fgsm_data):
    """The paper's MNIST networks, 3 short epochs on 2000 pairs."""
    x_adv, x_clean = fgsm_data[:2]
    keras.utils.set_random_seed(0)
    defense = APEGAN.from_preset("mnist")
    defense.compile()
    history = defense.fit(make_paired_pipeline(x_adv, x_clean, batch_size=32, seed=0), epochs=3, verbose=0)
    return defense, history.history


def test_training_lowers_the_loss_and_restores_accuracy(trained, fgsm_data, mnist_model_c):
    defense, history = trained
    _, _, x_test_adv, x_test, y_test = fgsm_data
    assert set(history) == METRICS
    g_mse = history["g_mse"]
    assert g_mse[0] > g_mse[1] > g_mse[2] and g_mse[2] < 0.5 * g_mse[0]
    no_defense, purified, clean = purification_accuracies(mnist_model_c, defense, x_test_adv, x_test, y_test)
    assert no_defense < 0.1
    assert purified > no_defense + 0.3
    assert clean > 0.9


def test_two_generator_updates_per_discriminator_update_and_loss_terms(fgsm_data):
    x_adv, x_clean = fgsm_data[0][:64], fgsm_data[1][:64]
    defense = tiny_apegan()
    assert float(defense.mse_weight) == pytest.approx(0.7) and float(defense.adv_weight) == pytest.approx(0.3)
    defense.compile()
    assert isinstance(defense.g_optimizer, keras.optimizers.Adam)
    assert np.isclose(float(defense.g_optimizer.learning_rate), 2e-4)
    defense.fit(x_adv, x_clean, batch_size=32, epochs=1, verbose=0)
    assert defense.d_optimizer.iterations.numpy() == 2 and defense.g_optimizer.iterations.numpy() == 4
    scores = defense.evaluate(x_adv, x_clean, batch_size=64, return_dict=True, verbose=0)
    assert scores["g_total"] == pytest.approx(0.7 * scores["g_mse"] + 0.3 * scores["g_adv"], rel=1e-4)
    # The loss weights are variables read by the compiled step.
    defense.adv_weight.assign(0.0)
    scores = defense.evaluate(x_adv, x_clean, batch_size=64, return_dict=True, verbose=0)
    assert scores["g_total"] == pytest.approx(0.7 * scores["g_mse"], rel=1e-4)


def test_purification_is_deterministic(trained, fgsm_data):
    defense = trained[0]
    x = fgsm_data[2][:16]
    assert not defense.stochastic
    np.testing.assert_array_equal(np.asarray(defense(x)), np.asarray(defense(x)))
    # One image gives the same result alone or in a batch (stored BN statistics).
    np.testing.assert_allclose(defense.purify(x[:1]), defense.purify(x)[:1], atol=1e-5)


def test_keras_round_trip(tmp_path, trained, fgsm_data):
    defense = trained[0]
    x = fgsm_data[2][:32]
    loaded = assert_keras_round_trip(defense, x, tmp_path)
    assert loaded.generator_steps == 2
    config = assert_config_round_trip(defense).get_config()
    assert config["mse_weight"] == 0.7 and config["generator"]["class_name"] == "Functional"


def test_defended_classifier_and_saved_model(tmp_path, trained, fgsm_data, mnist_model_c):
    from tfdefense.defenses import DefendedClassifier

    defense = trained[0]
    x = fgsm_data[2][:16]
    pipeline = DefendedClassifier(defense, mnist_model_c)
    expected = np.asarray(mnist_model_c(defense(x)))
    np.testing.assert_allclose(np.asarray(pipeline(x)), expected, atol=1e-5)
    # An attack through the whole pipeline (gradients flow through the purifier).
    with tf.GradientTape() as tape:
        inputs = tf.constant(x)
        tape.watch(inputs)
        logits = pipeline(inputs)
    assert np.abs(np.asarray(tape.gradient(logits, inputs))).sum() > 0
    assert_saved_model_round_trip(defense, x, tmp_path, classifier=mnist_model_c)


def test_bad_input_is_rejected(fgsm_data):
    x_adv, x_clean = fgsm_data[0][:8], fgsm_data[1][:8]
    defense = tiny_apegan()
    assert_purify_rejects_bad_images(defense, x_adv)
    with pytest.raises(ValueError, match="`x`.*1 channel.*Received: x=.?array of shape \\(2, 28, 28, 3\\)"):
        defense.purify(np.zeros((2, 28, 28, 3), np.float32))
    with pytest.raises(ValueError, match="`mse_weight`.*Received: mse_weight=-1"):
        tiny_apegan(mse_weight=-1)
    with pytest.raises(ValueError, match="`generator_steps`.*Received: generator_steps=0"):
        tiny_apegan(generator_steps=0)
    with pytest.raises(ValueError, match="`discriminator`"):
        APEGAN(apegan_generator_preset("tiny"), apegan_discriminator_preset("tiny", input_shape=(32, 32, 3)))
    with pytest.raises(ValueError, match="`generator`.*Received: generator='unet'"):
        APEGAN("unet", apegan_discriminator_preset("tiny"))
    with pytest.raises(RuntimeError, match="compile"):
        defense.fit(x_adv, x_clean, verbose=0)
    defense.compile()
    with pytest.raises(ValueError, match="`optimizer`"):
        defense.compile(optimizer="adam")
    assert_fit_rejects_bad_data(defense, x_adv, x_clean)
    with pytest.raises(ValueError, match="`y`.*clean images"):
        defense.fit(x_adv, None, verbose=0)


def test_mirrored_strategy_matches_single_device(fgsm_data):
    x_adv, x_clean = fgsm_data[0][:64], fgsm_data[1][:64]
    results = []
    for strategy in (None, tf.distribute.MirroredStrategy(["/cpu:0"])):
        with strategy.scope() if strategy else tf.distribute.get_strategy().scope():
            defense = tiny_apegan(seed=3)
            defense.compile()
        history = defense.fit(make_paired_pipeline(x_adv, x_clean, batch_size=32, shuffle=False), epochs=2, verbose=0)
        results.append((history.history, defense.purify(x_adv[:8])))
    (h1, out1), (h2, out2) = results
    for name in METRICS:
        np.testing.assert_allclose(h1[name], h2[name], rtol=1e-4)
    np.testing.assert_allclose(out1, out2, atol=1e-5)


@pytest.mark.paper
def test_paper_scale_mnist_error_rates(mnist, mnist_model_c):
    """The paper's MNIST setup on the 8000/2000 split: FGSM eps 0.3 crafted on the training split."""
    (x_train, y_train), (x_test, y_test) = mnist
    pairs = make_attack_pairs(mnist_model_c, x_train, y_train, [("fgsm", {"eps": 0.3})], mode="all")
    x_adv, x_clean = pairs.x_adv, pairs.x_clean
    x_test_adv = get_attack("fgsm", eps=0.3)(mnist_model_c, x_test, y_test)
    keras.utils.set_random_seed(0)
    defense = APEGAN.from_preset("mnist")
    defense.compile()
    # 8000 pairs: 15 epochs of batch 64 (1875 steps) is the paper's 2 epochs of 60000.
    defense.fit(make_paired_pipeline(x_adv, x_clean, batch_size=64, seed=0), epochs=15, verbose=2)
    base_clean = 1 - accuracy(mnist_model_c, x_test, y_test)
    base_adv = 1 - accuracy(mnist_model_c, x_test_adv, y_test)
    clean = 1 - accuracy(mnist_model_c, defense.purify(x_test), y_test)
    adv = 1 - accuracy(mnist_model_c, defense.purify(x_test_adv), y_test)
    print(f"error rates: clean {base_clean:.4f} -> {clean:.4f} with APE-GAN; FGSM 0.3 {base_adv:.4f} -> {adv:.4f}")
    assert adv <= 0.05
    assert clean <= base_clean + 0.01
