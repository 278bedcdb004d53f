import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.data import make_paired_pipeline
from tfdefense.defenses import Pix2PixDefense
from tfdefense.models import model_c, patchgan_preset, perceptual_feature_extractor, unet_generator_preset
from tfdefense.testing import (
    InterruptAt,
    StartedEpochs,
    assert_config_round_trip,
    assert_fit_rejects_bad_data,
    assert_keras_round_trip,
    assert_purify_rejects_bad_images,
)
from tfdefense.training import StagedLossWeights

METRICS = {"g_gan", "l1", "perceptual", "cls", "g_total", "d_loss"}


def tiny_defense(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    return Pix2PixDefense(unet_generator_preset("tiny"), patchgan_preset("tiny"), **kwargs)


@pytest.fixture(scope="module")
def pairs(mnist):
    (x, y), _ = mnist
    rng = np.random.default_rng(0)
    x_clean = x[:64]
    x_adv = np.clip(x_clean + 0.3 * np.sign(rng.standard_normal(x_clean.shape)), 0, 1).astype(np.float32)
    return x_adv, x_clean, y[:64]


def test_fit_reports_every_loss_term(pairs):
    x_adv, x_clean, y = pairs
    classifier = model_c()
    features = perceptual_feature_extractor(classifier, [classifier.layers[1].name])
    defense = tiny_defense(feature_extractor=features, classifier=classifier, lambda_perc=1.0)
    defense.compile()
    history = defense.fit(make_paired_pipeline(x_adv, x_clean, y, batch_size=32), epochs=2, verbose=0)
    assert set(history.history) == METRICS
    for name in METRICS:
        assert np.all(np.isfinite(history.history[name])) and history.history[name][-1] > 0
    # The classifier and the feature extractor are never updated; both networks are.
    assert defense.g_optimizer.iterations.numpy() == 4 and defense.d_optimizer.iterations.numpy() == 4
    assert isinstance(defense.g_optimizer, keras.optimizers.Adam)
    assert np.isclose(float(defense.g_optimizer.learning_rate), 2e-4) and np.isclose(defense.g_optimizer.beta_1, 0.5)


def test_fit_arrays_and_validation_data(pairs):
    x_adv, x_clean, _ = pairs
    defense = tiny_defense()
    defense.compile()
    history = defense.fit(
        x_adv, x_clean, batch_size=32, epochs=1, validation_data=(x_adv[:16], x_clean[:16]), verbose=0
    )
    assert "val_l1" in history.history and history.history["cls"] == [0.0]


def test_loss_weights_are_variables_read_by_the_compiled_step(pairs):
    x_adv, x_clean, _ = pairs
    defense = tiny_defense()
    assert defense.lambda_l1.trainable is False and float(defense.lambda_l1) == 100.0
    defense.compile()
    stages = [(0, 1, {"lambda_l1": 0.0}), (1, 2, {"lambda_l1": 7.0})]
    history = defense.fit(x_adv, x_clean, batch_size=32, epochs=2, verbose=0, callbacks=[StagedLossWeights(stages)])
    h = history.history
    assert h["lambda_l1"] == [0.0, 7.0]
    for epoch, weight in enumerate([0.0, 7.0]):
        assert np.isclose(h["g_total"][epoch], h["g_gan"][epoch] + weight * h["l1"][epoch], rtol=1e-4)


def test_deterministic_by_default_and_train_mode_option(pairs):
    x_adv = pairs[0][:8]
    defense = tiny_defense()
    assert not defense.stochastic
    np.testing.assert_array_equal(np.asarray(defense(x_adv)), np.asarray(defense(x_adv)))
    moving_before = [np.asarray(v) for v in defense.generator.non_trainable_variables]
    stochastic = defense.with_inference_mode("train_mode")
    assert stochastic.stochastic and stochastic.generator is defense.generator
    first, second = np.asarray(stochastic(x_adv)), np.asarray(stochastic(x_adv))
    assert not np.allclose(first, second)  # dropout masks change from call to call
    # Batch statistics are used but the stored ones are left untouched.
    for before, after in zip(moving_before, defense.generator.non_trainable_variables, strict=False):
        if np.asarray(after).dtype.kind == "f":
            np.testing.assert_array_equal(before, np.asarray(after))
    assert assert_config_round_trip(stochastic).stochastic


def test_purify_checks_inputs(pairs):
    defense = tiny_defense()
    x_adv = pairs[0]
    out = defense.purify(x_adv[:5], batch_size=2)
    assert out.shape == (5, 28, 28, 1) and out.dtype == np.float32
    assert_purify_rejects_bad_images(defense, x_adv)
    with pytest.raises(ValueError, match="`x`.*values in \\[0, 1\\].*Received: x=.?array of shape"):
        defense.purify(x_adv * 255.0)


def test_fit_checks_pairs(pairs):
    x_adv, x_clean, _ = pairs
    defense = tiny_defense()
    defense.compile()
    assert_fit_rejects_bad_data(defense, x_adv, x_clean)
    with pytest.raises(ValueError, match="`x`.*shape \\(28, 28, 1\\).*Received: x=.?array of shape \\(4, 32, 32, 3\\)"):
        defense.fit(np.zeros((4, 32, 32, 3), np.float32), np.zeros((4, 32, 32, 3), np.float32), verbose=0)
    bad = tf.data.Dataset.from_tensor_slices((np.zeros((4, 28, 28, 3), np.float32),) * 2).batch(2)
    with pytest.raises(ValueError, match="`x`.*x_adv batches of shape"):
        defense.fit(bad, verbose=0)
    with pytest.raises(ValueError, match="`x_clean`.*Received: x_clean of shape"):
        make_paired_pipeline(x_adv, x_clean[:, :27])


def test_constructor_checks():
    generator, discriminator = unet_generator_preset("tiny"), patchgan_preset("tiny")
    with pytest.raises(ValueError, match="`lambda_l1`.*Received: lambda_l1=-1"):
        Pix2PixDefense(generator, discriminator, lambda_l1=-1)
    with pytest.raises(ValueError, match="`lambda_perc`"):
        Pix2PixDefense(generator, discriminator, lambda_perc=10.0)
    with pytest.raises(ValueError, match="`inference_mode`.*Received: inference_mode='eot'"):
        Pix2PixDefense(generator, discriminator, inference_mode="eot")
    with pytest.raises(ValueError, match="`discriminator`"):
        Pix2PixDefense(generator, patchgan_preset("tiny", input_shape=(32, 32, 3)))
    with pytest.raises(ValueError, match="`cls_loss`"):
        Pix2PixDefense(generator, discriminator, classifier=model_c(), cls_loss="hinge")
    defense = Pix2PixDefense(generator, discriminator)
    with pytest.raises(ValueError, match="`optimizer`"):
        defense.compile(optimizer="adam")


@pytest.mark.parametrize("cls_loss", ["cross_entropy", "kl"])
def test_classifier_consistency_with_and_without_labels(pairs, cls_loss):
    x_adv, x_clean, y = pairs
    classifier = model_c()
    defense = tiny_defense(classifier=classifier, cls_loss=cls_loss, lambda_cls=2.0)
    defense.compile()
    with_labels = defense.evaluate(make_paired_pipeline(x_adv, x_clean, y, shuffle=False), return_dict=True, verbose=0)
    without = defense.evaluate(make_paired_pipeline(x_adv, x_clean, shuffle=False), return_dict=True, verbose=0)
    assert with_labels["cls"] > 0 and without["cls"] > 0
    if cls_loss == "kl":
        assert np.isclose(with_labels["cls"], without["cls"])  # soft targets ignore y
    classifier_weights = [np.asarray(w) for w in classifier.weights]
    defense.fit(make_paired_pipeline(x_adv, x_clean, y, batch_size=32), epochs=1, verbose=0)
    for before, after in zip(classifier_weights, classifier.weights, strict=False):
        np.testing.assert_array_equal(before, np.asarray(after))


def test_keras_round_trip_with_feature_extractor_and_classifier(tmp_path, pairs):
    x_adv, x_clean, y = pairs
    classifier = model_c()
    features = perceptual_feature_extractor(classifier, [classifier.layers[2].name])
    defense = tiny_defense(feature_extractor=features, classifier=classifier, lambda_perc=0.5, lambda_cls=0.3)
    defense.compile()
    defense.fit(make_paired_pipeline(x_adv, x_clean, y, batch_size=32), epochs=1, verbose=0)
    defense.lambda_l1.assign(42.0)
    loaded = assert_keras_round_trip(defense, x_adv, tmp_path)  # optimizer state too: training continues
    assert float(loaded.lambda_l1) == 42.0 and float(loaded.lambda_cls) == pytest.approx(0.3)
    # The feature extractor is rebuilt from the (one, shared) classifier.
    name = classifier.layers[2].name
    assert loaded.feature_extractor.get_layer(name) is loaded.classifier.get_layer(name)
    np.testing.assert_array_equal(np.asarray(loaded.classifier(x_adv)), np.asarray(classifier(x_adv)))
    loaded.fit(make_paired_pipeline(x_adv, x_clean, y, batch_size=32), epochs=1, verbose=0)


def test_vgg_perceptual_round_trip(tmp_path, pairs):
    x_adv = pairs[0][:4]
    features = perceptual_feature_extractor(
        "vgg19", layers=["block1_conv2", "block2_conv2"], weights=None, input_shape=(28, 28, 1)
    )
    defense = tiny_defense(feature_extractor=features)
    assert float(defense.lambda_perc) == 100.0
    loaded = assert_keras_round_trip(defense, x_adv, tmp_path)
    assert not loaded.feature_extractor.trainable


def test_mirrored_strategy_matches_single_device(pairs):
    x_adv, x_clean, _ = pairs
    results = []
    for strategy in (None, tf.distribute.MirroredStrategy(["/cpu:0"])):
        scope = strategy.scope() if strategy else tf.distribute.get_strategy().scope()
        with scope:
            defense = tiny_defense(seed=3)
            defense.compile()
        dataset = make_paired_pipeline(x_adv, x_clean, batch_size=32, shuffle=False)
        history = defense.fit(dataset, epochs=1, verbose=0)
        results.append((history.history, defense.purify(x_adv[:8])))
    (h1, out1), (h2, out2) = results
    for name in ("l1", "g_total", "d_loss"):
        np.testing.assert_allclose(h1[name], h2[name], rtol=1e-4)
    np.testing.assert_allclose(out1, out2, atol=1e-5)


def test_backup_and_restore_resumes_without_losing_epochs(tmp_path, pairs):
    x_adv, x_clean, _ = pairs
    dataset = make_paired_pipeline(x_adv, x_clean, batch_size=32, seed=1)
    backup = str(tmp_path / "backup")

    def run(callbacks):
        defense = tiny_defense(seed=5)
        defense.compile()
        epochs = StartedEpochs()
        schedule = StagedLossWeights([(0, 2, {"lambda_l1": 100.0}), (2, 4, {"lambda_l1": 10.0})])
        defense.fit(dataset, epochs=4, verbose=0, callbacks=[schedule, epochs, *callbacks])
        return defense, epochs.seen

    reference, seen = run([])
    assert seen == [0, 1, 2, 3]
    with pytest.raises(RuntimeError, match="interrupted"):
        run([keras.callbacks.BackupAndRestore(backup), InterruptAt(2)])
    resumed, seen = run([keras.callbacks.BackupAndRestore(backup)])
    assert seen == [2, 3]  # epochs 0-1 restored, not repeated
    assert resumed.g_optimizer.iterations.numpy() == reference.g_optimizer.iterations.numpy() == 8
    assert resumed.d_optimizer.iterations.numpy() == 8
    assert float(resumed.lambda_l1) == 10.0
    np.testing.assert_allclose(resumed.purify(x_adv[:8]), reference.purify(x_adv[:8]), atol=1e-4)


def test_mixed_bfloat16_training_has_no_nan(pairs):
    x_adv, x_clean, _ = pairs
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        defense = tiny_defense()
        defense.compile()
        history = defense.fit(x_adv, x_clean, batch_size=32, epochs=2, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(np.isfinite(v).all() for v in history.history.values())
    out = defense.purify(x_adv[:4])
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert defense.generator.get_layer("down0_conv").compute_dtype == "bfloat16"


def test_fused_adam_matches_keras_adam():
    from tfdefense.defenses import FusedAdam

    rng = np.random.default_rng(0)
    start = rng.standard_normal((6, 5)).astype(np.float32)
    grads = [rng.standard_normal((6, 5)).astype(np.float32) for _ in range(4)]

    def train(optimizer):
        variable = keras.Variable(start.copy())

        @tf.function
        def step(grad):
            optimizer.apply([grad], [variable])

        for grad in grads:
            step(tf.constant(grad))
        return np.asarray(variable)

    results = [train(keras.optimizers.Adam(1e-2, beta_1=0.5)), train(FusedAdam(1e-2, beta_1=0.5))]
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(results[0], start)
    config = FusedAdam(3e-4, beta_1=0.5).get_config()
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(FusedAdam.from_config(config)))
    assert isinstance(restored, FusedAdam) and restored.beta_1 == 0.5
