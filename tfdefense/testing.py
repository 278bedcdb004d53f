"""Round-trip checks for defenses: `.keras` files, SavedModel export, configs and `fit`'s data checks.

The `assert_*` functions raise `AssertionError` saying what differed; the round-trip ones return
what they rebuilt, so a test can check more on it. They need no test runner (pytest is not
imported), e.g.

    from tfdefense.testing import assert_keras_round_trip

    def test_my_defense_round_trip(tmp_path):
        defense = MyPurifier(...)
        loaded = assert_keras_round_trip(defense, x_test[:16], tmp_path)
        assert loaded.my_setting == defense.my_setting

Outputs are compared with `numpy.testing.assert_allclose` (`atol`/`rtol`; 0 means bitwise equal).
`InterruptAt` and `StartedEpochs` are callbacks for testing that a `fit` killed part-way resumes.
`quantizer_module` and `file_writing_module` build bare `tf.Module`s to save as SavedModels: what a user
brings that Keras did not make (one without variables, one whose graph writes a file).
"""

import json
import pathlib
import re

import keras
import numpy as np

__all__ = [
    "StartedEpochs",
    "InterruptAt",
    "assert_config_round_trip",
    "assert_fit_rejects_bad_data",
    "assert_keras_round_trip",
    "assert_purify_rejects_bad_images",
    "assert_saved_model_round_trip",
    "conv_compute_dtypes",
    "file_writing_module",
    "model_outputs",
    "purification_accuracies",
    "quantizer_module",
]


def model_outputs(model, x):
    """`model.purify(x)` for a purifier, else `model(x, training=False)`, as numpy."""
    if hasattr(model, "purify"):
        return np.asarray(model.purify(x))
    return np.asarray(model(x, training=False))


def _assert_close(actual, expected, atol, rtol, what):
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape} != {expected.shape}")
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol, err_msg=what)


def _optimizers(model):
    """{attribute name: optimizer} of a model's optimizer attributes (`optimizer`, `g_optimizer`, ...)."""
    found, seen = {}, set()
    for name, value in sorted(vars(model).items()):
        if isinstance(value, keras.optimizers.Optimizer) and id(value) not in seen:
            seen.add(id(value))
            found[name.lstrip("_")] = value
    return found


def _assert_same_variables(actual, expected, what):
    if len(actual) != len(expected):
        raise AssertionError(f"{what}: {len(actual)} variables after the round trip, {len(expected)} before")
    for a, b in zip(actual, expected, strict=False):
        a_value, b_value = np.asarray(a), np.asarray(b)
        if a_value.shape != b_value.shape or not np.array_equal(a_value, b_value):
            raise AssertionError(f"{what}: variable {getattr(b, 'path', b.name)} differs after the round trip")


def assert_keras_round_trip(model, x, directory, *, outputs=model_outputs, atol=0.0, rtol=0.0, check_optimizers=True):
    """Saves `model` as `directory/<class name in lower case>.keras`, loads it back and checks it is the same model.

    Checks: the class; `outputs(loaded, x)` against `outputs(model, x)` (default `model_outputs`;
    pass e.g. `lambda m, x: m.purify(x, seed=0)` for a seeded stochastic defense); every weight
    (bitwise); `get_config()`; with `check_optimizers`, each optimizer attribute's class and
    variables (bitwise, so training continues where it stopped). Returns the loaded model.
    """
    path = pathlib.Path(directory) / f"{type(model).__name__.lower()}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    if type(loaded) is not type(model):
        raise AssertionError(f"load_model gave a {type(loaded).__name__}, saved a {type(model).__name__}")
    # Both called once after saving: a defense drawing from a saved seed state gives the same draws.
    actual, expected = np.asarray(outputs(loaded, x)), np.asarray(outputs(model, x))
    _assert_close(actual, expected, atol, rtol, f"outputs of the {type(model).__name__} loaded from {path.name}")
    _assert_same_variables(loaded.weights, model.weights, "weights")
    _assert_same_config(loaded.get_config(), model.get_config())
    if check_optimizers:
        before, after = _optimizers(model), _optimizers(loaded)
        if set(after) != set(before):
            raise AssertionError(f"optimizers {sorted(after)} after the round trip, {sorted(before)} before")
        for name, optimizer in before.items():
            if type(after[name]) is not type(optimizer):
                raise AssertionError(
                    f"{name}: a {type(after[name]).__name__} after the round trip, a {type(optimizer).__name__} before"
                )
            _assert_same_variables(after[name].variables, optimizer.variables, name)
    return loaded


