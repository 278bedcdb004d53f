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

Training backups (`backup_callback`, `atomic_backup`) use
`AtomicBackupAndRestore`: keras's `BackupAndRestore` with atomic, digest-checked
checkpoints, so a kill, a full disk or a corrupt file never leaves a backup that
cannot be resumed (see its docstring).
"""

import gc
import json
import os
import pathlib
import shutil
import socket
import tempfile
import warnings

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
        raise invalid_value(
            "devices", f"None for strategy {name!r} (devices choose the replicas of 'mirrored')", devices
        )
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
            data_batch,
        )
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
    expected = (
        'a JSON object {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}} '
        "in the environment variable TF_CONFIG (one per process; see docs/distributed.md)"
    )
    if not text:
        raise invalid_value("TF_CONFIG", expected, text)
    try:
        config = json.loads(text)
    except json.JSONDecodeError:
        raise invalid_value("TF_CONFIG", expected, text) from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if (
        not isinstance(cluster, dict)
        or not cluster
        or not all(isinstance(v, list) and v and all(isinstance(a, str) for a in v) for v in cluster.values())
    ):
        raise invalid_value("TF_CONFIG", expected, text)
    if (
        not isinstance(task, dict)
        or task.get("type") not in cluster
        or not isinstance(task.get("index"), int)
        or not 0 <= task["index"] < len(cluster[task["type"]])
    ):
        raise invalid_value(
            "TF_CONFIG",
            expected + "; task.type must name a job of the cluster and task.index one of its addresses",
            text,
        )
    return config


def is_distributed(strategy):
    """True for a strategy other than None / TensorFlow's default one."""
    if strategy is None:
        return False
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.Strategy):
        raise invalid_value(
            "strategy", "None or a tf.distribute.Strategy (see tfdefense.distribute.make_strategy)", strategy
        )
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
    """Where this process writes what would go to `path`: `path` on the chief, else `path/workers/<type>-<index>`."""
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
        # MultiWorkerMirroredStrategy's class: CollectiveAllReduceStrategy
        "class": "none" if strategy is None else type(strategy).__name__,
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
        raise RuntimeError(
            f"strategy {type(strategy).__name__} reported {len(ids)} local replicas on {len(devices)} devices"
        )
    return list(zip(ids, devices, strict=True))


def _per_replica(strategy, values_by_id):
    import tensorflow as tf

    return strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(values_by_id[int(context.replica_id_in_sync_group)])
    )


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


WEIGHTS_FILE = "latest.weights.h5"
METADATA_FILE = "training_metadata.json"
PREVIOUS = ".bkp"  # suffix of the previous checkpoint's pair of files


class BackupWriteError(OSError):
    """A training backup could not be written (disk full, read-only folder); the previous checkpoint is kept."""


def backup_write_error(folder, error, kept):
    """A BackupWriteError (same errno) naming `folder`, the cause, and the checkpoint left in place."""
    code = getattr(error, "errno", None)
    cause = os.strerror(code) if isinstance(code, int) else " ".join(str(error).split())[:200]  # h5py: many lines
    return BackupWriteError(
        getattr(error, "errno", None),
        f"could not write the training backup in {str(folder)!r} ({type(error).__name__}: {cause}); "
        f"{kept}; free space (or fix the folder) and rerun the same command to continue",
    )


def _fsync(path, directory=False):
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    except OSError:
        if not directory:  # some file systems refuse fsync on folders
            raise
    finally:
        os.close(fd)


def _close_h5_file(path):
    """Closes every handle h5py still holds on `path` (a write that failed midway leaves its file open)."""

    gc.collect()
    try:
        import h5py
    except ImportError:
        return
    target = os.path.abspath(path)
    for file_id in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        name = file_id.name.decode(errors="replace") if isinstance(file_id.name, bytes) else file_id.name
        if os.path.abspath(name) == target:
            try:
                h5py.File(file_id).close()  # closes the file even when its final flush fails (the disk is full)
            except (RuntimeError, OSError):
                pass


