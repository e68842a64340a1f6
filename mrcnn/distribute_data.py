"""tf.distribute, the data side: each worker's share of the global batches,
the ``fit`` inputs under a strategy, and the callback that keeps the
sequences on Keras' epoch (``mrcnn.distribute`` explains the whole scheme).

With several workers (``MultiWorkerMirroredStrategy``) each worker loads only
its own rows of each global batch (:class:`ShardedDataSequence`), streamed by
threads into ``distribute_datasets_from_function`` (no auto-sharding: the
rows are the worker's already; Keras' own path for a PyDataset would make
every worker load every image and keep its share, tf.data's DATA
auto-shard), so the workers together train on exactly the batches one
process would.
"""
import collections
import concurrent.futures
import json

import keras
import tensorflow as tf

from mrcnn.distribute import num_replicas, num_workers, worker_index
from mrcnn.pipeline import DataSequence

__all__ = ["ShardedDataSequence", "data_sequence", "fit_inputs", "EpochSync",
           "tf_config_example"]


class ShardedDataSequence(DataSequence):
    """A worker's rows of the global batches of a ``DataSequence``.

    Same arguments as DataSequence plus ``shard`` (this worker's index) and
    ``num_shards`` (the number of workers); ``batch_size`` is the GLOBAL
    batch. Each item is the worker's ``b = batch_size // num_shards``
    consecutive rows of the global batch with the same index: rows
    ``shard * b .. (shard + 1) * b`` of what a
    one-process DataSequence with the same seed gives (exactly, unless an
    image is skipped: its replacement comes from the worker's own rows of
    the next batches).

    ``seq[k]`` is the k-th batch of the whole stream (epoch * steps + index):
    :func:`fit_inputs` reads it as one endless stream.
    """

    def __init__(self, *args, shard=0, num_shards=1, batch_size=None, **kwargs):
        super().__init__(*args, batch_size=batch_size, **kwargs)
        if self.batch_size % num_shards:
            raise ValueError(f"The global batch ({self.batch_size} images) does not divide "
                             f"among {num_shards} workers; use IMAGES_PER_GPU * replicas.")
        self.global_batch = self.batch_size
        self.shard, self.num_shards = int(shard), int(num_shards)
        self.batch_size = self.global_batch // self.num_shards

    def _image_at(self, position):
        # Local stream position -> position in the one-process stream.
        b = self.batch_size
        return super()._image_at((position // b) * self.global_batch + self.shard * b
                                 + position % b)


def data_sequence(strategy, *args, **kwargs):
    """A ``DataSequence`` for training under ``strategy`` (same arguments):
    with several workers, this worker's :class:`ShardedDataSequence`."""
    workers = num_workers(strategy)
    if workers <= 1:
        return DataSequence(*args, **kwargs)
    return ShardedDataSequence(*args, shard=worker_index(strategy), num_shards=workers,
                               **kwargs)


def _stream(seq, first, workers, max_queue_size):
    """Generator of ``seq[first], seq[first + 1], ...`` loaded by ``workers``
    threads, at most ``max_queue_size`` ahead."""
    def generate():
        with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
            pending = collections.deque()
            k = first
            while True:
                while len(pending) < max(1, max_queue_size):
                    pending.append(pool.submit(seq.__getitem__, k))
                    k += 1
                yield pending.popleft().result()
    return generate


def _distributed(strategy, keras_model, seq, first, workers, max_queue_size):
    """This worker's stream of ``seq`` (a ShardedDataSequence) from batch
    ``first`` on, as a DistributedDataset split among its local replicas
    (per-replica batches of ``global // num_replicas``)."""
    specs = {t.name: tf.TensorSpec((None,) + tuple(t.shape[1:]), t.dtype, name=t.name)
             for t in keras_model.inputs}
    per_replica = seq.global_batch // num_replicas(strategy)

    def dataset_fn(context):
        ds = tf.data.Dataset.from_generator(_stream(seq, first, workers, max_queue_size),
                                            output_signature=(specs,))
        if seq.batch_size != per_replica:
            ds = ds.rebatch(per_replica)
        return ds.prefetch(1)
    return strategy.distribute_datasets_from_function(dataset_fn)


def fit_inputs(strategy, keras_model, train_seq, val_seq, epoch, workers=1,
               max_queue_size=10):
    """The data arguments of ``fit`` and the callbacks they need:
    ``({"x": ..., "validation_data": ...[, "steps_per_epoch", "validation_steps"]},
    [callbacks])``.

    One worker: the sequences themselves (Keras splits each global batch
    among the local replicas), with :class:`EpochSync`. Several workers: each
    sequence becomes an endless stream of this worker's rows
    (:class:`ShardedDataSequence`), starting at epoch ``epoch``, distributed
    with ``distribute_datasets_from_function`` (no auto-sharding: the rows
    are this worker's already; Keras' own path for a PyDataset would make
    every worker load every image and keep its share, tf.data's DATA
    auto-shard). ``workers`` threads load the images, at most
    ``max_queue_size`` batches ahead.
    """
    if num_workers(strategy) <= 1:
        return {"x": train_seq, "validation_data": val_seq}, [EpochSync(train_seq, val_seq)]
    kwargs = {"validation_data": None}
    for key, seq in (("x", train_seq), ("validation_data", val_seq)):
        if seq is None:
            continue
        # seq[k] is stream batch k: the epoch is folded into k here.
        seq.epoch = 0
        kwargs[key] = _distributed(strategy, keras_model, seq, epoch * seq.steps, workers,
                                   max_queue_size)
    kwargs["steps_per_epoch"] = train_seq.steps
    if val_seq is not None:
        kwargs["validation_steps"] = val_seq.steps
    return kwargs, []


class EpochSync(keras.callbacks.Callback):
    """Keeps the sequences' ``epoch`` on Keras' epoch number: the training
    sequence at the start of each epoch, the validation sequence when that
    epoch's validation starts. Batch ``i`` of epoch ``e`` is then stream
    position ``(e * steps + i) * batch`` whatever ``fit`` and ``evaluate``
    do with ``on_epoch_end`` (fit calls it once before the first epoch,
    evaluate once before it reads, Keras' ``epoch_iterator.reset()``), as in
    the multi-worker streams."""

    def __init__(self, seq, val_seq=None):
        super().__init__()
        self.seq, self.val_seq = seq, val_seq
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = int(epoch)
        self.seq.epoch = self.epoch

    def on_test_begin(self, logs=None):
        # fit passes its callbacks to evaluate() for validation.
        if self.val_seq is not None and self.epoch is not None:
            self.val_seq.epoch = self.epoch


def tf_config_example(hosts, index):
    """The ``TF_CONFIG`` of worker ``index`` of a cluster of ``hosts``
    (["host:port", ...]), as a JSON string (README's example)."""
    return json.dumps({"cluster": {"worker": list(hosts)},
                       "task": {"type": "worker", "index": int(index)}})
