"""Users' models and data as they arrive: SavedModel graph scan, .h5 / broken .keras files, input ranges,
any input name, variable-free tf.Modules, test-only data and any number of classes (real 8x8 digits)."""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdefense.data import load_dataset
from tfdefense.evaluation.robustness import SuiteAttack
from tfdefense.evaluation.user_inputs import (
    load_evaluation_data,
    load_user_model,
    resolve_purifier,
    saved_model_unsafe_ops,
    user_model_fingerprint,
    with_input_range,
)
from tfdefense.evaluation.user_model import evaluate_model
from tfdefense.testing import file_writing_module, quantizer_module

EPS = 0.1
TINY = dict(eps_grid=(0.1, 0.6), sweep_iter=5, progress=False)
SHAPE = (8, 8, 1)


def tiny_suite(eps=EPS):
    return [
        SuiteAttack("fgsm", "fgsm", dict(eps=eps), "single-step"),
        SuiteAttack("pgd-10", "pgd", dict(eps=eps, eps_iter=eps / 4, nb_iter=10, rand_init=True, seed=1), "white-box"),
    ]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _train(digits, outputs, scaling=None):
    keras.utils.set_random_seed(0)
    (x_train, y_train), _ = digits
    layers = [keras.Input(SHAPE)] + ([scaling] if scaling is not None else [])
    model = keras.Sequential(
        layers + [keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(outputs)]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fed = x_train * 255.0 if scaling is not None else x_train
    model.fit(fed, y_train, epochs=15, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def classifier(digits):
    return _train(digits, 10)


def test_saved_model_with_file_ops_is_refused_before_loading(tmp_path, classifier):
    target = tmp_path / "side_effect.txt"
    module = file_writing_module(SHAPE, target, scale=2.0, input_name="pixels")
    tf.saved_model.save(module, str(tmp_path / "writer"), signatures=module.__call__)
    assert not target.exists()
    found = saved_model_unsafe_ops(tmp_path / "writer")
    assert list(found) == ["WriteFile"] and found["WriteFile"][0].startswith("function __inference___call__")
    with pytest.raises(ValueError, match=r"`classifier`.*--trust-saved-model.*writer holding WriteFile in function"):
        load_user_model(tmp_path / "writer")
    with pytest.raises(ValueError, match=r"`purifier`.*WriteFile"):
        resolve_purifier(str(tmp_path / "writer"))
    assert not target.exists()  # nothing ran: refused before tf.saved_model.load
    trusted = load_user_model(tmp_path / "writer", trust_saved_model=True)
    x = np.full((2, *SHAPE), 0.25, np.float32)
    np.testing.assert_allclose(np.asarray(trusted(x)), 0.5)
    assert target.read_text() == "written by the graph"  # what trusting it means

    # The SavedModels users normally bring hold none: a Keras export (variables, checkpoint functions) and a
    # variable-free tf.Module.
    classifier.export(str(tmp_path / "keras_export"), verbose=False)
    tf.saved_model.save(quantizer_module(SHAPE), str(tmp_path / "quantizer"))
    assert saved_model_unsafe_ops(tmp_path / "keras_export") == {}
    assert saved_model_unsafe_ops(tmp_path / "quantizer") == {}


def test_scan_finds_python_file_reads_and_checkpoint_ops_where_serving_runs(tmp_path):
    class Reader(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, *SHAPE], tf.float32)])
        def __call__(self, x):
            size = tf.strings.length(tf.io.read_file("/etc/hostname"))
            return x + tf.cast(size, tf.float32) * 0.0

    class Saver(tf.Module):  # SaveV2 belongs in the checkpoint functions, not in the serving function
        @tf.function(input_signature=[tf.TensorSpec([None, *SHAPE], tf.float32)])
        def __call__(self, x):
            tf.raw_ops.SaveV2(prefix=str(tmp_path / "ckpt"), tensor_names=["x"], shape_and_slices=[""], tensors=[x])
            return x

    class Python(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, *SHAPE], tf.float32)])
        def __call__(self, x):
            return tf.py_function(lambda t: t, [x], tf.float32)

    for name, module, op in (
        ("reader", Reader(), "ReadFile"),
        ("saver", Saver(), "SaveV2"),
        ("python", Python(), "EagerPyFunc"),
    ):
        tf.saved_model.save(module, str(tmp_path / name))
        found = saved_model_unsafe_ops(tmp_path / name)
        assert op in found, (name, found)
        with pytest.raises(ValueError, match=op):
            load_user_model(tmp_path / name)
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "saved_model.pb").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match=r"saved_model\.pb.*garbage"):
        load_user_model(tmp_path / "garbage")


