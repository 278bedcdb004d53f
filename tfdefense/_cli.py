"""Helpers shared by the command-line entry points (`tfdefense.train`, `tfdefense.evaluate`).

- `quiet_tensorflow()`: silences TensorFlow's C++ start-up and grappler log
  lines unless the user set `TF_CPP_MIN_LOG_LEVEL`; call it before TF is imported.
- `fail(message)`: raises `UsageError` (a ValueError), which `run_main` prints as one
  `error: ...` line on stderr with exit status 2 (argparse's convention).
- `run_main(fn)`: turns the clear errors (`UsageError`, and the `ValueError`/`TypeError`
  worded by `tfdefense._validation`) into that one line, a training backup that could
  not be written (`tfdefense.distribute.BackupWriteError`: disk full) into one line and
  exit status 1; anything else keeps its traceback.
- checks of output paths and names, run before any data loading or training.
"""

import os
import pathlib
import sys
import tempfile

from tfdefense._io import writable_folder

EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(ValueError):
    """A bad command line: printed by `run_main` as one `error: ...` line, exit status 2."""


def fail(message):
    """Raises UsageError(message) (printed by `run_main` as one line, exit 2)."""
    raise UsageError(message)


def quiet_tensorflow():
    """Quiets TensorFlow's C++ logging before it is imported, unless `TF_CPP_MIN_LOG_LEVEL` is set.

    Sets TF_CPP_MIN_LOG_LEVEL=3 (this hides grappler's "remapper failed" E0000
    line and the start-up INFO lines) and imports TensorFlow with the C++
    stderr captured: the few lines TF prints before its logging is configured
    ignore the variable. If the import fails, the captured text is replayed.
    Returns True when it quieted TF.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return False
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced (pytest capture, notebooks)
        import tensorflow  # noqa: F401

        return True
    sys.stderr.flush()
    saved = os.dup(stderr_fd)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), stderr_fd)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, stderr_fd)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, stderr_fd)
            os.close(saved)
    return True


def run_main(fn, argv=None):
    """Calls `fn(argv)`; a UsageError or a clear ValueError / TypeError prints one line and returns 2.

    A training backup that could not be written (`BackupWriteError`, e.g. a full disk) prints one
    line naming the folder and returns 1.
    """
    from tfdefense.distribute import BackupWriteError

    try:
        return fn(argv)
    except UsageError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE
    except BackupWriteError as error:
        print(f"error: {' '.join(str(error.strerror).split())}", file=sys.stderr)
        return EXIT_FAILURE
    except (ValueError, TypeError) as error:
        if not is_validation_error(error):
            raise
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE


def is_validation_error(error):
    """True for the clear argument errors of `tfdefense._validation` (worded the Keras way)."""
    return isinstance(error, (ValueError, TypeError)) and str(error).startswith(
        ("Invalid value received for argument", "Invalid type received for argument")
    )


def check_positive_int(argument, value, allow_none=False):
    """`--batch-size 0`, `--epochs -1`: refused (UsageError naming the flag)."""
    if value is None and allow_none:
        return value
    if value is None or value < 1:
        fail(f"argument {argument}: expected a positive integer, got {value}")
    return value


def check_seed(value, argument="--seed"):
    if value < 0 or value >= 2**32:
        fail(f"argument {argument}: expected an integer in [0, 2**32 - 1], got {value}")
    return value


def check_output_file(argument, path, suffixes):
    """An output file path: right suffix, not an existing directory, in a writable folder."""
    path = pathlib.Path(path)
    if path.suffix not in suffixes:
        fail(f"argument {argument}: expected a path ending in {' or '.join(suffixes)}, got {str(path)!r}")
    if path.is_dir():
        fail(f"argument {argument}: {str(path)!r} is an existing directory; expected a file path")
    ok, reason = writable_folder(path.parent)
    if not ok:
        fail(f"argument {argument}: cannot write {str(path)!r} ({reason})")
    if path.exists() and not os.access(path, os.W_OK):
        fail(f"argument {argument}: {str(path)!r} exists and is not writable")
    return path


def check_output_dir(argument, path):
    """An output folder: not an existing file, and writable (or creatable)."""
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        fail(f"argument {argument}: {str(path)!r} is an existing file; expected a folder")
    ok, reason = writable_folder(path)
    if not ok:
        fail(f"argument {argument}: cannot write into {str(path)!r} ({reason})")
    return path
