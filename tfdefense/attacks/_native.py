"""Building blocks of the native (TensorFlow graph) attacks.

A native attack implements `_build_native(model_fn, num_classes)` returning a
graph function `program(x, y, t, seed) -> x_adv` (x: float32 NHWC, y: true or
reference labels, t: target labels (= y when untargeted), seed: int64[2] for
stateless random ops). `NativeMixin` wraps it in one `tf.function` with a
`None` batch dimension, traces it once per (model, image shape) and keeps the
concrete function, so a configured attack compiles once and every call runs
one graph with the iteration loop inside it (`tf.while_loop`).

`pgd_loop` is the projected-gradient iteration shared by the native gradient
attacks (FGSM, BIM, PGD, MI-FGSM) and the in-graph training attack of the
robust trainers (`tfdefense.defenses.training_attack.pgd_in_graph`).
"""

import contextlib
import weakref

import numpy as np
import tensorflow as tf

from tfdefense._mixed_precision import mixed_compute
from tfdefense._validation import invalid_value
from tfdefense.inference import call_model

NATIVE_CHUNK = 1024  # images per graph call (memory bound only; results do not depend on it)


@contextlib.contextmanager
def dtype_policy_scope(model, compute_dtype):
    """Temporarily runs the float32 layers of a Keras `model` under a mixed policy (`mixed_compute`).

    Used only while *tracing* an attack graph: the traced graph keeps the
    bf16/fp16 computation, the model itself is restored on exit. Variables
    stay float32 (mixed policies), logits are cast back to float32.
    """
    if compute_dtype in (None, "float32"):
        yield
        return
    import keras

    if not isinstance(model, keras.Layer):
        raise ValueError(
            f"Invalid value received for argument `compute_dtype`. Expected None or 'float32' for a model "
            f"that is not a Keras layer/model. Received: compute_dtype={compute_dtype!r}"
        )
    with mixed_compute([model], compute_dtype):
        yield


class NativeMixin:
    """Compiles `_build_native` once per model and image shape; runs it in chunks."""

    def _native_program(self, model, image_shape, num_classes):
        per_model = programs_of(self, model)
        key = (tuple(image_shape), num_classes)
        if key not in per_model:
            model_ref = model_reference(model)

            def model_fn(x):
                return call_model(model_ref(), x)

            program = self._build_native(model_fn, num_classes)
            fn = tf.function(
                program,
                input_signature=[
                    tf.TensorSpec([None, *image_shape], tf.float32, name="x"),
                    tf.TensorSpec([None], tf.int64, name="y"),
                    tf.TensorSpec([None], tf.int64, name="target"),
                    tf.TensorSpec([2], tf.int64, name="seed"),
                ],
                autograph=True,
            )
            with dtype_policy_scope(model, self._params.get("compute_dtype")):
                per_model[key] = fn.get_concrete_function()
        return per_model[key]

    def _run_native(self, model, x, y, targets):
        program = self._native_program(model, x.shape[1:], num_classes_from(model, x))
        t = y if targets is None else targets
        out = []
        for i in range(0, len(x), NATIVE_CHUNK):
            sl = slice(i, i + NATIVE_CHUNK)
            seed = tf.constant(self._next_seed(), tf.int64)
            out.append(program(tf.constant(x[sl]), tf.constant(y[sl]), tf.constant(t[sl]), seed).numpy())
        return np.concatenate(out)


def programs_of(attack, model):
    """The attack's dict of compiled programs for `model` (kept while the model lives; a fresh one if unhashable)."""
    try:
        return attack._programs.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no caching
        return {}


def num_classes_from(model, x):
    from tfdefense.attacks.base import num_classes_of

    return num_classes_of(model, x)


def model_reference(obj):
    """A weak reference to `obj` (a callable returning it), or a strong one when it takes none."""
    try:
        return weakref.ref(obj)
    except TypeError:
        return lambda: obj


# --------------------------------------------------------------------------- math


def reduce_axes(x):
    return list(range(1, len(x.shape)))


def lp_norm(x, norm, keepdims=True):
    """Per-example Lp norm (norm "inf", 2 or 1) of a batch."""
    axes = reduce_axes(x)
    if norm == "inf":
        return tf.reduce_max(tf.abs(x), axes, keepdims=keepdims)
    if norm == 2:
        return tf.sqrt(tf.reduce_sum(tf.square(x), axes, keepdims=keepdims))
    return tf.reduce_sum(tf.abs(x), axes, keepdims=keepdims)


def project(delta, eps, norm):
    """Projects perturbations onto the eps-ball (clipping, not normalising)."""
    if norm == "inf":
        return tf.clip_by_value(delta, -eps, eps)
    norms = tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(delta), reduce_axes(delta), keepdims=True), 1e-24))
    return delta * tf.minimum(1.0, eps / norms)