def _read_metadata(path):
    """(epoch, batch, weights sha256) of a checkpoint's metadata file; ValueError when it is not one."""
    metadata = json.loads(pathlib.Path(path).read_text())
    if not isinstance(metadata, dict):
        raise ValueError("not a JSON object")
    epoch, digest = metadata.get("epoch"), metadata.get("weights_sha256")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"no epoch count (epoch={epoch!r})")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ValueError("no weights_sha256 (not written by tfdefense)")
    batch = metadata.get("batch", 0)
    return epoch, batch if isinstance(batch, int) else 0, digest


def find_checkpoints(backup_dir):
    """The complete checkpoints of a backup folder, newest first, and what is wrong with the rest.

    Returns (checkpoints, problems): checkpoints is a list of dicts {"epoch", "batch", "weights",
    "metadata"} whose metadata file names the SHA-256 of the weights file (latest.weights.h5 or
    its previous copy .bkp) it belongs to; problems lists the files that are unreadable, partial
    or without a matching weights file (never loaded).
    """
    from tfdefense._io import file_sha256

    folder = pathlib.Path(backup_dir)
    weights = [folder / WEIGHTS_FILE, folder / (WEIGHTS_FILE + PREVIOUS)]
    digests = {}

    def digest_of(path):
        if path not in digests:
            try:
                digests[path] = file_sha256(path) if path.is_file() else None
            except OSError:
                digests[path] = None
        return digests[path]

    checkpoints, problems = [], []
    for metadata in (folder / METADATA_FILE, folder / (METADATA_FILE + PREVIOUS)):
        if not metadata.exists():
            continue
        try:
            epoch, batch, digest = _read_metadata(metadata)
        except (OSError, ValueError, UnicodeDecodeError) as error:
            problems.append(f"{metadata.name} is unreadable ({type(error).__name__}: {error})")
            continue
        match = next((path for path in weights if digest_of(path) == digest), None)
        if match is None:
            problems.append(f"no weights file matches {metadata.name} (epoch {epoch}): partial or corrupt")
            continue
        if all(c["weights"] != match for c in checkpoints):
            checkpoints.append({"epoch": epoch, "batch": batch, "weights": match, "metadata": metadata})
    used = {c["weights"] for c in checkpoints}
    if not problems:  # weights without metadata: a run killed between the two writes
        problems += [
            f"{path.name} belongs to no complete checkpoint" for path in weights if path.exists() and path not in used
        ]
    checkpoints.sort(key=lambda c: -c["epoch"])
    return checkpoints, problems


