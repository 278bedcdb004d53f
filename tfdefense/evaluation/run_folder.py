"""The output folder of an evaluation run: ownership marker, run lock, subfolder checks, stale temporary files.

`open_run_folder(out)` is called once per run (by `runner.Run`) before anything is written:

- `out` must be a folder path: an empty path (the working directory), an existing file, or a path
  below a file is refused with a ValueError naming `out`.
- Ownership: a run writes only into a folder that is new, empty, or already a tfdefense run folder.
  A run folder holds the marker file `tfdefense_run.json` (written when the run opens it). A folder
  written by an older tfdefense without the marker is recognised by its `results.json` (a JSON
  object with `schema_version`, `preset` and a `rows` list, as `reports.RESULTS_SCHEMA` describes)
  and gets the marker. Any other non-empty folder is refused: the run would overwrite the user's
  `report.md`, `results.csv` and plots.
- Lock: the run holds `fcntl.flock` on `.tfdefense_run.lock` (the holder's pid inside) until
  `RunFolder.close()`; a second process opening the same folder gets a ValueError naming the pid.
  The kernel releases the lock when its process dies, so a lock file left by a dead process
  does not block. Runs in one process share the lock. Without `fcntl` the lock file is created
  with O_EXCL and taken over when the pid written in it is no longer alive.
- Subfolders the run writes into (models/, cache/, cache/adversarial/, steps/, backup/, workers/)
  must be real folders, not symbolic links (files would land outside the run folder).
"""

import json
import os
import pathlib
import re
import shutil
import socket
import time

from tfdefense._io import check_not_protected, write_json
from tfdefense._validation import invalid_value

try:
    import fcntl
except ImportError:  # not POSIX: the O_EXCL lock file
    fcntl = None

MARKER_FILE = "tfdefense_run.json"
MARKER_FORMAT = "tfdefense run folder"
LOCK_FILE = ".tfdefense_run.lock"
# Subfolders a run writes into (a multi-worker run's non-chief workers write into workers/<task>).
WRITTEN_SUBFOLDERS = ("models", "cache", "cache/adversarial", "steps", "backup", "workers")
EXPECTED = "a new or empty folder, or a tfdefense run folder"


def _path_problem(out):
    """What is wrong with `out` as a folder path (None: nothing)."""
    if str(out) == "" or os.fspath(out) == "":
        return "a folder path (an empty path would write into the working directory)"
    path = pathlib.Path(out)
    if path.exists() and not path.is_dir():
        return "a folder (it is an existing file)"
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else f"a folder path ({parent} is a file)"
    return None


def check_out_path(out, argument="out"):
    """`out` as a pathlib.Path after the checks of a path: a non-empty path, not a file, not below a file."""
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(
            f"Invalid type received for argument `{argument}`. Expected a folder path (str or "
            f"os.PathLike). Received: {argument} of type {type(out).__name__}"
        )
    problem = _path_problem(out)
    if problem:
        raise invalid_value(argument, problem, str(out))
    return pathlib.Path(out)


def is_our_marker(path):
    """Whether `path` is a regular file holding the marker this module writes."""
    try:
        if pathlib.Path(path).is_symlink():
            return False
        return json.loads(pathlib.Path(path).read_text()).get("format") == MARKER_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def is_our_results(path):
    """Whether `path` is a results.json written by tfdefense (a run folder from before the marker)."""
    try:
        if pathlib.Path(path).is_symlink():
            return False
        results = json.loads(pathlib.Path(path).read_text())
        return (
            isinstance(results, dict)
            and isinstance(results.get("schema_version"), int)
            and isinstance(results.get("preset"), str)
            and isinstance(results.get("rows"), list)
        )
    except (OSError, ValueError):
        return False


def _is_workers_folder(path):
    """workers/ of a multi-worker run: only folders, each empty or a marked run folder (made by a worker)."""
    if path.is_symlink() or not path.is_dir():
        return False
    for entry in path.iterdir():
        if entry.is_symlink() or not entry.is_dir():
            return False
        names = set(os.listdir(entry)) - {LOCK_FILE}
        if names and not is_our_marker(entry / MARKER_FILE):
            return False
    return True


