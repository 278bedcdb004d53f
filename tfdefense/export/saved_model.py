"""SavedModel export of a purifier and of purifier + classifier.

`export_saved_model(defense, path, classifier=None)` writes a TensorFlow
SavedModel (a tracked module with `tf.function` signatures) that serving code
loads with `tf.saved_model.load(path)` without importing tfdefense or Keras:

- `purify(images)`: float32 [None, H, W, C] in [0, 1] -> purified images.
- `classify(images)` (with `classifier=`): logits of classifier(purify(images)).

Both are also registered as signatures (`loaded.signatures["purify"]`, first
one as "serving_default"). A stochastic (`inference_mode="train_mode"`)
purifier stays stochastic in the export.

Every export holds a marker file, `tfdefense_export.json`. An existing folder
at `path` is replaced only when it holds SavedModel files and nothing else
(with or without the marker); anything else, and the working directory, its
parents, the home folder and `/`, is refused.
"""

import json
import os
import pathlib
import shutil
import tempfile

import keras

from tfdefense._io import check_not_protected, default_dir_mode, writable_folder, write_json
from tfdefense._validation import invalid_value

MARKER_FILE = "tfdefense_export.json"
MARKER_FORMAT = "tfdefense SavedModel export"
# Top-level entries a SavedModel folder may hold (TensorFlow's, Keras' and ours).
SAVED_MODEL_ENTRIES = frozenset(
    {"saved_model.pb", "saved_model.pbtxt", "fingerprint.pb", "keras_metadata.pb", "variables", "assets", MARKER_FILE}
)
SAVED_MODEL_DIRS = frozenset({"variables", "assets"})


def _image_shape(defense):
    shape = getattr(defense, "image_shape", None)
    if shape is None:
        shape = defense.input_shape
        if isinstance(shape, list) or shape is None or len(shape) != 4:
            raise invalid_value("defense", "a keras.Model taking one (N, H, W, C) batch of images", shape)
        shape = shape[1:]
    if any(s is None for s in shape):
        raise invalid_value("defense", "a model built for a fixed image size", shape)
    return tuple(int(s) for s in shape)


def export_saved_model(defense, path, classifier=None, overwrite=True):
    """Writes `defense` (and optionally `classifier(defense(x))`) as a SavedModel at `path`.

    Args:
      defense: a purifier `keras.Model` ([0, 1] images -> [0, 1] images), e.g.
        a `Pix2PixDefense`.
      path: output folder. Written to a temporary sibling, then renamed. A path
        whose parent cannot be created or written (a file, a read-only folder,
        /proc) raises a `ValueError` naming `path` before any tracing.
      classifier: optional `keras.Model` returning logits; adds `classify`.
      overwrite: replace an existing SavedModel folder at `path` (one holding
        only SavedModel files). Any other existing path raises a `ValueError`
        and is left untouched.

    Returns the path as a `pathlib.Path`.
    """
    import tensorflow as tf

    if not isinstance(defense, keras.Model):
        raise invalid_value("defense", "a keras.Model", defense)
    if classifier is not None and not isinstance(classifier, keras.Model):
        raise invalid_value("classifier", "a keras.Model returning logits, or None", classifier)
    if not isinstance(path, (str, os.PathLike)):
        raise invalid_value("path", "a folder path (str or os.PathLike)", path)
    path = pathlib.Path(path)
    check_replaceable(path, overwrite)
    ok, reason = writable_folder(path.parent)
    if not ok:
        raise invalid_value(
            "path",
            f"a folder path in a writable folder (cannot write in {str(path.parent)!r}: {reason}; nothing was changed)",
            str(path),
        )
    shape = _image_shape(defense)
    signature = [tf.TensorSpec([None, *shape], tf.float32, name="images")]

    archive = keras.export.ExportArchive()
    # Track only what inference reads (not the discriminator / feature extractor).
    archive.track(getattr(defense, "generator", defense))
    archive.add_endpoint("purify", lambda images: defense(images, training=False), input_signature=signature)
    if classifier is not None:
        archive.track(classifier)
        archive.add_endpoint(
            "classify",
            lambda images: classifier(defense(images, training=False), training=False),
            input_signature=signature,
        )

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = None
    try:
        os.chmod(tmp, default_dir_mode())  # as os.mkdir would, not mkdtemp's 0o700
        archive.write_out(str(tmp), verbose=False)
        signatures = ["purify"] if classifier is None else ["purify", "classify"]
        write_json(tmp / MARKER_FILE, {"format": MARKER_FORMAT, "signatures": signatures})
        if os.path.lexists(path):
            check_replaceable(path, overwrite)  # again: the folder may have changed while tracing
            old = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old.tmp", dir=path.parent))
            os.replace(path, old / "export")
        os.replace(tmp, path)
    except BaseException:
        if old is not None and (old / "export").exists() and not os.path.lexists(path):
            os.replace(old / "export", path)  # put the previous export back
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
        if old is not None and os.path.lexists(path):  # keep the previous export if it could not be put back
            shutil.rmtree(old)
    return path


def check_replaceable(path, overwrite=True):
    """Raises a `ValueError` unless `path` is absent or a SavedModel folder that may be replaced."""
    path = pathlib.Path(path)
    check_not_protected(path, "path", "a new or SavedModel folder")
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise invalid_value("path", "a folder that does not exist yet (or overwrite=True)", str(path))
    if path.is_symlink() or not path.is_dir():
        kind = "a symbolic link" if path.is_symlink() else "a file"
        raise invalid_value("path", f"a new or SavedModel folder (it is {kind}; nothing was changed)", str(path))
    foreign = sorted(_foreign_entries(path))
    names = {entry.name for entry in os.scandir(path)}
    if names and not foreign and not ({"saved_model.pb", "saved_model.pbtxt"} & names or MARKER_FILE in names):
        foreign = sorted(names)  # SavedModel-like names but no SavedModel
    if foreign:
        raise invalid_value(
            "path",
            "a new or SavedModel folder: it holds files that are not part of a SavedModel "
            f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); nothing was changed",
            str(path),
        )


def _foreign_entries(folder):
    """Entries of `folder` that a SavedModel export does not write."""
    for entry in os.scandir(folder):
        if entry.name not in SAVED_MODEL_ENTRIES:
            yield entry.name
        elif entry.is_symlink() or (entry.name in SAVED_MODEL_DIRS) != entry.is_dir(follow_symlinks=False):
            yield entry.name
        elif entry.name == "variables":
            for inner in os.scandir(entry.path):
                if not (inner.name.startswith("variables.") and inner.is_file(follow_symlinks=False)):
                    yield f"variables/{inner.name}"
        elif entry.name == MARKER_FILE and not _is_our_marker(entry.path):
            yield entry.name


def _is_our_marker(path):
    try:
        with open(path) as f:
            return json.load(f).get("format") == MARKER_FORMAT
    except (OSError, ValueError, AttributeError):
        return False