def __getattr__(name):
    # The callback class subclasses keras's, built on first use: importing this module does not import keras.
    if name == "AtomicBackupAndRestore":
        globals()[name] = _atomic_backup_class()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _atomic_backup_class():
    import keras

    class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
        """`keras.callbacks.BackupAndRestore` whose checkpoints survive a kill, a full disk or a corrupt file.

        Every epoch end writes the weights to a temporary file in the backup
        folder, fsyncs it and renames it to `latest.weights.h5`; the previous
        complete checkpoint moves to `*.bkp` first, and `training_metadata.json`
        (epoch, batch and the SHA-256 of its weights file) is written last, also
        atomically. So a kill at any moment leaves at least one complete
        checkpoint. At the start of `fit` the newest checkpoint whose weights
        match their metadata is restored; a corrupt, truncated or partial file is
        never loaded: the previous checkpoint is used, else training starts
        afresh, with a warning naming the files (temporary files left by a
        killed write are removed). An OSError while writing (e.g.
        ENOSPC) raises one `BackupWriteError` naming the folder; the previous
        checkpoint stays in place and no file handle stays open.

        `restored_epoch` is the epoch `fit` resumed from (0: a fresh start).
        """

        def __init__(self, backup_dir, delete_checkpoint=True):
            super().__init__(
                str(backup_dir), save_freq="epoch", double_checkpoint=True, delete_checkpoint=delete_checkpoint
            )
            self.restored_epoch = 0
            self._latest_digest = None  # SHA-256 of latest.weights.h5 when it is a complete checkpoint
            self._restored = None  # (weights, metadata) paths of the checkpoint restored; None: a fresh start

        def on_train_begin(self, logs=None):

            self.restored_epoch = 0
            self._latest_digest = None
            self._restored = None
            if not self.model.built:
                raise ValueError(
                    "To use the BackupAndRestore callback, your model must be built before you call `fit()`. "
                    f"Model {self.model} is unbuilt. You can build it beforehand by calling it on a batch of data."
                )
            folder = pathlib.Path(self.backup_dir)
            if folder.is_dir():  # temporary files of a process killed while writing (this callback's names only)
                for pattern in (".latest.*.tmp.weights.h5", ".training_metadata.*.tmp.json"):
                    for stale in folder.glob(pattern):
                        if stale.is_file() and not stale.is_symlink():
                            stale.unlink()
            checkpoints, problems = find_checkpoints(self.backup_dir)
            if not checkpoints and not problems:
                return
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            variables = list(self.model.weights)
            if self.model.optimizer is not None:
                variables += [v for v in self.model.optimizer.variables if all(v is not w for w in variables)]
            for checkpoint in checkpoints:
                saved = [v.numpy() for v in variables]
                try:
                    self._load_weights(checkpoint["weights"])
                except (OSError, ValueError, KeyError) as error:
                    for variable, value in zip(variables, saved, strict=True):
                        variable.assign(value)
                    problems.append(
                        f"{checkpoint['weights'].name} (epoch {checkpoint['epoch']}) does not load "
                        f"into this model ({type(error).__name__})"
                    )
                    continue
                self.model._initial_epoch = self.restored_epoch = checkpoint["epoch"]
                if checkpoint["weights"].name == WEIGHTS_FILE and checkpoint["metadata"].name == METADATA_FILE:
                    self._latest_digest = _read_metadata(checkpoint["metadata"])[2]
                self._restored = checkpoint["weights"], checkpoint["metadata"]
                break
            if problems:
                outcome = (
                    f"resuming from the last complete checkpoint (epoch {self.restored_epoch})"
                    if self.restored_epoch
                    else "training starts afresh from epoch 0"
                )
                warnings.warn(
                    f"training backup {str(self.backup_dir)!r}: {'; '.join(problems)}; {outcome}",
                    RuntimeWarning,
                    stacklevel=2,
                )

        def _load_weights(self, path):
            if path.name.endswith(".weights.h5"):
                return self.model.load_weights(str(path))
            # keras reads only names ending in .weights.h5: the previous checkpoint is read through a link
            fd, alias = tempfile.mkstemp(prefix=".latest.", suffix=".tmp.weights.h5", dir=path.parent)
            os.close(fd)
            try:
                os.remove(alias)
                try:
                    os.link(path, alias)
                except OSError:
                    shutil.copyfile(path, alias)
                self.model.load_weights(alias)
            finally:
                if os.path.exists(alias):
                    os.remove(alias)

        def _save_model(self):
            folder = pathlib.Path(self.backup_dir)
            weights, metadata = folder / WEIGHTS_FILE, folder / METADATA_FILE
            tmp = None
            try:
                folder.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".latest.", suffix=".tmp.weights.h5", dir=folder)
                os.close(fd)
                self.model.save_weights(tmp, overwrite=True)
                _fsync(tmp)
                from tfdefense._io import file_sha256

                digest = file_sha256(tmp)
                record = {
                    "epoch": self._current_epoch,
                    "batch": self._last_batch_seen,
                    "weights_sha256": digest,
                    "weights_file": WEIGHTS_FILE,
                }
                if self._latest_digest is not None:  # keep the complete checkpoint until the new one is
                    os.replace(weights, str(weights) + PREVIOUS)
                    os.replace(metadata, str(metadata) + PREVIOUS)
                else:
                    self._settle_previous(weights, metadata)
                self._latest_digest = None
                os.replace(tmp, weights)
                tmp = None
                fd, tmp_metadata = tempfile.mkstemp(prefix=".training_metadata.", suffix=".tmp.json", dir=folder)
                try:
                    with os.fdopen(fd, "w") as handle:
                        handle.write(json.dumps(record))
                        handle.flush()
                        os.fsync(handle.fileno())
                    os.replace(tmp_metadata, metadata)
                finally:
                    if os.path.exists(tmp_metadata):
                        os.remove(tmp_metadata)
                _fsync(folder, directory=True)
                self._latest_digest = digest
            except OSError as error:
                message = backup_write_error(folder, error, self._kept_description())
                error.__traceback__ = None  # frees the failed writer (and its h5py file) before closing leftovers
                del error
                if tmp is not None:
                    _close_h5_file(tmp)
                    try:
                        os.remove(tmp)
                    except OSError:
                        pass
                raise message from None

        def _settle_previous(self, weights, metadata):
            """Before the first write over an unverified latest pair: the *.bkp pair becomes the checkpoint
            restored (each step one rename, so a kill leaves it complete), or goes on a fresh start (an
            unloadable older pair must not shadow this run's checkpoints)."""
            if self._restored is None:
                for stale in (str(metadata) + PREVIOUS, str(weights) + PREVIOUS):
                    if os.path.lexists(stale):
                        os.remove(stale)
                return
            for path in self._restored:
                if not path.name.endswith(PREVIOUS):
                    os.replace(path, str(path) + PREVIOUS)
            self._restored = (pathlib.Path(str(weights) + PREVIOUS), pathlib.Path(str(metadata) + PREVIOUS))

        def _kept_description(self):
            checkpoints, _ = find_checkpoints(self.backup_dir)
            if checkpoints:
                return f"the checkpoint of epoch {checkpoints[0]['epoch']} is kept"
            return "no earlier checkpoint exists: a rerun starts afresh"

    AtomicBackupAndRestore.__module__ = __name__
    return AtomicBackupAndRestore