def _ownership(path):
    """("new" | "marked" | "legacy", None) for a folder a run may use, (None, what is expected) otherwise."""
    names = sorted(set(os.listdir(path)) - {LOCK_FILE})
    if not names:
        return "new", None
    if MARKER_FILE in names and is_our_marker(path / MARKER_FILE):
        return "marked", None
    if "results.json" in names and is_our_results(path / "results.json"):
        return "legacy", None
    if names == ["workers"] and _is_workers_folder(path / "workers"):
        return "new", None  # a worker of this multi-worker run made its folder first
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return None, (
        f"{EXPECTED} (one holding {MARKER_FILE}); this folder holds other files ({shown}), "
        "which the run would overwrite; nothing was written"
    )


def check_ownership(path, argument="out"):
    """Raises a ValueError unless `path` (an existing folder) may hold a run; returns "new", "marked" or "legacy"."""
    kind, problem = _ownership(path)
    if problem:
        raise invalid_value(argument, problem, str(path))
    return kind


def _subfolder_problem(root, name):
    path = pathlib.Path(root)
    for part in pathlib.PurePosixPath(name).parts:
        path = path / part
        if path.is_symlink():
            return (
                f"a run folder whose subfolder {name}/ is a real folder, not a symbolic link (to "
                f"{os.readlink(path)}); files would be written outside the run folder"
            )
        if os.path.lexists(path) and not path.is_dir():
            return f"a run folder whose {name} is a folder (it is a file)"
    return None


def check_subfolder(root, name, argument="out"):
    """`root / name` after checking that it and its parents below `root` are absent or real folders."""
    problem = _subfolder_problem(root, name)
    if problem:
        raise invalid_value(argument, problem, str(root))
    return pathlib.Path(root) / name


def check_subfolders(path, argument="out"):
    """Raises a ValueError when a subfolder the run writes into is a symbolic link or not a folder."""
    for name in WRITTEN_SUBFOLDERS:
        check_subfolder(path, name, argument)


def check_run_folder(out):
    """What `open_run_folder(out)` would refuse, as "expected ..." text, or None; creates and changes nothing.

    For command lines, which check their arguments before any work. The lock is not
    checked (the workers of a multi-worker run share `out` with the chief, which holds
    it): `open_run_folder` refuses a folder that another process runs in.
    """
    problem = _path_problem(out)
    path = pathlib.Path(out)
    if problem or not path.is_dir():
        return None if problem is None else f"expected {problem}"
    problem = _ownership(path)[1] or next(filter(None, (_subfolder_problem(path, n) for n in WRITTEN_SUBFOLDERS)), None)
    return None if problem is None else f"expected {problem}; got {str(out)!r}"


# Lock -----------------------------------------------------------------------------------------------
_HELD = {}  # resolved folder -> [file descriptor or None, holders] of the locks this process holds


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _lock_owner(lock_path):
    try:
        info = json.loads(pathlib.Path(lock_path).read_text())
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _who(owner):
    return f"process {owner.get('pid', '?')} on {owner.get('host', '?')}" if owner else "another process"


def _busy(path, owner, argument):
    return invalid_value(
        argument,
        f"a folder no other run is writing into; {_who(owner)} holds its lock {LOCK_FILE} "
        "(wait for that run to end, or choose another folder)",
        str(path),
    )


def _owner_text():
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})


def acquire_lock(path, argument="out"):
    """Takes the run lock of folder `path` (shared by the runs of this process); returns its key for `release_lock`."""
    key = str(pathlib.Path(path).resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        return key
    lock_path = pathlib.Path(key) / LOCK_FILE
    if lock_path.is_symlink():
        raise invalid_value(argument, f"a run folder whose {LOCK_FILE} is a file, not a symbolic link", str(path))
    if fcntl is not None:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise _busy(path, _lock_owner(lock_path), argument) from None
        os.ftruncate(fd, 0)
        os.write(fd, _owner_text().encode())
    else:
        fd = None
        for _ in range(2):
            try:
                with open(lock_path, "x") as f:
                    f.write(_owner_text())
                break
            except FileExistsError:
                owner = _lock_owner(lock_path)
                if isinstance(owner.get("pid"), int) and _pid_alive(owner["pid"]):
                    raise _busy(path, owner, argument) from None
                lock_path.unlink(missing_ok=True)  # stale: its process is gone
        else:
            raise _busy(path, _lock_owner(lock_path), argument)
    _HELD[key] = [fd, 1]
    return key


def release_lock(key):
    """Releases one hold of the lock `acquire_lock` returned; the last one unlocks the folder."""
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] > 0:
        return
    del _HELD[key]
    if held[0] is not None:
        os.close(held[0])  # closing the descriptor releases the flock
    else:
        (pathlib.Path(key) / LOCK_FILE).unlink(missing_ok=True)