def l2_ball_box_projection(x0, z, eps):
    """The exact Euclidean projection of `z` onto {p : ||p - x0||_2 <= eps, 0 <= p <= 1} (batched images).

    With the ball constraint dualised, the minimiser is p(s) = clip(x0 + s (z - x0), 0, 1)
    for one s in (0, 1] per example (s = 1 when clip(z) is already inside the ball), and
    ||p(s) - x0||^2 = sum_i min(s |v_i|, room_i)^2 (v = z - x0, room_i: distance from x0_i
    to the box edge in the direction of v_i) is piecewise quadratic in s; s is solved
    exactly from the sorted breakpoints room_i / |v_i|. Unlike a projection onto the ball
    followed by clipping, the result uses the whole budget eps whenever z lies outside it.
    """
    shape = tf.shape(z)
    batch = shape[0]
    v = tf.reshape(z - x0, [batch, -1])
    base = tf.reshape(x0, [batch, -1])
    size = tf.abs(v)
    room = tf.where(v > 0, 1.0 - base, base)
    room = tf.where(size > 0, tf.maximum(room, 0.0), 0.0)
    brk = tf.where(size > 0, room / tf.maximum(size, 1e-30), 0.0)  # s at which coordinate i reaches the box
    order = tf.argsort(brk, axis=1)
    brk_sorted = tf.gather(brk, order, batch_dims=1)
    room_sorted = tf.gather(room, order, batch_dims=1)
    size_sorted = tf.gather(size, order, batch_dims=1)
    saturated = tf.cumsum(tf.square(room_sorted), axis=1)
    free = tf.cumsum(tf.square(size_sorted), axis=1, exclusive=True, reverse=True)
    at_break = saturated + tf.square(brk_sorted) * free  # ||p(s) - x0||^2 at each breakpoint (non-decreasing)
    eps2 = tf.cast(eps, tf.float32) ** 2
    k = tf.reduce_sum(tf.cast(at_break < eps2, tf.int32), axis=1)
    saturated = tf.concat([tf.zeros_like(saturated[:, :1]), saturated], axis=1)
    free = tf.concat([tf.reduce_sum(tf.square(size), axis=1, keepdims=True), free], axis=1)
    saturated_k = tf.gather(saturated, k, batch_dims=1)
    free_k = tf.gather(free, k, batch_dims=1)
    s = tf.sqrt(tf.maximum(eps2 - saturated_k, 0.0) / tf.maximum(free_k, 1e-30))
    s = tf.where(k < tf.shape(v)[1], tf.minimum(s, 1.0), 1.0)  # every coordinate at the box: clip(z) is inside
    delta = tf.sign(v) * tf.minimum(s[:, None] * size, room)
    return tf.reshape(base + delta, shape)


def steepest_step(grad, step, norm):
    """The steepest-ascent step of size `step` for a linear objective (FGM)."""
    if norm == "inf":
        return step * tf.sign(grad)
    norms = tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(grad), reduce_axes(grad), keepdims=True), 1e-24))
    return step * grad / norms


def random_in_ball(shape, eps, norm, seed):
    """Uniform samples in the eps-ball (Linf: uniform cube; L2: uniform ball)."""
    if norm == "inf":
        return tf.random.stateless_uniform(shape, seed, minval=-1.0, maxval=1.0) * eps
    seeds = tf.random.experimental.stateless_split(seed, 2)
    direction = tf.random.stateless_normal(shape, seeds[0])
    flat = tf.reshape(direction, [shape[0], -1])
    dim = tf.cast(tf.shape(flat)[1], tf.float32)
    direction = flat / tf.maximum(tf.norm(flat, axis=1, keepdims=True), 1e-12)
    radius = tf.pow(tf.random.stateless_uniform([shape[0], 1], seeds[1]), 1.0 / dim)
    return tf.reshape(direction * radius * eps, shape)


def margin(logits, labels, num_classes):
    """max_{j != label} z_j - z_label (positive when the label is not predicted)."""
    onehot = tf.one_hot(labels, num_classes, dtype=logits.dtype)
    real = tf.reduce_sum(onehot * logits, axis=1)
    other = tf.reduce_max(logits - onehot * 1e9, axis=1)
    return other - real


def objective(kind, logits, y, t, targeted, num_classes):
    """Per-example value the attack *maximises*.

    kind "ce": cross-entropy of y (untargeted) or minus cross-entropy of t
    (targeted); "cw": the C&W margin; "dlr": Croce & Hein's difference of
    logits ratio (targeted version uses both y and t).
    """
    if kind == "ce":
        if targeted:
            return -tf.nn.sparse_softmax_cross_entropy_with_logits(t, logits)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
    if kind == "cw":
        return -margin(logits, t, num_classes) if targeted else margin(logits, y, num_classes)
    if kind == "dlr":
        sorted_logits = tf.sort(logits, axis=1, direction="DESCENDING")
        onehot_y = tf.one_hot(y, num_classes, dtype=logits.dtype)
        z_y = tf.reduce_sum(onehot_y * logits, axis=1)
        if targeted:
            z_t = tf.reduce_sum(tf.one_hot(t, num_classes, dtype=logits.dtype) * logits, axis=1)
            denom = sorted_logits[:, 0] - 0.5 * (sorted_logits[:, 2] + sorted_logits[:, 3]) + 1e-12
            return -(z_y - z_t) / denom
        z_other = tf.reduce_max(logits - onehot_y * 1e9, axis=1)
        denom = sorted_logits[:, 0] - sorted_logits[:, 2] + 1e-12
        return -(z_y - z_other) / denom
    raise ValueError(f"unknown objective {kind!r}")


