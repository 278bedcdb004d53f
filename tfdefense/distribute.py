"""Scale-out on TensorFlow's own engine: strategies, the chief, per-worker folders, collectives.

    strategy = make_strategy("mirrored")        # every local GPU (or every logical CPU)
    with strategy.scope():
        model = build(); model.compile(...)     # variables mirrored on every replica
    model.fit(dataset_of_global_batches)        # Keras splits each global batch

`make_strategy(name)` builds one of `STRATEGIES`:

* `none`: TensorFlow's default strategy (one device, no distribution);
* `mirrored`: `tf.distribute.MirroredStrategy` over the local GPUs (all
  logical CPUs when there is no GPU);
* `multiworker`: `tf.distribute.MultiWorkerMirroredStrategy`, the cluster and
  this process's task read from the `TF_CONFIG` environment variable; it must
  be built before TensorFlow runs any op in the process;
* `tpu`: `tf.distribute.TPUStrategy` on the TPU named by `tpu=` (or the
  environment's default resolver).

Only the chief writes reports, final models and shared caches
(`is_chief`); other workers write into `worker_dir(path)`
(`path/workers/<task>-<index>`), which no report points to. Decisions that
change which collectives run (reuse a cached model or retrain it) are taken
by every worker together (`all_workers_agree`), so one worker's cache hit
cannot leave the others waiting in an all-reduce.
"""

import json
import os
import pathlib
import shutil
import socket
import tempfile

import numpy as np

from tfdefense._validation import check_choice, invalid_value

STRATEGIES = ("none", "mirrored", "multiworker", "tpu")


def make_strategy(name="none", devices=None, tpu=None):
    """The `tf.distribute.Strategy` called `name` (one of `STRATEGIES`).

    Args:
      name: "none", "mirrored", "multiworker" or "tpu".
      devices: for "mirrored" only: the device names (default: every local
        GPU, else every logical CPU device).
      tpu: for "tpu" only: the TPU name or address (default: the
        environment's, e.g. on a Cloud TPU VM).
    """
    import tensorflow as tf

    check_choice("strategy", name, STRATEGIES)
    if devices is not None and name != "mirrored":
        raise invalid_value("devices", f"None for strategy {name!r} (devices choose the replicas of 'mirrored')", devices)
    if tpu is not None and name != "tpu":
        raise invalid_value("tpu", f"None for strategy {name!r}", tpu)
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if devices is None:
            devices = [d.name for d in tf.config.list_logical_devices("GPU")]
            devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
        if isinstance(devices, str) or not devices:
            raise invalid_value("devices", "a non-empty list of device names", devices)
        return tf.distribute.MirroredStrategy(list(devices))
    if name == "multiworker":
        tf_config()  # a clear error before TensorFlow's own
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        patch_keras_fit_for_multi_worker()
        return strategy
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="" if tpu is None else tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def patch_keras_fit_for_multi_worker():
    """Lets Keras 3's `Model.fit` run under `MultiWorkerMirroredStrategy` (keras-team/keras#20585).

    Two places of Keras's TensorFlow trainer (3.15) fail under it: before
    building a model, `fit` averages the first distributed batch with one
    `strategy.reduce("MEAN", batch)` over the whole (x, y) structure (the
    multi-worker strategy reduces single tensors: "Attempt to convert a value
    (PerReplica...)"), and every step reduces the scalar logs with axis=0
    ("Invalid reduction dimension 0"). This reduces the batch leaf by leaf and
    the logs over replicas (the same collectives on every worker, as Keras
    does under a single-worker MirroredStrategy). Applied by
    `make_strategy("multiworker")`; idempotent.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    cls = tf_trainer.TensorFlowTrainer
    if getattr(cls, "_tfdefense_multi_worker_patch", False):
        return
    original = cls._maybe_symbolic_build

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return original(self, iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            data_batch = next(batches)
            break
        data_batch = tf.nest.map_structure(
            lambda v: strategy.reduce("MEAN", v, axis=None) if isinstance(v, tf.distribute.DistributedValues) else v,
            data_batch)
        return original(self, iterator=None, data_batch=data_batch)

    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        # Keras reduces each replica's logs with reduce("MEAN", v, axis=0) (a scalar has no axis 0) or
        # reduce("SUM", v) (no axis): average / add them over the replicas of every worker instead.
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and reduction in ("auto", "mean", "sum"):
            op = "SUM" if reduction == "sum" else "MEAN"
            return tf.nest.map_structure(lambda v: strategy.reduce(op, v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    cls._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    cls._tfdefense_multi_worker_patch = True


def tf_config(environ=None):
    """The parsed `TF_CONFIG` of this process (cluster + task), checked; ValueError when absent or malformed."""
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG")
    expected = ('a JSON object {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}} '
                "in the environment variable TF_CONFIG (one per process; see docs/distributed.md)")
    if not text:
        raise invalid_value("TF_CONFIG", expected, text)
    try:
        config = json.loads(text)
    except json.JSONDecodeError:
        raise invalid_value("TF_CONFIG", expected, text) from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster or not all(
            isinstance(v, list) and v and all(isinstance(a, str) for a in v) for v in cluster.values()):
        raise invalid_value("TF_CONFIG", expected, text)
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(task.get("index"), int) \
            or not 0 <= task["index"] < len(cluster[task["type"]]):
        raise invalid_value("TF_CONFIG", expected + "; task.type must name a job of the cluster and task.index "
                            "one of its addresses", text)
    return config


def is_distributed(strategy):
    """True for a strategy other than None / TensorFlow's default one."""
    if strategy is None:
        return False
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.Strategy):
        raise invalid_value("strategy", "None or a tf.distribute.Strategy (see tfdefense.distribute.make_strategy)",
                            strategy)
    return type(strategy).__name__ != "_DefaultDistributionStrategy"


