import numpy as np
import pytest

from tfdefense.data import list_datasets, load_dataset, make_pipeline, mnist_split, take_balanced


def _assert_images(x, y, shape, num_classes=10):
    assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1:] == shape
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
    assert y.dtype == np.int64 and y.shape == (len(x),)
    assert set(np.unique(y)) == set(range(num_classes))


def test_digits_is_offline_and_resizable():
    (x_train, y_train), (x_test, y_test) = load_dataset("digits")
    _assert_images(x_train, y_train, (8, 8, 1))
    assert len(x_train) + len(x_test) == 1797 and len(x_test) == 359
    (x28, _), _ = load_dataset("digits", image_size=28)
    _assert_images(x28, y_train, (28, 28, 1))


def test_mnist_is_the_official_split(mnist_npz, monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras-cache"))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "mnist.npz").symlink_to(mnist_npz)
    (x_train, y_train), (x_test, y_test) = load_dataset("mnist", data_dir=data_dir, download=False)
    _assert_images(x_train, y_train, (28, 28, 1))
    _assert_images(x_test, y_test, (28, 28, 1))
    assert (len(x_train), len(x_test)) == (60000, 10000)
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    with np.load(mnist_npz) as raw:
        np.testing.assert_allclose(x_train[0, ..., 0], raw["x_train"][0] / 255.0, atol=1e-7)
        np.testing.assert_array_equal(y_test, raw["y_test"])
    split = mnist_split(data_dir)
    assert split.kind == "official" and split.path == data_dir / "mnist.npz"
    assert split.description.startswith("MNIST official 60000/10000")


def test_mnist_from_keras_cache_before_the_t10k_fallback(tmp_path, monkeypatch, rng):
    keras_home, data = tmp_path / "keras", tmp_path / "data"
    (keras_home / "datasets").mkdir(parents=True)
    data.mkdir()
    x = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    y = np.arange(30) % 10
    np.savez(keras_home / "datasets" / "mnist.npz", x_train=x[:20], y_train=y[:20], x_test=x[20:], y_test=y[20:])
    np.savez(data / "mnist_t10k.npz", x=x, y=y)
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    (x_train, _), (x_test, y_test) = load_dataset("mnist", data_dir=data, download=False)
    assert (len(x_train), len(x_test)) == (20, 10)
    np.testing.assert_array_equal(y_test, y[20:])
    assert mnist_split(data).description.startswith("MNIST mnist.npz split 20/10")


def test_mnist_t10k_fallback_split(tmp_path, monkeypatch, mnist_npz):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras-cache"))
    with np.load(mnist_npz) as official:  # the t10k file is the official test set alone
        raw = {"x": official["x_test"], "y": official["y_test"]}
    np.savez(tmp_path / "mnist_t10k.npz", **raw)
    (x_train, y_train), (x_test, y_test) = load_dataset("mnist", data_dir=tmp_path, download=False)
    assert (len(x_train), len(x_test)) == (8000, 2000)
    np.testing.assert_array_equal(y_test, raw["y"][8000:])
    np.testing.assert_allclose(x_train[0, ..., 0], raw["x"][0] / 255.0, atol=1e-7)
    split = mnist_split(tmp_path)
    assert split.kind == "t10k" and split.description.startswith("MNIST t10k split 8000/2000")


def test_mnist_missing_everywhere_names_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    assert mnist_split(tmp_path) is None
    with pytest.raises(ValueError, match="data_dir") as error:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    message = str(error.value)
    for expected in [str(tmp_path / "mnist.npz"), str(tmp_path / "keras" / "datasets" / "mnist.npz"), "mnist_t10k.npz"]:
        assert expected in message


def test_cifar10_subset_or_official_split(cifar10):
    (x_train, y_train), (x_test, y_test) = cifar10
    _assert_images(x_train, y_train, (32, 32, 3))
    _assert_images(x_test, y_test, (32, 32, 3))
    assert (len(x_train), len(x_test)) in {(5085, 1017), (50000, 10000)}  # cifar10_subset.npz or the download


def test_data_dir_from_environment(monkeypatch, mnist_npz, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras-cache"))
    monkeypatch.setenv("TFDEFENSE_DATA_DIR", str(mnist_npz.parent))
    (x_train, _), _ = load_dataset("mnist", download=False)
    assert len(x_train) == 60000


def test_keras_mnist_npz_layout(tmp_path, rng):
    x = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    y = np.arange(20) % 10
    np.savez(tmp_path / "mnist.npz", x_train=x[:15], y_train=y[:15], x_test=x[15:], y_test=y[15:])
    (x_train, y_train), (x_test, _) = load_dataset("mnist", data_dir=tmp_path, download=False)
    assert x_train.shape == (15, 28, 28, 1) and x_test.shape == (5, 28, 28, 1)
    np.testing.assert_array_equal(y_train, y[:15])


def test_missing_files_error_names_every_place(tmp_path):
    with pytest.raises(ValueError, match="data_dir") as error:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    message = str(error.value)
    for expected in ["cifar10_subset.npz", "cifar-10-batches-py", "cifar-10-python.tar.gz", "load_data", str(tmp_path)]:
        assert expected in message


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="`name`.*svhn"):
        load_dataset("svhn")
    assert "digits" in list_datasets()


def test_user_npz_and_its_errors(tmp_path, rng):
    good = tmp_path / "good.npz"
    np.savez(
        good,
        x_train=rng.random((6, 5, 5, 3), dtype=np.float32),
        y_train=np.arange(6),
        x_test=rng.random((2, 5, 5, 3), dtype=np.float32),
        y_test=np.arange(2),
    )
    (x_train, y_train), (x_test, y_test) = load_dataset(f"npz:{good}")
    assert x_train.shape == (6, 5, 5, 3) and y_test.tolist() == [0, 1]

    np.savez(tmp_path / "missing.npz", x_train=np.zeros((2, 4, 4, 1), np.float32))
    with pytest.raises(ValueError, match="missing.*y_train"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")

    nan = rng.random((4, 4, 4, 1), dtype=np.float32)
    nan[0, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x_train=nan, y_train=np.arange(4), x_test=nan, y_test=np.arange(4))
    with pytest.raises(ValueError, match="`x_train`.*NaN"):
        load_dataset(f"npz:{tmp_path / 'nan.npz'}")

    big = (rng.random((4, 4, 4, 1)) * 255).astype(np.float32)
    np.savez(tmp_path / "big.npz", x_train=big, y_train=np.arange(4), x_test=big, y_test=np.arange(4))
    with pytest.raises(ValueError, match=r"`x_train`.*\[0, 1\]"):
        load_dataset(f"npz:{tmp_path / 'big.npz'}")

    np.savez(
        tmp_path / "shape.npz",
        x_train=nan[:, :, :, 0, None][:, 0],
        y_train=np.arange(4),
        x_test=nan,
        y_test=np.arange(4),
    )
    with pytest.raises(ValueError, match="`x_train`"):
        load_dataset(f"npz:{tmp_path / 'shape.npz'}")

    labels = tmp_path / "labels.npz"
    ok = rng.random((4, 4, 4, 1), dtype=np.float32)
    np.savez(labels, x_train=ok, y_train=np.arange(3), x_test=ok, y_test=np.arange(4))
    with pytest.raises(ValueError, match="`y_train`"):
        load_dataset(f"npz:{labels}")


def test_pipeline_is_seeded_and_checks_images(rng):
    x = rng.random((50, 4, 4, 1), dtype=np.float32)
    y = np.arange(50) % 10
    first = [b[1].numpy().tolist() for b in make_pipeline(x, y, batch_size=16, shuffle=True, seed=3)]
    second = [b[1].numpy().tolist() for b in make_pipeline(x, y, batch_size=16, shuffle=True, seed=3)]
    assert first == second and sum(len(b) for b in first) == 50
    assert first != [list(range(0, 16))]
    with pytest.raises(ValueError, match=r"`x`.*\[0, 1\]"):
        make_pipeline(x * 255, y)
    with pytest.raises(ValueError, match="`x`.*uint8"):
        make_pipeline((x * 255).astype(np.uint8), y)


def test_take_balanced(mnist):
    (x, y), _ = mnist
    xb, yb = take_balanced(x, y, per_class=18, seed=0)
    assert xb.shape == (180, 28, 28, 1)
    assert np.bincount(yb).tolist() == [18] * 10


def test_npz_with_the_test_split_alone_serves_evaluation_not_training(tmp_path):
    from tfdefense.data import load_test_split

    _, (x, y) = load_dataset("digits")
    keep = np.isin(y, [3, 7])  # any subset of classes
    x, y = x[keep][:15], y[keep][:15]
    pixels = np.round(x[..., 0] * 255).astype(np.uint8)
    np.savez(tmp_path / "uint8.npz", x_test=pixels, y_test=y)
    np.savez(
        tmp_path / "float.npz",
        x_test=x,
        y_test=y,
        x_train=np.zeros((0, 8, 8, 1), np.float32),
        y_train=np.zeros(0, np.int64),
    )
    for name in ("uint8.npz", "float.npz"):
        images, labels = load_test_split(f"npz:{tmp_path / name}")
        assert images.dtype == np.float32 and images.shape == (15, 8, 8, 1) and labels.tolist() == y.tolist()
        np.testing.assert_allclose(images, x, atol=0.5 / 255 + 1e-6)
    with pytest.raises(ValueError, match=r"missing \['x_train', 'y_train'\].*training needs the train split"):
        load_dataset(f"npz:{tmp_path / 'uint8.npz'}")
    with pytest.raises(ValueError, match=r"`x_train`.*at least one entry.*shape \(0, 8, 8, 1\)"):
        load_dataset(f"npz:{tmp_path / 'float.npz'}")
    with pytest.raises(ValueError, match=r"`name`.*a file of arrays is named npz:"):
        load_dataset(str(tmp_path / "uint8.npz"))
    np.savez(tmp_path / "empty.npz", x_test=np.zeros((0, 8, 8), np.uint8), y_test=np.zeros(0, np.int64))
    with pytest.raises(ValueError, match=r"`x_test`.*at least one entry"):
        load_test_split(f"npz:{tmp_path / 'empty.npz'}")
    np.savez(tmp_path / "negative.npz", x_test=pixels, y_test=y - 4)
    with pytest.raises(ValueError, match=r"`y_test`.*>= 0"):
        load_test_split(f"npz:{tmp_path / 'negative.npz'}")
    np.savez(tmp_path / "stored.npz", x_test=pixels, y_test=y, num_classes=np.int64(5))
    with pytest.raises(ValueError, match=r"`y_test`.*\[0, 4\]"):
        load_test_split(f"npz:{tmp_path / 'stored.npz'}")


def test_channel_first_and_binary_uint8_images_are_refused(tmp_path):
    from tfdefense.data import load_test_split, to_float_images

    _, (x, y) = load_dataset("digits")
    np.savez(tmp_path / "nchw.npz", x_test=x[:6].transpose(0, 3, 1, 2), y_test=y[:6])
    with pytest.raises(ValueError, match=r"`x_test`.*channels-first.*transpose\(0, 2, 3, 1\).*\(6, 1, 8, 8\)"):
        load_test_split(f"npz:{tmp_path / 'nchw.npz'}")
    binary = (x[:6] > 0.5).astype(np.uint8)
    np.savez(tmp_path / "binary.npz", x_test=binary, y_test=y[:6])
    with pytest.raises(ValueError, match=r"`x_test`.*binary images.*only the values 0 and 1"):
        load_test_split(f"npz:{tmp_path / 'binary.npz'}")
    np.testing.assert_array_equal(to_float_images(binary * 255), binary.astype(np.float32))  # the fix works
    assert to_float_images(np.zeros((2, 5, 5, 3), np.uint8)).shape == (2, 5, 5, 3)  # RGB, not channels-first


def test_tfds_dataset_prepared_on_disk_and_absent(tmp_path):
    import tensorflow_datasets as tfds

    from tfdefense.data import load_test_split

    _, (x, y) = load_dataset("digits")

    class TinyDigits(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = {
                "image": tfds.features.Image(shape=(8, 8, 1)),
                "label": tfds.features.ClassLabel(num_classes=10),
            }
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features), supervised_keys=("image", "label")
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(0, 30), "test": self._generate_examples(30, 42)}

        def _generate_examples(self, start, stop):
            for i in range(start, stop):
                yield i, {"image": np.round(x[i] * 255).astype(np.uint8), "label": int(y[i])}

    TinyDigits(data_dir=str(tmp_path / "tensorflow_datasets")).download_and_prepare()
    images, labels = load_test_split("tfds:tiny_digits", data_dir=tmp_path)
    assert images.dtype == np.float32 and images.shape == (12, 8, 8, 1)
    assert sorted(labels.tolist()) == sorted(y[30:42].tolist())
    (x_train, _), (x_test, _) = load_dataset("tfds:tiny_digits", data_dir=tmp_path)
    assert (len(x_train), len(x_test)) == (30, 12)
    assert len(load_test_split("tfds:tiny_digits:train[:5]", data_dir=tmp_path)[0]) == 5
    with pytest.raises(ValueError, match=r"`name`.*never downloads.*tfds:no_such_dataset:test") as info:
        load_test_split("tfds:no_such_dataset", data_dir=tmp_path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 600