def test_any_single_input_name_and_plain_tf_module(tmp_path, digits):
    class Named(tf.Module):
        def __init__(self):
            super().__init__()
            self.scale = tf.Variable(3.0)

        @tf.function(input_signature=[tf.TensorSpec([None, *SHAPE], tf.float32, name="my_pixels")])
        def __call__(self, x):
            return {"scores": tf.reshape(x, [-1, 64])[:, :10] * self.scale}

    module = Named()
    tf.saved_model.save(module, str(tmp_path / "named"), signatures=module.__call__)
    model = load_user_model(tmp_path / "named")
    _, (x, _) = digits
    np.testing.assert_allclose(np.asarray(model(x[:4])), x[:4].reshape(4, 64)[:, :10] * 3.0, rtol=1e-6)

    tf.saved_model.save(quantizer_module(SHAPE), str(tmp_path / "quantizer"))
    purifier = resolve_purifier(str(tmp_path / "quantizer"))
    np.testing.assert_allclose(np.asarray(purifier(x[:4])), np.round(x[:4] * 3) / 3, atol=1e-6)
    assert len(user_model_fingerprint(purifier)) == 64  # no variables at all, still identified


def test_keras_h5_and_broken_or_unsafe_keras_files(tmp_path, classifier, digits):
    _, (x, _) = digits
    classifier.save(tmp_path / "model.h5")
    loaded = load_user_model(tmp_path / "model.h5")
    np.testing.assert_allclose(np.asarray(loaded(x[:8])), np.asarray(classifier(x[:8])), atol=1e-5)

    classifier.save(tmp_path / "good.keras")
    good = (tmp_path / "good.keras").read_bytes()
    (tmp_path / "text.keras").write_text("this is not a model")
    (tmp_path / "truncated.keras").write_bytes(good[: len(good) // 2])
    flipped = bytearray(good)
    with zipfile.ZipFile(tmp_path / "good.keras") as archive:  # flip a byte inside the config (checksummed)
        info = archive.getinfo("config.json")
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 5
    flipped[offset] ^= 0xFF
    (tmp_path / "flipped.keras").write_bytes(bytes(flipped))
    unsafe = keras.Sequential([keras.Input(SHAPE), keras.layers.Lambda(lambda t: t * 2.0), keras.layers.Flatten()])
    unsafe.save(tmp_path / "lambda.keras")
    unsafe.save(tmp_path / "lambda.h5")
    (tmp_path / "weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    with zipfile.ZipFile(tmp_path / "good.keras") as archive:  # a layer naming os.system
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["layers"][-1].update(
        module="os", class_name="system", registered_name=None, config=f"touch {tmp_path / 'pwned'}"
    )
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "os_system.keras", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    for name, reason in (
        ("text.keras", "not a zip archive"),
        ("truncated.keras", "not a zip archive"),
        ("flipped.keras", "BadZipFile: Bad CRC-32"),
        ("lambda.keras", "Lambda"),
        ("lambda.h5", "Lambda"),
        ("os_system.keras", "could not be deserialized"),
        ("weights.h5", "HDF5|Error"),
    ):
        with pytest.raises(ValueError, match=r"`classifier`") as info:
            load_user_model(tmp_path / name)
        message = str(info.value)
        assert str(tmp_path / name) in message and "\n" not in message, message
        assert any(part in message for part in reason.split("|")), message
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    with pytest.raises(ValueError, match=r"a \.keras file, a \.h5 file, a SavedModel folder.*model\.onnx"):
        load_user_model(tmp_path / "model.onnx")
    with pytest.raises(ValueError, match=r"folder without saved_model\.pb"):
        load_user_model(tmp_path)


def test_input_range_wraps_a_model_expecting_0_255(digits):
    scaled = _train(digits, 10, scaling=keras.layers.Rescaling(1 / 255.0))  # trained on 0-255 pixels
    _, (x, y) = digits
    x, y = x[:40], y[:40]
    with pytest.raises(ValueError, match=r"\[0, 255\].*input_range='0-255'.*--input-range=0-255"):
        evaluate_model(scaled, (x, y), EPS, suite=tiny_suite(), **TINY)
    wrapped = with_input_range(scaled, "0-255")
    np.testing.assert_allclose(np.asarray(wrapped(x)), np.asarray(scaled(x * 255.0)), rtol=1e-5, atol=1e-4)
    assert with_input_range(scaled, "0-1") is scaled
    assert user_model_fingerprint(wrapped) != user_model_fingerprint(with_input_range(scaled, "-1-1"))
    with pytest.raises(ValueError, match="`input_range`"):
        with_input_range(scaled, "0-256")
    result = evaluate_model(scaled, (x, y), EPS, suite=tiny_suite(), input_range="0-255", **TINY)
    assert result.clean_accuracy >= 0.85  # the same model, fed what it expects
    assert result.accuracies["pgd-10"] < result.clean_accuracy  # attacked in [0, 1] units through the wrapper
    assert any("input_range='0-255'" in note for note in result.notes)


def test_test_only_npz_any_classes_and_output_width(tmp_path, digits):
    wide = _train(digits, 1000)  # 1000 outputs, trained on the 10 digit classes
    _, (x, y) = digits
    keep = np.isin(y, [0, 1, 2])
    x, y = x[keep][:20], y[keep][:20]
    assert len(np.unique(y)) == 3
    path = tmp_path / "test_only.npz"
    np.savez(path, x_test=np.round(x[..., 0] * 255).astype(np.uint8), y_test=y)
    result = evaluate_model(wide, f"npz:{path}", EPS, suite=tiny_suite(), **TINY)
    assert result.n == 20 and result.choices["num_classes"] == 1000
    assert result.clean_accuracy >= 0.85
    np.savez(path, x_test=x, y_test=np.where(np.arange(20) == 4, 1000, y))
    with pytest.raises(ValueError, match=r"`y`.*labels in \[0, 999\].*1000 outputs"):
        evaluate_model(wide, f"npz:{path}", EPS, suite=tiny_suite(), **TINY)


def test_plain_tf_module_purifier_through_the_api(tmp_path, classifier, digits):
    tf.saved_model.save(quantizer_module(SHAPE), str(tmp_path / "quantizer"))
    _, (x, y) = digits
    result = evaluate_model(
        classifier,
        (x[:40], y[:40]),
        EPS,
        purifier=resolve_purifier(str(tmp_path / "quantizer")),
        suite=tiny_suite(),
        out=tmp_path / "run",
        **TINY,
    )
    assert result.choices["bpda"] and "no gradient" in result.choices["bpda_reason"]
    assert result.clean_accuracy >= 0.8
    assert (tmp_path / "run" / "report.md").is_file()


def test_evaluation_data_refuses_channel_first_and_empty_arrays(digits):
    _, (x, y) = digits
    with pytest.raises(ValueError, match=r"`x`.*channels-first.*transpose\(0, 2, 3, 1\).*\(10, 1, 8, 8\)"):
        load_evaluation_data((x[:10].transpose(0, 3, 1, 2), y[:10]), None, None, SHAPE)
    with pytest.raises(ValueError, match=r"`x`.*at least one example"):
        load_evaluation_data((x[:0], y[:0]), None, None, SHAPE)
    name, description, images, labels = load_evaluation_data((x[:10], y[:10]), 4, None, SHAPE)
    assert images.shape == (4, *SHAPE) and labels.tolist() == y[:4].tolist() and "first 4" in description


def test_bf16_attack_precision_on_a_plain_tf_module_classifier(tmp_path, digits):
    """A SavedModel's graph keeps its own float32: only the Keras layers around it change policy."""
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x, y) = digits
    linear = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(10)])
    linear.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    linear.fit(x_train, y_train, epochs=15, batch_size=64, verbose=0)

    class Linear(tf.Module):
        def __init__(self, kernel, bias):
            super().__init__()
            self.kernel, self.bias = tf.Variable(kernel), tf.Variable(bias)

        @tf.function(input_signature=[tf.TensorSpec([None, *SHAPE], tf.float32)])
        def __call__(self, images):
            return tf.reshape(images, [-1, 64]) @ self.kernel + self.bias

    module = Linear(*linear.layers[-1].get_weights())
    tf.saved_model.save(module, str(tmp_path / "linear"), signatures=module.__call__)
    model = load_user_model(tmp_path / "linear")
    kwargs = dict(suite=tiny_suite(), per_attack=True, **TINY)
    fp32 = evaluate_model(model, (x[:40], y[:40]), EPS, **kwargs)
    bf16 = evaluate_model(model, (x[:40], y[:40]), EPS, attack_precision="bf16", **kwargs)
    assert bf16.robustness.configs["pgd-10"]["params"]["compute_dtype"] == "bfloat16"
    assert fp32.clean_accuracy >= 0.8 and bf16.clean_accuracy == fp32.clean_accuracy
    assert abs(bf16.accuracies["pgd-10"] - fp32.accuracies["pgd-10"]) <= 0.05
