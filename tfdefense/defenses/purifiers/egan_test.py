import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.attacks import get_attack
from tfdefense.defenses.purifiers.egan import DCGAN, EGAN
from tfdefense.evaluation import accuracy
from tfdefense.models.dcgan import dcgan_generator, dcgan_preset
from tfdefense.models.egan_encoder import egan_encoder, egan_encoder_preset
from tfdefense.testing import (
    InterruptAt,
    assert_config_round_trip,
    assert_fit_rejects_bad_data,
    assert_keras_round_trip,
    assert_purify_rejects_bad_images,
    assert_saved_model_round_trip,
    conv_compute_dtypes,
    purification_accuracies,
)


@pytest.fixture(scope="module")
def dcgan(mnist):
    """A half-width MNIST DCGAN (z of 30), 3 epochs on the 8000 training digits, labels unused."""
    (x_train, _), _ = mnist
    keras.utils.set_random_seed(0)
    generator, discriminator = dcgan_preset("mnist", base_filters=32)
    gan = DCGAN(generator, discriminator, seed=0)
    gan.compile()
    history = gan.fit(x_train, batch_size=64, epochs=3, verbose=0)
    return gan, history.history


@pytest.fixture(scope="module")
def egan(dcgan, mnist):
    """The light encoder, 94 steps of 64 generated images (the 6000 images only set the step count)."""
    (x_train, _), (x_test, _) = mnist
    keras.utils.set_random_seed(0)
    model = EGAN(dcgan[0].generator, egan_encoder_preset("light"), seed=0)
    model.compile()
    before = model.evaluate(x_test[:256], batch_size=128, return_dict=True, verbose=0)
    generator_weights = [np.array(w) for w in model.generator.weights]
    history = model.fit(x_train[:6000], batch_size=64, epochs=1, validation_data=x_test[:256], verbose=0)
    for before_w, after_w in zip(generator_weights, model.generator.weights, strict=False):  # G is frozen
        np.testing.assert_array_equal(before_w, np.asarray(after_w))
    return model, before, history.history


SPREAD = (
    "Spread measured 2026-12-06 on a 2-core AMD EPYC (AVX-512, no AMX) over seeds 0, 1, 2 of model C, "
    "the DCGAN and the EGAN and 1 / 2 TensorFlow threads (intra- and inter-op): 6 runs."
)


def test_dcgan_learns_digits(dcgan, mnist_model_c):
    """Model C reads the DCGAN's samples as digits of most classes.

    Spread (see SPREAD): mean max-probability 0.711-0.795 (threshold 0.6), classes present 9-10 (threshold 8).
    """
    gan, history = dcgan
    assert set(history) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(np.isfinite(v).all() for v in history.values())
    samples = gan.sample(300, seed=1)
    assert samples.shape == (300, 28, 28, 1) and 0 <= samples.min() and samples.max() <= 1
    probabilities = tf.nn.softmax(mnist_model_c(samples)).numpy()
    labels = probabilities.argmax(1)
    counts = np.bincount(labels, minlength=10)
    print(f"DCGAN samples: mean max-probability {probabilities.max(1).mean():.3f}, classes {counts}")
    assert probabilities.max(1).mean() > 0.6  # model C reads the samples as digits
    assert len(np.unique(labels)) >= 8  # of most classes (no mode collapse)
    np.testing.assert_array_equal(gan.sample(4, seed=2), gan.sample(4, seed=2))


def test_encoder_training_lowers_the_reconstruction_error(egan):
    """Spread (see SPREAD): held-out real-digit MSE after / before training 0.528-0.542 (threshold 0.7)."""
    model, before, history = egan
    assert history["mse"][0] < before["mse"]
    assert history["val_real_mse"][-1] < 0.7 * before["real_mse"]  # real digits are reconstructed better too
    assert model.e_optimizer.iterations.numpy() == 94


def test_purification_beats_no_defense_under_fgsm(egan, mnist, mnist_model_c):
    """EGAN restores part of the accuracy FGSM eps 0.3 takes away (500 held-out digits).

    Spread (see SPREAD): no defense 0.002-0.012 (threshold < 0.05); purified minus no defense 0.130-0.266
    (threshold > 0.05); clean through EGAN 0.474-0.620 (threshold > 0.3; 0.400 was measured on a CPU with AMX).
    """
    model = egan[0]
    _, (x_test, y_test) = mnist
    x, y = x_test[:500], y_test[:500]
    x_adv = get_attack("fgsm", eps=0.3)(mnist_model_c, x, y)
    no_defense, purified, clean = purification_accuracies(mnist_model_c, model, x_adv, x, y)
    assert no_defense < 0.05
    assert purified > no_defense + 0.05
    assert clean > 0.3
    # Purification is deterministic: G(E(x)) with stored batch-norm statistics.
    np.testing.assert_allclose(model.purify(x[:1]), model.purify(x[:16])[:1], atol=1e-5)
    codes = model.encode(x[:16])
    np.testing.assert_allclose(np.asarray(model.generator(codes)), model.purify(x[:16]), atol=1e-5)


