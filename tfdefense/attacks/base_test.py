"""Registry, parameter and input checks (no trained model needed)."""

import json
import re

import keras
import numpy as np
import pytest

from tfdefense.attacks import Attack, attack_backends, get_attack, list_attacks, register_attack

REQUIRED = [
    "fgsm",
    "bim",
    "pgd",
    "mifgsm",
    "cw_l2",
    "cw_linf",
    "cw_l0",
    "deepfool",
    "jsma",
    "lbfgs",
    "ead",
    "autoattack",
    "square",
    "fab_t",
    "gaussian_noise",
]


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(4)])


def _raises(argument, value, fn, *args, **kwargs):
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert f"Invalid value received for argument `{argument}`" in message, message
    assert f"Received: {argument}={value}" in message, message
    return message


def test_every_attack_is_registered_with_its_backends():
    names = list_attacks()
    for name in REQUIRED:
        assert name in names
    assert list_attacks("cw_*") == ["cw_l0", "cw_l2", "cw_linf"]
    for name in ("fgsm", "bim", "pgd", "mifgsm", "cw_l2", "cw_linf", "deepfool", "gaussian_noise"):
        assert attack_backends(name)[0] == "native"
    for name in ("fgsm", "bim", "pgd", "cw_l2"):
        assert set(attack_backends(name)) == {"native", "cleverhans", "art"}
    assert "mifgsm" in list_attacks(backend="cleverhans") and "mifgsm" not in list_attacks(backend="art")
    assert attack_backends("cw_l0") == ("native", "art") and attack_backends("ead") == ("art",)


def test_default_backend_and_params_are_jsonable():
    for name in REQUIRED + ["apgd", "spsa"]:  # (attacks needing a required object, like advgan, have no defaults)
        attack = get_attack(name)
        assert attack.name == name and attack.backend == attack_backends(name)[0]
        config = attack.config()
        assert json.loads(json.dumps(config, allow_nan=False)) == config
        assert config["params"] == attack.params
        attack.params["x"] = 1  # a copy
        assert "x" not in attack.params
        assert name in repr(attack)


def test_unknown_name_backend_and_parameter():
    _raises("name", "'pgd2'", get_attack, "pgd2")
    _raises("backend", "'torch'", get_attack, "pgd", backend="torch")
    message = _raises("backend", "'art'", get_attack, "mifgsm", backend="art")
    assert "cleverhans" in message and "native" in message
    _raises("backend", "'native'", get_attack, "ead", backend="native")
    _raises("epsilon", "0.3", get_attack, "pgd", epsilon=0.3)


def test_bad_values_name_the_argument():
    message = _raises("eps", "-1", get_attack, "pgd", eps=-1)
    assert message.startswith("Invalid value received for argument `eps`. Expected a value >= 0.")
    _raises("eps_iter", "0.5", get_attack, "pgd", eps=0.3, eps_iter=0.5)
    _raises("nb_iter", "0", get_attack, "bim", nb_iter=0)
    _raises("nb_iter", "2.5", get_attack, "pgd", nb_iter=2.5)
    _raises("norm", "1", get_attack, "pgd", norm=1)
    _raises("norm", "3", get_attack, "fgsm", norm=3)
    _raises("norm", "'l7'", get_attack, "mifgsm", norm="l7")
    _raises("targeted", "'yes'", get_attack, "fgsm", targeted="yes")
    _raises("target", "'random'", get_attack, "pgd", target="random")
    _raises("target", "'first'", get_attack, "pgd", targeted=True, target="first")
    _raises("targeted", "False", get_attack, "lbfgs", targeted=False)
    _raises("loss", "'hinge'", get_attack, "pgd", loss="hinge")
    _raises("seed", "-3", get_attack, "pgd", seed=-3)
    _raises("compute_dtype", "'int8'", get_attack, "pgd", compute_dtype="int8")
    _raises("nb_restarts", "3", get_attack, "pgd", rand_init=False, nb_restarts=3)
    _raises("binary_search_steps", "0", get_attack, "cw_l2", binary_search_steps=0)
    _raises("overshoot", "-0.1", get_attack, "deepfool", overshoot=-0.1)
    _raises("decrease_factor", "1.0", get_attack, "cw_linf", decrease_factor=1.0)  # tau would never shrink
    _raises("const_factor", "1", get_attack, "cw_linf", const_factor=1)
    _raises("binary_search_steps", "3", get_attack, "cw_l0", binary_search_steps=3)  # ART's parameter
    _raises("largest_const", "10.0", get_attack, "cw_l0", backend="art", largest_const=10.0)  # the reference's
    _raises("gamma", "2", get_attack, "jsma", gamma=2)
    _raises("variance", "0.01", get_attack, "gaussian_noise", sigma=0.1, variance=0.01)
    _raises("sigma", "-1", get_attack, "gaussian_noise", sigma=-1)
    _raises("spsa_samples", "7", get_attack, "spsa", spsa_samples=7)
    _raises("components", "['apgd-ce', 'fab']", get_attack, "autoattack", components=["apgd-ce", "fab"])
    _raises("components", "'apgd-ce'", get_attack, "autoattack", components="apgd-ce")


