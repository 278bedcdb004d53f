"""Atomic writes: write to a temporary sibling, then rename over the target."""

import contextlib
import json
import os
import pathlib
import tempfile

import numpy as np


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yields a temporary path next to `path`; renames it onto `path` on success."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    try:
        yield pathlib.Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value):
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


def save_model(model, path):
    """Saves a keras model to `path` (.keras) atomically."""
    path = pathlib.Path(path)
    if path.suffix != ".keras":
        raise ValueError(
            f"Invalid value received for argument `path`. Expected a file name ending in .keras. Received: path={str(path)!r}"
        )
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