def atomic_backup(backup_dir, delete_checkpoint=True):
    """An `AtomicBackupAndRestore` callback on `backup_dir` (see its docstring)."""
    cls = globals().get("AtomicBackupAndRestore") or __getattr__("AtomicBackupAndRestore")
    return cls(backup_dir, delete_checkpoint=delete_checkpoint)


def backup_callback(backup_dir, strategy=None, delete_checkpoint=True):
    """An `AtomicBackupAndRestore` callback (a `keras.callbacks.BackupAndRestore`) safe under several workers.

    Single process: the callback on `backup_dir`. Several workers: the chief
    backs up into `backup_dir`; every other worker copies the chief's backup
    (when there is one: a resumed run on a shared file system) into a fresh
    temporary folder, restores from it, backs up into it and deletes it at the
    end of `fit`. So a killed worker group resumes from the chief's last epoch,
    and no two processes write the same file. Without a file system shared by
    the workers, a resumed run is refused (`check_backup_consistent`).
    """
    from tfdefense._io import check_backup_dir

    backup_dir = check_backup_dir(backup_dir)  # keras deletes it after training: it must hold nothing else
    if is_chief(strategy):
        return atomic_backup(backup_dir, delete_checkpoint=delete_checkpoint)
    task_type, task_id = task(strategy)
    temporary = pathlib.Path(tempfile.mkdtemp(prefix=f"tfdefense-backup-{task_type}-{task_id}-"))
    if backup_dir.is_dir():
        for item in backup_dir.iterdir():
            if item.is_file():
                shutil.copy2(item, temporary / item.name)
    return atomic_backup(temporary, delete_checkpoint=True)


def backup_epoch(backup_dir):
    """The epoch a backup folder resumes from: its newest complete checkpoint's (0 when it holds none)."""
    checkpoints, _ = find_checkpoints(backup_dir)
    return checkpoints[0]["epoch"] if checkpoints else 0


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