def assert_saved_model_round_trip(
    defense, x, directory, *, classifier=None, outputs=model_outputs, atol=1e-5, rtol=0.0, logits_atol=1e-4
):
    """Exports `defense` with `tfdefense.export.export_saved_model` into `directory`, loads it with
    `tf.saved_model.load` and checks what it serves.

    Checks: the `purify` endpoint and the `purify` signature against `outputs(defense, x)`; with a
    `classifier`, the `classify` endpoint against `classifier(defense(x))` (within `logits_atol`).
    Returns the loaded SavedModel.
    """
    import tensorflow as tf

    from tfdefense.export import export_saved_model

    expected = np.asarray(outputs(defense, x))
    path = export_saved_model(defense, pathlib.Path(directory) / "saved_model", classifier=classifier)
    served = tf.saved_model.load(str(path))
    images = tf.constant(np.asarray(x, np.float32))
    _assert_close(served.purify(images).numpy(), expected, atol, rtol, "the SavedModel's purify endpoint")
    (signature_output,) = served.signatures["purify"](images=images).values()
    _assert_close(signature_output.numpy(), expected, atol, rtol, "the SavedModel's purify signature")
    if classifier is not None:
        logits = np.asarray(classifier(defense(images, training=False), training=False))
        _assert_close(served.classify(images).numpy(), logits, logits_atol, rtol, "the SavedModel's classify endpoint")
    return served


def _plain(config):
    """`config` with tuples as lists (as a config reads back from JSON)."""
    if isinstance(config, dict):
        return {key: _plain(value) for key, value in config.items()}
    if isinstance(config, (list, tuple)):
        return [_plain(value) for value in config]
    return config


def _assert_same_config(actual, expected, what="get_config()"):
    actual, expected = _plain(actual), _plain(expected)
    if actual != expected:
        raise AssertionError(_config_difference(actual, expected, what))


def _config_difference(actual, expected, what):
    keys = sorted(set(actual) | set(expected))
    differing = [k for k in keys if actual.get(k, "<missing>") != expected.get(k, "<missing>")]
    details = "; ".join(
        f"{k}: {actual.get(k, '<missing>')!r:.120} != {expected.get(k, '<missing>')!r:.120}" for k in differing[:5]
    )
    return f"{what} differs after the round trip in {differing}: {details}"


def assert_config_round_trip(model, *, compile_config=True):
    """Rebuilds `model` from its config and checks it is registered and configured the same.

    Checks: the class is registered for `.keras` loading (`keras.saving.get_registered_object`);
    the config is JSON-serializable; `type(model).from_config(config).get_config() == config`;
    with `compile_config` and a compiled `model`, `compile_from_config` on the rebuilt model gives
    the same compile config. Returns the rebuilt (freshly initialized) model.
    """
    cls = type(model)
    name = keras.saving.get_registered_name(cls)
    if keras.saving.get_registered_object(name) is not cls:
        raise AssertionError(f"{cls.__name__} is not registered with keras.saving.register_keras_serializable")
    config = model.get_config()
    try:
        json.dumps(keras.saving.serialize_keras_object(model))
    except TypeError as error:
        raise AssertionError(f"the config of {cls.__name__} is not JSON-serializable: {error}") from error
    restored = cls.from_config(json.loads(json.dumps(config)))
    if type(restored) is not cls:
        raise AssertionError(f"{cls.__name__}.from_config gave a {type(restored).__name__}")
    _assert_same_config(restored.get_config(), config)
    compiled = model.get_compile_config() if compile_config else None
    if compiled:  # None or {} when the model was never compiled
        restored.compile_from_config(json.loads(json.dumps(compiled)))
        _assert_same_config(restored.get_compile_config(), compiled, "get_compile_config()")
    return restored


def _expect_value_error(fit, pattern, case):
    _expect_error(fit, pattern, f"fit with {case}")


def _shape_pattern(argument, shape):
    return f"`{argument}`.*Received: {argument}=.?array of shape {re.escape(str(tuple(shape)))}"


def assert_fit_rejects_bad_data(model, x, y=None, *, y_required=True, **fit_kwargs):
    """Checks that `model.fit` refuses bad numpy data with a ValueError naming the argument.

    `model` is compiled and `x` (and `y`, the clean images or the labels it trains on, if any)
    is good data. Each case must raise before training: `x` out of [0, 1], `x` of another
    image shape, an empty `x`; with `y`: `y` one shorter than `x`, and (with `y_required`)
    `y=None`. Other keyword arguments go to `fit`.
    """
    x = np.asarray(x, np.float32)
    fit_kwargs = {"epochs": 1, "verbose": 0, **fit_kwargs}

    def fit(bad_x, bad_y=y):
        return lambda: model.fit(bad_x, bad_y, **fit_kwargs)

    _expect_value_error(fit(x * 2.0 - 0.5), "`x`.*values in \\[0, 1\\]", "x outside [0, 1]")
    n, height, width, channels = x.shape
    other = np.zeros((n, height + 4, width + 4, channels + 2), np.float32)
    other_y = other if y is not None and np.shape(y) == x.shape else y  # paired images change with x
    _expect_value_error(fit(other, other_y), _shape_pattern("x", other.shape), "x of another image shape")
    _expect_value_error(fit(x[:0], None if y is None else y[:0]), "`x`.*at least one example", "an empty x")
    if y is not None:
        short = np.asarray(y)[: n - 1]
        _expect_value_error(fit(x, short), _shape_pattern("y", short.shape), "y one shorter than x")
        if y_required:
            _expect_value_error(fit(x, None), "`y`", "y=None")