def test_backend_only_parameters_are_refused_elsewhere():
    message = _raises("eot_samples", "4", get_attack, "pgd", backend="art", eot_samples=4)
    assert "native" in message
    _raises("nb_restarts", "2", get_attack, "pgd", backend="cleverhans", nb_restarts=2)
    _raises("compute_dtype", "'bfloat16'", get_attack, "pgd", backend="art", compute_dtype="bfloat16")
    _raises("compute_dtype", "'bfloat16'", get_attack, "deepfool", compute_dtype="bfloat16")
    _raises("norm", "2", get_attack, "bim", backend="art", norm=2)
    assert get_attack("pgd", backend="art", nb_restarts=2).params["nb_restarts"] == 2


EPS_ATTACKS = ["fgsm", "bim", "pgd", "mifgsm", "apgd", "square", "fab_t", "autoattack", "spsa"]


@pytest.mark.parametrize("name", EPS_ATTACKS)
def test_linf_budgets_are_in_pixel_units(name):
    for eps in (1.5, 8, 255):
        message = _raises("eps", str(eps), get_attack, name, eps=eps)
        assert "[0, 1]" in message
    _raises("eps", "-0.1", get_attack, name, eps=-0.1)
    assert get_attack(name, eps=1.0).params["eps"] == 1.0  # the whole box is a legal (if trivial) budget


def test_step_and_random_start_budgets_are_checked():
    _raises("eps_iter", "2.0", get_attack, "pgd", eps=1.0, eps_iter=2.0)
    _raises("eps_iter", "-0.01", get_attack, "bim", eps_iter=-0.01)
    _raises("rand_minmax", "1.5", get_attack, "pgd", eps=0.3, rand_minmax=1.5)
    _raises("rand_minmax", "-0.1", get_attack, "pgd", eps=0.3, rand_minmax=-0.1)
    _raises("eps", "nan", get_attack, "pgd", eps=float("nan"))
    _raises("eps", "'0.3'", get_attack, "pgd", eps="0.3")


@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd", "square", "fab_t", "autoattack"])
def test_l2_budget_is_checked_against_the_image_diameter_at_call_time(name, tiny_model):
    x = np.random.default_rng(0).uniform(size=(3, 8, 8, 1)).astype(np.float32)  # L2 diameter sqrt(64) = 8
    small = {"nb_iter": 1} if name in ("pgd", "apgd", "fab_t", "autoattack") else {}
    if name == "square":
        small = {"nb_queries": 2}
    if name == "autoattack":
        small.update(nb_queries=2, n_target_classes=1)
    if name == "pgd":
        small["eps_iter"] = 0.5
    attack = get_attack(name, norm=2, eps=8.5, **small)  # built: the image size is not known yet
    message = _raises("eps", "8.5", attack, tiny_model, x)
    assert "8" in message and "(8, 8, 1)" in message
    _raises("eps", "-1.0", get_attack, name, norm=2, eps=-1.0)
    whole = get_attack(name, norm="l2", eps=8.0, **small)(tiny_model, x)  # the diameter itself is legal
    assert whole.shape == x.shape and whole.min() >= 0 and whole.max() <= 1


def test_unknown_norms_are_refused():
    for name in EPS_ATTACKS[:-1]:  # spsa is Linf only and has no `norm`
        _raises("norm", "3", get_attack, name, norm=3)
        _raises("norm", "'l5'", get_attack, name, norm="l5")
    _raises("norm", "2", get_attack, "spsa", norm=2)


