"""RobustPurifier (+ AdversarialTrainer with the shared callbacks).

The mechanism at small scale, API, saving, export, errors.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.attacks import get_attack
from tfdefense.defenses import AdversarialTrainer, ComputeBudget, DefendedClassifier, EpsilonRamp, RobustPurifier
from tfdefense.defenses.training_attack import pgd_in_graph
from tfdefense.evaluation import accuracy
from tfdefense.inference import all_layers
from tfdefense.models import trainable_copy
from tfdefense.models.patchgan import patchgan_preset
from tfdefense.models.unet import unet_generator, unet_generator_preset
from tfdefense.testing import (
    assert_fit_rejects_bad_data,
    assert_keras_round_trip,
    assert_saved_model_round_trip,
    conv_compute_dtypes,
)

# eps 0.2: robustness at 0.3 needs longer training than a unit test affords (docs/robust.md has the
# eps 0.3 numbers of the full runs); 0.2 already separates the two purifiers after 3 short epochs.
EPS = 0.2


def _tiny_generator(seed=0):
    keras.utils.set_random_seed(seed)
    return unet_generator((28, 28, 1), base_filters=8, max_filters=32, depth=3, dropout=0.0)


@pytest.fixture(scope="module")
def trained_pair(mnist, mnist_model_c):
    """A robust purifier and a non-robust one (same U-Net, same data, same epochs, no training attack)."""
    (x_train, y_train), _ = mnist
    x, y = x_train[:1536], y_train[:1536]
    classifier = mnist_model_c
    robust = RobustPurifier(_tiny_generator(0), classifier, attack_eps=EPS, attack_steps=5, seed=0)
    robust.compile()
    robust.fit(x, y, batch_size=64, epochs=3, verbose=0, callbacks=[EpsilonRamp(2)])
    plain = RobustPurifier(_tiny_generator(0), classifier, attack_eps=EPS, attack_steps=0, lambda_adv_cls=0.0, seed=0)
    plain.compile()
    plain.fit(x, y, batch_size=64, epochs=3, verbose=0)
    return robust, plain


def test_robust_training_beats_non_robust_purifier_under_adaptive_pgd(trained_pair, mnist_eval_batch, mnist_model_c):
    robust, plain = trained_pair
    x, y = mnist_eval_batch[0][:100], mnist_eval_batch[1][:100]
    pgd = get_attack("pgd", eps=EPS, eps_iter=EPS / 10, nb_iter=20, rand_init=True, seed=0)
    scores = {}
    for name, purifier in (("robust", robust), ("plain", plain)):
        defended = DefendedClassifier(purifier, mnist_model_c)
        scores[name] = (accuracy(defended, x, y), accuracy(defended, pgd(defended, x, y), y))
    print("clean / adaptive PGD-20:", scores)
    assert scores["plain"][1] <= 0.10  # the non-robust purifier falls under the adaptive attack
    assert scores["robust"][1] >= 0.30  # the robust one keeps a large part after 3 short epochs
    assert scores["robust"][1] - scores["plain"][1] >= 0.25
    assert scores["robust"][0] >= 0.85


def test_training_metrics_and_eps_ramp(trained_pair):
    robust, _ = trained_pair
    history = robust.history.history
    for name in ("loss", "adv_cls", "clean_cls", "rec", "adv_acc", "clean_acc", "attack_eps"):
        assert name in history, name
    assert history["attack_eps"][0] == pytest.approx(EPS / 2)  # ramped from 0 ...
    assert history["attack_eps"][-1] == pytest.approx(EPS)  # ... to the target
    assert float(robust.attack_step_size.numpy()) == pytest.approx(2.5 * EPS / 5)
    assert history["adv_acc"][-1] > 0.2


def test_pgd_in_graph_stays_in_the_ball_and_raises_the_loss(mnist_eval_batch, mnist_model_c):
    x, y = mnist_eval_batch[0][:64], mnist_eval_batch[1][:64]
    logits_fn = lambda z: mnist_model_c(z, training=False)  # noqa: E731
    x_adv = pgd_in_graph(logits_fn, tf.constant(x), tf.constant(y), 0.3, 0.05, 10, tf.constant([1, 2])).numpy()
    assert np.abs(x_adv - x).max() <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert accuracy(mnist_model_c, x_adv, y) < 0.2


def test_save_load_roundtrip_defended_and_export(tmp_path, mnist_eval_batch, mnist_model_c):
    x = mnist_eval_batch[0][:16]
    disc = patchgan_preset("tiny")
    purifier = RobustPurifier(
        unet_generator_preset("tiny", dropout=0.0),
        mnist_model_c,
        discriminator=disc,
        attack_steps=2,
        lambda_trades=0.5,
        attack_loss="kl",
        residual=True,
        seed=3,
    )
    purifier.compile()
    history = purifier.fit(x, mnist_eval_batch[1][:16], batch_size=8, epochs=1, verbose=0)
    assert history.history["d_loss"][0] > 0 and history.history["gan"][0] > 0
    out = purifier.purify(x)
    assert out.shape == x.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    loaded = assert_keras_round_trip(purifier, x, tmp_path, atol=1e-6)
    assert loaded.residual and loaded.attack_loss == "kl"
    assert loaded.get_config()["lambda_trades"] == 0.5 and loaded.discriminator is not None
    assert_keras_round_trip(DefendedClassifier(loaded, loaded.classifier), x, tmp_path, atol=1e-5)
    assert_saved_model_round_trip(loaded, x, tmp_path, classifier=mnist_model_c)


def test_adversarial_training_baseline_trains_and_roundtrips(tmp_path, mnist, mnist_model_c):
    (x_train, y_train), _ = mnist
    clone = trainable_copy(mnist_model_c)  # the shared fixture may be frozen by other tests
    trainer = AdversarialTrainer(clone, eps=0.3, eps_iter=0.2, nb_iter=2, mix=0.3, seed=0)
    trainer.compile()
    budget = ComputeBudget(cpu_seconds=0.0)
    history = trainer.fit(x_train[:256], y_train[:256], batch_size=64, epochs=5, verbose=0, callbacks=[budget])
    assert len(history.history["loss"]) == 1  # the budget stopped it after the first epoch
    assert history.history["cpu_seconds"][0] > 0
    assert not np.allclose(clone.get_weights()[0], mnist_model_c.get_weights()[0])  # the classifier was trained
    assert_keras_round_trip(trainer, x_train[:4], tmp_path, atol=1e-5)


def test_invalid_arguments_name_the_argument(mnist_model_c):
    generator = unet_generator_preset("tiny")
    cases = [
        (dict(attack_eps=-0.1), "attack_eps"),
        (dict(attack_eps=2.0), "attack_eps"),
        (dict(attack_steps=1.5), "attack_steps"),
        (dict(attack_loss="mse"), "attack_loss"),
        (dict(lambda_rec=-1.0), "lambda_rec"),
        (dict(lambda_gan=1.0), "lambda_gan"),
        (dict(residual="yes"), "residual"),
        (dict(attack_rand_init=1), "attack_rand_init"),
    ]
    for kwargs, argument in cases:
        with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}="):
            RobustPurifier(generator, mnist_model_c, **kwargs)
    with pytest.raises(ValueError, match="`generator`"):
        RobustPurifier("unet", mnist_model_c)
    cifar_generator = unet_generator_preset("tiny", input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="`classifier`"):
        RobustPurifier(cifar_generator, mnist_model_c)
    purifier = RobustPurifier(generator, mnist_model_c)
    with pytest.raises(RuntimeError, match="compile"):
        purifier.fit(np.zeros((4, 28, 28, 1), np.float32), np.zeros(4, np.int64))
    purifier.compile()
    assert_fit_rejects_bad_data(purifier, np.zeros((4, 28, 28, 1), np.float32), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="`x`"):
        purifier.fit(np.full((4, 28, 28, 1), 255.0, np.float32), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="`x`"):
        purifier.purify(np.zeros((2, 32, 32, 1), np.float32))
    with pytest.raises(ValueError, match="`ramp_epochs`"):
        EpsilonRamp(0)
    with pytest.raises(ValueError, match="`cpu_seconds`"):
        ComputeBudget(-1)


def test_bf16_training_keeps_float32_state_and_roundtrips(tmp_path, mnist, mnist_model_c):
    (x_train, y_train), _ = mnist
    x, y = x_train[:512], y_train[:512]
    purifier = RobustPurifier(
        _tiny_generator(0), mnist_model_c, attack_eps=EPS, attack_steps=2, seed=0, precision="bf16"
    )
    purifier.compile()
    history = purifier.fit(x, y, batch_size=64, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.05, losses
    assert history.history["adv_acc"][-1] > history.history["adv_acc"][0]
    # State stays float32; the bfloat16 policy holds only while the step traces.
    assert {v.dtype for v in purifier.weights + purifier.g_optimizer.variables} <= {"float32", "int64"}
    layers = all_layers(purifier.generator) + all_layers(mnist_model_c)
    assert {layer.dtype_policy.name for layer in layers} == {"float32"}
    spec = (tf.TensorSpec((8, 28, 28, 1), tf.float32), tf.TensorSpec((8,), tf.int64))
    assert conv_compute_dtypes(tf.function(purifier.train_step).get_concrete_function(spec)) == {"bfloat16"}
    out = purifier.purify(x[:16])
    assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    assert conv_compute_dtypes(tf.function(purifier.call).get_concrete_function(spec[0])) == {"float32"}
    loaded = assert_keras_round_trip(purifier, x[:16], tmp_path, atol=1e-6)
    assert loaded.precision == "bf16"
    loaded.fit(x[:128], y[:128], batch_size=64, epochs=1, verbose=0)  # the restored model trains on
    with pytest.raises(ValueError, match="`precision`.*Received: precision='fp16'"):
        RobustPurifier(_tiny_generator(0), mnist_model_c, precision="fp16")


def _sequential_classifier(x, y, seed):
    """A plain keras.Sequential (not built by tfdefense), one epoch on the given digits."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    return model


