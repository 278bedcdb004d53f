import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.attacks import get_attack
from tfdefense.defenses import DefendedClassifier
from tfdefense.defenses.purifiers.defensegan import WGANGP, DefenseGAN
from tfdefense.evaluation import accuracy
from tfdefense.models import defensegan_critic, defensegan_generator
from tfdefense.testing import assert_fit_rejects_bad_data, assert_keras_round_trip


@pytest.fixture(scope="module")
def digit_generator(mnist):
    """A small generator whose range covers digits, trained in seconds as the decoder of an autoencoder.

    The default suite tests the projection with it (a WGAN good enough for
    that takes CPU-hours; `test_paper_setting_*` below trains the paper's
    WGAN-GP and is marked slow).
    """
    (x_train, _), _ = mnist
    keras.utils.set_random_seed(0)
    generator = defensegan_generator(latent_dim=16, net_dim=16)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(16, 5, strides=2, padding="same", activation="relu")(inputs)
    h = keras.layers.Conv2D(32, 5, strides=2, padding="same", activation="relu")(h)
    code = keras.layers.Dense(16)(keras.layers.Flatten()(h))
    code = keras.layers.BatchNormalization(center=False, scale=False)(code)  # codes of unit scale, like z
    autoencoder = keras.Model(inputs, generator(code))
    autoencoder.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    autoencoder.fit(x_train[:4000], x_train[:4000], batch_size=64, epochs=4, verbose=0)
    return generator


def test_projection_restores_fgsm_accuracy(digit_generator, mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:60], mnist_eval_batch[1][:60]
    x_adv = get_attack("fgsm", eps=0.3)(mnist_model_c, x, y)
    defense = DefenseGAN(digit_generator, iterations=100, restarts=4, seed=0)
    no_defense = accuracy(mnist_model_c, x_adv, y)
    projected, errors = defense.purify(x_adv, seed=0, return_errors=True)
    defended = accuracy(mnist_model_c, projected, y)
    clean_projected, clean_errors = defense.purify(x, seed=0, return_errors=True)
    clean = accuracy(mnist_model_c, clean_projected, y)
    print(
        f"Defense-GAN (test generator, L=100, R=4): FGSM 0.3 no defense {no_defense:.2f}, "
        f"defended {defended:.2f}, clean {clean:.2f}"
    )
    assert no_defense < 0.15
    assert defended > no_defense + 0.15
    assert clean > 0.75
    # The reconstruction error (Defense-GAN's detection statistic) is higher on adversarial inputs.
    assert np.median(errors) > 1.2 * np.median(clean_errors)


def test_more_descent_steps_lower_the_reconstruction_error(digit_generator, mnist_eval_batch):
    x = mnist_eval_batch[0][:20]
    errors = [
        DefenseGAN(digit_generator, iterations=steps, restarts=r, seed=0)
        .purify(x, seed=1, return_errors=True)[1]
        .mean()
        for steps, r in ((0, 1), (20, 1), (100, 1), (100, 4))
    ]
    assert errors[0] > errors[1] > errors[2] >= errors[3]


def test_stochastic_flag_eot_bpda_and_round_trip(tmp_path, digit_generator, mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:30], mnist_eval_batch[1][:30]
    defense = DefenseGAN(digit_generator, iterations=30, restarts=2, seed=3)
    assert defense.stochastic and defense.backward == "identity"
    assert not np.array_equal(defense.purify(x[:4]), defense.purify(x[:4]))  # fresh restarts per call
    np.testing.assert_array_equal(defense.purify(x[:4], seed=5), defense.purify(x[:4], seed=5))
    # Same saved seed counter -> the same restarts -> identical outputs.
    loaded = assert_keras_round_trip(defense, x[:8], tmp_path, outputs=lambda model, x: model(x))
    assert loaded.iterations == 30 and loaded.restarts == 2
    np.testing.assert_array_equal(loaded.purify(x[:8], seed=2), defense.purify(x[:8], seed=2))
    pipeline = DefendedClassifier(defense, mnist_model_c)
    assert pipeline.stochastic
    # BPDA: the backward pass of the projection is the identity.
    inputs = tf.constant(x[:4])
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = tf.reduce_sum(defense(inputs) * tf.constant(np.arange(784, dtype=np.float32).reshape(28, 28, 1)))
    np.testing.assert_allclose(np.asarray(tape.gradient(out, inputs))[0, :, :, 0], np.arange(784).reshape(28, 28))
    # Adaptive evaluation: BPDA + EOT PGD through the stochastic projection.
    clean = accuracy(mnist_model_c, defense.purify(x, seed=0), y)
    pgd = get_attack("pgd", eps=0.3, eps_iter=0.1, nb_iter=5, eot_samples=2, seed=0)
    adaptive = accuracy(mnist_model_c, defense.purify(pgd(pipeline, x, y), seed=1), y)
    print(f"Defense-GAN (L=30, R=2) clean {clean:.2f}, BPDA+EOT PGD {adaptive:.2f}")
    assert adaptive < clean - 0.3