def test_norm_spellings_are_canonical():
    for value in (np.inf, float("inf"), "inf", "Linf"):
        assert get_attack("pgd", norm=value).params["norm"] == "inf"
    for value in (2, 2.0, "l2", "L2", "2"):
        assert get_attack("pgd", norm=value, eps=1.0, eps_iter=0.1).params["norm"] == 2
        for name in ("apgd", "square", "fab_t", "autoattack"):
            assert get_attack(name, norm=value, eps=2.0).params["norm"] == 2


def test_replace_keeps_backend_and_other_params():
    attack = get_attack("pgd", backend="cleverhans", eps=0.1, eps_iter=0.01)
    stronger = attack.replace(nb_iter=80)
    assert stronger.backend == "cleverhans"
    assert stronger.params == {**attack.params, "nb_iter": 80}
    assert stronger.replace(backend="art").backend == "art"


def test_call_checks_inputs(tiny_model):
    attack = get_attack("fgsm", eps=0.1)
    x = np.random.default_rng(0).uniform(size=(3, 8, 8, 1)).astype(np.float32)
    _raises("x", "'array of shape (8, 8, 1)", attack, tiny_model, x[0])
    with pytest.raises(ValueError, match=r"argument `x`.*\[0, 1\]"):
        attack(tiny_model, x * 255)
    with pytest.raises(ValueError, match=r"argument `x`.*NaN"):
        attack(tiny_model, np.where(x > 0.5, np.nan, x))
    with pytest.raises(ValueError, match=r"argument `x`.*float"):
        attack(tiny_model, (x * 255).astype(np.uint8))
    with pytest.raises(ValueError, match=r"argument `y`.*3 labels"):
        attack(tiny_model, x, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"argument `y`.*labels in \[0, 3\]"):
        attack(tiny_model, x, np.array([0, 1, 7]))
    with pytest.raises(ValueError, match=r"argument `y_target`.*untargeted"):
        attack(tiny_model, x, y_target=np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"argument `y_target`.*target='random'"):
        get_attack("fgsm", targeted=True)(tiny_model, x)
    with pytest.raises(TypeError, match="model"):
        attack("not a model", x)
    empty = attack(tiny_model, x[:0])
    assert empty.shape == (0, 8, 8, 1) and empty.dtype == np.float32


def test_outputs_and_run_info(tiny_model):
    x = np.random.default_rng(0).uniform(size=(5, 8, 8, 1)).astype(np.float32)
    attack = get_attack("pgd", eps=0.1, eps_iter=0.05, nb_iter=3, seed=0)
    x_adv = attack(tiny_model, x)
    assert x_adv.dtype == np.float32 and x_adv.shape == x.shape
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    info = attack.last_run_info
    assert info["labels"] == "predictions" and info["num_examples"] == 5 and 0 <= info["success_rate"] <= 1
    json.dumps(info, allow_nan=False)
    # random targets: reproducible from the seed, never the label
    targeted = get_attack("pgd", eps=0.1, eps_iter=0.05, nb_iter=3, targeted=True, target="random", seed=1)
    y = np.array([0, 1, 2, 3, 0])
    targeted(tiny_model, x, y)
    assert targeted.last_run_info["targets"] == "random"


def test_random_targets_differ_from_labels():
    from tfdefense.attacks.base import random_targets

    y = np.arange(1000) % 10
    t = random_targets(y, 10, np.random.default_rng(0))
    assert np.all(t != y) and set(np.unique(t)) == set(range(10))


def test_register_attack_refuses_duplicates_and_missing_backends():
    with pytest.raises(ValueError, match="registered twice"):
        register_attack("pgd")(type("Dup", (Attack,), {"_run_native": lambda *a: None}))
    with pytest.raises(TypeError, match="_run_art"):
        register_attack("new_attack_without_art", backends=("art",))(type("NoArt", (Attack,), {}))
    assert "new_attack_without_art" not in list_attacks()


def test_error_messages_follow_keras_wording():
    with pytest.raises(ValueError) as info:
        get_attack("pgd", eps=-1)
    assert re.fullmatch(r"Invalid value received for argument `eps`\. Expected .+\. Received: eps=-1", str(info.value))
