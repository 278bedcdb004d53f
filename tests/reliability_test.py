"""Bad-input matrix: every careless or hostile input gets a clear error before any work starts.

Each API case must raise the given ValueError / TypeError whose message names
the argument (and, for files, the file); each CLI case must print one
`error: ...` line naming the flag and exit 2, before any data is loaded or
model trained. `classify` sorts an outcome into clear / unclear / silent, so
the same matrix can be counted on any version of the package.
"""

import contextlib
import io
import os
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


class Context:
    """Small real data and tiny models, built once and shared by the cases."""

    def __init__(self, tmp):
        import keras

        from tfdefense.data import load_dataset

        keras.utils.set_random_seed(0)
        self.tmp = pathlib.Path(tmp)
        (x, y), _ = load_dataset("digits", image_size=28)
        self.x, self.y = x[:64], y[:64]
        rng = np.random.default_rng(0)
        self.x_adv = np.clip(self.x + 0.3 * np.sign(rng.standard_normal(self.x.shape)), 0, 1).astype(np.float32)
        self._cache = {}

    def get(self, name, build):
        if name not in self._cache:
            self._cache[name] = build()
        return self._cache[name]

    # models ------------------------------------------------------------------
    def classifier(self):
        from tfdefense.models import model_c

        return self.get("classifier", model_c)

    def softmax_classifier(self):
        import keras

        def build():
            inputs = keras.Input((28, 28, 1))
            outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))
            return keras.Model(inputs, outputs, name="probabilities")

        return self.get("softmax", build)

    def pix2pix(self, classifier=False):
        from tfdefense.defenses import Pix2PixDefense
        from tfdefense.models import patchgan_preset, unet_generator_preset

        def build():
            defense = Pix2PixDefense(
                unet_generator_preset("tiny"),
                patchgan_preset("tiny"),
                classifier=self.classifier() if classifier else None,
            )
            defense.compile()
            return defense

        return self.get(f"pix2pix{classifier}", build)

    def dcgan(self):
        from tfdefense.defenses import DCGAN

        def build():
            model = DCGAN.from_preset("tiny")
            model.compile()
            return model

        return self.get("dcgan", build)

    def apegan(self):
        from tfdefense.defenses import APEGAN

        def build():
            model = APEGAN.from_preset("tiny")
            model.compile()
            return model

        return self.get("apegan", build)

    def advgan(self):
        from tfdefense.defenses import AdvGAN, advgan_generator

        def build():
            model = AdvGAN(advgan_generator(), self.classifier(), train_classifier=False)
            model.compile()
            return model

        return self.get("advgan", build)

    def trainer(self):
        import keras

        from tfdefense.defenses import AdversarialTrainer

        def build():
            trainer = AdversarialTrainer(self.classifier(), attack="fgsm")
            trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
            return trainer

        return self.get("trainer", build)

    def robust(self):
        from tfdefense.defenses import RobustPurifier
        from tfdefense.models import unet_generator_preset

        def build():
            model = RobustPurifier(unet_generator_preset("tiny"), self.classifier(), attack_steps=1)
            model.compile()
            return model

        return self.get("robust", build)

    # files -------------------------------------------------------------------
    def npz(self, name, **overrides):
        arrays = dict(x_train=self.x[:40], y_train=self.y[:40], x_test=self.x[40:], y_test=self.y[40:])
        arrays.update(overrides)
        path = self.tmp / f"{name}.npz"
        np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
        return path

    def labels(self, n, bad, position=0):
        y = np.array(self.y[:n])
        y[position] = bad
        return y

    def dataset(self, *arrays):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices(arrays).batch(16)


# --------------------------------------------------------------------------- the cases


def _load(path):
    from tfdefense.data import load_dataset

    return load_dataset(f"npz:{path}")


def _train(c, x=None, y=None, model="classifier", **kwargs):
    from tfdefense.models import train_classifier

    model = c.classifier() if model == "classifier" else model
    return train_classifier(model, c.x if x is None else x, c.y if y is None else y, epochs=1, verbose=0, **kwargs)


def _attack(c, name="fgsm", x=None, model="classifier", **params):
    from tfdefense.attacks import get_attack

    model = c.classifier() if model == "classifier" else model
    return get_attack(name, **params)(model, c.x[:4] if x is None else x)


def _truncated(c):
    path = c.npz("truncated")
    path.write_bytes(path.read_bytes()[:300])
    return _load(path)


def _random_bytes(c):
    path = c.tmp / "random.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return _load(path)


def _classifier_mismatch(c):
    from tfdefense.defenses import Pix2PixDefense
    from tfdefense.models import get_classifier, patchgan_preset, unet_generator_preset

    other = get_classifier("D", input_shape=(32, 32, 3))
    return Pix2PixDefense(unet_generator_preset("tiny"), patchgan_preset("tiny"), classifier=other)


