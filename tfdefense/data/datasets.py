"""Dataset loading: `load_dataset(name)` -> (x_train, y_train), (x_test, y_test).

Images come back float32, NHWC, values in [0, 1]; labels int64.

Splits (documented in docs/data.md and in every report):
- `digits`: scikit-learn's bundled 1,797 real 8x8 digits, shuffled with a fixed
  seed, first 80% train (1,437) and last 20% test (360).
- `mnist` from keras' `mnist.npz` (the data dir, then keras' cache
  $KERAS_HOME/datasets or ~/.keras/datasets) or the download: the official
  60k/10k split. Fallback `mnist_t10k.npz` (the official 10k test set alone):
  first 8,000 images train, last 2,000 test. `mnist_split()` says which one.
- `cifar10` from `cifar10_subset.npz`: its own 5,085 train / 1,017 test split.
  From the CIFAR-10 python archive or the download: the official 50k/10k split.
"""

import dataclasses
import os
import pathlib
import tarfile
import zipfile
import zlib

import numpy as np

from tfdefense import config
from tfdefense._validation import check_labels, invalid_value
from tfdefense.data import cifar_batches

MNIST_SUBSET_FILE = "mnist_t10k.npz"
MNIST_SUBSET_TRAIN_SIZE = 8000
MNIST_KERAS_FILE = "mnist.npz"
MNIST_OFFICIAL_SIZES = (60000, 10000)
KERAS_HOME_ENV = "KERAS_HOME"
CIFAR10_SUBSET_FILE = "cifar10_subset.npz"
CIFAR10_BATCH_MAX_BYTES = 64 << 20
CIFAR10_KERAS_DIR = "cifar-10-batches-py"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR10_IMAGE_BYTES = 3 * 32 * 32
DIGITS_SPLIT_SEED = 0
DIGITS_TRAIN_FRACTION = 0.8

_LOADERS = {}


def _register(name):
    def wrap(fn):
        _LOADERS[name] = fn
        return fn

    return wrap


def list_datasets():
    """Names accepted by `load_dataset` (plus `npz:PATH`; `tfds:NAME` too when tensorflow-datasets has it)."""
    return sorted(_LOADERS) + ["npz:PATH"]


def load_dataset(name, data_dir=None, image_size=None, download=True, **kwargs):
    """Loads a dataset as `(x_train, y_train), (x_test, y_test)`.

    Args:
      name: "digits", "mnist", "cifar10", "imagenet", "npz:PATH" (x_train, y_train,
        x_test, y_test) or "tfds:NAME" (a tensorflow-datasets dataset prepared on disk:
        its "train" and "test" splits, see `load_tfds`).
      data_dir: folder holding local files. Defaults to $TFDEFENSE_DATA_DIR,
        then ~/.tfdefense/data.
      image_size: optional int or (height, width) to resize to (bilinear with
        antialiasing, so values stay in [0, 1]). Required for "imagenet".
      download: whether `mnist` / `cifar10` may fall back to the official keras
        download when no local file is found.
      **kwargs: loader-specific options (see `load_imagenet_folder`).
    """
    if not isinstance(name, str):
        raise invalid_value("name", f"a dataset name, one of {list_datasets()}", name)
    if name.startswith("npz:"):
        if kwargs:
            raise invalid_value("kwargs", "no extra options for npz datasets", kwargs)
        (x_train, y_train), (x_test, y_test) = load_npz_arrays(name[len("npz:") :])
    elif name.startswith(TFDS_PREFIX):
        if kwargs or name.count(":") > 1:
            raise invalid_value("name", "tfds:NAME (its train and test splits) and no extra options", name)
        x_train, y_train = load_tfds(name[len(TFDS_PREFIX) :], "train", data_dir=data_dir, image_size=image_size)
        x_test, y_test = load_tfds(name[len(TFDS_PREFIX) :], "test", data_dir=data_dir, image_size=image_size)
        return (x_train, y_train), (x_test, y_test)
    elif name == "imagenet":
        return _load_imagenet(data_dir, image_size, **kwargs)
    elif name in _LOADERS:
        if kwargs:
            raise invalid_value("kwargs", f"no extra options for dataset {name!r}", kwargs)
        (x_train, y_train), (x_test, y_test) = _LOADERS[name](data_dir, download)
    else:
        hint = ""
        if name.endswith(".npz") or pathlib.Path(name).expanduser().exists():
            hint = f" (a file of arrays is named npz:{name})"
        raise invalid_value("name", f"one of {list_datasets()} or tfds:NAME{hint}", name)
    if image_size is not None:
        x_train, x_test = resize_images(x_train, image_size), resize_images(x_test, image_size)
    return (x_train, y_train), (x_test, y_test)