def test_round_trip_defended_classifier_and_saved_model(tmp_path, egan, dcgan, mnist, mnist_model_c):
    from tfdefense.defenses import DefendedClassifier

    model = egan[0]
    _, (x_test, _) = mnist
    x = x_test[:16]
    assert_keras_round_trip(model, x, tmp_path)
    assert_keras_round_trip(dcgan[0], None, tmp_path, outputs=lambda gan, _: gan.sample(4, seed=3))
    pipeline = DefendedClassifier(model, mnist_model_c)
    expected = np.asarray(mnist_model_c(model(x)))
    np.testing.assert_allclose(np.asarray(pipeline(x)), expected, atol=1e-5)
    assert_saved_model_round_trip(model, x, tmp_path, classifier=mnist_model_c)


def _tiny_egan(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    generator, _ = dcgan_preset("tiny")
    return EGAN(generator, egan_encoder_preset("tiny"), seed=seed, **kwargs)


def test_latent_weight_and_backup_and_restore(tmp_path, mnist):
    (x_train, _), _ = mnist
    x = x_train[:128]
    model = _tiny_egan(latent_weight=0.5, input_noise=0.3)
    model.compile()
    scores = model.evaluate(x, batch_size=64, return_dict=True, verbose=0)
    assert scores["loss"] == pytest.approx(scores["mse"] + 0.5 * scores["latent_mse"], rel=1e-4)
    assert assert_config_round_trip(model).input_noise == 0.3

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    reference = _tiny_egan(seed=1)
    reference.compile()
    reference.fit(x, batch_size=64, epochs=2, verbose=0)
    interrupted = _tiny_egan(seed=1)
    interrupted.compile()
    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted.fit(x, batch_size=64, epochs=2, verbose=0, callbacks=[backup, InterruptAt(1)])
    resumed = _tiny_egan(seed=1)
    resumed.compile()
    restore = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    history = resumed.fit(x, batch_size=64, epochs=2, verbose=0, callbacks=[restore])
    assert len(history.history["loss"]) == 1  # only the second epoch ran
    assert resumed.e_optimizer.iterations.numpy() == reference.e_optimizer.iterations.numpy() == 4
    np.testing.assert_allclose(resumed.purify(x[:8]), reference.purify(x[:8]), atol=1e-4)


def test_mirrored_strategy_matches_single_device(mnist):
    (x_train, _), _ = mnist
    x = x_train[:128]
    results = []
    for strategy in (None, tf.distribute.MirroredStrategy(["/cpu:0"])):
        with strategy.scope() if strategy else tf.distribute.get_strategy().scope():
            model = _tiny_egan(seed=2)
            model.compile()
        history = model.fit(tf.data.Dataset.from_tensor_slices(x).batch(32), epochs=1, verbose=0).history
        results.append((history, model.purify(x[:8]), np.asarray(model.latent_seed)))
    (h1, out1, seed1), (h2, out2, seed2) = results
    np.testing.assert_allclose(h1["mse"], h2["mse"], rtol=1e-4)
    np.testing.assert_allclose(out1, out2, atol=1e-5)
    np.testing.assert_array_equal(seed1, [2, 4]) and np.testing.assert_array_equal(seed2, seed1)


def test_bad_input_is_rejected(mnist):
    (x_train, _), _ = mnist
    model = _tiny_egan()
    assert_purify_rejects_bad_images(model, x_train[:4])
    with pytest.raises(ValueError, match="`x`.*1 channel.*Received: x=.?array of shape \\(2, 28, 28, 3\\)"):
        model.purify(np.zeros((2, 28, 28, 3), np.float32))
    with pytest.raises(ValueError, match="`x`.*values in \\[0, 1\\].*255"):
        model.purify(x_train[:4] * 255.0)
    with pytest.raises(ValueError, match="`latent_dim`.*Received: latent_dim=0"):
        dcgan_generator(latent_dim=0)
    with pytest.raises(ValueError, match="`latent_dim`.*Received: latent_dim=-2"):
        egan_encoder(latent_dim=-2)
    with pytest.raises(ValueError, match="`encoder`.*\\(N, 30\\)"):
        EGAN(dcgan_generator(30, base_filters=4), egan_encoder((28, 28, 1), latent_dim=12, width=4, same_blocks=0))
    with pytest.raises(ValueError, match="`encoder`.*\\(28, 28, 1\\)"):
        EGAN(dcgan_generator(30, base_filters=4), egan_encoder((32, 32, 3), width=4, same_blocks=0))
    with pytest.raises(ValueError, match="`latent_weight`.*Received: latent_weight=-1"):
        _tiny_egan(latent_weight=-1)
    with pytest.raises(ValueError, match="`input_noise`.*Received: input_noise=1.5"):
        _tiny_egan(input_noise=1.5)
    with pytest.raises(ValueError, match="`z`.*\\(N, 30\\)"):
        DCGAN.from_preset("tiny")(np.zeros((2, 12), np.float32))
    gan = DCGAN.from_preset("tiny")
    with pytest.raises(RuntimeError, match="compile"):
        gan.fit(x_train[:8], verbose=0)
    gan.compile()
    assert_fit_rejects_bad_data(gan, x_train[:8])
    gan.compile()
    with pytest.raises(ValueError, match="`x`.*values in \\[0, 1\\]"):
        gan.fit(x_train[:8] * 3.0, verbose=0)
    with pytest.raises(ValueError, match="`optimizer`"):
        model.compile(optimizer="adam")


@pytest.fixture(scope="module")
def paper_dcgan(mnist):
    """The MNIST DCGAN (z of 30), 40 epochs on the 8000 digits (~30 min on 2 shared cores; slow tests only)."""
    (x_train, _), _ = mnist
    keras.utils.set_random_seed(0)
    gan = DCGAN.from_preset("mnist", seed=0)
    gan.compile()
    gan.fit(x_train, batch_size=64, epochs=40, verbose=2)
    return gan


def _accuracy_vs_eps(model, classifier, x_test, y_test):
    results = {}
    for eps in np.round(np.arange(0.0, 1.01, 0.1), 1):
        x = x_test if eps == 0 else get_attack("fgsm", eps=float(eps))(classifier, x_test, y_test)
        results[float(eps)] = accuracy(classifier, model.purify(x), y_test)
        print(f"eps {eps:.1f}: EGAN accuracy {results[float(eps)]:.4f}", flush=True)
    return results


@pytest.mark.paper
@pytest.mark.xfail(
    reason="the >= 60% target at FGSM eps 0.3 is not reached with the paper's loss: 44-50% early in encoder "
    "training, falling as the encoder inverts G better; clean accuracy ~91% (docs/gans.md)",
    strict=False,
)
def test_paper_encoder_paper_loss(paper_dcgan, mnist, mnist_model_c, tmp_path):
    """The paper's encoder and loss, 4 epochs of 125 steps (~15 min per epoch on 2 shared cores)."""
    (x_train, _), (x_test, y_test) = mnist
    model = EGAN(paper_dcgan.generator, egan_encoder_preset("paper"), seed=0)
    model.compile()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "egan_backup"))
    model.fit(x_train, batch_size=64, epochs=4, verbose=2, callbacks=[backup])
    results = _accuracy_vs_eps(model, mnist_model_c, x_test, y_test)
    assert results[0.0] >= accuracy(mnist_model_c, x_test, y_test) - 0.05
    assert results[0.3] >= 0.6


