"""What a user brings to `evaluate_model`: their models and their data, loaded and wrapped.

`load_user_model(path)` loads a classifier or purifier (`.keras` in safe mode, a legacy `.h5`
full-model file, a SavedModel folder or a `tfdefense.export` folder) as a Keras model attacks can
differentiate through; a SavedModel's graph is scanned for file, Python, network and debug ops
before TensorFlow loads it (`saved_model_unsafe_ops`; refused unless `trust_saved_model=True`).
`resolve_purifier` also accepts a transform name; `with_input_range` wraps a classifier that
expects [0, 255] or [-1, 1] inputs; `pipeline_class()` builds the attacked
`classifier(purifier(x))`; `load_evaluation_data` reads the images and labels to evaluate on.
"""

import functools
import hashlib
import json
import pathlib
import zipfile

import numpy as np

from tfdefense._validation import check_choice, check_images, check_labels, check_not_empty, check_number, invalid_value


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
            use_bpda = purifier is not None and purifier_bpda
            self.bpda = _bpda_layer(lambda x: call_model(purifier, x)) if use_bpda else None
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
        raise invalid_value(
            "signature", "a signature taking one image tensor", f"inputs {list(kwargs) or [str(a) for a in args]}"
        )
    key = specs[0][0]
    outputs = signature.structured_outputs
    output_key = None
    if isinstance(outputs, dict):
        names = sorted(outputs)
        output_key = "logits" if "logits" in outputs else (names[0] if len(names) == 1 else None)
        if output_key is None:
            raise invalid_value("signature", "a signature with one output (or one named 'logits')", names)
    return (lambda x: signature(**{key: x})), output_key


# ----------------------------------------------------------------------------- SavedModel graph scan

# Op types a SavedModel graph may not hold unless trusted: they touch files, run Python, talk to other
# machines or print / dump tensors. Matched by exact name, by prefix or by suffix (the reader ops).
UNSAFE_OPS = frozenset(
    {
        # files
        "ReadFile",
        "WriteFile",
        "MatchingFiles",
        "ImmutableConst",
        "RecordInput",
        "LoadAndRemapMatrix",
        "GenerateVocabRemapping",
        "InitializeTableFromTextFile",
        "InitializeTableFromTextFileV2",
        "TFRecordDataset",
        "TFRecordDatasetV2",
        "FixedLengthRecordDataset",
        "FixedLengthRecordDatasetV2",
        "TextLineDataset",
        "LMDBDataset",
        "ExperimentalLMDBDataset",
        "CSVDataset",
        "CSVDatasetV2",
        "ExperimentalCSVDataset",
        "SqlDataset",
        "ExperimentalSqlDataset",
        "SaveDataset",
        "SaveDatasetV2",
        "LoadDataset",
        "SnapshotDataset",
        "SnapshotDatasetV2",
        "SnapshotDatasetReader",
        "SnapshotNestedDatasetReader",
        "DatasetToTFRecord",
        "ExperimentalDatasetToTFRecord",
        "CacheDataset",
        "CacheDatasetV2",
        "DistributedSave",
        "CreateSummaryFileWriter",
        "CreateSummaryDbWriter",
        "ImportEvent",
        "FlushSummaryWriter",
        "CloseSummaryWriter",
        "SummaryWriter",
        # checkpoints (allowed only in the SavedModel's own save / restore functions, see CHECKPOINT_OPS)
        "Save",
        "SaveSlices",
        "SaveV2",
        "Restore",
        "RestoreSlice",
        "RestoreV2",
        "MergeV2Checkpoints",
        # Python
        "PyFunc",
        "PyFuncStateless",
        "EagerPyFunc",
        # other machines
        "Rpc",
        "TryRpc",
        "Send",
        "Recv",
        "_Send",
        "_Recv",
        "_HostSend",
        "_HostRecv",
        "RegisterDataset",
        "RegisterDatasetV2",
        # printing (PrintV2 can write to a file)
        "Print",
        "PrintV2",
    }
)
UNSAFE_OP_PREFIXES = ("Write", "Reader", "Debug", "Collective", "DataServiceDataset", "Gcs", "BigQuery")
UNSAFE_OP_SUFFIXES = ("Reader", "ReaderV2")
# A SavedModel holds functions that write and read its own variables/ checkpoint; TF1 graphs keep them under
# the saver's name scope. These ops are allowed there and nowhere that loading or serving runs.
CHECKPOINT_OPS = frozenset(
    {"Save", "SaveSlices", "SaveV2", "Restore", "RestoreSlice", "RestoreV2", "MergeV2Checkpoints"}
)
TRUST_HINT = (
    "pass trust_saved_model=True (CLI: --trust-saved-model) only for a SavedModel whose source you "
    "trust: its graph then runs with your file and network access"
)


