import pickle  # the tests build pickles; the package itself never imports pickle
import struct
import tarfile

import numpy as np
import pytest

from tfdefense.data import load_dataset
from tfdefense.data.cifar_batches import read_batch

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _string(value):  # Python 2 str, as in the official files
    if len(value) < 256:
        return b"U" + bytes([len(value)]) + value
    return b"T" + struct.pack("<i", len(value)) + value


def _int(value):
    if value < 256:
        return b"K" + bytes([value])
    return b"M" + struct.pack("<H", value) if value < 65536 else b"J" + struct.pack("<i", value)


def official_batch(images, labels, batch_label=b"training batch 1 of 5"):
    """The byte layout of the official CIFAR-10 python batches (Python 2 cPickle, protocol 2)."""
    n = len(images)
    rows = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(n, -1))
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04"
        + _int(0)
        + b"\x85"
        + _string(b"b")
        + b"\x87Rq\x05("
        + _int(1)
        + _int(n)
        + _int(rows.shape[1])
        + b"\x86"
        + b"cnumpy\ndtype\nq\x06"
        + _string(b"u1")
        + _int(0)
        + _int(1)
        + b"\x87Rq\x07("
        + _int(3)
        + _string(b"|")
        + b"NNN"
        + b"J\xff\xff\xff\xff" * 2
        + _int(0)
        + b"tb"
        + b"\x89"
        + _string(rows.tobytes())
        + b"tb"
    )
    return (
        b"\x80\x02}q\x01("
        + _string(b"data")
        + b"q\x02"
        + array
        + _string(b"labels")
        + b"]q\x08("
        + b"".join(_int(int(v)) for v in labels)
        + b"e"
        + _string(b"batch_label")
        + _string(batch_label)
        + _string(b"filenames")
        + b"]q\t("
        + b"".join(_string(b"img_%d.png" % k) for k in range(n))
        + b"e"
        + b"u."
    )


class _WritesMarker:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('code ran')",))


@pytest.fixture(scope="module")
def real_cifar(cifar10):
    """Six small batches of real CIFAR-10 images (as `load_dataset("cifar10")` finds them), 12 images each."""
    (x, y), (x_test, y_test) = cifar10
    x, y, x_test, y_test = (
        np.round(x[:60] * 255).astype(np.uint8),
        y[:60],
        np.round(x_test[:12] * 255).astype(np.uint8),
        y_test[:12],
    )
    parts = [(x[i * 12 : (i + 1) * 12], y[i * 12 : (i + 1) * 12]) for i in range(5)] + [(x_test, y_test)]
    return dict(zip(BATCHES, parts, strict=False))


def _write_batches(folder, real_cifar, replace=None):
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name, (images, labels) in real_cifar.items():
        (batches / name).write_bytes(official_batch(images, labels))
    for name, raw in (replace or {}).items():
        (batches / name).write_bytes(raw)
    return batches


def _assert_loaded(loaded, real_cifar):
    (x_train, y_train), (x_test, y_test) = loaded
    expected_x = np.concatenate([real_cifar[n][0] for n in BATCHES[:-1]])
    np.testing.assert_array_equal(x_train, expected_x.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(y_train, np.concatenate([real_cifar[n][1] for n in BATCHES[:-1]]))
    np.testing.assert_array_equal(x_test, real_cifar["test_batch"][0].astype(np.float32) / 255.0)
    np.testing.assert_array_equal(y_test, real_cifar["test_batch"][1])
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64 and x_train.shape == (60, 32, 32, 3)


def test_official_layout_is_what_pickle_reads(real_cifar):
    images, labels = real_cifar["data_batch_1"]
    raw = official_batch(images, labels)
    expected = pickle.loads(raw, encoding="bytes")
    got = read_batch(raw)
    assert sorted(got) == sorted(k.decode() for k in expected)
    np.testing.assert_array_equal(got["data"], expected[b"data"])
    assert got["labels"] == expected[b"labels"] == [int(v) for v in labels]
    assert got["filenames"] == expected[b"filenames"] and got["batch_label"] == expected[b"batch_label"]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_batches_written_by_python3_pickle(real_cifar, protocol):
    images, labels = real_cifar["data_batch_2"]
    rows = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))
    entry = {b"data": rows, b"labels": [int(v) for v in labels], b"batch_label": b"", "note": ("x", 1.5, None, True)}
    got = read_batch(pickle.dumps(entry, protocol=protocol))
    np.testing.assert_array_equal(got["data"], rows)
    assert got["data"].dtype == np.uint8 and got["data"].flags.writeable
    assert got["labels"] == entry[b"labels"] and got["batch_label"] == b"" and got["note"] == ("x", 1.5, None, True)


def test_load_dataset_reads_loose_batches_and_the_archive(tmp_path, real_cifar):
    batches = _write_batches(tmp_path / "loose", real_cifar)
    _assert_loaded(load_dataset("cifar10", data_dir=tmp_path / "loose", download=False), real_cifar)
    (tmp_path / "archive").mkdir()
    with tarfile.open(tmp_path / "archive" / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    _assert_loaded(load_dataset("cifar10", data_dir=tmp_path / "archive", download=False), real_cifar)


def test_a_corrupt_archive_is_a_clear_error(tmp_path, real_cifar):
    batches = _write_batches(tmp_path / "loose", real_cifar)
    archive = tmp_path / "archive" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # corrupt the deflate stream
    archive.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="data_dir.*cifar-10-python.tar.gz"):
        load_dataset("cifar10", data_dir=archive.parent, download=False)


