"""ImageNet from a local folder of class sub-folders (the ILSVRC layout).

    ROOT/train/n01440764/*.JPEG ... ROOT/val/n01440764/*.JPEG

or a single ROOT/n01440764/*.JPEG folder split per class. Labels follow the
standard 1000-class index (sorted WordNet ids, as keras.applications uses),
read offline from tensorflow-datasets' `imagenet2012/labels.txt`.
"""

import functools
import pathlib

import numpy as np

from tfdefense._validation import check_number, invalid_value

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp"}


@functools.lru_cache(maxsize=1)
def imagenet_wnids():
    """The 1000 ILSVRC-2012 WordNet ids in class-index order."""
    import importlib_resources

    text = (importlib_resources.files("tensorflow_datasets") / "datasets/imagenet2012/labels.txt").read_text()
    wnids = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(wnids) != 1000:
        raise RuntimeError(f"expected 1000 ImageNet class ids, found {len(wnids)}")
    return wnids


def imagenet_class_index():
    """Maps WordNet id -> class index (0..999)."""
    return {wnid: i for i, wnid in enumerate(imagenet_wnids())}


def load_imagenet_folder(
    folder, image_size, max_images_per_class=None, train_images_per_class=None, test_images_per_class=None
):
    """Loads ImageNet images from `folder` as float32 NHWC arrays in [0, 1].

    With `train/` and `val/` sub-folders those are the splits (each capped by
    `max_images_per_class`). Otherwise the class folders are split per class:
    the first `train_images_per_class` files (sorted by name) train, the next
    `test_images_per_class` test (the versatile paper uses 18 and 5).
    """
    from tfdefense.data.datasets import as_size

    folder = pathlib.Path(folder).expanduser()
    size = as_size(image_size)
    if not folder.is_dir():
        raise invalid_value("folder", "a folder of ImageNet class sub-folders (n01440764/, ...)", str(folder))
    for name, value in [
        ("max_images_per_class", max_images_per_class),
        ("train_images_per_class", train_images_per_class),
        ("test_images_per_class", test_images_per_class),
    ]:
        check_number(name, value, minimum=1, integer=True, allow_none=True)
    if (folder / "train").is_dir() and (folder / "val").is_dir():
        train = _read_split(folder / "train", size, max_images_per_class)
        test = _read_split(folder / "val", size, max_images_per_class)
        return train, test
    if train_images_per_class is None or test_images_per_class is None:
        raise invalid_value(
            "train_images_per_class",
            "train_images_per_class and test_images_per_class when the folder has no train/ and val/",
            train_images_per_class,
        )
    files = _class_files(folder)
    train_files = {w: f[:train_images_per_class] for w, f in files.items()}
    test_files = {
        w: f[train_images_per_class : train_images_per_class + test_images_per_class] for w, f in files.items()
    }
    return _read_files(train_files, size), _read_files(test_files, size)


def _class_files(folder):
    index = imagenet_class_index()
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    unknown = [p.name for p in classes if p.name not in index]
    if not classes or unknown:
        raise invalid_value(
            "folder",
            "class sub-folders named by ImageNet WordNet ids (e.g. n01440764)",
            f"{folder} with sub-folders {unknown[:5] or 'none'}",
        )
    return {p.name: sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) for p in classes}


def _read_split(folder, size, max_per_class):
    files = _class_files(folder)
    if max_per_class is not None:
        files = {w: f[:max_per_class] for w, f in files.items()}
    return _read_files(files, size)


def _read_files(files_by_class, size):
    import tensorflow as tf

    index = imagenet_class_index()
    images, labels = [], []
    for wnid, files in files_by_class.items():
        for path in files:
            raw = tf.io.read_file(str(path))
            image = tf.image.decode_image(raw, channels=3, expand_animations=False)
            image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, size, antialias=True)
            images.append(np.clip(image.numpy(), 0.0, 1.0))
            labels.append(index[wnid])
    if not images:
        return np.zeros((0, *size, 3), np.float32), np.zeros((0,), np.int64)
    return np.stack(images).astype(np.float32), np.asarray(labels, np.int64)
