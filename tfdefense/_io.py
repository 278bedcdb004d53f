"""Atomic writes: write to a temporary sibling, then rename over the target.

Files land with the permissions an ordinary `open(path, "w")` gives: an
existing target keeps its mode, a new one gets 0o666 minus the umask (not the
0o600 of `tempfile.mkstemp`).
"""

import contextlib
import hashlib
import json
import os
import pathlib
import stat
import tempfile

import numpy as np

from tfdefense._validation import invalid_value


def current_umask():
    """The process umask, read without changing it where /proc allows (Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o077)  # the umask is read by setting it: 0o077 is the safe value meanwhile
    os.umask(old)
    return old


def check_not_protected(path, argument, expected):
    """Raises a ValueError when `path` is /, the home folder, the working directory or one of its parents."""
    resolved = pathlib.Path(path).resolve()
    cwd = pathlib.Path.cwd().resolve()
    if resolved in (pathlib.Path("/").resolve(), pathlib.Path.home().resolve(), cwd) or resolved in cwd.parents:
        raise invalid_value(argument, f"{expected}, never the working directory, its parents, home or /", str(path))


# What keras.callbacks.BackupAndRestore (and tfdefense.training.resume) keep in a backup folder.
BACKUP_FILES = frozenset(
    name + ending
    for name in ("latest.weights.h5", "training_metadata.json", "random_state.json")
    for ending in ("", ".bkp")
)


def check_backup_dir(path, argument="backup_dir"):
    """Refuses a folder that `BackupAndRestore(delete_checkpoint=True)` would delete with foreign files in it.

    Keras removes the whole backup folder when training ends, so it must be
    absent or hold only backup files (and this module's temporary files).
    """
    expected = "a new folder, or one holding only a training backup"
    check_not_protected(path, argument, expected)
    path = pathlib.Path(path)
    if not os.path.lexists(path):
        return path
    if path.is_symlink() or not path.is_dir():
        raise invalid_value(
            argument, f"{expected} (it is {'a symbolic link' if path.is_symlink() else 'a file'})", str(path)
        )
    stems = tuple(f".{name.split('.')[0]}." for name in BACKUP_FILES)
    foreign = sorted(
        entry.name
        for entry in os.scandir(path)
        if not entry.is_file(follow_symlinks=False)
        or not (entry.name in BACKUP_FILES or (entry.name.startswith(stems) and ".tmp" in entry.name))
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise invalid_value(
            argument, f"{expected}: keras deletes it after training, and it holds other files ({shown})", str(path)
        )
    return path


def writable_folder(folder):
    """Creates `folder` if needed and writes (then removes) a probe file in it: (True, "") or (False, reason)."""
    folder = pathlib.Path(folder)
    probe = folder.absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return False, f"{str(probe)!r} is not a directory"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tfdefense-write-check-"):
            pass
    except OSError as error:
        return False, f"{type(error).__name__}: {error.strerror or error}"
    return True, ""


def default_file_mode():
    """Mode of a new file made by `open(path, "w")`."""
    return 0o666 & ~current_umask()


def default_dir_mode():
    """Mode of a new folder made by `os.mkdir(path)`."""
    return 0o777 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yields a temporary path next to `path`; renames it onto `path` on success.

    The result gets the permissions `open(path, "w")` would give: the mode of
    an existing file at `path`, else 0o666 minus the umask.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        raise invalid_value("path", "a file name (the path is an existing folder)", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = default_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    try:
        yield pathlib.Path(tmp)
        os.chmod(tmp, mode)  # after writing: some writers replace the file rather than fill it
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")


def json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pathlib.Path):
        return str(value)
    raise TypeError(f"cannot serialize {type(value).__name__} to JSON")


def save_npz(path, **arrays):
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def remove_own_files(folder, pattern):
    """Deletes the files of `folder` matching `pattern` (the caller's own), then the folder if nothing else is in it."""
    folder = pathlib.Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return
    for path in folder.glob(pattern):
        path.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # something else is in it: left alone


def save_model(model, path):
    """Saves a keras model to `path` (.keras) atomically; returns the SHA-256 (hex) of the file written."""
    path = pathlib.Path(path)
    if path.suffix != ".keras":
        raise ValueError(
            "Invalid value received for argument `path`. Expected a file name ending in .keras. "
            f"Received: path={str(path)!r}"
        )
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        digest = file_sha256(tmp)
    return digest


def file_sha256(path, chunk_size=1 << 20):
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
