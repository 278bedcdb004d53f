"""Stored results of a run's steps: `steps/NAME-HASH.json`, reused by a rerun only when intact.

Each file holds the step's key (`config`), the report rows it added, the
JSON value it returned and `sha256`, the SHA-256 of those three as sorted
compact JSON. A file that is unreadable, holds another key, or whose content
no longer matches its `sha256` (edited by hand, damaged, or written before the
digest was stored) is a cache miss: the step is recomputed, the reason logged,
and the file rewritten. The digest detects changes; it is not a signature.

A long step keeps its finished chunks in `steps/NAME-HASH.partial/chunk-C.json`
(`StepCache.partial`, records of the same format with no rows), so an interrupted run redoes only
the chunks that had not finished; the folder is removed once the step's own
file is written.
"""

import hashlib
import json
import pathlib

from tfdefense import distribute
from tfdefense._io import json_default, remove_own_files, write_json
from tfdefense.evaluation.cache_keys import config_hash


def result_digest(key, rows, value):
    """SHA-256 (hex) of a step's key, rows and value as sorted compact JSON."""
    text = json.dumps(
        {"config": key, "rows": rows, "value": value}, sort_keys=True, separators=(",", ":"), default=json_default
    )
    return hashlib.sha256(text.encode()).hexdigest()


def as_json(value):
    """`value` as reading it back from JSON gives it (lists for tuples, floats for numpy scalars)."""
    return json.loads(json.dumps(value, sort_keys=True, default=json_default))


def _read_record(path, key):
    """(record, problem) of the JSON record at `path` (a step's result or a finished chunk).

    record: (rows, value) when the file holds `key` and matches its SHA-256, else None;
    problem: why an existing file for this key cannot be used ("unreadable", "does
    not match its SHA-256 (...)"), or None (absent, another key, or intact).
    """
    if not path.is_file():
        return None, None
    try:
        stored = json.loads(path.read_text())
        if stored.get("config") != key or not isinstance(stored.get("rows"), list):
            return None, None
        digest = stored.get("sha256")
    except (OSError, ValueError, AttributeError):
        return None, "unreadable"
    if digest != result_digest(key, stored["rows"], stored.get("value")):
        return None, f"does not match its SHA-256 ({'none stored' if digest is None else 'edited or damaged'})"
    return (stored["rows"], stored.get("value")), None


def _write_record(path, key, rows, value):
    """Writes a record that `_read_record` reads back: key, rows, value (all JSON) and their SHA-256, atomically."""
    write_json(path, {"config": key, "rows": rows, "value": value, "sha256": result_digest(key, rows, value)})


class PartialChunks:
    """The finished chunks of one step: `steps/NAME-HASH.partial/chunk-C.json`, each with its key and SHA-256.

    Each file is a `_read_record` record with no rows. `load(c, key)` returns
    chunk c's value when stored intact for `key` (a damaged file is logged and
    counts as not finished); `store(c, key, value)` writes it atomically;
    `remove()` deletes the chunk files this class wrote, then the folder if
    nothing else is in it.
    """

    def __init__(self, folder, log=print, subfolder=None):
        self.folder = pathlib.Path(folder)
        self.log = log
        self._subfolder = subfolder or (lambda: None)

    def _path(self, c):
        return self.folder / f"chunk-{int(c):06d}.json"

    def load(self, c, key):
        path = self._path(c)
        record, problem = _read_record(path, as_json(key))
        if problem:
            self.log(f"finished chunk {path} {problem}; attacking that chunk again")
        return None if record is None else record[1]

    def store(self, c, key, value):
        self._subfolder()
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_record(self._path(c), as_json(key), [], as_json(value))

    def remove(self):
        remove_own_files(self.folder, "chunk-*.json")


class StepCache:
    """Step results of one run folder (folder: `steps/`; log: a function of one message).

    subfolder: a function () -> the checked folder, called before each write (default: `folder`).
    """

    def __init__(self, folder, strategy=None, log=print, subfolder=None):
        self.folder = pathlib.Path(folder)
        self.strategy = strategy
        self.log = log
        self._subfolder = subfolder or (lambda: self.folder)
        self.computed, self.reused = [], []  # step names, in order

    def path(self, name, key):
        return self.folder / f"{name}-{config_hash(key)}.json"

    def partial(self, name, key):
        """The `PartialChunks` of step (name, key); None under a multi-worker strategy (workers split chunks)."""
        if distribute.num_workers(self.strategy) > 1:
            return None
        return PartialChunks(self.path(name, key).with_suffix(".partial"), self.log, self._subfolder)

    def load(self, name, key):
        """(rows, value) stored for (name, key), or None when absent, for another key, or not intact."""
        path = self.path(name, key)
        record, problem = _read_record(path, key)
        if problem:
            self.log(f"step {name}: stored result {path.name} {problem}, recomputing")
        return record

    def get(self, name, key, compute):
        """(rows, value, reused) of step `name` for `key`: stored (reused True), or `compute()` -> (rows, value)
        stored now (reused False).

        key: the step's JSON key (see `as_json`). Under a multi-worker strategy
        the stored result is used only when every worker has it.
        """
        stored = self.load(name, key)
        if distribute.all_workers_agree(self.strategy, stored is not None):  # else every worker recomputes together
            self.log(f"reusing step {name}")
            self.reused.append(name)
            return (*stored, True)
        rows, value = compute()
        stored_rows, value = as_json(rows), as_json(value)
        self._subfolder()
        _write_record(self.path(name, key), key, stored_rows, value)
        self.computed.append(name)
        partial = self.partial(name, key)
        if partial is not None:
            partial.remove()
        return rows, value, False  # the rows themselves (the caller's report holds them), the value as JSON reads it