def scope(strategy):
    """`strategy.scope()`, or the default strategy's scope when `strategy` is None."""
    import tensorflow as tf

    is_distributed(strategy)  # type check
    return (strategy or tf.distribute.get_strategy()).scope()


def task(strategy):
    """(task type, task index) of this process; ("chief", 0)-like for a single process: (None, None)."""
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is None or not resolver.cluster_spec().as_dict():
        return None, None
    return resolver.task_type, resolver.task_id


def num_workers(strategy):
    """Number of worker processes taking part (1 without a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is None or type(strategy).__name__.startswith("TPU"):
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, sum(len(spec.get(job, ())) for job in ("chief", "worker")))


def num_replicas(strategy):
    """Replicas in sync over all workers (1 for None)."""
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def is_chief(strategy):
    """True in the process that writes reports, final models and shared caches.

    The chief is the task of type "chief", else worker 0; every single-process
    strategy (None, default, mirrored, TPU) is its own chief.
    """
    task_type, task_id = task(strategy)
    if task_type is None or type(strategy).__name__.startswith("TPU"):
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_dir(path, strategy):
    """Where this process writes what would go to `path`: `path` on the chief, `path/workers/<type>-<index>` elsewhere."""
    path = pathlib.Path(path)
    if is_chief(strategy):
        return path
    task_type, task_id = task(strategy)
    return path / "workers" / f"{task_type}-{task_id}"


def describe(strategy):
    """A JSON-able summary for reports: strategy class, name, replicas, workers, this task."""
    task_type, task_id = task(strategy)
    import tensorflow as tf

    kind = "none"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        kind = "multiworker"
    elif isinstance(strategy, tf.distribute.MirroredStrategy):
        kind = "mirrored"
    elif is_distributed(strategy):
        kind = "tpu" if type(strategy).__name__.startswith("TPU") else type(strategy).__name__
    return {
        "strategy": kind,
        "class": "none" if strategy is None else type(strategy).__name__,  # MultiWorkerMirrored: CollectiveAllReduceStrategy
        "replicas": num_replicas(strategy),
        "workers": num_workers(strategy),
        "task": None if task_type is None else f"{task_type}-{task_id}",
    }


def replica_layout(strategy):
    """This worker's replicas as [(global replica id, device), ...] in local order."""
    import tensorflow as tf

    devices = list(strategy.extended.worker_devices)
    ids = []

    def record(context):
        ids.append(int(context.replica_id_in_sync_group))
        return tf.constant(0.0)

    strategy.experimental_distribute_values_from_function(record)
    if len(ids) != len(devices):
        raise RuntimeError(f"strategy {type(strategy).__name__} reported {len(ids)} local replicas on {len(devices)} devices")
    return list(zip(ids, devices))