def is_unsafe_op(op_type):
    return op_type in UNSAFE_OPS or op_type.startswith(UNSAFE_OP_PREFIXES) or op_type.endswith(UNSAFE_OP_SUFFIXES)


def _called_functions(node):
    names = set()
    for value in node.attr.values():
        if value.HasField("func"):
            names.add(value.func.name)
        if value.HasField("list"):
            names.update(f.name for f in value.list.func)
    return names


def read_saved_model_proto(path):
    """The parsed `saved_model.pb` of a SavedModel folder (a `ValueError` naming the file when it is not one)."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    file = pathlib.Path(path) / "saved_model.pb"
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(file.read_bytes())
    except (DecodeError, OSError, RuntimeWarning) as error:
        raise invalid_value(
            "path",
            "a SavedModel folder whose saved_model.pb is a SavedModel protocol buffer",
            f"{file} ({type(error).__name__}: {error})",
        ) from None
    if not proto.meta_graphs:
        raise invalid_value("path", "a SavedModel folder whose saved_model.pb holds a graph", f"{file} (no graph)")
    return proto


def saved_model_unsafe_ops(path):
    """The file, Python, network and debug ops of a SavedModel's graph, read from saved_model.pb without loading it.

    Every node of every graph and of every function in its library is checked
    against `UNSAFE_OPS` / `UNSAFE_OP_PREFIXES` / `UNSAFE_OP_SUFFIXES`. The
    checkpoint ops (`CHECKPOINT_OPS`) are allowed in library functions that no
    function of the object graph (what `tf.saved_model.load` restores and
    serves) reaches, and in the top-level graph under the saver's name scope
    (TF1); anywhere else they count too. Returns {op type: [where, ...]}
    (empty when nothing was found).
    """
    proto = read_saved_model_proto(path)
    found = {}

    def record(op_type, where):
        found.setdefault(op_type, [])
        if where not in found[op_type]:
            found[op_type].append(where)

    for meta_graph in proto.meta_graphs:
        library = {f.signature.name: f for f in meta_graph.graph_def.library.function}
        saver = meta_graph.saver_def
        saver_nodes = {name.split(":")[0] for name in (saver.save_tensor_name, saver.restore_op_name) if name}
        saver_scope = saver.restore_op_name.split("/")[0] + "/" if "/" in saver.restore_op_name else None
        entries = set(meta_graph.object_graph_def.concrete_functions)
        for node in meta_graph.graph_def.node:
            if node.name not in saver_nodes:  # the saver's calls lead to the save / restore functions
                entries |= _called_functions(node) | ({node.op} & set(library))
            if is_unsafe_op(node.op):
                if node.op in CHECKPOINT_OPS and saver_scope and node.name.startswith(saver_scope):
                    continue
                record(node.op, f"graph node {node.name}")
        reachable, todo = set(), [name for name in entries if name in library]
        while todo:
            name = todo.pop()
            if name in reachable:
                continue
            reachable.add(name)
            for node in library[name].node_def:
                todo.extend(n for n in _called_functions(node) | {node.op} if n in library and n not in reachable)
        for name, function in library.items():
            for node in function.node_def:
                if not is_unsafe_op(node.op):
                    continue
                if node.op in CHECKPOINT_OPS and name not in reachable:
                    continue
                record(node.op, f"function {name}")
    return found


def check_saved_model(path, role="classifier", trust_saved_model=False):
    """Refuses (ValueError) a SavedModel whose graph holds unsafe ops (`saved_model_unsafe_ops`), unless trusted."""
    found = saved_model_unsafe_ops(path)
    if found and not trust_saved_model:
        listed = "; ".join(
            f"{op} in {', '.join(where[:3])}{' ...' if len(where) > 3 else ''}" for op, where in sorted(found.items())
        )
        raise invalid_value(
            role,
            f"a SavedModel whose graph holds no file, Python, network or debug ops ({TRUST_HINT})",
            f"{path} holding {listed}",
        )
    return found


# ----------------------------------------------------------------------------- models

KERAS_SUFFIXES = (".keras",)
H5_SUFFIXES = (".h5", ".hdf5")


def _first_line(error, limit=300):
    text = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {text[:limit]}"


def _load_keras_file(path, role):

    import keras

    legacy = path.suffix in H5_SUFFIXES
    if legacy:
        expected = "a legacy Keras .h5 full-model file (model.save('m.h5')) whose layers Keras' safe mode accepts"
        import h5py

        if not h5py.is_hdf5(str(path)):
            raise invalid_value(role, expected, f"{path} (not an HDF5 file: text, truncated or corrupt)")
    else:
        expected = "a .keras file written by model.save (a zip archive) whose layers Keras' safe mode accepts"
        if not zipfile.is_zipfile(path):
            raise invalid_value(role, expected, f"{path} (not a zip archive: text, truncated or corrupt)")
    try:
        # .h5 goes to keras' legacy loader (keras.src.legacy.saving.legacy_h5_format), under the same safe mode.
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # a broken or unsafe file: Keras raises ValueError, TypeError, KeyError, OSError ...
        raise invalid_value(role, expected, f"{path} ({_first_line(error)})") from error


def load_user_model(path, role="classifier", signature=None, trust_saved_model=False):
    """Loads a classifier (images -> logits / probabilities) or a purifier (images -> images).

    Args:
      path: a `.keras` file (loaded with `safe_mode=True`), a legacy `.h5` /
        `.hdf5` full-model file (Keras' legacy loader, safe mode), a SavedModel
        folder or a `tfdefense.export.export_saved_model` folder.
      role: "classifier" or "purifier": which function of a tfdefense export
        to use (`classify`: purifier + classifier; `purify`).
      signature: SavedModel signature name (default: the export's function for
        `role`, else "serving_default", else the only signature). A signature
        must take one image tensor (any input name) and return one tensor (or
        one named "logits").
      trust_saved_model: load a SavedModel whose graph holds file, Python,
        network or debug ops (`saved_model_unsafe_ops`); refused otherwise,
        before TensorFlow loads anything.
    Returns a Keras model (SavedModels wrapped as `SavedModelFunction`).
    Anything unreadable raises a one-line ValueError naming the file.
    """
    import tfdefense.defenses  # noqa: F401  (registers the package's serializable classes)
    import tfdefense.models  # noqa: F401

    check_choice("role", role, ("classifier", "purifier"))
    if not isinstance(trust_saved_model, bool):
        raise invalid_value("trust_saved_model", "True or False", trust_saved_model)
    path = pathlib.Path(path)
    if path.is_file() and path.suffix in KERAS_SUFFIXES + H5_SUFFIXES:
        return _load_keras_file(path, role)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        import tensorflow as tf

        check_saved_model(path, role, trust_saved_model)
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as error:  # missing variables, unknown ops, a foreign protocol buffer ...
            raise invalid_value(
                role,
                "a SavedModel folder TensorFlow can load (saved_model.pb and variables/)",
                f"{path} ({_first_line(error)})",
            ) from error
        saved_model_class = functools.partial(
            _saved_model_class(), graph_digest=hashlib.sha256((path / "saved_model.pb").read_bytes()).hexdigest()
        )
        export_function = {"classifier": "classify", "purifier": "purify"}[role]
        if signature is None and callable(getattr(loaded, export_function, None)):
            return saved_model_class(
                loaded,
                getattr(loaded, export_function),
                f"{path.name}:{export_function}",
                name=f"{role}_{export_function}",
            )
        names = list(loaded.signatures)
        if signature is None:
            if "serving_default" in names:
                signature = "serving_default"
            elif len(names) == 1:
                signature = names[0]
            elif not names and callable(loaded):  # a tf.Module saved without signatures: its __call__
                return saved_model_class(loaded, loaded, f"{path.name}:__call__", name=f"{role}_call")
            else:
                raise invalid_value("signature", f"one of the SavedModel's signatures {names}", None)
        if signature not in names:
            if callable(getattr(loaded, signature, None)):
                return saved_model_class(
                    loaded, getattr(loaded, signature), f"{path.name}:{signature}", name=f"{role}_{signature}"
                )
            raise invalid_value("signature", f"one of the SavedModel's signatures {names}", signature)
        function, output_key = _signature_function(loaded.signatures[signature])
        return saved_model_class(
            loaded, function, f"{path.name}:{signature}", output_key=output_key, name=f"{role}_{signature}"
        )
    if path.is_dir():
        raise invalid_value(
            role,
            "a .keras file, a .h5 file, a SavedModel folder (holding saved_model.pb) or a tfdefense export folder",
            f"{path} (a folder without saved_model.pb)",
        )
    raise invalid_value(
        role,
        "a .keras file, a .h5 file, a SavedModel folder or a tfdefense export folder",
        f"{path}" + ("" if path.exists() else " (no such file or folder)"),
    )


# ----------------------------------------------------------------------------- input range

INPUT_RANGES = {"0-1": (1.0, 0.0), "0-255": (255.0, 0.0), "-1-1": (2.0, -1.0)}


def _rescaled_input_class():
    import keras
    import tensorflow as tf

    class RescaledInput(keras.Model):
        """`model(x * scale + offset)`: a model expecting [0, 255] or [-1, 1] inputs, fed [0, 1] images."""

        def __init__(self, model, input_range, **kwargs):
            super().__init__(**kwargs)
            self.model = model
            self.input_range = input_range
            self.scale, self.offset = INPUT_RANGES[input_range]
            shape = model_image_shape(model)
            if shape is not None:
                self.image_shape = shape
            self.stochastic = bool(getattr(model, "stochastic", False))
            self.built = True

        def call(self, inputs, training=None):
            return call_model(self.model, tf.cast(inputs, tf.float32) * self.scale + self.offset)

        def fingerprint(self):
            inner = user_model_fingerprint(self.model)
            return (
                None
                if inner is None
                else hashlib.sha256(f"{inner}|input_range={self.input_range}".encode()).hexdigest()
            )

    return RescaledInput


def with_input_range(model, input_range):
    """`model` fed [0, 1] images rescaled to the range it expects, so eps stays in [0, 1] units.

    Args:
      model: a Keras model or callable.
      input_range: "0-1" (returns `model` itself), "0-255" (x * 255) or "-1-1" (x * 2 - 1).
    """
    check_choice("input_range", input_range, tuple(INPUT_RANGES))
    if input_range == "0-1":
        return model
    return _rescaled_input_class()(model, input_range, name=f"input_range_{input_range.replace('-', '_')}")


def resolve_purifier(spec, signature=None, trust_saved_model=False):
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
    return load_user_model(spec, role="purifier", signature=signature, trust_saved_model=trust_saved_model)


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
    """(name, description, x, y) to evaluate on: a dataset's test split, `npz:PATH` (x_test, y_test only),
    `tfds:NAME[:SPLIT]` or an (x, y) pair. Labels are checked against the classifier's output width later."""
    from tfdefense.data import check_channels_last, load_test_split

    if isinstance(dataset, str):
        x, y = load_test_split(dataset, data_dir=data_dir)
        description = f"{dataset}: test split"
        if dataset.startswith("tfds:"):
            split = dataset.split(":", 2)[2] if dataset.count(":") > 1 else "test"
            description = f"{dataset}: tensorflow-datasets split {split!r}"
        if dataset == "mnist":
            from tfdefense.data import mnist_split

            split = mnist_split(data_dir)
            description = f"{split.description}: test split" if split is not None else description
        if (
            image_shape
            and None not in image_shape[:2]
            and tuple(x.shape[1:3]) != tuple(image_shape[:2])
            and not dataset.startswith("npz:")
        ):
            x, y = load_test_split(dataset, data_dir=data_dir, image_size=tuple(image_shape[:2]))
            description += f", resized to {image_shape[0]}x{image_shape[1]} for the model"
        name = dataset
    elif isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        x, y = dataset
        name, description = "arrays", "the (x, y) arrays given"
        check_channels_last(np.shape(x), "x")
    else:
        raise invalid_value(
            "dataset", "a dataset name, 'npz:PATH', 'tfds:NAME[:SPLIT]' or an (x, y) pair of arrays", dataset
        )
    x = check_images(x, "x", allow_tensor=False)
    check_not_empty(x, "x")
    y = check_labels(y, "y", num_examples=len(x))
    check_number("n", n, minimum=1, integer=True, allow_none=True)
    if n is not None:
        x, y = x[:n], y[:n]
    description += f"; first {len(x)} images"
    return name, description, np.asarray(x, np.float32), y
