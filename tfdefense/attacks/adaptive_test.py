"""BPDA layers and the convergence check."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.attacks import BPDA, bpda, convergence_check, get_attack
from tfdefense.attacks._native import value_and_grad_fn


def test_bpda_forward_is_fn_and_backward_is_identity():
    x = tf.constant(np.linspace(0, 1, 12, dtype=np.float32).reshape(1, 2, 2, 3))
    layer = bpda(lambda z: tf.round(z * 4) / 4)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x)
        total = tf.reduce_sum(out * 3.0)
    np.testing.assert_allclose(out, np.round(x.numpy() * 4) / 4)
    np.testing.assert_allclose(tape.gradient(total, x), np.full(x.shape, 3.0))
    # the plain quantiser has no gradient at all
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(tf.round(x * 4) / 4)
    assert tape.gradient(total, x) is None


def test_bpda_with_a_differentiable_backward_approximation():
    x = tf.constant([[0.2, 0.7]])
    layer = BPDA(lambda z: tf.cast(z > 0.5, z.dtype), backward=lambda z: tf.sigmoid(10 * (z - 0.5)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(layer(x))
    expected = 10 * tf.sigmoid(10 * (x - 0.5)) * (1 - tf.sigmoid(10 * (x - 0.5)))
    np.testing.assert_allclose(tape.gradient(total, x), expected, rtol=1e-5)


def test_bpda_inside_a_compiled_model():
    model = keras.Sequential([keras.Input((4,)), bpda(lambda z: tf.round(z)), keras.layers.Dense(2)])
    x = tf.random.uniform((3, 4))

    @tf.function
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(model(x))
        return tape.gradient(total, x)

    expected = np.tile(model.layers[-1].kernel.numpy().sum(1), (3, 1))
    np.testing.assert_allclose(grad(x), expected, rtol=1e-5)


def test_bpda_checks_its_arguments():
    with pytest.raises(ValueError, match="argument `fn`"):
        bpda("round")
    with pytest.raises(ValueError, match="argument `backward`"):
        bpda(tf.round, backward=3)
    with pytest.raises(NotImplementedError):
        bpda(tf.round).get_config()


def test_eot_gradient_is_the_mean_over_samples():
    x = tf.constant([[1.0, 2.0]])
    calls = tf.Variable(0.0)

    def model_fn(z):  # a "stochastic" model whose slope changes on every call: 1, 2, 3, 4
        calls.assign_add(1.0)
        return z * calls

    value_and_grad = value_and_grad_fn(model_fn, lambda out: tf.reduce_sum(out, axis=1), eot_samples=4)
    _, _, grad = value_and_grad(x)
    np.testing.assert_allclose(grad, [[2.5, 2.5]])


def test_convergence_check_runs_stronger_settings(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch[0][:50], mnist_eval_batch[1][:50]
    attack = get_attack("pgd", eps=0.1, eps_iter=0.01, nb_iter=5, seed=0)
    results = convergence_check(attack, mnist_model_c, x, y, iteration_factor=2, restarts=2)
    assert set(results) == {"clean", "attack", "nb_iterx2", "restarts2"}
    assert results["clean"] == 1.0
    assert results["nb_iterx2"] <= results["attack"] + 0.02
    assert all(0 <= v <= 1 for v in results.values())