def test_unrolled_backward_differentiates_through_the_steps(digit_generator, mnist_eval_batch):
    x = tf.constant(mnist_eval_batch[0][:2])
    defense = DefenseGAN(digit_generator, iterations=3, restarts=1, backward="unroll", seed=0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(defense(x))
    grad = np.asarray(tape.gradient(loss, x))
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
    assert not np.allclose(grad, 1.0)  # not the identity


def test_wgan_gp_step_and_round_trip(tmp_path, mnist):
    (x_train, _), _ = mnist
    keras.utils.set_random_seed(0)
    gan = WGANGP.from_preset("tiny", seed=0)
    gan.compile()
    assert gan.g_optimizer.learning_rate.numpy() == pytest.approx(1e-4)
    assert gan.g_optimizer.beta_2 == pytest.approx(0.9)
    history = gan.fit(x_train[:384], batch_size=64, epochs=3, verbose=0).history
    assert set(history) == {"d_loss", "g_loss", "gp", "w_dist"}
    assert gan.d_optimizer.iterations.numpy() == 5 * gan.g_optimizer.iterations.numpy() == 5 * 18
    # The critic learns to score real digits above generated ones (positive Wasserstein estimate).
    assert history["w_dist"][-1] > history["w_dist"][0] and history["w_dist"][-1] > 0
    loaded = assert_keras_round_trip(gan, None, tmp_path, outputs=lambda model, _: model.sample(8, seed=1))
    assert loaded.g_optimizer.iterations.numpy() == 18


def test_bad_input_is_rejected():
    generator = defensegan_generator(latent_dim=8, net_dim=4)
    with pytest.raises(ValueError, match="`restarts`.*Received: restarts=0"):
        DefenseGAN(generator, restarts=0)
    with pytest.raises(ValueError, match="`backward`.*Received: backward='exact'"):
        DefenseGAN(generator, backward="exact")
    with pytest.raises(ValueError, match="`learning_rate`.*Received: learning_rate=-1"):
        DefenseGAN(generator, learning_rate=-1)
    with pytest.raises(ValueError, match="`generator`"):
        DefenseGAN(defensegan_critic(4))
    with pytest.raises(ValueError, match="`critic`"):
        WGANGP(generator, defensegan_critic(4, image_shape=(32, 32, 3)))
    with pytest.raises(ValueError, match="`critic_steps`.*Received: critic_steps=0"):
        WGANGP(generator, defensegan_critic(4), critic_steps=0)
    with pytest.raises(ValueError, match="`preset`.*Received: preset='huge'"):
        WGANGP.from_preset("huge")
    defense = DefenseGAN(generator, iterations=2, restarts=1)
    with pytest.raises(ValueError, match="`x`.*values in \\[0, 1\\]"):
        defense.purify(np.full((2, 28, 28, 1), 2.0, np.float32))
    with pytest.raises(ValueError, match="`x`.*Received: x=.?shape \\(2, 32, 32, 3\\)"):
        defense(np.zeros((2, 32, 32, 3), np.float32))
    gan = WGANGP(generator, defensegan_critic(4))
    with pytest.raises(RuntimeError, match="compile"):
        gan.fit(np.zeros((4, 28, 28, 1), np.float32), verbose=0)
    gan.compile()
    assert_fit_rejects_bad_data(gan, np.zeros((4, 28, 28, 1), np.float32))


@pytest.mark.paper
@pytest.mark.xfail(
    reason="Measured 16 % under FGSM 0.3 (clean 98 %) with a 4000-iteration WGAN-GP, far below the paper's "
    "~95-99 % (200k iterations): the short-trained generator also fits the FGSM noise (docs/baselines.md)",
    strict=False,
)
def test_paper_setting_projection_with_a_trained_wgan(mnist, mnist_model_c):
    """WGAN-GP (the paper's MNIST networks at net_dim 32, `light`; 25 epochs = 4000 generator
    iterations of batch 50, the paper trains 200k) and the paper's projection (L=200, R=10, lr 10)
    on 200 held-out digits, FGSM eps 0.3 crafted on model C. About 35 min on 2 shared cores.
    """
    (x_train, _), (x_test, y_test) = mnist
    from tfdefense.data.pipelines import make_pipeline

    keras.utils.set_random_seed(0)
    gan = WGANGP.from_preset("light", seed=0)
    gan.compile()
    gan.fit(make_pipeline(x_train, batch_size=50, shuffle=True, seed=0, drop_remainder=True), epochs=25, verbose=0)
    x, y = x_test[:200], y_test[:200]
    defense = DefenseGAN(gan.generator, iterations=200, restarts=10, learning_rate=10.0, seed=0)
    x_adv = get_attack("fgsm", eps=0.3)(mnist_model_c, x, y)
    clean = accuracy(mnist_model_c, defense.purify(x, seed=0), y)
    defended = accuracy(mnist_model_c, defense.purify(x_adv, seed=1), y)
    print(f"Defense-GAN paper setting: clean {clean:.3f}, FGSM 0.3 {defended:.3f}")
    assert clean > 0.9
    assert defended > 0.85  # the paper's MNIST numbers minus 10 points
