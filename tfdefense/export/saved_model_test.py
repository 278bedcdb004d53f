import json
import os

import keras
import numpy as np
import pytest

from tfdefense.defenses import Pix2PixDefense
from tfdefense.export import export_saved_model
from tfdefense.models import model_c, patchgan_preset, unet_generator_preset


def test_purifier_only_and_overwrite(tmp_path, rng):
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    defense = Pix2PixDefense(unet_generator_preset("tiny"), patchgan_preset("tiny"))
    path = export_saved_model(defense, tmp_path / "p")
    export_saved_model(defense, path)  # overwrite in place
    loaded = tf.saved_model.load(str(path))
    assert not hasattr(loaded, "classify")
    x = rng.random((3, 28, 28, 1), dtype=np.float32)
    np.testing.assert_array_equal(loaded.purify(x).numpy(), defense.purify(x))
    with pytest.raises(ValueError, match="`path`"):
        export_saved_model(defense, path, overwrite=False)
    with pytest.raises(ValueError, match="`classifier`"):
        export_saved_model(defense, tmp_path / "q", classifier="model_c")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_stochastic_purifier_stays_stochastic(tmp_path, rng):
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    defense = Pix2PixDefense(unet_generator_preset("tiny"), patchgan_preset("tiny"), inference_mode="train_mode")
    loaded = tf.saved_model.load(str(export_saved_model(defense, tmp_path / "s")))
    x = rng.random((4, 28, 28, 1), dtype=np.float32)
    first, second = loaded.purify(x).numpy(), loaded.purify(x).numpy()
    assert not np.allclose(first, second) and first.min() >= 0 and first.max() <= 1


def _mode(path):
    return path.stat().st_mode & 0o777


def test_export_never_replaces_the_working_directory_or_its_parents(tmp_path, monkeypatch):
    keras.utils.set_random_seed(0)
    model = model_c()
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("user data")
    monkeypatch.chdir(work)
    for path in (".", "", "..", str(work), str(tmp_path)):
        with pytest.raises(ValueError, match="`path`.*working directory"):
            export_saved_model(model, path)
    home = tmp_path / "home"
    home.mkdir()
    (home / "saved_model.pb").write_text("")  # even a home holding only SavedModel-like files
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(ValueError, match="`path`.*home"):
        export_saved_model(model, home)
    assert (home / "saved_model.pb").exists()
    assert (work / "notes.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "work"]
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]


def test_export_refuses_folders_holding_foreign_files(tmp_path):
    keras.utils.set_random_seed(0)
    model = model_c()
    own = export_saved_model(model, tmp_path / "own")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "thesis.tex").write_text("years of work")
    (own / "thesis.tex").write_text("dropped into an export")
    (tmp_path / "file.txt").write_text("a file")
    (tmp_path / "fake_marker").mkdir()
    (tmp_path / "fake_marker" / "tfdefense_export.json").write_text("{}")
    (tmp_path / "fake_marker" / "variables").mkdir()
    (tmp_path / "fake_marker" / "variables" / "mine.csv").write_text("1,2")
    for name in ("user", "own", "file.txt", "fake_marker"):
        before = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / name).parent.rglob("*"))
        with pytest.raises(ValueError, match=f"`path`.*{name}"):
            export_saved_model(model, tmp_path / name)
        assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / name).parent.rglob("*")) == before
    assert (tmp_path / "user" / "thesis.tex").read_text() == "years of work"
    assert (own / "thesis.tex").read_text() == "dropped into an export"
    assert (tmp_path / "file.txt").read_text() == "a file"


def test_reexport_replaces_own_export_and_plain_saved_model(tmp_path, rng):
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    first, second = model_c(), model_c()
    path = export_saved_model(first, tmp_path / "m")
    export_saved_model(second, path)  # over our own export
    x = rng.random((2, 28, 28, 1), dtype=np.float32)
    loaded = tf.saved_model.load(str(path))
    np.testing.assert_array_equal(loaded.purify(x).numpy(), np.asarray(second(x)))
    assert json.loads((path / "tfdefense_export.json").read_text())["format"] == "tfdefense SavedModel export"
    (path / "tfdefense_export.json").unlink()  # a SavedModel written by someone else: SavedModel files only
    export_saved_model(first, path)
    loaded = tf.saved_model.load(str(path))
    np.testing.assert_array_equal(loaded.purify(x).numpy(), np.asarray(first(x)))
    (tmp_path / "empty").mkdir()
    export_saved_model(first, tmp_path / "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "m"]  # no temporary leftovers


def test_export_gets_ordinary_permissions(tmp_path):

    keras.utils.set_random_seed(0)
    old = os.umask(0o022)
    try:
        path = export_saved_model(model_c(), tmp_path / "m")
    finally:
        os.umask(old)
    assert _mode(path) == 0o755
    assert _mode(path / "tfdefense_export.json") == 0o644
    assert _mode(path / "saved_model.pb") == 0o644
