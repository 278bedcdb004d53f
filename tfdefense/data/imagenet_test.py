import numpy as np
import pytest

from tfdefense.data import imagenet_class_index, imagenet_wnids, load_dataset


def _write_png(path, rng, size=(40, 30)):
    import tensorflow as tf

    pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(pixels).numpy())


def test_class_index_is_the_standard_one():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and wnids[0] == "n01440764" and list(wnids) == sorted(wnids)
    assert imagenet_class_index()["n15075141"] == 999


def test_folder_split_per_class(tmp_path, rng):
    for wnid in ["n01440764", "n01443537"]:
        for i in range(4):
            _write_png(tmp_path / wnid / f"img{i}.png", rng)
    (x_train, y_train), (x_test, y_test) = load_dataset(
        "imagenet", image_size=16, folder=tmp_path, train_images_per_class=3, test_images_per_class=1
    )
    assert x_train.shape == (6, 16, 16, 3) and x_train.dtype == np.float32
    assert 0 <= x_train.min() and x_train.max() <= 1
    assert y_train.tolist() == [0, 0, 0, 1, 1, 1] and y_test.tolist() == [0, 1]


def test_train_val_layout_and_errors(tmp_path, rng):
    _write_png(tmp_path / "train" / "n01443537" / "a.png", rng)
    _write_png(tmp_path / "val" / "n01443537" / "b.png", rng)
    (_, y_train), (x_test, _) = load_dataset("imagenet", image_size=(8, 12), folder=tmp_path)
    assert y_train.tolist() == [1] and x_test.shape == (1, 8, 12, 3)
    _write_png(tmp_path / "bad" / "cats" / "c.png", rng)
    with pytest.raises(ValueError, match="WordNet"):
        load_dataset(
            "imagenet", image_size=8, folder=tmp_path / "bad", train_images_per_class=1, test_images_per_class=1
        )
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("imagenet", folder=tmp_path)
