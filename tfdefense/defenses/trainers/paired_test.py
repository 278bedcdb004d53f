import numpy as np
import pytest

from tfdefense.attacks import get_attack
from tfdefense.defenses import Pix2PixDefense, make_attack_pairs, split_by_class
from tfdefense.models import patchgan_preset, unet_generator_preset

SIX_ATTACKS = [
    ("fgsm", {"eps": 0.3}),
    ("fgsm", {"eps": 0.1}),
    ("bim", {"eps": 0.3, "eps_iter": 0.1, "nb_iter": 3}),
    ("pgd", {"eps": 0.3, "eps_iter": 0.1, "nb_iter": 3, "seed": 0}),
    ("mifgsm", {"eps": 0.3, "eps_iter": 0.1, "nb_iter": 3}),
    ("gaussian_noise", {"sigma": 0.1, "seed": 0}),
]


@pytest.fixture(scope="module")
def digits(mnist):
    (x, y), _ = mnist
    return x[:400], y[:400]


def test_split_is_even_within_every_class():
    y = np.repeat(np.arange(10), 18)
    assignment = split_by_class(y, 6, seed=0)
    counts = np.zeros((10, 6), int)
    np.add.at(counts, (y, assignment), 1)
    assert (counts == 3).all()  # 18 per class, 3 to each of 6 attacks
    # Uneven classes: remainders rotate so the attack totals stay balanced.
    y = np.repeat(np.arange(10), 7)
    totals = np.bincount(split_by_class(y, 3, seed=1), minlength=3)
    assert totals.max() - totals.min() <= 1
    with pytest.raises(ValueError, match="`y`.*Received: y=.?2 example"):
        split_by_class(np.array([0, 0, 1, 1, 1]), 3)


def test_versatile_recipe_18_per_class_over_6_attacks(tmp_path, digits, mnist_model_c):
    x, y = digits
    pairs = make_attack_pairs(mnist_model_c, x, y, SIX_ATTACKS, per_class=18, cache_dir=tmp_path)
    assert len(pairs) == 180 and pairs.x_adv.shape == (180, 28, 28, 1) and pairs.x_adv.dtype == np.float32
    counts = np.zeros((10, 6), int)
    np.add.at(counts, (pairs.y, pairs.attack_index), 1)
    assert (counts == 3).all()
    assert len(set(pairs.source_index)) == 180  # each image attacked once
    np.testing.assert_array_equal(pairs.x_clean, x[pairs.source_index])
    np.testing.assert_array_equal(pairs.y, y[pairs.source_index])
    linf = np.abs(pairs.x_adv - pairs.x_clean).reshape(180, -1).max(1)
    eps = np.array([0.3, 0.1, 0.3, 0.3, 0.3, 1.0])[pairs.attack_index]
    assert (linf <= eps + 1e-6).all() and pairs.x_adv.min() >= 0 and pairs.x_adv.max() <= 1
    assert pairs.attack_names[0] == "fgsm" and pairs.attack_names[1] == "fgsm(eps=0.1)"
    assert pairs.success[pairs.attack_index == 0].mean() > 0.5
    # The attack cache is used: a second build reads the same images back.
    assert len(list(tmp_path.glob("*.npz"))) == 6
    again = make_attack_pairs(mnist_model_c, x, y, SIX_ATTACKS, per_class=18, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.x_adv, pairs.x_adv)
    batch = next(iter(pairs.dataset(batch_size=32)))
    assert len(batch) == 3 and tuple(batch[0].shape) == (32, 28, 28, 1)


def test_every_image_under_every_attack(digits, mnist_model_c):
    x, y = digits[0][:30], digits[1][:30]
    attacks = [get_attack("fgsm", eps=0.3), "gaussian_noise"]
    pairs = make_attack_pairs(mnist_model_c, x, y, attacks, mode="all", include_clean=True)
    assert len(pairs) == 90
    assert np.bincount(pairs.attack_index + 1).tolist() == [30, 30, 30]  # identity, fgsm, noise
    identity = pairs.attack_index == -1
    np.testing.assert_array_equal(pairs.x_adv[identity], pairs.x_clean[identity])
    assert not pairs.success[identity].any()
    only_successful = pairs.select(pairs.success)
    assert len(only_successful) == pairs.success.sum()


def test_pairs_train_a_defense(digits, mnist_model_c):
    x, y = digits[0][:64], digits[1][:64]
    pairs = make_attack_pairs(mnist_model_c, x, y, [("fgsm", {"eps": 0.3})], mode="all")
    defense = Pix2PixDefense(unet_generator_preset("tiny"), patchgan_preset("tiny"), classifier=mnist_model_c)
    defense.compile()
    history = defense.fit(pairs.dataset(batch_size=32), epochs=1, verbose=0)
    assert np.isfinite(history.history["cls"][0])


def test_bad_inputs(digits, mnist_model_c):
    x, y = digits
    with pytest.raises(ValueError, match="`mode`.*Received: mode='each'"):
        make_attack_pairs(mnist_model_c, x, y, ["fgsm"], mode="each")
    with pytest.raises(ValueError, match="`attacks`"):
        make_attack_pairs(mnist_model_c, x, y, "fgsm")
    with pytest.raises(ValueError, match="`x`.*values in \\[0, 1\\]"):
        make_attack_pairs(mnist_model_c, x * 255, y, ["fgsm"])
    with pytest.raises(ValueError, match="`y`"):
        make_attack_pairs(mnist_model_c, x, y[:10], ["fgsm"])
    with pytest.raises(ValueError, match="`per_class`"):
        make_attack_pairs(mnist_model_c, x, y, ["fgsm"], per_class=1000)
    with pytest.raises(ValueError, match="`eps_iterations`"):
        make_attack_pairs(mnist_model_c, x, y, [("pgd", {"eps_iterations": 3})])
