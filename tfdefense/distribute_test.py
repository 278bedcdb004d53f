import json
import pathlib
import shutil

import keras
import pytest
import tensorflow as tf

from tfdefense import distribute


class _ClusterStrategy:
    """Stands in for a multi-worker strategy: only its cluster resolver is read by the helpers under test."""

    num_replicas_in_sync = 2

    def __init__(self, cluster, task_type, task_id):
        self.cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)


TWO_WORKERS = {"worker": ["localhost:1111", "localhost:2222"]}


def test_tf_config_is_checked_with_a_clear_error():
    good = {"cluster": TWO_WORKERS, "task": {"type": "worker", "index": 1}}
    assert distribute.tf_config({"TF_CONFIG": json.dumps(good)}) == good
    for text in (None, "", "{not json", json.dumps({"cluster": TWO_WORKERS}),
                 json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker", "index": 2}}),
                 json.dumps({"cluster": TWO_WORKERS, "task": {"type": "chief", "index": 0}}),
                 json.dumps({"cluster": {"worker": "localhost:1"}, "task": {"type": "worker", "index": 0}})):
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
    (backup / "training_metadata.json").write_text(json.dumps({"epoch": 3, "batch": 0}))
    chief = distribute.backup_callback(backup, _ClusterStrategy(TWO_WORKERS, "worker", 0))
    assert isinstance(chief, keras.callbacks.BackupAndRestore) and pathlib.Path(chief.backup_dir) == backup
    other = distribute.backup_callback(backup, _ClusterStrategy(TWO_WORKERS, "worker", 1))
    copy = pathlib.Path(other.backup_dir)
    try:
        assert copy != backup and copy.parent != backup.parent  # a temporary folder, not beside the chief's
        assert distribute.backup_epoch(copy) == 3 == distribute.backup_epoch(backup)
        assert distribute.backup_epoch(tmp_path / "missing") == 0
    finally:
        shutil.rmtree(copy)
    assert sorted(p.name for p in backup.iterdir()) == ["training_metadata.json"]  # the chief's left as it was
