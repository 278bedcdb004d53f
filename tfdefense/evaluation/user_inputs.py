"""What a user brings to `evaluate_model`: their models and their data, loaded and wrapped.

`load_user_model(path)` loads a classifier or purifier (`.keras` in safe mode, a SavedModel folder
or a `tfdefense.export` folder) as a Keras model attacks can differentiate through;
`resolve_purifier` also accepts a transform name; `pipeline_class()` builds the attacked
`classifier(purifier(x))`; `load_evaluation_data` reads the images and labels to evaluate on.
"""

import functools
import hashlib
import json
import pathlib

import numpy as np

from tfdefense._validation import check_choice, check_images, check_labels, check_number, invalid_value

def call_model(model, x):
    import keras
    import tensorflow as tf

    out = model(x, training=False) if isinstance(model, keras.Layer) else model(x)
    return tf.cast(out, tf.float32)


def _bpda_layer(fn):
    from tfdefense.attacks.adaptive import bpda

    return bpda(fn, name="purifier_bpda")


def pipeline_class():
    import keras
    import tensorflow as tf

    class EvaluatedPipeline(keras.Model):
        """logits of `classifier(purifier(x))` as attacked: BPDA around the purifier, log of probabilities."""

        def __init__(self, classifier, purifier=None, purifier_bpda=False, probabilities=False, **kwargs):
            super().__init__(**kwargs)
            self.classifier_model = classifier
            self.purifier_model = purifier
            self.purifier_bpda = bool(purifier_bpda)
            self.probabilities = bool(probabilities)
            self.bpda = _bpda_layer(lambda x: call_model(purifier, x)) if purifier is not None and purifier_bpda else None
            self.built = True

        def purify(self, x):
            if self.purifier_model is None:
                return tf.convert_to_tensor(x)
            return self.bpda(x) if self.bpda is not None else call_model(self.purifier_model, x)

        def call(self, inputs, training=None):
            out = call_model(self.classifier_model, self.purify(tf.cast(inputs, tf.float32)))
            if self.probabilities:
                out = tf.math.log(tf.maximum(out, 0.0) + 1e-30)
            return out

    return EvaluatedPipeline


def _saved_model_class():
    import keras
    import tensorflow as tf

    class SavedModelFunction(keras.Model):
        """A function of a loaded SavedModel as a Keras model (images -> one tensor), differentiable."""

        def __init__(self, loaded, function, description, output_key=None, graph_digest="", **kwargs):
            super().__init__(**kwargs)
            self.graph_digest = graph_digest  # sha256 of saved_model.pb: the computation, beside the weights
            object.__setattr__(self, "_loaded", loaded)  # keep the variables alive, untracked by Keras
            object.__setattr__(self, "_function", function)
            self.description = description
            self.output_key = output_key
            self.built = True

        def call(self, inputs, training=None):
            out = self._function(tf.cast(inputs, tf.float32))
            if isinstance(out, dict):
                out = out[self.output_key] if self.output_key else next(iter(out.values()))
            return out

        def fingerprint(self):
            digest = hashlib.sha256(f"{self.description}|{self.graph_digest}".encode())
            # A SavedModel of a plain tf.Module may hold no variables at all (its `variables` attribute is absent).
            for variable in sorted(getattr(self._loaded, "variables", ()) or (), key=lambda v: v.name):
                value = np.ascontiguousarray(variable.numpy())
                digest.update(f"|{variable.name}|{value.shape}|{value.dtype}|".encode())
                digest.update(value.tobytes())
            return digest.hexdigest()

    return SavedModelFunction


def _signature_function(signature):
    """A positional callable for a SavedModel signature with one image input."""
    args, kwargs = signature.structured_input_signature
    specs = list(kwargs.items())
    if args or len(specs) != 1:
        raise invalid_value("signature", "a signature taking one image tensor",
                            f"inputs {list(kwargs) or [str(a) for a in args]}")
    key = specs[0][0]
    outputs = signature.structured_outputs
    output_key = None
    if isinstance(outputs, dict):
        names = sorted(outputs)
        output_key = "logits" if "logits" in outputs else (names[0] if len(names) == 1 else None)
        if output_key is None:
            raise invalid_value("signature", "a signature with one output (or one named 'logits')", names)
    return (lambda x: signature(**{key: x})), output_key