def test_by_member_gives_each_example_to_its_member_in_order():
    from tfdefense.defenses.purifiers.robust import by_member

    values = tf.constant(np.arange(10, dtype=np.float32))
    assignment = tf.constant([2, 0, 1, 2, 0, 0, 1, 2, 1, 0], tf.int32)
    out = by_member(lambda member, part: part * 0 + float(member), assignment, 3, values)
    np.testing.assert_array_equal(out.numpy(), assignment.numpy().astype(np.float32))
    np.testing.assert_array_equal(by_member(lambda member, part: part, assignment, 3, values).numpy(), values.numpy())


def test_ensemble_assignments_and_training_through_every_member(tmp_path, mnist, mnist_model_c):
    (x_train, y_train), _ = mnist
    x, y = x_train[:512], y_train[:512]
    other = _sequential_classifier(x, y, seed=1)
    random_mode = RobustPurifier(_tiny_generator(0), [mnist_model_c, other], attack_eps=EPS, attack_steps=2, seed=0)
    _, assignment = random_mode.member_assignment(64)
    counts = np.bincount(assignment.numpy(), minlength=2)
    assert counts.tolist() == [32, 32]  # equal shares, one member per example
    batch = random_mode.prepare_batch((tf.constant(x[:64]), tf.constant(y[:64])), training=True)
    assert [tuple(t.shape) for t in batch[:3]] == [(64, 28, 28, 1), (64, 28, 28, 1), (64,)]
    assert np.abs(batch[1].numpy() - x[:64]).max() <= EPS + 1e-6

    all_mode = RobustPurifier(
        _tiny_generator(0),
        [mnist_model_c, other],
        attack_eps=EPS,
        attack_steps=2,
        attack_rand_init=False,
        seed=0,
        ensemble="all",
    )
    x_rep, x_adv, y_rep, assignment = all_mode.prepare_batch((tf.constant(x[:16]), tf.constant(y[:16])), True)
    assert x_rep.shape[0] == x_adv.shape[0] == y_rep.shape[0] == 32
    assert assignment.numpy().tolist() == [0] * 16 + [1] * 16
    np.testing.assert_array_equal(x_rep.numpy()[16:], x[:16])
    # Each half is crafted through its own member (deterministic without the random start).
    for member, half in ((0, slice(0, 16)), (1, slice(16, 32))):
        alone = all_mode._pgd(tf.constant(x[:16]), tf.constant(y[:16]), member).numpy()
        np.testing.assert_allclose(x_adv.numpy()[half], alone, atol=1e-6)
    assert not np.allclose(x_adv.numpy()[:16], x_adv.numpy()[16:])

    for purifier in (random_mode, all_mode):
        purifier.compile()
        history = purifier.fit(x, y, batch_size=64, epochs=2, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        loaded = assert_keras_round_trip(purifier, x[:8], tmp_path, atol=1e-6)
        assert len(loaded.classifiers) == 2 and loaded.ensemble == purifier.ensemble
        for member in loaded.classifiers:  # the purifier stands in front of each member
            np.testing.assert_allclose(
                np.asarray(DefendedClassifier(loaded, member)(x[:8])),
                np.asarray(member(purifier.purify(x[:8]))),
                atol=1e-4,
            )
    assert_saved_model_round_trip(all_mode, x[:8], tmp_path, classifier=other)


def test_finetune_classifier_trains_it_and_a_frozen_one_stays(mnist, mnist_model_c):
    (x_train, y_train), _ = mnist
    x, y = x_train[:256], y_train[:256]
    frozen, tuned = trainable_copy(mnist_model_c), trainable_copy(mnist_model_c)
    frozen.trainable = False
    before = [w.copy() for w in tuned.get_weights()]
    for classifier, finetune in ((frozen, False), (tuned, True)):
        purifier = RobustPurifier(
            _tiny_generator(0), classifier, attack_eps=EPS, attack_steps=2, seed=0, finetune_classifier=finetune
        )
        purifier.compile()
        purifier.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, frozen.get_weights(), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(before, tuned.get_weights(), strict=True))
    assert purifier.get_config()["finetune_classifier"] is True