def _per_replica(strategy, values_by_id):
    import tensorflow as tf

    return strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(values_by_id[int(context.replica_id_in_sync_group)]))


def all_gather(strategy, values_by_id):
    """Concatenates every replica's array (same shape everywhere) in global replica order, on every worker.

    values_by_id: {global replica id: numpy array} for this worker's replicas.
    """
    gathered = strategy.gather(_per_replica(strategy, values_by_id), axis=0)
    return np.asarray(gathered)


def all_workers_agree(strategy, flag):
    """True when `flag` is true in every worker (an all-reduce across workers; local without a cluster)."""
    flag = bool(flag)
    if num_workers(strategy) <= 1:
        return flag
    import tensorflow as tf

    layout = replica_layout(strategy)
    values = {gid: np.float32(flag) for gid, _ in layout}
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, _per_replica(strategy, values), axis=None)
    return int(round(float(total))) == num_replicas(strategy)


def all_workers_equal(strategy, value):
    """True when the number `value` is the same in every worker (an all-gather across workers).

    `tf.distribute.ReduceOp` has only SUM and MEAN, so every replica's value is gathered and compared.
    """
    if num_workers(strategy) <= 1:
        return True
    values = {gid: np.asarray([value], np.float64) for gid, _ in replica_layout(strategy)}
    gathered = all_gather(strategy, values)
    return bool(np.all(gathered == gathered[0]))


def backup_callback(backup_dir, strategy=None, delete_checkpoint=True):
    """A `keras.callbacks.BackupAndRestore` that is safe under a multi-worker strategy.

    Single process: the callback on `backup_dir`. Several workers: the chief
    backs up into `backup_dir`; every other worker copies the chief's backup
    (when there is one: a resumed run on a shared file system) into a fresh
    temporary folder, restores from it, backs up into it and deletes it at the
    end of `fit`. So a killed worker group resumes from the chief's last epoch,
    and no two processes write the same file. Without a file system shared by
    the workers, a resumed run is refused (`check_backup_consistent`).
    """
    import keras

    from tfdefense._io import check_backup_dir

    backup_dir = check_backup_dir(backup_dir)  # keras deletes it after training: it must hold nothing else
    if is_chief(strategy):
        return keras.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=delete_checkpoint)
    task_type, task_id = task(strategy)
    temporary = pathlib.Path(tempfile.mkdtemp(prefix=f"tfdefense-backup-{task_type}-{task_id}-"))
    if backup_dir.is_dir():
        for item in backup_dir.iterdir():
            if item.is_file():
                shutil.copy2(item, temporary / item.name)
    return keras.callbacks.BackupAndRestore(str(temporary), delete_checkpoint=True)


def backup_epoch(backup_dir):
    """The epoch a `BackupAndRestore` folder would resume from (0 when it holds no backup)."""
    path = pathlib.Path(backup_dir) / "training_metadata.json"
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def check_backup_consistent(callback, strategy):
    """Refuses to resume when the workers would restore different epochs (backups not shared)."""
    if num_workers(strategy) <= 1:
        return
    epoch = backup_epoch(callback.backup_dir)
    if not all_workers_equal(strategy, epoch):
        raise RuntimeError(
            f"the workers would resume from different epochs (this one: {epoch}): the backup folder "
            f"{callback.backup_dir} must be on a file system every worker reads (see docs/distributed.md)"
        )


def free_local_ports(n):
    """`n` distinct free TCP ports on localhost (for a local multi-worker `TF_CONFIG`)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
