"""SavedModel export of a purifier and of purifier + classifier.

`export_saved_model(defense, path, classifier=None)` writes a TensorFlow
SavedModel (a tracked module with `tf.function` signatures) that serving code
loads with `tf.saved_model.load(path)` without importing tfdefense or Keras:

- `purify(images)`: float32 [None, H, W, C] in [0, 1] -> purified images.
- `classify(images)` (with `classifier=`): logits of classifier(purify(images)).

Both are also registered as signatures (`loaded.signatures["purify"]`, first
one as "serving_default"). A stochastic (`inference_mode="train_mode"`)
purifier stays stochastic in the export.
"""

import os
import pathlib
import shutil
import tempfile

import keras

from tfdefense._validation import invalid_value


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
      path: output folder. Written to a temporary sibling, then renamed.
      classifier: optional `keras.Model` returning logits; adds `classify`.
      overwrite: replace an existing folder at `path`.

    Returns the path as a `pathlib.Path`.
    """
    import tensorflow as tf

    if not isinstance(defense, keras.Model):
        raise invalid_value("defense", "a keras.Model", defense)
    if classifier is not None and not isinstance(classifier, keras.Model):
        raise invalid_value("classifier", "a keras.Model returning logits, or None", classifier)
    path = pathlib.Path(path)
    if path.exists() and not overwrite:
        raise invalid_value("path", "a folder that does not exist yet (or overwrite=True)", str(path))
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
    try:
        archive.write_out(str(tmp), verbose=False)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path