def _empty(c):
    return c.x[:0]


def _export(c, path):
    from tfdefense.export import export_saved_model

    return export_saved_model(c.classifier(), path)


# (id, item, call, exception types, argument the message must name, extra text the message must contain)
API_CASES = [
    # item 3: labels out of range, everywhere labels enter
    ("npz y_train 99", 3, lambda c: _load(c.npz("l99", y_train=c.labels(40, 99))), ValueError, "y_train", "99"),
    ("npz y_train -1", 3, lambda c: _load(c.npz("lneg", y_train=c.labels(40, -1))), ValueError, "y_train", "-1"),
    ("npz y_test 10", 3, lambda c: _load(c.npz("l10", y_test=c.labels(24, 10))), ValueError, "y_test", "10"),
    ("train_classifier y 99", 3, lambda c: _train(c, y=c.labels(64, 99)), ValueError, "y_train", "99"),
    ("train_classifier y -1", 3, lambda c: _train(c, y=c.labels(64, -1)), ValueError, "y_train", "-1"),
    ("train_classifier y 10", 3, lambda c: _train(c, y=c.labels(64, 10)), ValueError, "y_train", "10"),
    (
        "train_classifier validation y 10",
        3,
        lambda c: _train(c, validation_data=(c.x[:8], c.labels(8, 10))),
        ValueError,
        "validation_data[1]",
        "10",
    ),
    ("AdvGAN.fit y 10", 3, lambda c: c.advgan().fit(c.x, c.labels(64, 10), epochs=1, verbose=0), ValueError, "y", "10"),
    (
        "AdversarialTrainer.fit y 99",
        3,
        lambda c: c.trainer().fit(c.x, c.labels(64, 99), epochs=1, verbose=0),
        ValueError,
        "y",
        "99",
    ),
    (
        "RobustPurifier.fit y -1",
        3,
        lambda c: c.robust().fit(c.x, c.labels(64, -1), epochs=1, verbose=0),
        ValueError,
        "y",
        "-1",
    ),
    (
        "adversarial_training validation y 10",
        3,
        lambda c: __import__("tfdefense.defenses", fromlist=["x"]).adversarial_training(
            c.classifier(), c.x, c.y, attack="fgsm", epochs=1, verbose=0, validation_data=(c.x[:8], c.labels(8, 10))
        ),
        ValueError,
        "validation_data[1]",
        "10",
    ),
    (
        "Pix2Pix.fit dataset labels 10",
        3,
        lambda c: c.pix2pix(classifier=True).fit(
            c.dataset(c.x_adv, c.x, c.labels(64, 10, position=3)), epochs=1, verbose=0
        ),
        ValueError,
        "x",
        "10",
    ),
    # item 4: unclear errors made clear
    (
        "attack image 32x32x3 on a 28x28x1 model",
        4,
        lambda c: _attack(c, x=np.zeros((2, 32, 32, 3), np.float32)),
        ValueError,
        "x",
        "32, 32, 3",
    ),
    (
        "attack image with 3 channels",
        4,
        lambda c: _attack(c, x=np.zeros((2, 28, 28, 3), np.float32)),
        ValueError,
        "x",
        "28, 28, 3",
    ),
    (
        "num_classes 0",
        4,
        lambda c: __import__("tfdefense.models", fromlist=["x"]).get_classifier("C", num_classes=0),
        ValueError,
        "num_classes",
        "0",
    ),
    (
        "num_classes '10'",
        4,
        lambda c: __import__("tfdefense.models", fromlist=["x"]).model_c(num_classes="10"),
        (ValueError, TypeError),
        "num_classes",
        "'10'",
    ),
    (
        "num_classes 2.5",
        4,
        lambda c: __import__("tfdefense.models", fromlist=["x"]).model_a(num_classes=2.5),
        (ValueError, TypeError),
        "num_classes",
        "2.5",
    ),
    ("train_classifier empty data", 4, lambda c: _train(c, x=_empty(c), y=c.y[:0]), ValueError, "x_train", "empty"),
    (
        "train_classifier validation_data 3-tuple",
        4,
        lambda c: _train(c, validation_data=(c.x[:8], c.y[:8], c.y[:8])),
        ValueError,
        "validation_data",
        "3",
    ),
    (
        "train_classifier validation_data 1-tuple",
        4,
        lambda c: _train(c, validation_data=(c.x[:8],)),
        ValueError,
        "validation_data",
        "1",
    ),
    ("train_classifier model=None", 4, lambda c: _train(c, model=None), TypeError, "model", "None"),
    ("attack model=None", 4, lambda c: _attack(c, model=None), TypeError, "model", "None"),
    (
        "Pix2PixDefense classifier of another input shape",
        4,
        _classifier_mismatch,
        ValueError,
        "classifier",
        "32, 32, 3",
    ),
    ("npz truncated", 4, _truncated, ValueError, "name", "truncated.npz"),
    ("npz random bytes", 4, _random_bytes, ValueError, "name", "random.npz"),
    ("npz wrong keys", 4, lambda c: _load(c.npz("keys", x_train=None, images=c.x)), ValueError, "name", "x_train"),
    (
        "Pix2Pix.fit validation_data 4-tuple",
        4,
        lambda c: c.pix2pix().fit(c.x_adv, c.x, epochs=1, verbose=0, validation_data=(c.x, c.x, c.y, c.y)),
        ValueError,
        "validation_data",
        "4",
    ),
    (
        "AdvGAN.fit validation_data 3-tuple",
        4,
        lambda c: c.advgan().fit(c.x, c.y, epochs=1, verbose=0, validation_data=(c.x, c.y, c.y)),
        ValueError,
        "validation_data",
        "3",
    ),
    # item 5: silent no-ops refused
    (
        "pgd eps_iter=0 without random start",
        5,
        lambda c: _attack(c, "pgd", eps_iter=0, rand_init=False),
        ValueError,
        "eps_iter",
        "0",
    ),
    ("bim eps_iter=0", 5, lambda c: _attack(c, "bim", eps_iter=0), ValueError, "eps_iter", "0"),
    ("cw_l2 learning_rate=0", 5, lambda c: _attack(c, "cw_l2", learning_rate=0), ValueError, "learning_rate", "0"),
    (
        "Pix2Pix.fit empty arrays",
        5,
        lambda c: c.pix2pix().fit(_empty(c), _empty(c), epochs=1, verbose=0),
        ValueError,
        "x",
        "empty",
    ),
    (
        "APEGAN.fit empty arrays",
        5,
        lambda c: c.apegan().fit(_empty(c), _empty(c), epochs=1, verbose=0),
        ValueError,
        "x",
        "empty",
    ),
    ("DCGAN.fit empty arrays", 5, lambda c: c.dcgan().fit(_empty(c), epochs=1, verbose=0), ValueError, "x", "empty"),
    (
        "AdvGAN.fit empty arrays",
        5,
        lambda c: c.advgan().fit(_empty(c), c.y[:0], epochs=1, verbose=0),
        ValueError,
        "x",
        "empty",
    ),
    (
        "AdversarialTrainer.fit empty arrays",
        5,
        lambda c: c.trainer().fit(_empty(c), c.y[:0], epochs=1, verbose=0),
        ValueError,
        "x",
        "empty",
    ),
    (
        "Pix2Pix.fit raw tf.data of 0-255 pairs",
        5,
        lambda c: c.pix2pix(classifier=True).fit(c.dataset(c.x_adv * 255, c.x * 255), epochs=1, verbose=0),
        ValueError,
        "x",
        "255",
    ),
    (
        "DCGAN.fit raw tf.data of 0-255 images",
        5,
        lambda c: c.dcgan().fit(c.dataset(c.x * 255), epochs=1, verbose=0),
        ValueError,
        "x",
        "255",
    ),
    (
        "AdversarialTrainer.fit uint8 tf.data",
        5,
        lambda c: c.trainer().fit(c.dataset((c.x * 255).astype(np.uint8), c.y), epochs=1, verbose=0),
        ValueError,
        "x",
        "uint8",
    ),
    (
        "input_shape (28, 28, 0)",
        5,
        lambda c: __import__("tfdefense.models", fromlist=["x"]).model_c(input_shape=(28, 28, 0)),
        ValueError,
        "input_shape",
        "(28, 28, 0)",
    ),
    # output paths of the API get the CLI's checks
    (
        "export_saved_model under a file",
        4,
        lambda c: _export(c, pathlib.Path(_existing_file(c)) / "export"),
        ValueError,
        "path",
        "is not a directory",
    ),
    ("export_saved_model in /proc", 4, lambda c: _export(c, "/proc/tfdefense-export"), ValueError, "path", "/proc"),
    (
        "export_saved_model in a new folder of /proc",
        4,
        lambda c: _export(c, "/proc/nope/export"),
        ValueError,
        "path",
        "/proc/nope",
    ),
]

