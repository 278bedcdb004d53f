import hashlib
import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

import keras
import pytest
import tensorflow as tf

from tfdefense import distribute


class _ClusterStrategy:
    """Stands in for a multi-worker strategy: only its cluster resolver is read by the helpers under test."""

    num_replicas_in_sync = 2

    def __init__(self, cluster, task_type, task_id):
        self.cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
        )


TWO_WORKERS = {"worker": ["localhost:1111", "localhost:2222"]}


def test_tf_config_is_checked_with_a_clear_error():
    good = {"cluster": TWO_WORKERS, "task": {"type": "worker", "index": 1}}
    assert distribute.tf_config({"TF_CONFIG": json.dumps(good)}) == good
    for text in (
        None,
        "",
        "{not json",
        json.dumps({"cluster": TWO_WORKERS}),
        json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker", "index": 2}}),
        json.dumps({"cluster": TWO_WORKERS, "task": {"type": "chief", "index": 0}}),
        json.dumps({"cluster": {"worker": "localhost:1"}, "task": {"type": "worker", "index": 0}}),
    ):
        environ = {} if text is None else {"TF_CONFIG": text}
        with pytest.raises(ValueError, match="`TF_CONFIG`.*Received: TF_CONFIG="):
            distribute.tf_config(environ)


def test_make_strategy_rejects_bad_arguments(monkeypatch):
    with pytest.raises(ValueError, match="`strategy`.*Received: strategy='horovod'"):
        distribute.make_strategy("horovod")
    with pytest.raises(ValueError, match="`devices`"):
        distribute.make_strategy("none", devices=["/cpu:0"])
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="`TF_CONFIG`"):
        distribute.make_strategy("multiworker")
    with pytest.raises(ValueError, match="`strategy`"):
        distribute.is_distributed("mirrored")


def test_single_process_strategies_are_their_own_chief(tmp_path):
    default = distribute.make_strategy("none")
    assert not distribute.is_distributed(None) and not distribute.is_distributed(default)
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert distribute.is_distributed(one)
    for strategy in (None, default, one):
        assert distribute.is_chief(strategy) and distribute.num_workers(strategy) == 1
        assert distribute.worker_dir(tmp_path, strategy) == tmp_path
        assert distribute.all_workers_agree(strategy, True) and not distribute.all_workers_agree(strategy, False)
    assert distribute.describe(None) == {"strategy": "none", "class": "none", "replicas": 1, "workers": 1, "task": None}
    assert distribute.replica_layout(one) == [(0, "/job:localhost/replica:0/task:0/device:CPU:0")]


def test_chief_and_worker_folders_from_the_cluster(tmp_path):
    worker0 = _ClusterStrategy(TWO_WORKERS, "worker", 0)
    worker1 = _ClusterStrategy(TWO_WORKERS, "worker", 1)
    assert distribute.is_chief(worker0) and not distribute.is_chief(worker1)
    assert distribute.num_workers(worker1) == 2
    assert distribute.worker_dir(tmp_path, worker0) == tmp_path
    assert distribute.worker_dir(tmp_path, worker1) == tmp_path / "workers" / "worker-1"
    with_chief = {"chief": ["localhost:3333"], **TWO_WORKERS}
    assert distribute.is_chief(_ClusterStrategy(with_chief, "chief", 0))
    assert not distribute.is_chief(_ClusterStrategy(with_chief, "worker", 0))
    assert distribute.num_workers(_ClusterStrategy(with_chief, "worker", 0)) == 3


def test_non_chief_backup_restores_from_a_copy_of_the_chiefs(tmp_path):
    backup = tmp_path / "model.keras.backup"
    backup.mkdir()
    (backup / "latest.weights.h5").write_bytes(b"weights of epoch 3")
    digest = hashlib.sha256(b"weights of epoch 3").hexdigest()
    (backup / "training_metadata.json").write_text(json.dumps({"epoch": 3, "batch": 0, "weights_sha256": digest}))
    chief = distribute.backup_callback(backup, _ClusterStrategy(TWO_WORKERS, "worker", 0))
    assert isinstance(chief, keras.callbacks.BackupAndRestore) and pathlib.Path(chief.backup_dir) == backup
    assert isinstance(chief, distribute.AtomicBackupAndRestore)
    other = distribute.backup_callback(backup, _ClusterStrategy(TWO_WORKERS, "worker", 1))
    copy = pathlib.Path(other.backup_dir)
    try:
        assert copy != backup and copy.parent != backup.parent  # a temporary folder, not beside the chief's
        assert distribute.backup_epoch(copy) == 3 == distribute.backup_epoch(backup)
        assert distribute.backup_epoch(tmp_path / "missing") == 0
    finally:
        shutil.rmtree(copy)
    assert sorted(p.name for p in backup.iterdir()) == ["latest.weights.h5", "training_metadata.json"]  # as it was


def test_find_checkpoints_accepts_only_metadata_matching_its_weights(tmp_path):
    def write(name, data):
        (tmp_path / name).write_bytes(data)

    def metadata(epoch, data):
        return json.dumps({"epoch": epoch, "batch": 0, "weights_sha256": hashlib.sha256(data).hexdigest()}).encode()

    assert distribute.find_checkpoints(tmp_path) == ([], [])
    write("latest.weights.h5", b"epoch 2, half writ")  # killed while writing epoch 2 (non-atomic writer)
    write("training_metadata.json", metadata(2, b"epoch 2, half written and then some"))
    write("latest.weights.h5.bkp", b"epoch 1")
    write("training_metadata.json.bkp", metadata(1, b"epoch 1"))
    checkpoints, problems = distribute.find_checkpoints(tmp_path)
    assert [(c["epoch"], c["weights"].name) for c in checkpoints] == [(1, "latest.weights.h5.bkp")]
    assert problems == ["no weights file matches training_metadata.json (epoch 2): partial or corrupt"]
    write("training_metadata.json.bkp", b'{"epoch": 1, "batch": 0}')  # keras' own format: no digest
    checkpoints, problems = distribute.find_checkpoints(tmp_path)
    assert checkpoints == [] and "training_metadata.json.bkp is unreadable" in problems[1]
    assert distribute.backup_epoch(tmp_path) == 0
    write("training_metadata.json", b"\xff\xfe garbage")
    assert distribute.find_checkpoints(tmp_path)[1][0].startswith("training_metadata.json is unreadable")


def test_a_failed_h5py_write_leaves_no_open_file(tmp_path):
    """A write cut short (file-size limit, like a full disk) leaves h5py's file open; _close_h5_file closes it."""

    script = textwrap.dedent(
        """
        import os, resource, signal, sys
        import h5py, numpy as np
        from tfdefense.distribute import _close_h5_file
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
        path = sys.argv[1]
        handle = h5py.File(path, "w")  # still referenced, as by a writer's frame
        try:
            handle.create_dataset("w", data=np.zeros(10**6))
            handle.flush()
        except OSError:
            pass
        open_before = len(h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE))
        _close_h5_file(path)
        fds = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{fd}")]
        print(open_before, len(h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE)), sum(path in fd for fd in fds))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "x.weights.h5")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.split() == ["1", "0", "0"], result.stdout + result.stderr[-2000:]
    assert "Exception ignored" not in result.stderr
