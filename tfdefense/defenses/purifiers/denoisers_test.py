import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.attacks import get_attack
from tfdefense.defenses import DefendedClassifier
from tfdefense.defenses.purifiers.denoisers import Denoiser
from tfdefense.evaluation import accuracy
from tfdefense.models import conv_autoencoder_network, dncnn_network
from tfdefense.testing import assert_fit_rejects_bad_data, assert_keras_round_trip, purification_accuracies

# 3 epochs left the tiny DnCNN between 0.14 and 0.61 FGSM accuracy depending on the
# process's random state (test order); 6 epochs gave 0.94.
EPOCHS_DNCNN = 6


@pytest.fixture(scope="module")
def fgsm_pairs(mnist, mnist_model_c, mnist_eval_batch):
    """FGSM eps 0.3 on model C: 2000 training pairs and the 200 held-out eval digits."""
    (x_train, y_train), _ = mnist
    fgsm = get_attack("fgsm", eps=0.3)
    x_adv = fgsm(mnist_model_c, x_train[:2000], y_train[:2000])
    x_eval, y_eval = mnist_eval_batch
    return x_adv, x_train[:2000], fgsm(mnist_model_c, x_eval, y_eval), x_eval, y_eval


@pytest.fixture(scope="module")
def trained(fgsm_pairs):
    x_adv, x_clean = fgsm_pairs[:2]
    models = {}
    for kind, build, learning_rate, epochs in (
        ("autoencoder", lambda: Denoiser.autoencoder("default"), 1e-3, 3),
        ("dncnn", lambda: Denoiser.dncnn("tiny"), 3e-3, EPOCHS_DNCNN),
    ):
        keras.utils.set_random_seed(0)
        model = build()
        model.compile(optimizer=keras.optimizers.Adam(learning_rate))
        history = model.fit(x_adv, x_clean, batch_size=32, epochs=epochs, verbose=0)
        models[kind] = (model, history.history)
    return models


@pytest.mark.parametrize("kind", ["autoencoder", "dncnn"])
def test_training_lowers_the_loss_and_restores_fgsm_accuracy(kind, trained, fgsm_pairs, mnist_model_c):
    model, history = trained[kind]
    _, _, x_adv, x, y = fgsm_pairs
    assert set(history) == {"loss", "mse", "psnr"}
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    no_defense, defended, clean = purification_accuracies(mnist_model_c, model, x_adv, x, y, name=kind)
    assert no_defense < 0.15
    assert defended > no_defense + 0.5
    assert clean > 0.9


def test_round_trip_defended_classifier_and_adaptive_gradient(tmp_path, trained, fgsm_pairs, mnist_model_c):
    model = trained["dncnn"][0]
    x_adv, x, y = fgsm_pairs[2][:32], fgsm_pairs[3][:32], fgsm_pairs[4][:32]
    assert not model.stochastic
    loaded = assert_keras_round_trip(model, x_adv, tmp_path)  # the optimizer state too
    assert loaded.loss_kind == "mse"
    pipeline = DefendedClassifier(model, mnist_model_c)
    assert not pipeline.stochastic
    np.testing.assert_allclose(np.asarray(pipeline(x_adv)), np.asarray(mnist_model_c(model(x_adv))), atol=1e-5)
    with tf.GradientTape() as tape:
        inputs = tf.constant(x)
        tape.watch(inputs)
        logits = pipeline(inputs)
    assert np.abs(np.asarray(tape.gradient(logits, inputs))).sum() > 0
    # The white-box attack through the differentiable denoiser beats the transferred FGSM.
    pgd = get_attack("pgd", eps=0.3, eps_iter=0.05, nb_iter=10, seed=0)
    adaptive = accuracy(pipeline, pgd(pipeline, x, y), y)
    transferred = accuracy(mnist_model_c, model.purify(x_adv), y)
    assert adaptive < transferred - 0.3


def test_gaussian_noise_training_and_presets(mnist):
    (x_train, _), _ = mnist
    keras.utils.set_random_seed(0)
    model = Denoiser.dncnn("tiny", noise_stddev=0.3, seed=0)  # a Gaussian denoiser: fit(x_clean, x_clean)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(x_train[:1024], x_train[:1024], batch_size=32, epochs=2, verbose=0)
    rng = np.random.default_rng(0)
    noisy = np.clip(x_train[512:640] + rng.normal(0, 0.3, x_train[512:640].shape), 0, 1).astype(np.float32)
    before = np.mean((noisy - x_train[512:640]) ** 2)
    after = np.mean((model.purify(noisy) - x_train[512:640]) ** 2)
    assert after < 0.6 * before
    assert len([layer for layer in dncnn_network(depth=17).layers if isinstance(layer, keras.layers.Conv2D)]) == 17
    assert Denoiser.dncnn("paper").network.count_params() > 500_000
    assert Denoiser.autoencoder("tiny").network.count_params() < Denoiser.autoencoder("default").network.count_params()
    scores = model.evaluate(noisy, x_train[512:640], return_dict=True, verbose=0)
    assert scores["mse"] == pytest.approx(after, rel=1e-3)


def test_bad_input_is_rejected():
    model = Denoiser.autoencoder("tiny")
    with pytest.raises(ValueError, match="`loss`.*Received: loss='l3'"):
        Denoiser.autoencoder("tiny", loss="l3")
    with pytest.raises(ValueError, match="`noise_stddev`.*Received: noise_stddev=-0.1"):
        Denoiser.autoencoder("tiny", noise_stddev=-0.1)
    with pytest.raises(ValueError, match="`preset`.*Received: preset='huge'"):
        Denoiser.dncnn("huge")
    with pytest.raises(ValueError, match="`depth`.*Received: depth=1"):
        dncnn_network(depth=1)
    with pytest.raises(ValueError, match="`image_shape`.*Received: image_shape=\\(30, 30, 1\\)"):
        conv_autoencoder_network((30, 30, 1))
    with pytest.raises(ValueError, match="`network`"):
        Denoiser("unet")
    with pytest.raises(ValueError, match="`x`.*values in \\[0, 1\\]"):
        model.purify(np.full((2, 28, 28, 1), 255.0, np.float32))
    with pytest.raises(ValueError, match="`x`.*Received: x=.?array of shape \\(2, 28, 28, 3\\)"):
        model.purify(np.zeros((2, 28, 28, 3), np.float32))
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(np.zeros((4, 28, 28, 1), np.float32), np.zeros((4, 28, 28, 1), np.float32), verbose=0)
    model.compile()
    with pytest.raises(ValueError, match="`loss`"):
        model.compile(loss="mse")
    assert_fit_rejects_bad_data(model, np.zeros((4, 28, 28, 1), np.float32), np.zeros((4, 28, 28, 1), np.float32))