def is_success(logits, y, t, targeted):
    pred = tf.argmax(logits, axis=1, output_type=tf.int64)
    return tf.equal(pred, t) if targeted else tf.not_equal(pred, y)


def value_and_grad_fn(model_fn, objective_fn, eot_samples=1):
    """Returns f(x) -> (objective [B], logits [B, K], d sum(objective) / dx).

    With `eot_samples` > 1 the objective and gradient are averaged over that
    many forward passes (Expectation over Transformation for stochastic models);
    the logits are those of the last pass.
    """

    def single(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = model_fn(x)
            value = objective_fn(logits)
            total = tf.reduce_sum(value)
        return value, logits, tape.gradient(total, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    if eot_samples == 1:
        return single

    def averaged(x):
        value, logits, grad = single(x)

        def body(i, value_sum, logits_last, grad_sum):
            v, lg, g = single(x)
            return i + 1, value_sum + v, lg, grad_sum + g

        _, value, logits, grad = tf.while_loop(
            lambda i, *_: i < eot_samples, body, (tf.constant(1), value, logits, grad)
        )
        scale = 1.0 / eot_samples
        return value * scale, logits, grad * scale

    return averaged


def pgd_loop(
    value_and_grad, x0, x_start, eps, step_size, steps, norm="inf", decay=None, projection="delta", stop_gradient=False
):
    """`steps` projected steepest-ascent steps from `x_start` around `x0`, in one `tf.while_loop`.

    Each step: grad = d objective / dx (`value_and_grad` from `value_and_grad_fn`);
    with `decay` (MI-FGSM) grad is L1-normalised per example and accumulated
    into the momentum, which replaces it; x <- x + steepest_step(grad,
    step_size, norm), then back into the eps-ball around x0 and [0, 1]:
    projection "delta" computes clip_[0,1](x0 + P_eps(x - x0)) (any norm),
    "bounds" computes clip_[0,1](clip(x, x0 - eps, x0 + eps)) (Linf only; the
    same point up to float rounding). eps and step_size are floats or scalar
    tensors, `steps` a Python int (0 returns `x_start`). With `stop_gradient`
    the iterate is cut from the graph at every step (for a caller inside an
    outer tape, such as a training step).
    """
    if projection not in ("delta", "bounds") or (projection == "bounds" and norm != "inf"):
        raise invalid_value("projection", "'delta', or 'bounds' with norm 'inf'", f"{projection!r} (norm {norm!r})")
    if steps == 0:
        return x_start

    def body(i, x_adv, momentum):
        _, _, grad = value_and_grad(x_adv)
        if decay is not None:
            grad = grad / tf.maximum(tf.reduce_mean(tf.abs(grad), reduce_axes(grad), keepdims=True), 1e-12)
            momentum = decay * momentum + grad
            grad = momentum
        x_adv = x_adv + steepest_step(grad, step_size, norm)
        if projection == "bounds":
            x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, x0 - eps, x0 + eps), 0.0, 1.0)
        else:
            x_adv = tf.clip_by_value(x0 + project(x_adv - x0, eps, norm), 0.0, 1.0)
        return i + 1, tf.stop_gradient(x_adv) if stop_gradient else x_adv, momentum

    _, x_adv, _ = tf.while_loop(lambda i, *_: i < steps, body, (tf.constant(0), x_start, tf.zeros_like(x0)))
    return x_adv


def best_of_restarts(run, model_fn, objective_fn, x0, y, t, targeted, seed, restarts):
    """Per example, the best of `restarts` runs `run(seed_k)` (k-th split of `seed`).

    Best: a successful run (`is_success`) over an unsuccessful one, then the
    highest `objective_fn(logits)`; x0 where every run scores -inf.
    """
    seeds = tf.random.experimental.stateless_split(seed, restarts)
    best, best_score = x0, tf.fill(tf.shape(y), -np.inf)
    for k in range(restarts):
        x_adv = run(seeds[k])
        logits = model_fn(x_adv)
        score = objective_fn(logits) + tf.where(is_success(logits, y, t, targeted), 1e9, 0.0)
        better = score > best_score
        best = where_batch(better, x_adv, best)
        best_score = tf.where(better, score, best_score)
    return best


def where_batch(mask, a, b):
    """Per-example select between two batches of images."""
    shape = tf.concat([tf.shape(mask), tf.ones([tf.rank(a) - 1], tf.int32)], axis=0)
    return tf.where(tf.reshape(mask, shape), a, b)
