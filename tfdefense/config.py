"""Where tfdefense looks for data: argument > $TFDEFENSE_DATA_DIR > ~/.tfdefense/data."""

import os
import pathlib

DATA_DIR_ENV = "TFDEFENSE_DATA_DIR"
DEFAULT_DATA_DIR = pathlib.Path("~/.tfdefense/data")


def resolve_data_dir(data_dir=None):
    """Returns the data directory to use, as a `pathlib.Path` (may not exist)."""
    if data_dir is not None:
        return pathlib.Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return pathlib.Path(from_env).expanduser()
    return DEFAULT_DATA_DIR.expanduser()


def data_dir_sources(data_dir=None):
    """Describes where the data dir came from (for error messages)."""
    if data_dir is not None:
        return f"argument data_dir={str(data_dir)!r}"
    if os.environ.get(DATA_DIR_ENV):
        return f"${DATA_DIR_ENV}={os.environ[DATA_DIR_ENV]!r}"
    return f"default {DEFAULT_DATA_DIR} (set ${DATA_DIR_ENV} or pass data_dir=)"