class RunFolder:
    """An opened run folder: checked, marked as ours and locked until `close()`."""

    def __init__(self, path, lock_key):
        self.path = path
        self._lock_key = lock_key

    def subfolder(self, name):
        """`path / name` checked again right before a write (absent or a real folder, not a symbolic link)."""
        return check_subfolder(self.path, name)

    def close(self):
        if self._lock_key is not None:
            release_lock(self._lock_key)
            self._lock_key = None

    @property
    def locked(self):
        return self._lock_key is not None


def open_run_folder(out, argument="out"):
    """Checks, creates, marks and locks the run folder `out` (see the module docstring); returns a `RunFolder`."""
    path = check_out_path(out, argument)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise invalid_value(argument, f"a folder that can be created ({error.strerror or error})", str(out)) from None
    kind = check_ownership(path, argument)
    check_subfolders(path, argument)
    key = acquire_lock(path, argument)
    try:
        if kind != "marked" and not is_our_marker(path / MARKER_FILE):
            write_json(
                path / MARKER_FILE,
                {
                    "format": MARKER_FORMAT,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    **({"adopted": "results.json of an earlier tfdefense"} if kind == "legacy" else {}),
                },
            )
    except BaseException:
        release_lock(key)
        raise
    return RunFolder(path, key)


# Stale temporary files -----------------------------------------------------------------------------
# Temporary names made by tfdefense._io.atomic_path (files) and export_saved_model (folders):
# "." + target name + "." + mkstemp's 8 random characters + ".tmp" [+ the target's suffixes] / ".old.tmp".
_TEMP_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)*$")
_TEMP_DIR = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.(?P<old>old\.)?tmp$")
# Run subfolders searched for them (besides the run folder itself); a worker cleans its own folder.
_TEMP_SUBFOLDERS = ("models", "cache", "steps", "backup")
STALE_TEMP_SECONDS = 15 * 60


def _newest_mtime(path):
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except OSError:
                    pass
    return newest


def _is_protected(path):
    try:
        check_not_protected(path, "out", "a run folder")
    except ValueError:
        return True
    return False


def remove_stale_temp_files(out_dir, older_than=STALE_TEMP_SECONDS):
    """Removes the temporary files and folders a killed run left in `out_dir`; returns their paths.

    Only tfdefense's own temporary names (`.NAME.XXXXXXXX.tmp[.ext]` files,
    `.NAME.XXXXXXXX.tmp` SavedModel folders) in the run folder and its
    models/, cache/, steps/ and backup/ subfolders, untouched for `older_than`
    seconds (a run writing into the same folder right now keeps its own). A
    `.NAME.XXXXXXXX.old.tmp` folder holds the previous SavedModel export while
    a new one replaces it: it is removed only when NAME exists.
    """
    out_dir = pathlib.Path(out_dir)
    if not out_dir.is_dir() or _is_protected(out_dir):
        return []
    if not any((out_dir / name).is_dir() for name in _TEMP_SUBFOLDERS):
        return []  # not a run folder of ours (no models/, cache/, steps/ or backup/): nothing of ours to clean
    folders = [out_dir]
    for name in _TEMP_SUBFOLDERS:
        top = out_dir / name
        if top.is_dir() and not top.is_symlink():
            folders.extend(pathlib.Path(root) for root, _, _ in os.walk(top))
    now, removed = time.time(), []
    for folder in folders:
        for entry in sorted(folder.iterdir()):
            try:
                if entry.is_symlink() or now - _newest_mtime(entry) < older_than:
                    continue
                if entry.is_file() and _TEMP_FILE.match(entry.name):
                    entry.unlink()
                elif entry.is_dir() and (match := _TEMP_DIR.match(entry.name)):
                    if match["old"] and not os.path.lexists(entry.parent / match["target"]):
                        continue  # the only copy of the previous export
                    shutil.rmtree(entry)
                else:
                    continue
            except OSError:
                continue
            removed.append(entry)
    return removed
