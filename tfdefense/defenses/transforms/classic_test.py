"""Input-transformation baselines on real MNIST digits and model C."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.attacks import get_attack
from tfdefense.defenses import DefendedClassifier
from tfdefense.defenses.transforms.classic import (
    BitDepthReduction,
    InputTransform,
    JpegCompression,
    MedianSmoothing,
    PixelDeflection,
    RandomResizePad,
    TotalVarianceMinimization,
    WaveletDenoise,
    get_transform,
    list_transforms,
    pixel_deflect,
)
from tfdefense.evaluation.metrics import accuracy
from tfdefense.testing import assert_config_round_trip, assert_keras_round_trip

SIMPLE = ("bit_depth", "jpeg", "median", "wavelet", "random_resize_pad", "pixel_deflection", "tv_min")
STOCHASTIC = {"random_resize_pad", "pixel_deflection", "tv_min"}


def _make(name, **params):
    if name in STOCHASTIC:
        params.setdefault("seed", 0)
    return get_transform(name, **params)


@pytest.fixture(scope="module")
def fgsm_batch(mnist_eval_batch, mnist_model_c):
    """The 200 correctly classified digits and FGSM eps 0.3 examples crafted on model C alone."""
    x, y = mnist_eval_batch
    return x, y, get_attack("fgsm", eps=0.3)(mnist_model_c, x, y)


def test_registry():
    names = list_transforms()
    assert set(SIMPLE) | {"superres_wavelet"} <= set(names)
    assert list_transforms("*wavelet*") == ["superres_wavelet", "wavelet"]
    assert isinstance(get_transform("bit_depth", bits=3), BitDepthReduction)
    with pytest.raises(ValueError, match="name='gauss'"):
        get_transform("gauss")
    with pytest.raises(ValueError, match="params='bit'"):
        get_transform("bit_depth", bit=3)
    with pytest.raises(ValueError, match="params='seed'"):
        get_transform("jpeg", seed=1)  # deterministic: no seed


@pytest.mark.parametrize(
    "build, argument, value",
    [
        (lambda: BitDepthReduction(bits=0), "bits", "0"),
        (lambda: BitDepthReduction(bits=9), "bits", "9"),
        (lambda: BitDepthReduction(bits=2.5), "bits", "2.5"),
        (lambda: JpegCompression(quality=0), "quality", "0"),
        (lambda: JpegCompression(quality=101), "quality", "101"),
        (lambda: MedianSmoothing(window=0), "window", "0"),
        (lambda: TotalVarianceMinimization(prob=1.5), "prob", "1.5"),
        (lambda: TotalVarianceMinimization(solver="adam"), "solver", "'adam'"),
        (lambda: WaveletDenoise(wavelet="nope"), "wavelet", "'nope'"),
        (lambda: WaveletDenoise(mode="medium"), "mode", "'medium'"),
        (lambda: PixelDeflection(deflections=-1), "deflections", "-1"),
        (lambda: PixelDeflection(window=0), "window", "0"),
        (lambda: RandomResizePad(max_ratio=1.0), "max_ratio", "1.0"),
        (lambda: RandomResizePad(seed=-3), "seed", "-3"),
        (lambda: JpegCompression(bpda="yes"), "bpda", "'yes'"),
    ],
)
def test_bad_arguments_name_argument_and_value(build, argument, value):
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: {argument}={value}"):
        build()


def test_wrong_rank_and_dtype_rejected():
    t = BitDepthReduction()
    with pytest.raises(ValueError, match="`inputs`.*rank-4.*Received: inputs='tensor of shape \\(28, 28, 1\\)'"):
        t(np.zeros((28, 28, 1), np.float32))
    with pytest.raises(ValueError, match="`inputs`.*float images"):
        t(np.zeros((1, 28, 28, 1), np.uint8))


@pytest.mark.parametrize("name", SIMPLE)
def test_output_contract_and_flags(name, mnist_eval_batch):
    x = mnist_eval_batch[0][: 4 if name == "tv_min" else 16]  # tv_min: ~50 ms per image
    t = _make(name)
    out = t(x)
    assert isinstance(t, keras.Model) and isinstance(t, InputTransform)
    assert out.shape == x.shape and out.dtype == tf.float32
    out = np.asarray(out)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, x)  # it does transform
    assert t.stochastic == (name in STOCHASTIC)
    assert t.differentiable == (name == "random_resize_pad")
    assert DefendedClassifier(t, keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten()])).stochastic == (
        name in STOCHASTIC
    )


def test_known_values():
    x = np.array([0.0, 0.2, 0.49, 0.51, 0.8, 1.0], np.float32).reshape(1, 1, 6, 1)
    np.testing.assert_array_equal(np.asarray(BitDepthReduction(bits=1)(x)).ravel(), [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(np.asarray(BitDepthReduction(bits=2)(x)).ravel(), [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    spike = np.zeros((1, 5, 5, 1), np.float32)
    spike[0, 2, 2] = 1.0
    assert np.asarray(MedianSmoothing(window=3)(spike)).max() == 0.0  # an isolated pixel is removed
    flat = np.full((1, 8, 8, 1), 0.5, np.float32)
    np.testing.assert_allclose(np.asarray(JpegCompression(quality=90)(flat)), flat, atol=2 / 255)


def test_pixel_deflection_moves_only_few_pixels():
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype(np.float32)
    out = pixel_deflect(x, 5, 3, np.random.default_rng(1))
    changed = (out != x).reshape(3, -1).sum(1)
    assert (changed <= 5).all() and changed.sum() > 0
    assert PixelDeflection().num_deflections(224, 224) == 200 and PixelDeflection().num_deflections(28, 28) == 3


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_stochastic_draws_fresh_and_seed_reproduces(name, mnist_eval_batch):
    x = mnist_eval_batch[0][: 3 if name == "tv_min" else 8]
    a, b = _make(name, seed=3), _make(name, seed=3)
    first = np.asarray(a(x))
    np.testing.assert_array_equal(first, np.asarray(b(x)))  # same seed, same draw
    assert not np.array_equal(first, np.asarray(a(x)))  # next call, new draw


@pytest.mark.parametrize("name", SIMPLE)
def test_gradient_through_defense_is_nonzero(name, mnist_model_c, mnist_eval_batch):
    """BPDA (identity backward) for the non-differentiable ones; exact for random resize + pad."""
    x = tf.constant(mnist_eval_batch[0][: 2 if name == "tv_min" else 4])
    model = DefendedClassifier(_make(name), mnist_model_c)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(model(x)[:, 0])
    grad = tape.gradient(loss, x).numpy()
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 1e-3


def test_bpda_false_masks_the_gradient(mnist_model_c, mnist_eval_batch):
    x = tf.constant(mnist_eval_batch[0][:4])
    model = DefendedClassifier(BitDepthReduction(bits=1, bpda=False), mnist_model_c)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(model(x)[:, 0])
    grad = tape.gradient(loss, x, unconnected_gradients=tf.UnconnectedGradients.ZERO).numpy()
    assert np.abs(grad).sum() == 0.0


@pytest.mark.parametrize("name", SIMPLE)
def test_save_load_round_trip(name, tmp_path, mnist_eval_batch):
    x = mnist_eval_batch[0][: 3 if name == "tv_min" else 8]
    t = _make(name, seed=5) if name in STOCHASTIC else _make(name)
    # deterministic: identical outputs; stochastic: the saved seed state gives the same draw
    loaded = assert_keras_round_trip(t, x, tmp_path, outputs=lambda model, x: model(x))
    assert loaded.get_config() == t.get_config()  # tuples stay tuples
    assert_config_round_trip(t)


def test_defended_classifier_round_trip(tmp_path, mnist_model_c, mnist_eval_batch):
    x = mnist_eval_batch[0][:8]
    model = DefendedClassifier(MedianSmoothing(window=2), mnist_model_c)
    assert_keras_round_trip(model, x, tmp_path, rtol=1e-5, atol=1e-5)


# What the transforms really do at MNIST eps 0.3 (FGSM crafted on model C alone, the papers'
# protocol; model C itself keeps <1% of the 500-digit test slice, docs/baselines.md):
# only 1-bit squeezing restores accuracy - eps 0.3 cannot move a 0 or 1 pixel across 0.5.
# The others remove far less than a dense +-0.3 perturbation: they stay at the undefended level.
BITS1_ADAPTIVE_MIN = 0.6  # measured 0.81 on 500 digits (BPDA PGD-20)
BITS3_ADAPTIVE_MAX = 0.2
TV_MIN_CLEAN = 0.8
TV_MIN_FGSM_GAIN = 0.1
FGSM_RESTORED = {"bit_depth": (dict(bits=1), 0.7)}  # name: (params, minimum accuracy under FGSM 0.3)
FGSM_NOT_RESTORED = {
    "jpeg": dict(quality=75),
    "median": dict(window=3),
    "wavelet": dict(sigma=None),
    "random_resize_pad": dict(),
    "pixel_deflection": dict(),
}


def test_fgsm_without_defense_fails(mnist_model_c, fgsm_batch):
    x, y, x_adv = fgsm_batch
    assert accuracy(mnist_model_c, x, y) == 1.0
    assert accuracy(mnist_model_c, x_adv, y) < 0.1


@pytest.mark.parametrize("name", sorted(FGSM_RESTORED))
def test_fgsm_accuracy_restored(name, mnist_model_c, fgsm_batch):
    params, minimum = FGSM_RESTORED[name]
    x, y, x_adv = fgsm_batch
    defended = DefendedClassifier(_make(name, **params), mnist_model_c)
    assert accuracy(defended, x, y) >= 0.95
    restored = accuracy(defended, x_adv, y)
    assert restored >= minimum and restored >= accuracy(mnist_model_c, x_adv, y) + 0.5


@pytest.mark.parametrize("name", sorted(FGSM_NOT_RESTORED))
def test_fgsm_not_restored_by_weak_transforms(name, mnist_model_c, fgsm_batch):
    """Clean accuracy is kept, but FGSM eps 0.3 accuracy stays within 5 points of no defense."""
    x, y, x_adv = fgsm_batch
    defended = DefendedClassifier(_make(name, **FGSM_NOT_RESTORED[name]), mnist_model_c)
    assert accuracy(defended, x, y) >= 0.9
    assert accuracy(defended, x_adv, y) <= accuracy(mnist_model_c, x_adv, y) + 0.05


@pytest.mark.slow
def test_fgsm_tv_min(mnist_model_c, fgsm_batch):
    """~50 ms per image (a scipy solve per image): slow."""
    x, y, x_adv = fgsm_batch
    defended = DefendedClassifier(_make("tv_min"), mnist_model_c)
    assert accuracy(defended, x, y) >= TV_MIN_CLEAN
    assert accuracy(defended, x_adv, y) <= accuracy(mnist_model_c, x_adv, y) + TV_MIN_FGSM_GAIN


def test_adaptive_bpda_pgd(mnist_model_c, fgsm_batch):
    """BPDA PGD through bit-depth reduction: 3 bits falls; 1 bit keeps what FGSM left (a real
    MNIST effect: only pixels in (0.2, 0.8) can be flipped at eps 0.3, not gradient masking)."""
    x, y, _ = fgsm_batch
    x, y = x[:100], y[:100]
    pgd = get_attack("pgd", eps=0.3, eps_iter=0.025, nb_iter=20, seed=0)
    three = DefendedClassifier(BitDepthReduction(bits=3), mnist_model_c)
    x_adv = pgd(three, x, y)
    assert np.abs(x_adv - x).max() <= 0.3 + 1e-6
    assert accuracy(three, x_adv, y) < BITS3_ADAPTIVE_MAX
    one = DefendedClassifier(BitDepthReduction(bits=1), mnist_model_c)
    assert accuracy(one, pgd(one, x, y), y) >= BITS1_ADAPTIVE_MIN


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_adaptive_eot_breaks_stochastic(name, mnist_model_c, fgsm_batch):
    x, y, _ = fgsm_batch
    x, y = x[:100], y[:100]
    defended = DefendedClassifier(_make(name), mnist_model_c)
    assert defended.stochastic
    eot = 2 if name == "tv_min" else 4
    x_adv = get_attack("pgd", eps=0.3, eps_iter=0.05, nb_iter=10, eot_samples=eot, seed=0)(defended, x, y)
    assert accuracy(defended, x_adv, y) < 0.1