def _malicious_batches(marker):
    payload = _WritesMarker(marker)
    return {
        "whole file": pickle.dumps(payload, protocol=2),
        "inside the dict": pickle.dumps({b"data": payload, b"labels": [0]}, protocol=2),
        "protocol 5": pickle.dumps({b"labels": [payload]}, protocol=5),
        "array of objects": pickle.dumps({b"data": np.array([payload], dtype=object)}, protocol=2),
    }


def test_pickle_would_run_the_payload(tmp_path):
    marker = tmp_path / "marker"
    for raw in _malicious_batches(marker).values():
        marker.unlink(missing_ok=True)
        try:
            pickle.loads(raw)
        except Exception:
            pass
        assert marker.read_text() == "code ran"  # so the refusals below are meaningful


def test_malicious_batch_is_refused_without_running(tmp_path, real_cifar):
    marker = tmp_path / "marker"
    for i, (case, raw) in enumerate(_malicious_batches(marker).items()):
        data_dir = tmp_path / f"loose{i}"
        _write_batches(data_dir, real_cifar, replace={"data_batch_1": raw})
        with pytest.raises(ValueError, match="`data_dir`.*CIFAR-10.*data_batch_1") as error:
            load_dataset("cifar10", data_dir=data_dir, download=False)
        assert "Nothing in it was run" in str(error.value), case
        assert not marker.exists(), case
        with tarfile.open(tmp_path / f"archive{i}.tar.gz", "w:gz") as tar:
            tar.add(data_dir / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        archive_dir = tmp_path / f"archive{i}"
        archive_dir.mkdir()
        (tmp_path / f"archive{i}.tar.gz").rename(archive_dir / "cifar-10-python.tar.gz")
        with pytest.raises(ValueError, match="`data_dir`.*cifar-10-python.tar.gz:cifar-10-batches-py/data_batch_1"):
            load_dataset("cifar10", data_dir=archive_dir, download=False)
        assert not marker.exists(), case


def test_names_outside_numpy_arrays_are_refused():
    evil_global = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03."
    with pytest.raises(ValueError, match=r"os\.system"):
        read_batch(evil_global, "evil")
    # an allowed constructor fed a foreign class
    smuggled = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncos\nsystem\n"
    with pytest.raises(ValueError, match=r"os\.system"):
        read_batch(smuggled, "evil")


def test_broken_batches_give_clear_errors(tmp_path, real_cifar):
    images, labels = real_cifar["data_batch_1"]
    raw = official_batch(images, labels)
    cases = {
        "truncated": raw[: len(raw) // 2],
        "random bytes": np.random.default_rng(0).integers(0, 256, 500).astype(np.uint8).tobytes(),
        "empty": b"",
        "labels out of range": official_batch(images, [99] * len(labels)),
        "a list": pickle.dumps([1, 2], protocol=2),
    }
    for i, bad in enumerate(cases.values()):
        data_dir = tmp_path / f"d{i}"
        _write_batches(data_dir, real_cifar, replace={"data_batch_1": bad})
        with pytest.raises(ValueError, match="`data_dir`.*data_batch_1"):
            load_dataset("cifar10", data_dir=data_dir, download=False)
    missing = tmp_path / "missing"
    (_write_batches(missing, real_cifar) / "test_batch").unlink()
    with pytest.raises(ValueError, match="`data_dir`.*test_batch is missing"):
        load_dataset("cifar10", data_dir=missing, download=False)
    (tmp_path / "bad_archive").mkdir()
    (tmp_path / "bad_archive" / "cifar-10-python.tar.gz").write_bytes(b"not a tar file")
    with pytest.raises(ValueError, match="`data_dir`.*readable cifar-10-python.tar.gz"):
        load_dataset("cifar10", data_dir=tmp_path / "bad_archive", download=False)


@pytest.mark.parametrize("protocol", [2, 4])
def test_an_array_referenced_twice_decodes_twice_as_the_array(protocol):
    rows = np.arange(12, dtype=np.uint8).reshape(3, 4)
    got = read_batch(pickle.dumps({b"data": rows, b"again": rows, b"labels": [0, 1, 2]}, protocol=protocol))
    np.testing.assert_array_equal(got["data"], rows)
    np.testing.assert_array_equal(got["again"], rows)


class _ArraySharingOneBuffer:
    """Pickles as a numpy array whose data is one bytes object shared (memoised) by every instance."""

    def __init__(self, buffer):
        self.buffer = buffer

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        state = (1, (len(self.buffer),), np.dtype("uint8"), False, self.buffer)
        return _reconstruct, (np.ndarray, (0,), b"b"), state


def test_one_buffer_reused_for_many_arrays_is_refused():
    buffer = bytes(1 << 20)
    arrays = [_ArraySharingOneBuffer(buffer) for _ in range(64)]  # 64 MB of arrays from a ~1 MB file
    data = pickle.dumps({b"data": arrays, b"labels": [0]}, protocol=4)
    assert len(data) < 2 << 20
    one = read_batch(pickle.dumps({b"data": arrays[:1], b"labels": [0]}, protocol=4))
    assert one["data"][0].shape == (1 << 20,)  # the same construct, once, is an ordinary array
    with pytest.raises(ValueError, match="more data than the file holds"):
        read_batch(data, source="bomb")