# item 5: legitimate but almost always wrong: a warning naming the argument.
WARN_CASES = [
    ("attack on a softmax classifier", lambda c: _attack(c, model=c.softmax_classifier()), "model"),
    (
        "Pix2PixDefense(classifier=softmax)",
        lambda c: __import__("tfdefense.defenses", fromlist=["x"]).Pix2PixDefense(
            __import__("tfdefense.models", fromlist=["x"]).unet_generator_preset("tiny"),
            __import__("tfdefense.models", fromlist=["x"]).patchgan_preset("tiny"),
            classifier=c.softmax_classifier(),
        ),
        "classifier",
    ),
]


def classify(c, call, exception, argument, text):
    """'clear' (right type, names the argument and `text`), 'unclear' (any other error) or 'silent'."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call(c)
    except (ValueError, TypeError) as error:
        message = str(error)
        named = f"`{argument}`" in message or f"argument {argument}" in message
        return "clear" if isinstance(error, exception) and named and text in message else "unclear"
    except Exception:  # noqa: BLE001  (a deep TF/Keras error is an unclear one)
        return "unclear"
    return "silent"


def classify_warning(c, call, argument):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call(c)
        except Exception:  # noqa: BLE001
            return "unclear"
    named = [w for w in caught if f"`{argument}`" in str(w.message) and "logits" in str(w.message)]
    return "clear" if named else "silent"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Context(tmp_path_factory.mktemp("reliability"))


@pytest.mark.parametrize("case", API_CASES, ids=[case[0] for case in API_CASES])
def test_api_bad_input_gets_a_clear_error(ctx, case):
    _, _, call, exception, argument, text = case
    with pytest.raises(exception) as info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call(ctx)
    message = str(info.value)
    assert f"`{argument}`" in message, message
    assert text in message, message


@pytest.mark.parametrize("case", WARN_CASES, ids=[case[0] for case in WARN_CASES])
def test_probability_outputs_are_warned_about(ctx, case):
    assert classify_warning(ctx, case[1], case[2]) == "clear"


def test_logits_classifier_is_not_warned_about(ctx):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _attack(ctx)
    assert not [w for w in caught if "logits" in str(w.message)]


def test_valid_input_still_trains(ctx):
    """The checks reject only bad input: one epoch on the same tiny data passes through every checked path."""
    history = _train(ctx, validation_data=(ctx.x[:8], ctx.y[:8]))
    assert np.isfinite(history.history["loss"][0])
    defense = ctx.pix2pix(classifier=True)
    history = defense.fit(ctx.dataset(ctx.x_adv, ctx.x, ctx.y), epochs=1, verbose=0)
    assert np.isfinite(history.history["l1"][0])


# --------------------------------------------------------------------------- the CLIs


def _existing_dir(c):
    path = c.tmp / "a_folder.keras"
    path.mkdir(exist_ok=True)
    return str(path)


def _existing_file(c):
    path = c.tmp / "a_file"
    path.write_text("user data\n")
    return str(path)


def _under_a_file(c):
    return str(pathlib.Path(_existing_file(c)) / "sub" / "m.keras")


TRAIN = ["classifier", "--model", "C", "--dataset", "digits"]
EVALUATE = ["--preset", "quickstart"]

# (id, cli, argv builder, flag the error must name)
CLI_CASES = [
    ("train --out m.h5", "train", lambda c: TRAIN + ["--out", str(c.tmp / "m.h5")], "--out"),
    ("train --out existing directory", "train", lambda c: TRAIN + ["--out", _existing_dir(c)], "--out"),
    ("train --out unwritable", "train", lambda c: TRAIN + ["--out", _under_a_file(c)], "--out"),
    ("train --out in /proc", "train", lambda c: TRAIN + ["--out", "/proc/nope/m.keras"], "--out"),
    (
        "train --model nope",
        "train",
        lambda c: ["classifier", "--model", "nope", "--dataset", "digits", "--out", str(c.tmp / "m.keras")],
        "--model",
    ),
    (
        "train --dataset nope",
        "train",
        lambda c: ["classifier", "--model", "C", "--dataset", "nope", "--out", str(c.tmp / "m.keras")],
        "--dataset",
    ),
    (
        "train --dataset npz:missing",
        "train",
        lambda c: [
            "classifier",
            "--model",
            "C",
            "--dataset",
            f"npz:{c.tmp}/missing.npz",
            "--out",
            str(c.tmp / "m.keras"),
        ],
        "--dataset",
    ),
    (
        "train --batch-size 0",
        "train",
        lambda c: TRAIN + ["--out", str(c.tmp / "m.keras"), "--batch-size", "0"],
        "--batch-size",
    ),
    ("train --epochs -1", "train", lambda c: TRAIN + ["--out", str(c.tmp / "m.keras"), "--epochs", "-1"], "--epochs"),
    ("train --seed -1", "train", lambda c: TRAIN + ["--out", str(c.tmp / "m.keras"), "--seed", "-1"], "--seed"),
    (
        "train --learning-rate 0",
        "train",
        lambda c: TRAIN + ["--out", str(c.tmp / "m.keras"), "--learning-rate", "0"],
        "--learning-rate",
    ),
    (
        "train npz with label 99",
        "train",
        lambda c: [
            "classifier",
            "--model",
            "C",
            "--dataset",
            f"npz:{c.npz('cli99', y_train=c.labels(40, 99))}",
            "--out",
            str(c.tmp / "m.keras"),
        ],
        "y_train",
    ),
    ("evaluate --preset nope", "evaluate", lambda c: ["--preset", "nope", "--out", str(c.tmp / "run")], "--preset"),
    (
        "evaluate --attacks nope",
        "evaluate",
        lambda c: EVALUATE + ["--out", str(c.tmp / "run"), "--attacks", "nope"],
        "--attacks",
    ),
    (
        "evaluate --defenses nope",
        "evaluate",
        lambda c: ["--preset", "egan", "--out", str(c.tmp / "run"), "--defenses", "nope"],
        "--defenses",
    ),
    (
        "evaluate --attacks pgd-/../../nonsense",
        "evaluate",
        lambda c: [
            "--preset",
            "robust",
            "--scale",
            "tiny",
            "--out",
            str(c.tmp / "run"),
            "--attacks",
            "pgd-/../../nonsense",
        ],
        "--attacks",
    ),
    (
        "evaluate --attacks square-anything",
        "evaluate",
        lambda c: ["--preset", "robust", "--out", str(c.tmp / "run"), "--attacks", "fgsm,square-anything"],
        "--attacks",
    ),
    (
        "train --dataset imagenet without --image-size",
        "train",
        lambda c: ["classifier", "--model", "C", "--dataset", "imagenet", "--out", str(c.tmp / "m.keras")],
        "--image-size",
    ),
    (
        "evaluate --attacks on a preset without attack filter",
        "evaluate",
        lambda c: ["--preset", "egan", "--out", str(c.tmp / "run"), "--attacks", "fgsm"],
        "--attacks",
    ),
    ("evaluate --out existing file", "evaluate", lambda c: EVALUATE + ["--out", _existing_file(c)], "--out"),
    ("evaluate --out unwritable", "evaluate", lambda c: EVALUATE + ["--out", _under_a_file(c)], "--out"),
    (
        "evaluate --batch-size 0",
        "evaluate",
        lambda c: EVALUATE + ["--out", str(c.tmp / "run"), "--batch-size", "0"],
        "--batch-size",
    ),
    ("evaluate --seed -1", "evaluate", lambda c: EVALUATE + ["--out", str(c.tmp / "run"), "--seed", "-1"], "--seed"),
    (
        "evaluate --weights missing",
        "evaluate",
        lambda c: EVALUATE + ["--out", str(c.tmp / "run"), "--weights", str(c.tmp / "none.h5")],
        "--weights",
    ),
]


def _no_work(*args, **kwargs):
    raise AssertionError("work started before the arguments were checked")


def run_cli(cli, argv, monkeypatch=None):
    """(exit status, stderr) of `python -m tfdefense.<cli> argv` run in-process; training/data loading forbidden."""
    import tfdefense.data
    import tfdefense.evaluation.runner
    import tfdefense.models

    if monkeypatch is not None and not argv[-1].startswith("npz:") and "y_train" not in argv:
        monkeypatch.setattr(tfdefense.models, "train_classifier", _no_work)
        monkeypatch.setattr(tfdefense.evaluation.runner, "run_preset", _no_work)
    module = __import__(f"tfdefense.{cli}", fromlist=["main"])
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = module.main(argv)
        except SystemExit as exit_:
            status = exit_.code
        except Exception as error:  # noqa: BLE001
            status = f"{type(error).__name__}: {error}"
    return status, stderr.getvalue()


def classify_cli(status, stderr, flag):
    lines = [line for line in stderr.splitlines() if line.strip()]
    if status == 0:
        return "silent"
    clear = status == 2 and len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0]
    return "clear" if clear else "unclear"


@pytest.mark.parametrize("case", CLI_CASES, ids=[case[0] for case in CLI_CASES])
def test_cli_bad_argument_is_one_line_and_exit_2_before_any_work(ctx, case, monkeypatch):
    _, cli, argv, flag = case
    status, stderr = run_cli(cli, argv(ctx), monkeypatch)
    assert classify_cli(status, stderr, flag) == "clear", (status, stderr)
    assert "Traceback" not in stderr
    assert not list(ctx.tmp.glob("*.backup"))  # no resume backup was started


def test_train_classifier_help_lists_exactly_the_datasets_it_accepts(ctx, monkeypatch, capsys):
    """Every dataset named by `train classifier --help` passes the --dataset check; a name it omits is refused."""
    import argparse

    from tfdefense import train
    from tfdefense.data import list_datasets

    parser = argparse.ArgumentParser()
    train._classifier_parser(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["classifier", "--help"])
    listed = " ".join(capsys.readouterr().out.split())
    assert "imagenet" in listed and set(list_datasets()) - {"npz:PATH"} <= set(train.DATASETS)
    for name in train.DATASETS:
        assert name in listed
        argv = [
            "classifier",
            "--model",
            "C",
            "--dataset",
            name,
            "--out",
            str(ctx.tmp / "m.keras"),
            "--image-size",
            "28",
        ]
        args = parser.parse_args(argv)
        train.check_classifier_args(args)  # no error
    status, stderr = run_cli(
        "train", ["classifier", "--model", "C", "--dataset", "svhn", "--out", str(ctx.tmp / "m.keras")], monkeypatch
    )
    assert status == 2 and "argument --dataset: unknown dataset 'svhn'" in stderr
    assert "svhn" not in listed


def test_cli_errors_are_usage_errors_recognized_by_type(capsys):
    """`fail` raises UsageError (a ValueError); run_main prints any UsageError as one line, whatever its wording."""
    from tfdefense import _cli

    with pytest.raises(_cli.UsageError) as raised:
        _cli.check_positive_int("--epochs", 0)
    assert isinstance(raised.value, ValueError)

    def bad(argv):
        raise _cli.UsageError("the wording\n of this error is free")

    assert _cli.run_main(bad) == _cli.EXIT_USAGE == 2
    assert capsys.readouterr().err == "error: the wording of this error is free\n"

    def other(argv):
        raise ValueError("a bug, not a usage error")

    with pytest.raises(ValueError, match="a bug"):  # keeps its traceback
        _cli.run_main(other)


def test_robust_preset_declares_every_suite_name():
    """`--attacks` is checked against the names a preset declares: the robust suite's labels must all be there."""
    import fnmatch

    from tfdefense.evaluation.preset_registry import filter_name_matches
    from tfdefense.evaluation.presets import robust
    from tfdefense.evaluation.robustness import robustness_suite
    from tfdefense.evaluation.runner import get_preset

    declared = get_preset("robust").attacks
    for scale, settings in robust.SCALES.items():
        for item in robustness_suite(0.3, seed=0, **settings["suite"]):
            for name in (item.label, item.attack):
                assert any(fnmatch.fnmatchcase(name, pattern) for pattern in declared), (scale, name)
                assert any(filter_name_matches(name, pattern) for pattern in declared), (scale, name)


