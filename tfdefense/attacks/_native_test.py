"""The exact projection onto an L2 ball intersected with [0, 1], checked against a quadratic program."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import minimize

from tfdefense.attacks._native import l2_ball_box_projection, project


def _qp_projection(z, x0, eps):
    """argmin ||p - z||_2 s.t. ||p - x0||_2 <= eps, 0 <= p <= 1 (SLSQP, float64)."""
    res = minimize(
        lambda p: np.sum((p - z) ** 2),
        np.clip(x0, 0, 1),
        jac=lambda p: 2 * (p - z),
        method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda p: eps**2 - np.sum((p - x0) ** 2), "jac": lambda p: -2 * (p - x0)}],
        bounds=[(0, 1)] * len(z),
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert res.success, res.message
    return res.x


def test_l2_ball_box_projection_matches_a_quadratic_program():
    rng = np.random.default_rng(0)
    x0 = rng.uniform(0, 1, (12, 4, 4, 2)).astype(np.float32)
    x0[:, :2] = np.round(x0[:, :2])  # pixels on the box edges, as in MNIST
    z = x0 + rng.normal(0, 1, x0.shape).astype(np.float32) * np.linspace(0.05, 0.6, 12)[:, None, None, None]
    z = z.astype(np.float32)
    eps = 1.0
    p = l2_ball_box_projection(tf.constant(x0), tf.constant(z), eps).numpy()
    inside = 0
    for i in range(12):
        expected = _qp_projection(z[i].ravel().astype(np.float64), x0[i].ravel().astype(np.float64), eps)
        np.testing.assert_allclose(p[i].ravel(), expected, atol=2e-5)
        assert p[i].min() >= 0 and p[i].max() <= 1
        distance = np.linalg.norm(p[i] - x0[i])
        assert distance <= eps * (1 + 1e-6)
        if np.linalg.norm(np.clip(z[i], 0, 1) - x0[i]) <= eps:
            inside += 1
            np.testing.assert_allclose(p[i], np.clip(z[i], 0, 1), atol=1e-6)  # already feasible after clipping
        else:
            assert distance == pytest.approx(eps, rel=1e-5)  # the whole budget, not less
    assert 2 <= inside <= 10


def test_l2_ball_box_projection_keeps_more_of_the_step_than_ball_then_clip():
    rng = np.random.default_rng(1)
    x0 = np.round(rng.uniform(0, 1, (20, 8, 8, 1))).astype(np.float32)  # binary images: clipping binds often
    z = (x0 + rng.normal(0, 0.5, x0.shape)).astype(np.float32)
    exact = l2_ball_box_projection(tf.constant(x0), tf.constant(z), 1.5).numpy()
    naive = np.clip(x0 + project(tf.constant(z - x0), 1.5, 2).numpy(), 0, 1)
    exact_gap = np.linalg.norm((exact - z).reshape(20, -1), axis=1)
    naive_gap = np.linalg.norm((naive - z).reshape(20, -1), axis=1)
    assert np.all(exact_gap <= naive_gap + 1e-5)
    assert np.mean(exact_gap < naive_gap - 1e-3) > 0.5
    np.testing.assert_allclose(np.linalg.norm((exact - x0).reshape(20, -1), axis=1), 1.5, rtol=1e-5)


def test_zero_budget_and_zero_step_return_x0():
    x0 = np.full((2, 3, 3, 1), 0.5, np.float32)
    z = x0 + 0.3
    np.testing.assert_array_equal(l2_ball_box_projection(tf.constant(x0), tf.constant(z), 0.0).numpy(), x0)
    np.testing.assert_allclose(l2_ball_box_projection(tf.constant(x0), tf.constant(x0), 1.0).numpy(), x0)
