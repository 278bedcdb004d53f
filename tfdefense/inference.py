"""Running a classifier: logits in inference mode and arg-max labels.

The one place the package calls a user's model for predictions; attacks,
defenses and evaluation all go through it. Models map float32 NHWC images
in [0, 1] to logits (or probabilities: the arg-max is the same).
"""

import numpy as np

from tfdefense._validation import check_images


def call_model(model, x):
    """Logits of `model` on `x` in inference mode (`training=False` for Keras layers), as a float32 tensor."""
    import keras
    import tensorflow as tf

    out = model(x, training=False) if isinstance(model, keras.Layer) else model(x)
    return tf.cast(out, tf.float32)


def predict_labels(model, x, batch_size=256):
    """Arg-max class predictions (int64, shape (N,)) of `model` on images `x`, `batch_size` at a time."""
    x = check_images(x, "x")
    outputs = [np.asarray(call_model(model, x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    if not outputs:
        return np.zeros((0,), np.int64)
    return np.concatenate(outputs).argmax(axis=-1).astype(np.int64)


def all_layers(model, include_self=True):
    """`model` (with include_self) and every layer nested in it, each once, depth first.

    Models are walked through their public `layers`. A plain `keras.Layer` that holds layers (e.g.
    `attacks.adaptive.BPDA` around a purifier) has no public accessor for them: keras' own
    `_flatten_layers(recursive=False)` lists those.
    """
    import keras

    found, seen = [], set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        found.append(layer)
        if isinstance(layer, keras.Model):
            inner = layer.layers
        else:
            inner = list(layer._flatten_layers(include_self=False, recursive=False))  # no public API (see above)
        for child in inner:
            visit(child)

    visit(model)
    return found if include_self else found[1:]