def test_cli_entry_point_prints_one_line_without_tensorflow_logs(tmp_path):
    """The real `python -m` entry: exit 2, one stderr line, none of TF's C++ start-up lines."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfdefense.train",
            "classifier",
            "--model",
            "C",
            "--dataset",
            "digits",
            "--out",
            str(tmp_path / "m.h5"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert lines == [f"error: argument --out: expected a path ending in .keras, got '{tmp_path / 'm.h5'}'"], lines


def test_user_log_level_is_respected(tmp_path):
    """With TF_CPP_MIN_LOG_LEVEL set by the user, the CLI leaves TF's logging alone."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0")
    code = "import os, tfdefense._cli as c; c.quiet_tensorflow(); print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.stdout.strip() == "0"


# --------------------------------------------------------------------------- training backups that can always continue

BACKUP_EPOCHS = 3


def _backed_up_fit(c, backup, callbacks=()):
    """A small dense classifier trained BACKUP_EPOCHS epochs on 64 real digits, backed up in `backup`."""
    import keras

    from tfdefense.models import train_classifier

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    history = train_classifier(
        model,
        c.x,
        c.y,
        epochs=BACKUP_EPOCHS,
        batch_size=16,
        seed=0,
        verbose=0,
        backup_dir=backup,
        callbacks=list(callbacks),
    )
    return model, history


