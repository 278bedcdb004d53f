"""Every attack and backend on the real MNIST model C (conftest's `mnist_model_c`).

Success rate = fraction of correctly classified inputs (all of
`mnist_eval_batch` is) whose prediction changes (untargeted) or equals the
target (targeted). Budgets are small so the module runs in a few minutes on
2 CPU cores; full-strength runs are marked slow.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.attacks import bpda, get_attack, success_rate
from tfdefense.inference import predict_labels

# (name, backend, params, number of images) - small budgets: this checks the output contract
CONTRACT_CASES = [
    ("fgsm", "native", {"eps": 0.3}, 100),
    ("fgsm", "native", {"eps": 2.0, "norm": 2}, 100),
    ("fgsm", "cleverhans", {"eps": 0.3}, 100),
    ("fgsm", "art", {"eps": 0.3}, 100),
    ("bim", "native", {"eps": 0.2, "eps_iter": 0.05, "nb_iter": 5}, 100),
    ("bim", "cleverhans", {"eps": 0.2, "eps_iter": 0.05, "nb_iter": 5}, 100),
    ("bim", "art", {"eps": 0.2, "eps_iter": 0.05, "nb_iter": 5}, 100),
    ("pgd", "native", {"eps": 1.5, "eps_iter": 0.3, "nb_iter": 5, "norm": 2}, 100),
    ("pgd", "cleverhans", {"eps": 1.5, "eps_iter": 0.3, "nb_iter": 5, "norm": 2}, 100),
    ("pgd", "art", {"eps": 1.5, "eps_iter": 0.3, "nb_iter": 5, "norm": 2}, 100),
    ("pgd", "native", {"eps": 0.1, "eps_iter": 0.02, "nb_iter": 5, "nb_restarts": 2, "loss": "cw", "seed": 0}, 100),
    ("mifgsm", "native", {"eps": 0.2, "nb_iter": 5}, 100),
    ("mifgsm", "cleverhans", {"eps": 0.2, "nb_iter": 5}, 100),
    ("cw_l2", "native", {"binary_search_steps": 2, "max_iterations": 20, "learning_rate": 0.1}, 50),
    ("cw_l2", "cleverhans", {"binary_search_steps": 2, "max_iterations": 20, "learning_rate": 0.1}, 20),
    ("cw_l2", "art", {"binary_search_steps": 1, "max_iterations": 5, "learning_rate": 0.1}, 10),
    ("cw_linf", "native", {"max_iterations": 10, "learning_rate": 0.05}, 10),
    ("cw_linf", "art", {"max_iterations": 1, "learning_rate": 0.1}, 2),
    ("cw_l0", "native", {"max_iterations": 10, "learning_rate": 0.1, "largest_const": 100.0}, 4),
    ("cw_l0", "art", {"binary_search_steps": 1, "max_iterations": 3, "learning_rate": 0.1}, 4),
    ("deepfool", "native", {}, 100),
    ("deepfool", "art", {"max_iter": 3}, 10),
    ("jsma", "native", {"gamma": 0.03, "seed": 0}, 20),
    ("jsma", "art", {"gamma": 0.02, "seed": 0}, 5),
    ("lbfgs", "native", {"binary_search_steps": 1, "max_iterations": 10, "initial_const": 10.0, "seed": 0}, 10),
    ("ead", "art", {"binary_search_steps": 1, "max_iterations": 5, "learning_rate": 0.1}, 5),
    ("apgd", "native", {"eps": 0.1, "nb_iter": 10, "seed": 0}, 100),
    ("apgd", "native", {"eps": 1.5, "nb_iter": 10, "norm": 2, "loss": "dlr", "seed": 0}, 100),
    ("apgd", "art", {"eps": 0.1, "nb_iter": 5}, 20),
    ("square", "native", {"eps": 0.1, "nb_queries": 100, "seed": 0}, 100),
    ("square", "native", {"eps": 1.5, "norm": 2, "nb_queries": 50, "seed": 0}, 50),
    ("fab_t", "native", {"eps": 1.5, "norm": 2, "nb_iter": 10, "n_target_classes": 2, "seed": 0}, 50),
    ("square", "art", {"eps": 0.1, "nb_queries": 20}, 10),
    ("autoattack", "native", {"eps": 0.1, "nb_iter": 5, "n_target_classes": 2, "nb_queries": 20, "seed": 0}, 20),
    ("autoattack", "art", {"eps": 0.1, "nb_iter": 5, "n_target_classes": 1, "nb_queries": 10, "seed": 0}, 10),
    (
        "autoattack",
        "art",
        {"eps": 1.5, "norm": 2, "nb_iter": 5, "n_target_classes": 1, "nb_queries": 10, "seed": 0},
        10,
    ),
    ("spsa", "native", {"eps": 0.3, "nb_iter": 5, "spsa_samples": 32, "learning_rate": 0.05, "seed": 0}, 20),
    ("spsa", "cleverhans", {"eps": 0.3, "nb_iter": 3, "spsa_samples": 16, "learning_rate": 0.05}, 3),
    ("gaussian_noise", "native", {"sigma": 0.2, "seed": 0}, 100),
]


def _l2(x, x_adv):
    return np.sqrt(np.sum((x_adv - x).reshape(len(x), -1) ** 2, axis=1))


def _check_contract(attack, x, x_adv):
    assert isinstance(x_adv, np.ndarray) and x_adv.dtype == np.float32 and x_adv.shape == x.shape
    assert np.all(np.isfinite(x_adv)) and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    params = attack.params
    if attack.bounded:
        delta = (x_adv - x).reshape(len(x), -1)
        if params.get("norm", "inf") == "inf":
            assert np.abs(delta).max() <= params["eps"] + 1e-6
        else:
            assert np.sqrt((delta.astype(np.float64) ** 2).sum(1)).max() <= params["eps"] * (1 + 1e-5)


@pytest.mark.parametrize(
    "name,backend,params,n", CONTRACT_CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CONTRACT_CASES)]
)
def test_output_contract(mnist_model_c, mnist_eval_batch, name, backend, params, n):
    x, y = mnist_eval_batch[0][:n], mnist_eval_batch[1][:n]
    attack = get_attack(name, backend=backend, **params)
    x_adv = attack(mnist_model_c, x, y)
    _check_contract(attack, x, x_adv)
    info = attack.last_run_info
    assert info["backend"] == backend and info["num_examples"] == n
    strong = attack.bounded and params.get("eps", 0.3) >= 0.2 and params.get("norm") != 2
    if strong and name not in ("gaussian_noise", "spsa"):
        assert info["success_rate"] > 0.3  # it is an attack, not a no-op
    if name == "autoattack":
        names = [c["name"] for c in info["components"]]
        assert names == ["apgd-ce", "apgd-t", "fab-t", "square"] and info["not_run"] == {}


def test_fgsm_linf_03_succeeds_85_percent(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch
    rate = success_rate(mnist_model_c, x, get_attack("fgsm", eps=0.3)(mnist_model_c, x, y), y)
    print(f"FGSM eps=0.3 success: {rate:.3f}")
    assert rate >= 0.85


def test_pgd40_linf_03_succeeds_99_percent(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch
    attack = get_attack("pgd", eps=0.3, eps_iter=0.01, nb_iter=40, seed=0)
    rate = success_rate(mnist_model_c, x, attack(mnist_model_c, x, y), y)
    print(f"PGD-40 eps=0.3 success: {rate:.3f}")
    assert rate >= 0.99


def test_pgd_backends_agree_within_3_points(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch
    rates = {}
    for backend in ("native", "cleverhans", "art"):
        attack = get_attack("pgd", backend=backend, eps=0.12, eps_iter=0.01, nb_iter=20, seed=0)
        rates[backend] = success_rate(mnist_model_c, x, attack(mnist_model_c, x, y), y)
    print("PGD eps=0.12, 20 iterations, random start, success by backend:", rates)
    assert 0.1 < rates["native"] < 0.95  # an informative operating point
    assert max(rates.values()) - min(rates.values()) <= 0.03


def test_bim_is_deterministic_and_identical_across_backends(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:100], mnist_eval_batch[1][:100]
    outs = [
        get_attack("bim", backend=b, eps=0.1, eps_iter=0.02, nb_iter=5)(mnist_model_c, x, y)
        for b in ("native", "cleverhans", "art")
    ]
    for other in outs[1:]:
        assert np.mean(np.abs(other - outs[0]) > 1e-4) < 0.01  # sign flips of ~0 gradients only


@pytest.mark.parametrize(
    "name, params",
    [("cw_l2", dict(binary_search_steps=4, max_iterations=50, learning_rate=0.1, initial_const=1.0)), ("deepfool", {})],
)
def test_minimum_distortion_attack_native_succeeds_95_percent(name, params, mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:100], mnist_eval_batch[1][:100]
    x_adv = get_attack(name, **params)(mnist_model_c, x, y)
    rate = success_rate(mnist_model_c, x, x_adv, y)
    broken = predict_labels(mnist_model_c, x_adv) != y
    print(f"{name} native success: {rate:.3f}, mean L2 of successes: {_l2(x, x_adv)[broken].mean():.3f}")
    assert rate >= 0.95
    assert _l2(x, x_adv)[broken].mean() < 3.0


@pytest.mark.slow
def test_cw_linf_native_finds_small_linf_examples(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:20], mnist_eval_batch[1][:20]
    params = dict(max_iterations=30, learning_rate=0.05)
    x_adv = get_attack("cw_linf", **params)(mnist_model_c, x, y)
    linf = np.abs(x_adv - x).reshape(len(x), -1).max(axis=1)
    rate = success_rate(mnist_model_c, x, x_adv, y)
    print(f"cw_linf native success: {rate:.3f}, Linf of each: {np.round(linf, 3).tolist()}")
    assert rate >= 0.95
    # tau shrinks round after round: far below the first round's bound of 1, near model C's PGD scale
    assert np.median(linf) < 0.2
    pgd = get_attack("pgd", eps=float(np.median(linf)) * 0.5, eps_iter=0.01, nb_iter=40, seed=0)
    assert success_rate(mnist_model_c, x, pgd(mnist_model_c, x, y), y) < 0.5  # the found examples are not slack

    targets = (y + 1) % 10
    targeted = get_attack("cw_linf", targeted=True, **params)(mnist_model_c, x, y, y_target=targets)
    assert success_rate(mnist_model_c, x, targeted, y, y_target=targets) >= 0.9


@pytest.mark.slow
def test_cw_l0_native_changes_few_pixels(mnist_model_c, mnist_eval_batch):
    from tfdefense.attacks.carlini import _fix_pixels

    x, y = mnist_eval_batch[0][:10], mnist_eval_batch[1][:10]
    x_adv = get_attack("cw_l0", max_iterations=50, largest_const=1e4)(mnist_model_c, x, y)
    changed = (np.abs(x_adv - x) > 1e-4).reshape(len(x), -1).sum(axis=1)
    rate = success_rate(mnist_model_c, x, x_adv, y)
    print(f"cw_l0 native success: {rate:.3f}, pixels changed: {changed.tolist()}")
    assert rate >= 0.9
    assert np.median(changed) <= 30  # of 784: the rounds fixed most pixels back to the input

    # one round's selection: the lowest scores first, at most ceil(0.3 * sqrt(pixels moved)), none already fixed
    change = np.zeros((1, 4, 4, 1), np.float32)
    change[0, :, :, 0] = np.arange(16).reshape(4, 4) * 1e-3  # 15 pixels moved, scores grow with the index
    allowed = np.ones((1, 4, 4, 1), np.float32)
    allowed[0, 0, 1, 0] = 0.0
    after = _fix_pixels(tf.constant(change), tf.ones_like(change), tf.constant(allowed)).numpy().ravel()
    assert after[1] == 0 and list(np.flatnonzero(after == 0)) == [0, 1, 2]  # ceil(0.3 * sqrt(15)) = 2 more fixed


def test_jsma_hits_its_target_80_percent(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:100], mnist_eval_batch[1][:100]
    attack = get_attack("jsma", theta=1.0, gamma=0.1, target="random", seed=0)
    x_adv = attack(mnist_model_c, x, y)
    targets = (y + np.random.default_rng(0).integers(1, 10, len(y))) % 10  # the seed's stream
    hit = success_rate(mnist_model_c, x, x_adv, y, y_target=targets)
    changed = np.sum(np.abs(x_adv - x).reshape(len(x), -1) > 1e-6, axis=1)
    print(f"JSMA target hit rate: {hit:.3f}, mean pixels changed: {changed.mean():.1f}")
    assert attack.last_run_info["success_rate"] == pytest.approx(hit)
    assert hit >= 0.80
    assert changed.max() <= int(784 * 0.1) + 1


def test_targeted_attacks_take_y_target(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:100], mnist_eval_batch[1][:100]
    targets = (y + 1) % 10
    attack = get_attack("pgd", eps=0.3, eps_iter=0.02, nb_iter=40, targeted=True, seed=0)
    x_adv = attack(mnist_model_c, x, y, y_target=targets)
    assert success_rate(mnist_model_c, x, x_adv, y, y_target=targets) >= 0.85
    lbfgs = get_attack("lbfgs", binary_search_steps=2, max_iterations=30, initial_const=10.0)
    x_adv = lbfgs(mnist_model_c, x[:10], y[:10], y_target=targets[:10])
    assert success_rate(mnist_model_c, x[:10], x_adv, y[:10], y_target=targets[:10]) >= 0.8


def test_y_none_uses_predictions(mnist_model_c, mnist_eval_batch):
    x = mnist_eval_batch[0][:50]
    a = get_attack("bim", eps=0.1, eps_iter=0.02, nb_iter=5)
    from_predictions = a(mnist_model_c, x)
    assert a.last_run_info["labels"] == "predictions"
    np.testing.assert_array_equal(from_predictions, a(mnist_model_c, x, predict_labels(mnist_model_c, x)))
    assert a.last_run_info["labels"] == "given"


def test_identity_purifier_gives_the_same_attack(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:50], mnist_eval_batch[1][:50]
    purifier = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Identity()], name="identity_purifier")
    defended = keras.Sequential([keras.Input((28, 28, 1)), purifier, mnist_model_c])
    for name, params in (("pgd", {"eps": 0.1, "eps_iter": 0.01, "nb_iter": 10, "seed": 3}), ("deepfool", {})):
        plain = get_attack(name, **params)(mnist_model_c, x, y)
        through = get_attack(name, **params)(defended, x, y)
        np.testing.assert_allclose(through, plain, atol=1e-5)


def test_bpda_beats_a_gradient_masking_quantizer(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:100], mnist_eval_batch[1][:100]

    def quantize(z):
        return tf.round(z * 4.0) / 4.0

    masked = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(quantize), mnist_model_c])
    wrapped = keras.Sequential([keras.Input((28, 28, 1)), bpda(quantize), mnist_model_c])
    np.testing.assert_array_equal(predict_labels(masked, x), predict_labels(wrapped, x))  # same forward pass
    assert np.mean(predict_labels(masked, x) == y) > 0.9
    attack = get_attack("pgd", eps=0.3, eps_iter=0.03, nb_iter=20, seed=0)
    plain_rate = success_rate(masked, x, attack(masked, x, y), y)
    bpda_rate = success_rate(wrapped, x, attack(wrapped, x, y), y)
    print(f"PGD through tf.round quantizer: plain gradients {plain_rate:.3f}, BPDA {bpda_rate:.3f}")
    assert plain_rate <= 0.1
    assert bpda_rate >= 0.9


def test_eot_averages_gradients_of_a_stochastic_model(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:100], mnist_eval_batch[1][:100]

    class RandomShift(keras.layers.Layer):
        def call(self, z):
            shift = tf.random.uniform([2], -2, 3, dtype=tf.int32)
            return tf.roll(z, shift, axis=[1, 2])

    stochastic = keras.Sequential([keras.Input((28, 28, 1)), RandomShift(), mnist_model_c])
    attack = get_attack("pgd", eps=0.2, eps_iter=0.02, nb_iter=15, eot_samples=4, seed=0)
    x_adv = attack(stochastic, x, y)
    _check_contract(attack, x, x_adv)
    rates = [np.mean(predict_labels(stochastic, x_adv) != y) for _ in range(3)]
    assert np.mean(rates) > 0.5

    # on a deterministic model EOT changes nothing
    one = get_attack("bim", eps=0.1, eps_iter=0.02, nb_iter=5)(mnist_model_c, x, y)
    many = get_attack("bim", eps=0.1, eps_iter=0.02, nb_iter=5, eot_samples=3)(mnist_model_c, x, y)
    assert np.mean(np.abs(one - many) > 1e-4) < 0.01


def test_restarts_keep_the_per_example_best(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch
    base = dict(eps=0.1, eps_iter=0.01, nb_iter=10, seed=0)
    single = success_rate(mnist_model_c, x, get_attack("pgd", **base)(mnist_model_c, x, y), y)
    several = success_rate(mnist_model_c, x, get_attack("pgd", nb_restarts=4, **base)(mnist_model_c, x, y), y)
    print(f"PGD eps=0.1: 1 restart {single:.3f}, 4 restarts {several:.3f}")
    assert several >= single - 0.01


def test_bfloat16_compute_keeps_success_and_restores_the_model(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch
    attack = get_attack("pgd", eps=0.3, eps_iter=0.01, nb_iter=40, seed=0, compute_dtype="bfloat16")
    x_adv = attack(mnist_model_c, x, y)
    _check_contract(attack, x, x_adv)
    assert success_rate(mnist_model_c, x, x_adv, y) >= 0.99
    assert all(layer.dtype_policy.name == "float32" for layer in mnist_model_c.layers)
    assert mnist_model_c(x[:2]).dtype == "float32"


def test_apgd_in_bfloat16_breaks_model_c_like_float32(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:100], mnist_eval_batch[1][:100]
    name, params = "apgd", dict(eps=0.3, nb_iter=20)
    rates = {}
    for dtype in (None, "bfloat16"):
        attack = get_attack(name, seed=0, compute_dtype=dtype, **params)
        x_adv = attack(mnist_model_c, x, y)
        _check_contract(attack, x, x_adv)
        rates[dtype] = success_rate(mnist_model_c, x, x_adv, y)
    assert rates["bfloat16"] >= rates[None] - 0.03 and rates[None] >= 0.8, rates
    assert all(layer.dtype_policy.name == "float32" for layer in mnist_model_c.layers)
    with pytest.raises(ValueError, match="compute_dtype"):
        get_attack(name, backend="art", compute_dtype="bfloat16", **params)


def test_autoattack_reports_its_components(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:50], mnist_eval_batch[1][:50]
    attack = get_attack("autoattack", eps=0.1, nb_iter=10, n_target_classes=3, nb_queries=100, seed=0)
    x_adv = attack(mnist_model_c, x, y)
    info = attack.last_run_info
    robust = np.mean(predict_labels(mnist_model_c, x_adv) == y)
    parts = info["components"]
    assert [p["name"] for p in parts] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert all(p["backend"] == "native" for p in parts if p["attacked"])
    assert parts[-1]["robust_after"] == pytest.approx(robust)
    assert sum(p["broken"] for p in parts) == info["num_success"]
    assert 1 - robust == pytest.approx(info["success_rate"])
    assert info["not_run"] == {}


def _pgd_l2_step(eps, nb_iter):
    return 2.5 * eps / nb_iter  # Madry et al.'s step rule


def test_apgd_l2_breaks_at_least_as_many_digits_as_pgd_l2_at_equal_iterations(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch
    eps, nb_iter = 2.0, 20
    apgd = get_attack("apgd", norm=2, eps=eps, nb_iter=nb_iter, seed=0)
    pgd = get_attack("pgd", norm=2, eps=eps, eps_iter=_pgd_l2_step(eps, nb_iter), nb_iter=nb_iter, seed=0)
    x_apgd, x_pgd = apgd(mnist_model_c, x, y), pgd(mnist_model_c, x, y)
    broken_apgd = int(np.sum(predict_labels(mnist_model_c, x_apgd) != y))
    broken_pgd = int(np.sum(predict_labels(mnist_model_c, x_pgd) != y))
    print(f"L2 eps {eps}, {nb_iter} iterations, {len(x)} digits: APGD-CE breaks {broken_apgd}, PGD {broken_pgd}")
    _check_contract(apgd, x, x_apgd)
    assert broken_pgd > len(x) // 4  # an informative operating point, not a trivial one
    assert broken_apgd >= broken_pgd


def test_apgd_l2_projection_uses_the_whole_budget_inside_the_box(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:50], mnist_eval_batch[1][:50]
    x_adv = get_attack("apgd", norm=2, eps=1.0, nb_iter=10, seed=0)(mnist_model_c, x, y)
    norms = _l2(x, x_adv)
    print(f"APGD-L2 eps 1.0: L2 norms {norms.min():.5f}..{norms.max():.5f}")
    assert norms.max() <= 1.0 * (1 + 1e-6)
    assert np.median(norms) > 0.999  # the exact ball-and-box projection leaves no budget unused


def test_apgd_t_l2_stays_in_the_ball_and_breaks_model_c(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:100], mnist_eval_batch[1][:100]
    attack = get_attack("autoattack", norm=2, eps=2.0, components=["apgd-t"], nb_iter=20, n_target_classes=3, seed=0)
    x_adv = attack(mnist_model_c, x, y)
    rate = attack.last_run_info["success_rate"]
    print(f"APGD-T L2 eps 2.0 (3 targets x 20 iterations): success {rate:.3f}, max L2 {_l2(x, x_adv).max():.6f}")
    _check_contract(attack, x, x_adv)
    assert _l2(x, x_adv).max() <= 2.0 * (1 + 1e-6)
    assert rate >= 0.6


def test_square_l2_stays_in_the_ball_and_breaks_model_c(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:100], mnist_eval_batch[1][:100]
    attack = get_attack("square", norm=2, eps=2.0, nb_queries=300, seed=0)
    x_adv = attack(mnist_model_c, x, y)
    rate = attack.last_run_info["success_rate"]
    norms = _l2(x, x_adv)
    print(
        f"Square-L2 eps 2.0, 300 queries: success {rate:.3f}, L2 {norms.min():.4f}..{norms.max():.6f}, "
        f"{attack.last_run_info['seconds']:.1f} s"
    )
    _check_contract(attack, x, x_adv)
    assert norms.max() <= 2.0 * (1 + 1e-6)
    assert np.median(norms) > 1.5  # it searches at the budget, not near x
    assert rate >= 0.1  # a random search: 300 queries; 1000 reach about half (docs/attacks.md)
    runs = [
        get_attack("square", norm=2, eps=2.0, nb_queries=20, seed=0)(mnist_model_c, x[:10], y[:10]) for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])  # seeded: reproducible


def test_targeted_square_hits_its_target(mnist_model_c, mnist_eval_batch):
    # it searches while the target is not predicted (the start almost never hits it) and stops once it is
    x, y = mnist_eval_batch[0][:50], mnist_eval_batch[1][:50]
    targets = (y + 1) % 10
    for norm, eps in (("inf", 0.3), (2, 3.0)):
        attack = get_attack("square", norm=norm, eps=eps, nb_queries=200, targeted=True, seed=0)
        x_adv = attack(mnist_model_c, x, y, y_target=targets)
        hit = np.mean(predict_labels(mnist_model_c, x_adv) == targets)
        print(f"targeted Square {norm} eps {eps}, 200 queries: target hit {hit:.3f}")
        assert hit >= 0.1


def test_gaussian_noise_sigma_and_variance(mnist_model_c, mnist_eval_batch):
    x = np.full((50, 28, 28, 1), 0.5, np.float32)
    a = get_attack("gaussian_noise", sigma=0.1, seed=0)(mnist_model_c, x)
    b = get_attack("gaussian_noise", variance=0.01, seed=0)(mnist_model_c, x)
    np.testing.assert_array_equal(a, b)
    assert np.std(a - x) == pytest.approx(0.1, rel=0.05)
    c = get_attack("gaussian_noise", sigma=0.1, seed=1)(mnist_model_c, x)
    assert not np.array_equal(a, c)


SLOW_CASES = [  # (name, backend, params, images, minimum success)
    ("cw_l2", "native", {}, 50, 0.95),  # the cleverhans defaults: 5 binary steps x 1000 Adam steps
    (
        "cw_l2",
        "cleverhans",
        {"binary_search_steps": 3, "max_iterations": 200, "learning_rate": 0.05, "initial_const": 1.0},
        50,
        0.9,
    ),
    ("deepfool", "art", {}, 50, 0.95),
    ("jsma", "art", {"gamma": 0.2, "seed": 0}, 50, 0.8),
    ("autoattack", "native", {"eps": 0.2, "seed": 0}, 50, 0.9),
    (
        "ead",
        "art",
        {"binary_search_steps": 3, "max_iterations": 50, "learning_rate": 0.1, "initial_const": 1.0},
        20,
        0.9,
    ),
    ("cw_linf", "native", {}, 10, 1.0),  # the reference code's defaults
    ("cw_l0", "native", {}, 3, 1.0),  # the reference code's defaults
    # ART's C&W-L0 reruns its L2 attack per pixel-fixing round: ~45 s per image here
    (
        "cw_l0",
        "art",
        {"binary_search_steps": 2, "max_iterations": 20, "learning_rate": 0.1, "initial_const": 1.0},
        5,
        0.2,
    ),
    ("spsa", "native", {"eps": 0.3, "nb_iter": 50, "learning_rate": 0.05, "seed": 0}, 50, 0.9),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,backend,params,n,minimum", SLOW_CASES, ids=[f"{c[0]}-{c[1]}" for c in SLOW_CASES])
def test_full_strength_attacks(mnist_model_c, mnist_eval_batch, name, backend, params, n, minimum):
    x, y = mnist_eval_batch[0][:n], mnist_eval_batch[1][:n]
    attack = get_attack(name, backend=backend, **params)
    x_adv = attack(mnist_model_c, x, y)
    _check_contract(attack, x, x_adv)
    rate = attack.last_run_info["success_rate"]
    print(
        f"{name} [{backend}] {params}: success {rate:.3f}, mean L2 {_l2(x, x_adv).mean():.3f}, "
        f"{attack.last_run_info['seconds']:.0f} s"
    )
    assert rate >= minimum


@pytest.mark.parametrize(
    "name, params",
    [
        ("cw_linf", dict(max_iterations=20, learning_rate=0.05)),
        ("cw_l0", dict(max_iterations=20, learning_rate=0.1, largest_const=100.0)),
    ],
)
def test_reference_schedules_attack_a_sequential_and_a_bare_tf_module_savedmodel(name, params, tmp_path):
    rng = np.random.default_rng(0)
    sequential = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])

    class Bare(tf.Module):
        def __init__(self, model):
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32)])
        def __call__(self, x):
            return self.model(x)

    tf.saved_model.save(Bare(sequential), str(tmp_path))
    loaded = tf.saved_model.load(str(tmp_path))
    x = rng.random((6, 8, 8, 1)).astype(np.float32)
    y = predict_labels(sequential, x)
    for model in (sequential, loaded):
        x_adv = get_attack(name, **params)(model, x, y)
        assert x_adv.dtype == np.float32 and x_adv.min() >= 0 and x_adv.max() <= 1
        assert success_rate(sequential, x, x_adv, y) == 1.0