def test_ensemble_and_finetune_arguments_are_checked(mnist, mnist_model_c):
    (x_train, y_train), _ = mnist
    generator = unet_generator_preset("tiny")
    frozen = trainable_copy(mnist_model_c)
    frozen.trainable = False
    five = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(5)])
    with pytest.raises(ValueError, match="`classifier`.*non-empty"):
        RobustPurifier(generator, [])
    with pytest.raises(ValueError, match="`classifier`.*twice"):
        RobustPurifier(generator, [mnist_model_c, mnist_model_c])
    with pytest.raises(ValueError, match="`classifier`.*same number of classes"):
        RobustPurifier(generator, [mnist_model_c, five])
    with pytest.raises(ValueError, match=r"`classifier\[1\]`"):
        RobustPurifier(generator, [mnist_model_c, "model_b"])
    with pytest.raises(ValueError, match="`ensemble`.*Received: ensemble='mean'"):
        RobustPurifier(generator, [mnist_model_c, frozen], ensemble="mean")
    with pytest.raises(ValueError, match="`finetune_classifier`.*trainable"):
        RobustPurifier(generator, frozen, finetune_classifier=True)
    with pytest.raises(ValueError, match="`finetune_classifier`"):
        RobustPurifier(generator, mnist_model_c, finetune_classifier="yes")


def test_adversarial_trainer_bf16_step_and_float32_state(tmp_path, mnist, mnist_model_c):
    (x_train, y_train), _ = mnist
    trainer = AdversarialTrainer(
        trainable_copy(mnist_model_c), eps=0.3, eps_iter=0.1, nb_iter=2, seed=0, precision="bf16"
    )
    trainer.compile()
    history = trainer.fit(x_train[:256], y_train[:256], batch_size=64, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    spec = (tf.TensorSpec((8, 28, 28, 1), tf.float32), tf.TensorSpec((8,), tf.int64))
    assert conv_compute_dtypes(tf.function(trainer.train_step).get_concrete_function(spec)) == {"bfloat16"}
    assert {v.dtype for v in trainer.weights} <= {"float32", "int64"}
    assert {layer.dtype_policy.name for layer in all_layers(trainer.classifier)} == {"float32"}
    assert assert_keras_round_trip(trainer, x_train[:4], tmp_path, atol=1e-5).precision == "bf16"