@pytest.fixture(scope="module")
def reference_weights(ctx):
    model, history = _backed_up_fit(ctx, ctx.tmp / "reference.backup")
    assert history.epoch == list(range(BACKUP_EPOCHS))
    return model.get_weights()


def _killed_at(c, epoch, name):
    """The backup folder of a fit killed at the start of `epoch` (epochs 0..epoch-1 backed up)."""
    from tfdefense.testing import InterruptAt

    backup = c.tmp / name
    with pytest.raises(KeyboardInterrupt):
        _backed_up_fit(c, backup, [InterruptAt(epoch, KeyboardInterrupt("killed"))])
    return backup


def _folder_at_start(folder):
    """A callback recording (in `.names`) the files in `folder` when the first epoch starts (after the restore)."""
    import keras

    class FolderAtStart(keras.callbacks.Callback):
        names = None

        def on_epoch_begin(self, epoch, logs=None):
            if self.names is None:
                self.names = sorted(p.name for p in folder.iterdir())

    return FolderAtStart()


def _resumed(c, backup, callbacks=()):
    """(weights, epochs run, warnings) of the rerun on `backup`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, history = _backed_up_fit(c, backup, callbacks)
    assert not backup.exists()  # deleted once training completed
    return model.get_weights(), history.epoch, [str(w.message) for w in caught if "training backup" in str(w.message)]


def _assert_identical(weights, reference):
    assert len(weights) == len(reference)
    for a, b in zip(weights, reference, strict=True):
        np.testing.assert_array_equal(a, b)


def test_backup_keeps_the_previous_checkpoint_with_digests(ctx):
    from tfdefense import distribute

    backup = _killed_at(ctx, 2, "kept.backup")
    names = sorted(p.name for p in backup.iterdir())
    assert names == [
        "latest.weights.h5",
        "latest.weights.h5.bkp",
        "random_state.json",
        "training_metadata.json",
        "training_metadata.json.bkp",
    ], names
    checkpoints, problems = distribute.find_checkpoints(backup)
    assert [c["epoch"] for c in checkpoints] == [2, 1] and problems == []
    assert distribute.backup_epoch(backup) == 2


@pytest.mark.parametrize("damage", ["truncated weights", "garbage metadata", "weights from elsewhere"])
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(ctx, reference_weights, damage):
    backup = _killed_at(ctx, 2, f"{damage.replace(' ', '_')}.backup")
    weights, metadata = backup / "latest.weights.h5", backup / "training_metadata.json"
    if damage == "truncated weights":  # a kill while h5py wrote it (before atomic writes)
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    elif damage == "garbage metadata":
        metadata.write_text("{garbage")
    else:
        weights.write_bytes((backup / "latest.weights.h5.bkp").read_bytes())
    resumed, epochs, messages = _resumed(ctx, backup)
    assert epochs == [1, 2]  # the previous complete checkpoint: epoch 1
    assert len(messages) == 1 and "resuming from the last complete checkpoint (epoch 1)" in messages[0], messages
    _assert_identical(resumed, reference_weights)


def test_a_kill_between_the_renames_of_a_backup_still_resumes_its_epoch(ctx, reference_weights):
    """Killed after the latest weights moved to *.bkp but before their metadata did: epoch 2 is still complete."""
    import keras

    from tfdefense import distribute

    class KilledAfterTheLastBackup(keras.callbacks.Callback):
        def on_train_end(self, logs=None):  # before the backup callback deletes its folder
            raise KeyboardInterrupt("killed")

    backup = _killed_at(ctx, 2, "between_renames.backup")
    (backup / "latest.weights.h5").replace(backup / "latest.weights.h5.bkp")
    assert distribute.backup_epoch(backup) == 2
    with (
        pytest.warns(RuntimeWarning, match="resuming from the last complete checkpoint \\(epoch 2\\)"),
        pytest.raises(KeyboardInterrupt),
    ):  # the rerun writes epoch 3 over the mixed pair
        _backed_up_fit(ctx, backup, [KilledAfterTheLastBackup()])
    checkpoints, problems = distribute.find_checkpoints(backup)
    assert [c["epoch"] for c in checkpoints] == [3, 2] and problems == []
    resumed, epochs, messages = _resumed(ctx, backup)
    assert epochs == [] and messages == []
    _assert_identical(resumed, reference_weights)


def test_no_complete_checkpoint_starts_afresh_with_a_warning(ctx, reference_weights):
    backup = _killed_at(ctx, 1, "only_one.backup")
    assert not (backup / "latest.weights.h5.bkp").exists()
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    (backup / ".latest.k1ll3d.tmp.weights.h5").write_bytes(b"\x89HDF partial")  # a write killed midway
    at_start = _folder_at_start(backup)
    resumed, epochs, messages = _resumed(ctx, backup, [at_start])
    assert ".latest.k1ll3d.tmp.weights.h5" not in at_start.names and "latest.weights.h5" in at_start.names
    assert epochs == [0, 1, 2]
    assert len(messages) == 1 and "training starts afresh from epoch 0" in messages[0], messages
    _assert_identical(resumed, reference_weights)


def test_a_fresh_start_removes_the_checkpoint_it_could_not_load(ctx):
    """A complete checkpoint of another model (epoch 5) is refused; the fresh run's epoch 1 then is the newest."""
    import hashlib
    import json

    import keras

    from tfdefense import distribute
    from tfdefense.testing import InterruptAt

    backup = _killed_at(ctx, 2, "foreign.backup")
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    other.save_weights(backup / "other.weights.h5")
    (backup / "other.weights.h5").replace(backup / "latest.weights.h5.bkp")
    digest = hashlib.sha256((backup / "latest.weights.h5.bkp").read_bytes()).hexdigest()
    (backup / "training_metadata.json.bkp").write_text(json.dumps({"epoch": 5, "weights_sha256": digest}))
    (backup / "training_metadata.json").write_text("{garbage")
    assert distribute.backup_epoch(backup) == 5
    with warnings.catch_warnings(record=True) as caught, pytest.raises(KeyboardInterrupt):
        warnings.simplefilter("always")
        _backed_up_fit(ctx, backup, [InterruptAt(1, KeyboardInterrupt("killed"))])
    (message,) = [str(w.message) for w in caught if "training backup" in str(w.message)]
    assert "does not load into this model" in message and "starts afresh" in message
    assert distribute.backup_epoch(backup) == 1 and not (backup / "latest.weights.h5.bkp").exists()