def resize_images(x, image_size, batch_size=1024):
    """Resizes float images in [0, 1] with antialiased bilinear interpolation."""
    import tensorflow as tf

    size = as_size(image_size)
    if tuple(x.shape[1:3]) == size:
        return x
    parts = [
        tf.image.resize(x[i : i + batch_size], size, method="bilinear", antialias=True).numpy()
        for i in range(0, len(x), batch_size)
    ]
    # Bilinear weights are convex; this only removes float rounding (<1e-6).
    return np.clip(np.concatenate(parts), 0.0, 1.0).astype(np.float32)


def as_size(image_size):
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool) and image_size > 0:
        return (int(image_size), int(image_size))
    if (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(s, (int, np.integer)) and s > 0 for s in image_size)
    ):
        return (int(image_size[0]), int(image_size[1]))
    raise invalid_value("image_size", "a positive int or (height, width)", image_size)


def to_float_images(x, argument="x"):
    """uint8 0-255 (N, H, W[, C]) -> float32 NHWC in [0, 1]; floats are checked, not rescaled.

    Refused with a `ValueError` naming `argument`: channels-first arrays (last
    dimension not 1, 3 or 4 while dimension 1 is 1 or 3, e.g. (N, 1, 8, 8)),
    uint8 images holding only 0 and 1 (binary images; scaling them by 1/255
    would leave a maximum of 0.0039), other dtypes, NaN / inf, floats outside [0, 1].
    """
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise invalid_value(argument, "images of shape (N, H, W) or (N, H, W, C)", f"shape {x.shape}")
    check_channels_last(x.shape, argument)
    if x.dtype == np.uint8:
        if x.size and int(x.max()) == 1:
            raise invalid_value(
                argument,
                "uint8 images with pixels 0-255 (for binary images store 0/255 as uint8, or 0.0/1.0 as float32)",
                "uint8 images holding only the values 0 and 1 (divided by 255 they would reach only 0.0039)",
            )
        return (x.astype(np.float32) / 255.0).astype(np.float32)
    if not np.issubdtype(x.dtype, np.floating):
        raise invalid_value(argument, "uint8 (0-255) or float (0-1) images", f"dtype {x.dtype}")
    if x.size and not np.all(np.isfinite(x)):
        raise invalid_value(argument, "finite pixel values", "an array containing NaN or inf")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise invalid_value(
            argument,
            "float pixel values in [0, 1] (store 0-255 pixels as uint8)",
            f"float values in [{x.min():.4g}, {x.max():.4g}]",
        )
    return x.astype(np.float32)


CHANNELS = (1, 3, 4)


def check_channels_last(shape, argument="x"):
    """Refuses a channels-first (N, C, H, W) image shape: last dimension not 1, 3 or 4 while dimension 1 is 1 or 3."""
    shape = tuple(shape)
    if len(shape) == 4 and shape[-1] not in CHANNELS and shape[1] in (1, 3):
        raise invalid_value(
            argument,
            "channels-last images (N, H, W, C) with C in (1, 3, 4); this array looks channels-first (N, C, H, W): "
            "transpose it with x.transpose(0, 2, 3, 1)",
            f"shape {shape}",
        )
    return shape


NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
NPZ_TEST_ARRAYS = ("x_test", "y_test")