def load_user_model(path, role="classifier", signature=None):
    """Loads a classifier (images -> logits / probabilities) or a purifier (images -> images).

    Args:
      path: a `.keras` file (loaded with `safe_mode=True`), a SavedModel folder
        or a `tfdefense.export.export_saved_model` folder.
      role: "classifier" or "purifier": which function of a tfdefense export
        to use (`classify`: purifier + classifier; `purify`).
      signature: SavedModel signature name (default: the export's function for
        `role`, else "serving_default", else the only signature).
    Returns a Keras model (SavedModels wrapped as `SavedModelFunction`).
    """
    import keras

    import tfdefense.defenses  # noqa: F401  (registers the package's serializable classes)
    import tfdefense.models  # noqa: F401

    check_choice("role", role, ("classifier", "purifier"))
    path = pathlib.Path(path)
    if path.is_file() and path.suffix == ".keras":
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        saved_model_class = functools.partial(
            _saved_model_class(), graph_digest=hashlib.sha256((path / "saved_model.pb").read_bytes()).hexdigest()
        )
        export_function = {"classifier": "classify", "purifier": "purify"}[role]
        if signature is None and callable(getattr(loaded, export_function, None)):
            return saved_model_class(loaded, getattr(loaded, export_function),
                                        f"{path.name}:{export_function}", name=f"{role}_{export_function}")
        names = list(loaded.signatures)
        if signature is None:
            if "serving_default" in names:
                signature = "serving_default"
            elif len(names) == 1:
                signature = names[0]
            else:
                raise invalid_value("signature", f"one of the SavedModel's signatures {names}", None)
        if signature not in names:
            if callable(getattr(loaded, signature, None)):
                return saved_model_class(loaded, getattr(loaded, signature), f"{path.name}:{signature}",
                                            name=f"{role}_{signature}")
            raise invalid_value("signature", f"one of the SavedModel's signatures {names}", signature)
        function, output_key = _signature_function(loaded.signatures[signature])
        return saved_model_class(loaded, function, f"{path.name}:{signature}", output_key=output_key,
                                    name=f"{role}_{signature}")
    raise invalid_value(role, "a .keras file, a SavedModel folder or a tfdefense export folder", str(path))


def resolve_purifier(spec, signature=None):
    """A purifier from a path or a transform name (`jpeg`, `bit_depth:bits=2`, ...; see `list_transforms()`)."""
    from tfdefense.defenses.transforms.classic import get_transform, list_transforms

    name, _, params_text = str(spec).partition(":")
    if name in list_transforms() and not pathlib.Path(spec).exists():
        params = {}
        for item in filter(None, (p.strip() for p in params_text.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise invalid_value("purifier", "TRANSFORM or TRANSFORM:key=value,... (e.g. bit_depth:bits=2)", spec)
            try:
                params[key] = json.loads(value)
            except json.JSONDecodeError:
                params[key] = value
        return get_transform(name, **params)
    if not pathlib.Path(spec).exists():
        raise invalid_value("purifier", f"a model path or a transform name, one of {list_transforms()}", spec)
    return load_user_model(spec, role="purifier", signature=signature)


def user_model_fingerprint(model):
    import keras

    from tfdefense.attacks.generation import model_fingerprint

    if model is None:
        return None
    if hasattr(model, "fingerprint"):
        return model.fingerprint()
    if isinstance(model, keras.Layer):
        return model_fingerprint(model)
    return None  # a plain callable: nothing identifies it, its steps are not cached


# ----------------------------------------------------------------------------- data


def model_image_shape(model):
    shape = getattr(model, "image_shape", None)
    if shape is None:
        try:
            shape = model.input_shape
        except (AttributeError, ValueError):
            return None
        if isinstance(shape, list) or shape is None or len(shape) != 4:
            return None
        shape = shape[1:]
    return tuple(shape)


def load_evaluation_data(dataset, n, data_dir, image_shape):
    from tfdefense.data import load_dataset

    if isinstance(dataset, str):
        _, (x, y) = load_dataset(dataset, data_dir=data_dir)
        description = f"{dataset}: test split"
        if dataset == "mnist":
            from tfdefense.data import mnist_split

            split = mnist_split(data_dir)
            description = f"{split.description}: test split" if split is not None else description
        if image_shape and None not in image_shape[:2] and tuple(x.shape[1:3]) != tuple(image_shape[:2]) \
                and not dataset.startswith("npz:"):
            _, (x, y) = load_dataset(dataset, data_dir=data_dir, image_size=tuple(image_shape[:2]))
            description += f", resized to {image_shape[0]}x{image_shape[1]} for the model"
        name = dataset
    elif isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        x, y = dataset
        name, description = "arrays", "the (x, y) arrays given"
    else:
        raise invalid_value("dataset", "a dataset name, 'npz:PATH' or an (x, y) pair of arrays", dataset)
    x = check_images(x, "x", allow_tensor=False)
    y = check_labels(y, "y", num_examples=len(x))
    check_number("n", n, minimum=1, integer=True, allow_none=True)
    if n is not None:
        x, y = x[:n], y[:n]
    description += f"; first {len(x)} images"
    return name, description, np.asarray(x, np.float32), y
