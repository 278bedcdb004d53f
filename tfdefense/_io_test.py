import os
import stat

import numpy as np
import pytest

from tfdefense import _io


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_without_changing(umask_022):
    assert _io.current_umask() == 0o022
    assert _io.current_umask() == 0o022


def test_outputs_get_the_mode_open_would_give(tmp_path, umask_022):
    _io.write_text(tmp_path / "report.md", "x\n")
    _io.write_json(tmp_path / "sub" / "results.json", {"a": 1})
    _io.save_npz(tmp_path / "arrays.npz", x=np.zeros(3))
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    assert _mode(tmp_path / "plain.txt") == 0o644
    for name in ("report.md", "sub/results.json", "arrays.npz"):
        assert _mode(tmp_path / name) == 0o644, name
    assert _mode(tmp_path / "sub") == 0o755


def test_other_umask_and_existing_mode_kept(tmp_path):
    old = os.umask(0o077)
    try:
        _io.write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "private.txt") == 0o600
    os.chmod(tmp_path / "private.txt", 0o640)
    _io.write_text(tmp_path / "private.txt", "y")  # like open("w"): an existing file keeps its mode
    assert _mode(tmp_path / "private.txt") == 0o640
    assert (tmp_path / "private.txt").read_text() == "y"


def test_failed_write_leaves_target_and_no_temp(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with _io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_existing_folder_is_refused(tmp_path):
    folder = tmp_path / "results.json"
    folder.mkdir()
    (folder / "user.txt").write_text("keep")
    with pytest.raises(ValueError, match="`path`"):
        _io.write_json(folder, {})
    assert (folder / "user.txt").read_text() == "keep"


def test_backup_dir_must_hold_only_backup_files(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    for path in (".", "..", str(tmp_path / "home"), "/"):
        with pytest.raises(ValueError, match="`backup_dir`.*working directory"):
            _io.check_backup_dir(path)
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("keep")
    with pytest.raises(ValueError, match="`backup_dir`.*thesis.tex"):
        _io.check_backup_dir(user)
    (tmp_path / "file").write_text("keep")
    with pytest.raises(ValueError, match="`backup_dir`.*a file"):
        _io.check_backup_dir(tmp_path / "file")
    backup = tmp_path / "backup"
    backup.mkdir()
    for name in ("latest.weights.h5", "training_metadata.json.bkp", "random_state.json", ".random_state.x1.tmp.json"):
        (backup / name).write_text("")
    assert _io.check_backup_dir(backup) == backup
    assert _io.check_backup_dir(tmp_path / "new") == tmp_path / "new"


def _tiny_classifier():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])


@pytest.fixture(scope="module")
def digits():
    from tfdefense.data import load_dataset

    (x, y), _ = load_dataset("digits")
    return x[:40], y[:40]


@pytest.mark.parametrize("trainer", ["train_classifier", "adversarial_training"])
def test_training_never_deletes_a_users_folder_given_as_backup_dir(tmp_path, digits, trainer):
    from tfdefense.defenses import adversarial_training
    from tfdefense.models.training import train_classifier

    fit = {"train_classifier": train_classifier, "adversarial_training": adversarial_training}[trainer]
    options = {"attack": "fgsm", "eps": 0.1} if trainer == "adversarial_training" else {}
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    model = _tiny_classifier()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="`backup_dir`.*thesis.tex"):
        fit(model, *digits, epochs=1, batch_size=20, backup_dir=user, verbose=0, **options)
    assert (user / "thesis.tex").read_text() == "years of work"
    assert all(
        np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=False)
    )  # refused before training
    fit(model, *digits, epochs=1, batch_size=20, backup_dir=tmp_path / "backup", verbose=0, **options)
    assert not (tmp_path / "backup").exists()  # its own backup folder is removed after training