def load_npz_arrays(path, require_train=True):
    """A user's own arrays: an .npz with x_train, y_train, x_test, y_test (and optionally num_classes).

    Images: uint8 0-255 or float in [0, 1], (N, H, W) or (N, H, W, C).
    Labels: integers in [0, num_classes - 1]. Without a `num_classes` array,
    num_classes is the largest y_train label + 1 and every class below it must
    occur in y_train (a stray label such as 99 in 10-class data is refused).
    A truncated or foreign file is refused with an error naming the file.

    With `require_train=False` (evaluation) only x_test and y_test are read
    (x_train / y_train may be absent, empty or anything else) and returned as
    `(None, None), (x_test, y_test)`; labels need only be integers >= 0 (below
    `num_classes` when the file stores it): the evaluated classifier's output
    width is the number of classes.
    """

    path = pathlib.Path(path).expanduser()
    name = f"npz:{path}"
    keys = NPZ_ARRAYS if require_train else NPZ_TEST_ARRAYS
    expected = f"npz:PATH naming a readable .npz archive holding the arrays {list(keys)}"
    if not path.is_file():
        raise invalid_value("name", expected, f"{name} (no such file)")
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError:  # numpy's "pickled data" message: the bytes are neither a zip archive nor an .npy array
        raise invalid_value("name", expected, f"{name} (not an .npz archive: neither a zip nor a numpy file)") from None
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise invalid_value("name", expected, f"{name} (unreadable, truncated or corrupt: {error})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise invalid_value("name", expected, f"{name} (a single .npy array, not an archive of named arrays)")
    with data:
        missing = [k for k in keys if k not in data.files]
        if missing:
            hint = ""
            if require_train and not [k for k in NPZ_TEST_ARRAYS if k not in data.files]:
                hint = " (training needs the train split; evaluation alone reads only x_test and y_test)"
            raise invalid_value("name", expected, f"{name} (missing {missing}; it holds {data.files}){hint}")
        arrays = {}
        for key in keys + (("num_classes",) if "num_classes" in data.files else ()):
            try:
                arrays[key] = data[key]
            except ValueError:  # object arrays need pickle, which is never used
                raise invalid_value("name", expected, f"{name} (array {key!r} holds Python objects)") from None
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
                raise invalid_value(
                    "name", expected, f"{name} (array {key!r} is unreadable, truncated or corrupt: {error})"
                ) from None
    for key in keys:
        if arrays[key].ndim == 0 or len(arrays[key]) == 0:
            raise invalid_value(key, f"at least one entry in {name}", f"an empty array of shape {arrays[key].shape}")
    x_train = to_float_images(arrays["x_train"], "x_train") if require_train else None
    x_test = to_float_images(arrays["x_test"], "x_test")
    y_test = check_labels(arrays["y_test"], "y_test", num_examples=len(x_test))
    num_classes = None
    if "num_classes" in arrays:
        stored = arrays["num_classes"]
        if stored.shape != () or not np.issubdtype(stored.dtype, np.integer) or int(stored) < 2:
            raise invalid_value("num_classes", f"an integer >= 2 stored in {name}", stored)
        num_classes = int(stored)
    if not require_train:
        if num_classes is not None:
            check_labels(y_test, "y_test", num_classes=num_classes)
        elif y_test.min() < 0:
            raise invalid_value("y_test", "class labels >= 0", f"labels in [{y_test.min()}, {y_test.max()}]")
        return (None, None), (x_test, y_test)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise invalid_value("x_test", f"images of shape {x_train.shape[1:]} like x_train", f"shape {x_test.shape}")
    y_train = check_labels(arrays["y_train"], "y_train", num_examples=len(x_train))
    if num_classes is None:
        check_labels(y_train, "y_train", num_classes=max(int(y_train.max(initial=0)) + 1, 1))  # refuses negatives
        num_classes = int(y_train.max(initial=0)) + 1
        absent = sorted(set(range(num_classes)) - set(np.unique(y_train).tolist()))
        if absent:
            shown = ", ".join(map(str, absent[:5])) + (", ..." if len(absent) > 5 else "")
            raise invalid_value(
                "y_train",
                f"labels 0..K-1 with every class present (or a num_classes array in {name}): the largest label "
                f"{num_classes - 1} makes {num_classes} classes, but classes [{shown}] ({len(absent)}) never occur",
                f"labels in [{y_train.min()}, {y_train.max()}]",
            )
    check_labels(y_train, "y_train", num_classes=num_classes)
    check_labels(y_test, "y_test", num_classes=num_classes)
    return (x_train, y_train), (x_test, y_test)


TFDS_PREFIX = "tfds:"
TFDS_FOLDER = "tensorflow_datasets"


def tfds_data_dir(data_dir=None):
    """Where `tfds:NAME` is looked for: DATA_DIR/tensorflow_datasets when it exists, else tfds' default (None)."""
    folder = config.resolve_data_dir(data_dir) / TFDS_FOLDER
    return folder if folder.is_dir() else None


def load_tfds(name, split="test", data_dir=None, image_size=None):
    """Images and labels of a tensorflow-datasets dataset already prepared on disk (never downloaded).

    Args:
      name: the tfds name, e.g. "mnist" or "cifar10" (its default version).
      split: a tfds split ("test", "train", "test[:500]", ...).
      data_dir: tfdefense's data dir; tfds data is read from its `tensorflow_datasets/`
        folder when that exists, else from tfds' default ($TFDS_DATA_DIR or ~/tensorflow_datasets).
      image_size: resize every image to this size (needed when the images differ in size).
    Returns (x, y): float32 NHWC in [0, 1], int64 labels. A dataset not on disk, or a
    missing tensorflow-datasets, is a one-line ValueError.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise invalid_value("name", "a tensorflow-datasets name such as tfds:mnist or tfds:mnist:test", name)
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise invalid_value(
            "name",
            "tfds:NAME with tensorflow-datasets installed (pip install tensorflow-datasets)",
            f"{TFDS_PREFIX}{name}",
        ) from None
    folder = tfds_data_dir(data_dir)
    where = str(folder) if folder is not None else "tfds' default data dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    try:
        dataset = tfds.load(
            name,
            split=split,
            data_dir=None if folder is None else str(folder),
            download=False,
            as_supervised=True,
            shuffle_files=False,
        )
    except Exception as error:  # tfds raises DatasetNotFoundError, AssertionError, FileNotFoundError, ValueError ...
        reason = (str(error).strip().splitlines() or [""])[0][:200]  # tfds' first line; it goes on to list every name
        raise invalid_value(
            "name",
            f"a tensorflow-datasets dataset prepared on disk in {where} (tfdefense never downloads it: "
            f"run tfds.load({name!r}) once where the network is available)",
            f"{TFDS_PREFIX}{name}:{split} ({type(error).__name__}: {reason})",
        ) from None
    images, labels = [], []
    for image, label in tfds.as_numpy(dataset):
        images.append(image)
        labels.append(label)
    if not images:
        raise invalid_value("name", "a split holding at least one image", f"{TFDS_PREFIX}{name}:{split} (empty)")
    shapes = {tuple(i.shape) for i in images}
    argument = f"{TFDS_PREFIX}{name}:{split}"
    if len(shapes) > 1:
        if image_size is None:
            raise invalid_value("image_size", f"an image size: the images of {argument} differ in size", image_size)
        images = [to_float_images(i[None], argument)[0] for i in images]
        images = [resize_images(i[None], image_size)[0] for i in images]
        x = np.stack(images)
    else:
        x = to_float_images(np.stack(images), argument)
        if image_size is not None:
            x = resize_images(x, image_size)
    return x, check_labels(np.asarray(labels), f"{argument} labels", num_examples=len(x))


def load_test_split(name, data_dir=None, image_size=None, download=True):
    """The test images and labels of a dataset (what an evaluation needs), as `(x_test, y_test)`.

    Unlike `load_dataset`, `npz:PATH` needs only x_test and y_test (see
    `load_npz_arrays(require_train=False)`), and `tfds:NAME[:SPLIT]` reads one
    split (default "test") of a tensorflow-datasets dataset prepared on disk.
    Other names: `load_dataset(name, ...)`'s test split.
    """
    if isinstance(name, str) and name.startswith("npz:"):
        _, (x, y) = load_npz_arrays(name[len("npz:") :], require_train=False)
        if image_size is not None:
            x = resize_images(x, image_size)
        return x, y
    if isinstance(name, str) and name.startswith(TFDS_PREFIX):
        dataset, _, split = name[len(TFDS_PREFIX) :].partition(":")
        return load_tfds(dataset, split or "test", data_dir=data_dir, image_size=image_size)
    _, (x, y) = load_dataset(name, data_dir=data_dir, image_size=image_size, download=download)
    return x, y


@_register("digits")
def _load_digits(data_dir=None, download=False):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(x))
    x, y = x[order], y[order]
    n_train = int(round(DIGITS_TRAIN_FRACTION * len(x)))
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


@dataclasses.dataclass(frozen=True)
class MnistSplit:
    """Which MNIST `load_dataset("mnist")` reads: the file (None: the keras download) and its split."""

    path: object
    kind: str  # "official" (keras' mnist.npz layout) or "t10k" (the test set alone, split 8000/2000)
    train_size: int
    test_size: int

    @property
    def description(self):
        source = "keras download" if self.path is None else str(self.path)
        if self.kind == "t10k":
            return (
                f"MNIST t10k split {self.train_size}/{self.test_size} (the official 10k test set alone: "
                f"first {self.train_size} train, last {self.test_size} test; {source})"
            )
        label = "official" if (self.train_size, self.test_size) == MNIST_OFFICIAL_SIZES else "mnist.npz split"
        return f"MNIST {label} {self.train_size}/{self.test_size} ({source})"


def keras_datasets_dir():
    """keras' download cache for datasets: $KERAS_HOME/datasets, else ~/.keras/datasets."""
    return pathlib.Path(os.environ.get(KERAS_HOME_ENV) or "~/.keras").expanduser() / "datasets"


def mnist_split(data_dir=None):
    """The local MNIST file `load_dataset("mnist", data_dir)` reads and its split, or None (download next).

    Order: `mnist.npz` (keras layout: x_train, y_train, x_test, y_test) in the data
    dir, then in keras' cache (`keras_datasets_dir()`), then `mnist_t10k.npz`
    (keys x, y: the official test set alone, split 8000/2000) in the data dir.
    """
    folder = config.resolve_data_dir(data_dir)
    for path in (folder / MNIST_KERAS_FILE, keras_datasets_dir() / MNIST_KERAS_FILE):
        if path.is_file():
            with np.load(path, allow_pickle=False) as data:
                sizes = len(data["y_train"]), len(data["y_test"])
            return MnistSplit(path, "official", *sizes)
    subset = folder / MNIST_SUBSET_FILE
    if subset.is_file():
        with np.load(subset, allow_pickle=False) as data:
            n = len(data["y"])
        return MnistSplit(subset, "t10k", MNIST_SUBSET_TRAIN_SIZE, n - MNIST_SUBSET_TRAIN_SIZE)
    return None


@_register("mnist")
def _load_mnist(data_dir=None, download=True):
    split = mnist_split(data_dir)
    if split is not None and split.kind == "official":
        return _from_four_arrays(split.path)
    if split is not None:
        with np.load(split.path, allow_pickle=False) as data:
            x, y = to_float_images(data["x"]), check_labels(data["y"])
        n = MNIST_SUBSET_TRAIN_SIZE
        return (x[:n], y[:n]), (x[n:], y[n:])
    folder = config.resolve_data_dir(data_dir)
    looked = [
        str(folder / MNIST_KERAS_FILE),
        str(keras_datasets_dir() / MNIST_KERAS_FILE),
        str(folder / MNIST_SUBSET_FILE),
    ]
    return _download_or_fail("mnist", data_dir, looked, download)


@_register("cifar10")
def _load_cifar10(data_dir=None, download=True):
    folder = config.resolve_data_dir(data_dir)
    looked = []
    subset = folder / CIFAR10_SUBSET_FILE
    looked.append(str(subset))
    if subset.is_file():
        return _from_four_arrays(subset)
    batches = folder / CIFAR10_KERAS_DIR
    looked.append(str(batches) + "/")
    if batches.is_dir():
        return _cifar_from_batches(lambda name: _read_loose_cifar_batch(batches / name))
    archive = folder / CIFAR10_ARCHIVE
    looked.append(str(archive))
    if archive.is_file():
        return _cifar_from_archive(archive)
    return _download_or_fail("cifar10", data_dir, looked, download)


def _from_four_arrays(path):
    with np.load(path, allow_pickle=False) as data:
        return (
            (to_float_images(data["x_train"]), check_labels(data["y_train"])),
            (to_float_images(data["x_test"]), check_labels(data["y_test"])),
        )


def _read_loose_cifar_batch(path):
    if not path.is_file():
        raise invalid_value(
            "data_dir", f"a {CIFAR10_KERAS_DIR}/ folder holding {', '.join(CIFAR10_BATCHES)}", f"{path} is missing"
        )
    return path.read_bytes(), str(path)


def _cifar_from_archive(archive):
    """Reads the batches from the official tar.gz in memory (nothing is extracted to disk)."""
    try:
        with tarfile.open(archive) as tar:

            def read(name):
                member = f"{CIFAR10_KERAS_DIR}/{name}"
                try:
                    info = tar.getmember(member)
                except KeyError:
                    info = None
                if info is None or not info.isfile():
                    raise invalid_value("data_dir", f"a {CIFAR10_ARCHIVE} holding the file {member}", str(archive))
                if info.size > CIFAR10_BATCH_MAX_BYTES:  # a batch is ~31 MB; refuse a bomb before reading
                    raise invalid_value(
                        "data_dir",
                        f"a {CIFAR10_ARCHIVE} whose {member} is at most {CIFAR10_BATCH_MAX_BYTES} bytes",
                        f"{archive} ({info.size} bytes)",
                    )
                return tar.extractfile(info).read(CIFAR10_BATCH_MAX_BYTES + 1), f"{archive}:{member}"

            return _cifar_from_batches(read)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise invalid_value(
            "data_dir", f"a readable {CIFAR10_ARCHIVE}", f"{archive} ({type(error).__name__}: {error})"
        ) from None


def _cifar_from_batches(read):
    """`read(name)` -> (bytes, source); each batch is decoded by `cifar_batches.read_batch`, never unpickled."""

    def batch(name):
        raw, source = read(name)
        entry = cifar_batches.read_batch(raw, source)
        data, labels = entry.get("data"), entry.get("labels")
        if not (
            isinstance(data, np.ndarray)
            and data.dtype == np.uint8
            and data.ndim == 2
            and data.shape[1] == CIFAR10_IMAGE_BYTES
        ):
            raise invalid_value(
                "data_dir",
                f"a CIFAR-10 batch whose 'data' is uint8 of shape (N, {CIFAR10_IMAGE_BYTES})",
                f"{source} with data={type(data).__name__} {getattr(data, 'shape', '')}",
            )
        if not (
            isinstance(labels, list)
            and len(labels) == len(data)
            and all(type(v) is int and 0 <= v < 10 for v in labels)
        ):
            raise invalid_value(
                "data_dir", f"a CIFAR-10 batch whose 'labels' are {len(data)} ints in [0, 9]", f"{source}"
            )
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(labels, np.int64)

    train = [batch(name) for name in CIFAR10_BATCHES[:-1]]
    x_test, y_test = batch(CIFAR10_BATCHES[-1])
    x_train = np.concatenate([b[0] for b in train])
    y_train = np.concatenate([b[1] for b in train])
    return (to_float_images(x_train), y_train), (to_float_images(x_test), y_test)


def _download_or_fail(name, data_dir, looked, download):
    import keras

    reason = "download=False"
    if download:
        try:
            (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
            return (
                (to_float_images(x_train), check_labels(y_train)),
                (to_float_images(x_test), check_labels(y_test)),
            )
        except Exception as error:  # no network, blocked host, corrupt download
            reason = f"the keras download failed: {type(error).__name__}: {error}"
    raise ValueError(
        f"Invalid value received for argument `data_dir`. Could not find dataset {name!r}. "
        f"Data dir from {config.data_dir_sources(data_dir)}. Looked for: {', '.join(looked)}; "
        f"then keras.datasets.{name}.load_data() ({reason}). Put one of those files in the data dir "
        f"(e.g. set ${config.DATA_DIR_ENV} to the folder holding {looked[0].rsplit('/', 1)[-1]}). "
        f"Received: data_dir={str(config.resolve_data_dir(data_dir))!r}"
    )


def _load_imagenet(data_dir, image_size, **kwargs):
    from tfdefense.data.imagenet import load_imagenet_folder

    folder = kwargs.pop("folder", None)
    if folder is None:
        folder = config.resolve_data_dir(data_dir) / "imagenet"
    if image_size is None:
        raise invalid_value("image_size", "an image size for imagenet (e.g. 299 for Inception-v3)", image_size)
    return load_imagenet_folder(folder, image_size=image_size, **kwargs)