@pytest.mark.paper
def test_light_encoder_with_input_noise(paper_dcgan, mnist, mnist_model_c):
    """Beyond the paper: random-sign input noise (input_noise=0.4) while training a light encoder, 6 epochs.

    Measured 60.95% at FGSM eps 0.3 and 89.65% clean (model C alone: 97.6%).
    """
    (x_train, _), (x_test, y_test) = mnist
    keras.utils.set_random_seed(0)
    model = EGAN(paper_dcgan.generator, egan_encoder_preset("light"), input_noise=0.4, seed=0)
    model.compile()
    model.fit(x_train, batch_size=64, epochs=6, verbose=2)
    results = _accuracy_vs_eps(model, mnist_model_c, x_test, y_test)
    assert results[0.3] >= 0.55
    assert results[0.0] >= 0.85


def test_bf16_dcgan_and_encoder_steps_keep_float32_state(tmp_path, mnist):
    (x_train, _), (x_test, _) = mnist
    keras.utils.set_random_seed(0)
    generator, discriminator = dcgan_preset("tiny")
    gan = DCGAN(generator, discriminator, seed=0, precision="bf16")
    gan.compile()
    history = gan.fit(x_train[:512], batch_size=64, epochs=2, verbose=0).history
    assert np.isfinite(history["d_loss"]).all() and np.isfinite(history["g_loss"]).all()
    images = tf.TensorSpec((8, *gan.image_shape), tf.float32)
    assert conv_compute_dtypes(tf.function(gan.train_step).get_concrete_function(images)) == {"bfloat16"}
    assert {v.dtype for v in gan.weights + gan.g_optimizer.variables} <= {"float32", "int64"}
    assert gan.sample(4, seed=0).dtype == np.float32
    assert assert_keras_round_trip(gan, np.zeros((4, gan.latent_dim), np.float32), tmp_path).precision == "bf16"

    encoder = egan_encoder_preset("tiny", gan.image_shape, gan.latent_dim)
    egan = EGAN(gan.generator, encoder, seed=0, precision="bf16")
    egan.compile()
    losses = egan.fit(x_train[:1024], batch_size=64, epochs=3, verbose=0).history["loss"]
    assert losses[-1] < losses[0], losses
    assert conv_compute_dtypes(tf.function(egan.train_step).get_concrete_function(images)) == {"bfloat16"}
    assert conv_compute_dtypes(tf.function(egan.call).get_concrete_function(images)) == {"float32"}
    assert egan.purify(x_test[:4]).dtype == np.float32
    assert assert_keras_round_trip(egan, x_test[:4], tmp_path, atol=1e-6).precision == "bf16"
    with pytest.raises(ValueError, match="`precision`"):
        EGAN(gan.generator, encoder, precision="fp16")