def _expect_error(call, pattern, case, error=ValueError):
    try:
        call()
    except error as raised:
        if not re.search(pattern, str(raised), flags=re.DOTALL):
            raise AssertionError(
                f"{case} raised {type(raised).__name__}({str(raised)!r}), expected one matching {pattern!r}"
            ) from raised
    else:
        raise AssertionError(f"{case} raised no {error.__name__}")


def assert_purify_rejects_bad_images(defense, x, method="purify"):
    """Checks that `defense.<method>` (numpy) and `defense(...)` (tensors) refuse bad images with a
    ValueError naming `x`: values in [0, 255] to the method, two more channels to both."""
    x = np.asarray(x, np.float32)
    run = getattr(defense, method)
    _expect_error(lambda: run(x * 255.0), "`x`.*values in \\[0, 1\\].*Received: x=.?array", f"{method}(x * 255)")
    other = np.zeros((2, *x.shape[1:-1], x.shape[-1] + 2), np.float32)
    _expect_error(lambda: run(other), _shape_pattern("x", other.shape), f"{method} of {other.shape[-1]}-channel images")
    _expect_error(
        lambda: defense(other),
        f"`x`.*Received: x=.?shape {re.escape(str(other.shape))}",
        f"calling the model on {other.shape[-1]}-channel images",
    )


def purification_accuracies(classifier, defense, x_adv, x_clean, y, name=None):
    """Accuracies of `classifier` on `x_adv`, on `defense.purify(x_adv)` and on `defense.purify(x_clean)`
    (printed with `name`); returns them as (no_defense, purified, clean)."""
    from tfdefense.inference import predict_labels

    y = np.asarray(y)
    no_defense, purified, clean = (
        float(np.mean(predict_labels(classifier, images) == y))
        for images in (x_adv, defense.purify(x_adv), defense.purify(x_clean))
    )
    name = name or type(defense).__name__
    print(f"accuracy: no defense {no_defense:.3f}, {name} {purified:.3f}; clean through {name} {clean:.3f}")
    return no_defense, purified, clean


class InterruptAt(keras.callbacks.Callback):
    """Raises `error` (default RuntimeError("interrupted")) at the start of epoch `epoch`, after a
    `BackupAndRestore` callback listed before it has backed up the previous epoch: a killed run."""

    def __init__(self, epoch, error=None):
        super().__init__()
        self.epoch, self.error = epoch, error

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise self.error if self.error is not None else RuntimeError("interrupted")


class StartedEpochs(keras.callbacks.Callback):
    """Records the epochs `fit` starts, in `seen` (a resumed run starts after the restored ones)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)


def quantizer_module(shape, levels=4):
    """A variable-free `tf.Module` purifier of images of `shape`: `levels` grey levels (tf.round: no gradient)."""
    import tensorflow as tf

    steps = float(levels - 1)

    class Quantizer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.float32)])
        def __call__(self, x):
            return tf.round(x * steps) / steps

    return Quantizer()


def file_writing_module(shape, target, scale=1.0, input_name=None):
    """A `tf.Module` mapping images of `shape` to `scale * x` (a variable) whose graph writes the file `target`
    each time it runs: TensorFlow graph ops, not Python (what the SavedModel scan refuses)."""
    import tensorflow as tf

    class FileWriter(tf.Module):
        def __init__(self):
            super().__init__()
            self.target = str(target)
            self.scale = tf.Variable(float(scale))

        @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.float32, name=input_name)])
        def __call__(self, x):
            tf.io.write_file(self.target, "written by the graph")
            return x * self.scale

    return FileWriter()


def conv_compute_dtypes(concrete):
    """The set of dtype names the Conv2D ops of a concrete function compute in, its while-loop bodies included
    (e.g. {"bfloat16"} for a train step traced under `precision="bf16"`)."""
    import tensorflow as tf

    graph_def = concrete.graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    return {tf.dtypes.as_dtype(n.attr["T"].type).name for n in nodes if n.op == "Conv2D"}