def test_disk_full_while_backing_up_keeps_the_previous_checkpoint(ctx, reference_weights, monkeypatch):
    """ENOSPC in the middle of epoch 2's weights file: one clear error, epoch 1 kept, the rerun continues exactly."""
    import errno

    import keras

    from tfdefense import distribute

    save_weights = keras.Model.save_weights
    calls = []

    def disk_full_on_second_save(self, filepath, *args, **kwargs):
        calls.append(filepath)
        if len(calls) == 2:
            pathlib.Path(filepath).write_bytes(b"\x89HDF partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return save_weights(self, filepath, *args, **kwargs)

    backup = ctx.tmp / "disk_full.backup"
    monkeypatch.setattr(keras.Model, "save_weights", disk_full_on_second_save)
    with pytest.raises(distribute.BackupWriteError) as raised:
        _backed_up_fit(ctx, backup)
    monkeypatch.undo()
    message = str(raised.value)
    assert raised.value.errno == errno.ENOSPC and str(backup) in message and "No space left on device" in message
    assert "the checkpoint of epoch 1 is kept" in message, message
    assert sorted(p.name for p in backup.iterdir()) == [
        "latest.weights.h5",
        "random_state.json",
        "training_metadata.json",
    ]  # no partial file left
    assert distribute.backup_epoch(backup) == 1
    resumed, epochs, messages = _resumed(ctx, backup)
    assert epochs == [1, 2] and messages == []
    _assert_identical(resumed, reference_weights)


def test_train_classifier_cli_disk_full_is_one_line_and_the_rerun_continues(ctx, monkeypatch):
    """The CLI on ENOSPC while writing epoch 2's backup: exit 1, one line naming the folder; the rerun resumes."""
    import errno
    import json

    import keras

    out = ctx.tmp / "full_disk" / "m.keras"
    argv = [
        "classifier",
        "--model",
        "C",
        "--dataset",
        f"npz:{ctx.npz('disk_full')}",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--out",
        str(out),
    ]
    save_weights, calls = keras.Model.save_weights, []

    def disk_full_on_second_save(self, filepath, *args, **kwargs):
        calls.append(filepath)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save_weights(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", disk_full_on_second_save)
    status, stderr = run_cli("train", argv)
    monkeypatch.undo()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert status == 1 and len(lines) == 1, (status, stderr)
    assert lines[0].startswith(f"error: could not write the training backup in '{out}.backup' (OSError: No space")
    assert "the checkpoint of epoch 1 is kept" in lines[0] and not out.exists()
    status, stderr = run_cli("train", argv)
    assert status == 0, stderr
    summary = json.loads(out.with_suffix(".json").read_text())
    assert (summary["epochs"], summary["resumed_from_epoch"], summary["epochs_this_run"]) == (3, 1, 2)
    assert not pathlib.Path(f"{out}.backup").exists()


@pytest.mark.slow
def test_real_write_failure_in_h5py_exits_cleanly_and_the_rerun_starts_afresh(ctx):
    """A file-size limit makes h5py fail midway through the first backup (a real partial write, like a full
    disk): exit 1 with one line, no crash, no partial file; the rerun trains every epoch."""
    import json
    import resource
    import signal

    out = ctx.tmp / "fsize" / "m.keras"
    argv = [
        sys.executable,
        "-m",
        "tfdefense.train",
        "classifier",
        "--model",
        "C",
        "--dataset",
        f"npz:{ctx.npz('fsize')}",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--out",
        str(out),
    ]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))  # model C's backup: ~8 MB

    failed = subprocess.run(
        argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=600, preexec_fn=limit_file_size
    )
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert failed.returncode == 1 and len(lines) == 1, failed.stderr[-3000:]
    assert lines[0].startswith(f"error: could not write the training backup in '{out}.backup'"), lines
    assert "no earlier checkpoint exists" in lines[0]
    assert sorted(p.name for p in pathlib.Path(f"{out}.backup").iterdir()) == ["random_state.json"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(out.with_suffix(".json").read_text())
    assert (summary["epochs"], summary["resumed_from_epoch"]) == (2, 0)


if __name__ == "__main__":  # counts of the matrix: python tests/reliability_test.py
    import tempfile

    import tfdefense

    print("package:", tfdefense.__file__)
    counts, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        c = Context(tmp)
        for name, _, call, exception, argument, text in API_CASES:
            rows.append((name, classify(c, call, exception, argument, text)))
        for name, call, argument in WARN_CASES:
            rows.append((name, classify_warning(c, call, argument)))
        for name, cli, argv, flag in CLI_CASES:
            with pytest.MonkeyPatch.context() as patch:
                rows.append((name, classify_cli(*run_cli(cli, argv(c), patch), flag)))
    for name, outcome in rows:
        counts[outcome] = counts.get(outcome, 0) + 1
        print(f"{outcome:8s} {name}")
    print(f"cases {len(rows)}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
