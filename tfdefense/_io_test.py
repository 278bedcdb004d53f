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
