"""FAB-T: the exact Linf and L2 box projections, closed-form minimal perturbations of a linear model, model C."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import linprog, minimize

from tfdefense.attacks import get_attack, list_attacks
from tfdefense.attacks.fab import l2_box_projection, linf_box_projection
from tfdefense.inference import predict_labels


def _lp_projection_norm(point, w, r):
    """min ||d||_inf s.t. w . d = r, 0 <= point + d <= 1, as a linear program in (d, s)."""
    dim = len(point)
    cost = np.r_[np.zeros(dim), 1.0]
    eye = np.eye(dim)
    a_ub = np.block([[eye, -np.ones((dim, 1))], [-eye, -np.ones((dim, 1))]])
    bounds = [(-p, 1 - p) for p in point] + [(0, None)]
    res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(2 * dim), A_eq=np.r_[w, 0.0][None], b_eq=[r], bounds=bounds)
    return res.fun if res.status == 0 else None


def test_box_projection_matches_a_linear_program():
    rng = np.random.default_rng(0)
    dim = 30
    points = rng.uniform(0, 1, (12, dim)).astype(np.float32)
    points[:, :5] = np.round(points[:, :5])  # pixels on the box edges, as in MNIST
    w = rng.normal(size=(12, dim)).astype(np.float32)
    w[:, 5:8] = 0.0  # coordinates the boundary does not depend on
    r = (rng.normal(size=12) * np.abs(w).sum(1) * np.linspace(0.05, 0.6, 12)).astype(np.float32)
    d = linf_box_projection(tf.constant(points), tf.constant(w), tf.constant(r)).numpy()
    checked = 0
    for i in range(12):
        best = _lp_projection_norm(points[i].astype(np.float64), w[i].astype(np.float64), float(r[i]))
        if best is None:  # infeasible: the step goes to the box corner that moves w . d most towards r
            assert abs(w[i] @ d[i]) < abs(r[i]) and np.sign(w[i] @ d[i]) == np.sign(r[i])
            continue
        checked += 1
        assert w[i] @ d[i] == pytest.approx(r[i], rel=1e-4, abs=1e-5)
        assert np.abs(d[i]).max() == pytest.approx(best, rel=1e-4, abs=1e-6)
        assert np.all(points[i] + d[i] >= -1e-6) and np.all(points[i] + d[i] <= 1 + 1e-6)
        assert np.all(d[i, 5:8] == 0)
    assert checked >= 6


def _qp_projection_norm(point, w, r):
    """min ||d||_2 s.t. w . d = r, 0 <= point + d <= 1 (SLSQP); None when infeasible."""
    corner = np.abs(w) @ np.where(w * r > 0, 1 - point, point)  # the largest |w . d| the box allows
    if corner < abs(r):
        return None
    res = minimize(
        lambda d: d @ d,
        np.zeros(len(point)),
        jac=lambda d: 2 * d,
        method="SLSQP",
        constraints=[{"type": "eq", "fun": lambda d: w @ d - r, "jac": lambda d: w}],
        bounds=[(-p, 1 - p) for p in point],
        options={"ftol": 1e-12, "maxiter": 500},
    )
    assert res.success and abs(w @ res.x - r) < 1e-6
    return np.sqrt(res.fun)


def test_l2_box_projection_matches_a_quadratic_program():
    rng = np.random.default_rng(0)
    dim = 30
    points = rng.uniform(0, 1, (12, dim)).astype(np.float32)
    points[:, :5] = np.round(points[:, :5])
    w = rng.normal(size=(12, dim)).astype(np.float32)
    w[:, 5:8] = 0.0
    r = (rng.normal(size=12) * np.linalg.norm(w, axis=1) * np.linspace(0.2, 6.0, 12)).astype(np.float32)
    d = l2_box_projection(tf.constant(points), tf.constant(w), tf.constant(r)).numpy()
    checked = 0
    for i in range(12):
        best = _qp_projection_norm(points[i].astype(np.float64), w[i].astype(np.float64), float(r[i]))
        assert np.all(points[i] + d[i] >= -1e-6) and np.all(points[i] + d[i] <= 1 + 1e-6)
        assert np.all(d[i, 5:8] == 0)
        if best is None:  # infeasible: the box corner that moves w . d most towards r
            assert abs(w[i] @ d[i]) < abs(r[i]) and np.sign(w[i] @ d[i]) == np.sign(r[i])
            np.testing.assert_allclose(
                np.abs(w[i] @ d[i]), np.abs(w[i]) @ np.where(w[i] * r[i] > 0, 1 - points[i], points[i]), rtol=1e-5
            )
            continue
        checked += 1
        assert w[i] @ d[i] == pytest.approx(r[i], rel=1e-4, abs=1e-5)
        assert np.linalg.norm(d[i]) == pytest.approx(best, rel=1e-4, abs=1e-6)
    assert 6 <= checked < 12


def _linear_model(seed=0, features=(8, 8, 1)):
    rng = np.random.default_rng(seed)
    dim = int(np.prod(features))
    model = keras.Sequential([keras.Input(features), keras.layers.Flatten(), keras.layers.Dense(10)])
    weights = rng.normal(0, 0.05, (dim, 10)).astype(np.float32)
    bias = rng.normal(0, 0.1, 10).astype(np.float32)
    model.layers[-1].set_weights([weights, bias])
    return model, weights, bias


def test_fab_t_finds_the_closed_form_minimal_linf_perturbation_of_a_linear_model():
    model, weights, bias = _linear_model()
    rng = np.random.default_rng(1)
    x = rng.uniform(0.35, 0.65, (12, 8, 8, 1)).astype(np.float32)  # >= 0.35 from the box edges
    logits = x.reshape(len(x), -1) @ weights + bias
    y = logits.argmax(1)
    # Minimal Linf distance to the half-space z_t >= z_y, ignoring the box: margin / ||W_t - W_y||_1.
    minimal = np.full(len(x), np.inf)
    for i in range(len(x)):
        for t in range(10):
            if t != y[i]:
                margin = logits[i, y[i]] - logits[i, t]
                minimal[i] = min(minimal[i], margin / np.abs(weights[:, t] - weights[:, y[i]]).sum())
    assert minimal.max() < 0.3  # the box [0, 1] does not bind: the closed form is the true minimum
    attack = get_attack("fab_t", eps=1.0, early_stop=False, seed=0)
    x_adv = attack(model, x)  # y=None: the model's predictions (= y)
    found = np.abs(x_adv - x).reshape(len(x), -1).max(1)
    print("FAB-T / closed-form minimal Linf:", np.round(found / minimal, 4))
    assert np.all(predict_labels(model, x_adv) != y)
    assert np.all(found >= minimal * (1 - 1e-3))  # nothing below the true minimum
    assert np.all(found <= minimal * 1.05)
    np.testing.assert_allclose(attack.last_min_norms, found, rtol=1e-5)


def test_fab_t_l2_finds_the_closed_form_minimal_l2_perturbation_of_a_linear_model():
    model, weights, bias = _linear_model()
    rng = np.random.default_rng(1)
    x = rng.uniform(0.35, 0.65, (12, 8, 8, 1)).astype(np.float32)
    flat = x.reshape(len(x), -1)
    logits = flat @ weights + bias
    y = logits.argmax(1)
    # Minimal L2 distance to the half-space z_t >= z_y, ignoring the box: margin / ||W_y - W_t||_2,
    # reached by d = -margin (W_y - W_t) / ||W_y - W_t||^2.
    minimal = np.full(len(x), np.inf)
    for i in range(len(x)):
        for t in range(10):
            if t != y[i]:
                normal = weights[:, y[i]] - weights[:, t]
                distance = (logits[i, y[i]] - logits[i, t]) / np.linalg.norm(normal)
                if distance < minimal[i]:
                    minimal[i] = distance
                    step = -distance * normal / np.linalg.norm(normal)
                    assert np.all(flat[i] + step > 0) and np.all(flat[i] + step < 1)  # the box does not bind
    attack = get_attack("fab_t", norm=2, eps=5.0, early_stop=False, seed=0)
    x_adv = attack(model, x)
    found = np.sqrt(((x_adv - x).reshape(len(x), -1).astype(np.float64) ** 2).sum(1))
    print("FAB-T L2 / closed-form minimal L2:", np.round(found / minimal, 4))
    assert np.all(predict_labels(model, x_adv) != y)
    assert np.all(found >= minimal * (1 - 1e-3))  # nothing below the true minimum
    assert np.all(found <= minimal * 1.05)
    np.testing.assert_allclose(attack.last_min_norms, found, rtol=1e-4)


def test_fab_t_l2_breaks_model_c_within_the_l2_ball(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:50], mnist_eval_batch[1][:50]
    attack = get_attack("fab_t", norm="l2", eps=2.0, nb_iter=50, n_target_classes=3, seed=0)
    x_adv = attack(mnist_model_c, x, y)
    rate = attack.last_run_info["success_rate"]
    delta = np.sqrt(((x_adv - x).reshape(len(x), -1).astype(np.float64) ** 2).sum(1))
    print(
        f"FAB-T L2 eps 2.0 on model C: success {rate:.3f}, median L2 {np.median(delta):.3f}, "
        f"{attack.last_run_info['seconds']:.1f} s"
    )
    assert rate >= 0.7  # APGD-CE-L2 (100 iterations) breaks 76% of these 50 digits (docs/attacks.md)
    assert x_adv.dtype == np.float32 and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert delta.max() <= 2.0 * (1 + 1e-6)
    broken = predict_labels(mnist_model_c, x_adv) != y
    np.testing.assert_array_equal(x_adv[~broken], x[~broken])


def test_fab_t_parameters_and_registration():
    assert "fab_t" in list_attacks()
    attack = get_attack("fab_t")
    assert attack.params == {
        "eps": 0.3,
        "norm": "inf",
        "nb_iter": 100,
        "n_target_classes": 9,
        "nb_restarts": 1,
        "alpha_max": 0.1,
        "eta": 1.05,
        "beta": 0.9,
        "early_stop": True,
        "seed": None,
    }
    for name, value in (
        ("eta", 0.9),
        ("alpha_max", 1.5),
        ("beta", -0.1),
        ("nb_iter", 0),
        ("n_target_classes", 0),
        ("norm", 1),
        ("early_stop", "yes"),
        ("eps", -0.1),
        ("eps", 1.5),
    ):
        with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}="):
            get_attack("fab_t", **{name: value})
    with pytest.raises(ValueError, match="`backend`"):
        get_attack("fab_t", backend="art")


def test_fab_t_breaks_model_c_within_eps(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:50], mnist_eval_batch[1][:50]
    attack = get_attack("fab_t", eps=0.3, seed=0)
    x_adv = attack(mnist_model_c, x, y)
    rate = attack.last_run_info["success_rate"]
    delta = np.abs(x_adv - x).reshape(len(x), -1).max(1)
    print(
        f"FAB-T eps 0.3 on model C: success {rate:.3f}, median Linf {np.median(delta):.3f}, "
        f"{attack.last_run_info['seconds']:.1f} s"
    )
    assert rate > 0.9
    assert x_adv.dtype == np.float32 and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert delta.max() <= 0.3 + 1e-6
    broken = predict_labels(mnist_model_c, x_adv) != y
    np.testing.assert_array_equal(x_adv[~broken], x[~broken])  # the clean image where nothing was found


def test_fab_t_at_small_eps_returns_clean_images_where_nothing_is_within_eps(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:20], mnist_eval_batch[1][:20]
    attack = get_attack("fab_t", eps=0.05, nb_iter=20, n_target_classes=2, nb_restarts=2, seed=0)  # + random starts
    x_adv = attack(mnist_model_c, x, y)
    norms = attack.last_min_norms
    broken = predict_labels(mnist_model_c, x_adv) != y
    assert np.all(norms[broken] <= 0.05) and np.all(norms[~broken] > 0.05)
    assert (~broken).sum() >= 10  # model C is far from broken at eps 0.05
    np.testing.assert_array_equal(x_adv[~broken], x[~broken])
    assert np.abs(x_adv - x).max() <= 0.05 + 1e-6


def test_autoattack_runs_all_four_standard_components(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:50], mnist_eval_batch[1][:50]
    attack = get_attack("autoattack", eps=0.3, seed=0)
    x_adv = attack(mnist_model_c, x, y)
    info = attack.last_run_info
    assert [c["name"] for c in info["components"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert info["not_run"] == {}
    assert info["success_rate"] > 0.9 and np.abs(x_adv - x).max() <= 0.3 + 1e-6


def test_autoattack_l2_runs_all_four_components_natively_within_the_l2_ball(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:30], mnist_eval_batch[1][:30]
    attack = get_attack("autoattack", norm=2, eps=1.5, nb_iter=10, n_target_classes=2, nb_queries=50, seed=0)
    assert attack.params["components"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    x_adv = attack(mnist_model_c, x, y)
    info = attack.last_run_info
    assert [c["name"] for c in info["components"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert all(c["backend"] == "native" for c in info["components"] if c["attacked"])
    assert info["not_run"] == {}
    assert info["success_rate"] > 0.3
    delta = np.sqrt(((x_adv - x).reshape(len(x), -1).astype(np.float64) ** 2).sum(1))
    assert delta.max() <= 1.5 * (1 + 1e-6) and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    small = get_attack("autoattack", norm="l2", eps=1.0, components=["apgd-ce", "fab-t"])
    assert small.params["components"] == ["apgd-ce", "fab-t"] and small.params["norm"] == 2
