"""Data-parallel training with ``tf.distribute``: strategy resolution and the
replica-aware pieces of the train step, the data pipeline and the callbacks.

Three ways in, in this order of precedence (``resolve_strategy``):

1. ``MaskRCNN("training", config, model_dir, strategy=strategy)``;
2. building the model inside ``with strategy.scope():`` (Keras' own rule: a
   model is trained by the strategy it was created under);
3. ``Config.GPU_COUNT > 1`` and no strategy: ``MirroredStrategy`` over the
   first GPU_COUNT visible GPUs. Fewer visible GPUs than GPU_COUNT is an
   error that says so (Matterport's towers, and this package before, silently
   trained one device on a GPU_COUNT times bigger batch).

``GPU_COUNT == 1`` and no strategy: no strategy, exactly the single-device
code path of before.

The global batch
----------------
``IMAGES_PER_GPU`` is the batch of ONE replica; the global batch (what one
step trains on, what the data pipeline produces) is ``IMAGES_PER_GPU *
strategy.num_replicas_in_sync`` (Matterport's ``BATCH_SIZE = IMAGES_PER_GPU *
GPU_COUNT`` when the strategy has GPU_COUNT replicas). Keras' ``fit`` splits
each global batch of a ``PyDataset`` into consecutive per-replica slices
(``experimental_distribute_dataset``: replica r gets rows ``r*b..(r+1)*b``).
With several workers (``MultiWorkerMirroredStrategy``) each worker loads only
its own rows of each global batch (``distribute_data.ShardedDataSequence``), so the
workers together train on exactly the batches one process would.

One step equals the single-device step on the same global batch
----------------------------------------------------------------
* Losses. Each Mask R-CNN loss is a mean over a data-dependent number of
  terms (non-neutral anchors, positive anchors, positive ROIs, active
  predictions), so the mean of per-replica means is NOT the mean over the
  global batch. Under several replicas each ``LossOutput`` layer all-reduces
  its term count (:func:`loss_count`, a scalar per loss and step) and returns
  ``num_replicas * S_r / N_global`` (``S_r``: the replica's sum of terms): the
  mean of that over the replicas is the global-batch loss, in the train step,
  the progress bar, History and TensorBoard.
* The train step divides the total (losses + L2 weight decay, which every
  replica computes in full) by ``num_replicas_in_sync`` (Keras' built-in
  ``train_step`` does the same through ``scale_loss_for_distribution``; a
  custom ``train_step`` must do it itself), and the optimizer all-reduces
  (sums) the gradients: the update is the single-device one.
* Gradient clipping. Keras' ``SGD(clipnorm=...)`` clips in
  ``BaseOptimizer._clip_gradients`` BEFORE ``TFOptimizer._backend_update_step``
  all-reduces, i.e. it clips each replica's partial gradient; the fused
  ``ClippedMomentumSGD`` clips in ``update_step``, after the all-reduce, so
  it clips the global gradient as one device would.
* BatchNorm with batch statistics (``TRAIN_BN`` True or None): with
  ``Config.SYNC_BATCH_NORM`` (default True) every such BatchNorm computes its
  mean and variance over the global batch (Keras'
  ``BatchNormalization(synchronized=True)``: an all-reduce of the sums of x
  and x**2 and of the count per layer), so normalization, gradients and the
  moving statistics are those of the single-device step and stay identical on
  every replica. ``SYNC_BATCH_NORM = False`` keeps per-replica statistics
  (what Keras, torchvision and Detectron2 do by default: cheaper, but each
  replica's moving averages then follow its own slice, and the checkpoint
  holds the first replica's). Frozen BatchNorm (``TRAIN_BN`` False, the
  default) has no batch statistics, nothing to synchronize.
* Loss scaling (``TRAIN_PRECISION = "mixed_float16"``): Keras'
  ``LossScaleOptimizer`` decides on each replica whether the gradients are
  finite (in the no-merge-call path) or takes the first replica's answer (in
  the merge-call path), BEFORE the gradients are all-reduced; replicas whose
  gradients disagree would then skip on one replica and not on another (a
  hang in MultiWorkerMirroredStrategy), or apply an all-reduced inf.
  :func:`agree_on_nonfinite` all-reduces a non-finite flag first so every
  replica skips the step together.

Other Keras 3 behaviours this module works around
-------------------------------------------------
* ``fit`` under a strategy runs ``_maybe_symbolic_build``: it reads the first
  batch and reduces it across replicas with ``strategy.reduce("MEAN")``,
  which fails on the boolean ``input_gt_masks`` (``AddN`` has no bool
  kernel). The training model is a functional model, always built, and
  ``compile_model`` builds the optimizer in the strategy's scope, so the
  symbolic build has nothing to do: :func:`skip_symbolic_build` lets the
  model skip it.
* The optimizer must be created and built inside the strategy's scope
  (``TFOptimizer`` keeps ``tf.distribute.get_strategy()`` of its
  constructor); ``compile_model`` does both under
  ``keras_model.distribute_strategy.scope()``.
* ``fit`` calls the ``PyDataset``'s ``on_epoch_end`` once before the first
  epoch, and ``evaluate`` once before it reads (``epoch_iterator.reset()``),
  so ``DataSequence.epoch`` ran ahead of Keras' epoch; ``distribute_data.EpochSync``
  sets it from Keras' epoch number instead.
* ``fit(shuffle=True)``, the default, also shuffles the ORDER of a
  PyDataset's batches (``random.shuffle`` of the indices each epoch, Python's
  global RNG); ``DataSequence`` shuffles the images itself, so ``train()``
  passes ``shuffle=False``.
* The PyDataset adapter reads the first batches (up to
  ``NUM_BATCHES_FOR_TENSOR_SPEC``) once per ``fit`` to infer the input
  signature: a little extra data loading, and NumPy RNG draws, at start-up.
* Under MultiWorkerMirroredStrategy ``fit`` reduces every value a
  ``train_step`` returns with ``strategy.reduce("MEAN", v, axis=0)``, which
  fails on scalars (tensorflow/tensorflow#72388): :func:`step_logs` returns
  them with shape [1] there.
* On CPUs MirroredStrategy all-reduces with collective ops; create ONE per
  process: a second MirroredStrategy over the same devices numbers its
  collective instances from the same start, its first all-reduce meets an
  earlier one of another shape ("Shape mismatch in the collective instance
  100") and every collective of the process is aborted from then on.
* ``MultiWorkerMirroredStrategy`` must be created before TensorFlow runs
  anything (it configures the collective ops of the eager context), and a
  worker whose peer died waits forever unless
  ``CommunicationOptions(timeout_seconds=...)`` is given.

Checkpoints, logs and ``find_last``
-----------------------------------
Only the chief (``is_chief``: the only worker of a one-machine strategy; in a
cluster the ``chief`` task, or ``worker`` 0 without one) creates the log
directory, writes the checkpoints and the TensorBoard logs; the other
workers write nothing and train silently. Every worker reads the same
checkpoint to resume (``model.load_weights(model.find_last())`` on a shared
``model_dir``, or a copy of the chief's file): weights are assigned to all
replicas of every variable.
"""

import contextlib
import logging

import keras
import numpy as np
import tensorflow as tf

from mrcnn.losses import _squeeze_match
from mrcnn.optimizers import ClippedMomentumSGD, KerasPathClippedSGD

logger = logging.getLogger(__name__)

__all__ = ["resolve_strategy", "scope", "num_replicas", "num_workers", "worker_index",
           "is_chief", "global_batch_size", "replica_loss", "loss_count",
           "globally_normalized", "configure_batch_norm", "sync_moments", "skip_symbolic_build",
           "agree_on_nonfinite", "step_logs", "fused_optimizer_supported", "make_optimizer",
           "model_strategy", "common_seed"]


############################################################
#  Strategy resolution
############################################################

def resolve_strategy(config, strategy=None):
    """The ``tf.distribute.Strategy`` to train ``config`` with, or None.

    strategy: an explicit strategy (``MaskRCNN(..., strategy=...)``), used as is.
    Otherwise the strategy whose ``scope()`` is active, otherwise
    ``MirroredStrategy`` over the first ``config.GPU_COUNT`` visible GPUs
    when GPU_COUNT > 1, otherwise None (single device, no strategy).

    Raises ValueError when GPU_COUNT asks for more GPUs than are visible.
    """
    if strategy is not None:
        if not isinstance(strategy, tf.distribute.Strategy):
            raise TypeError(f"strategy must be a tf.distribute.Strategy, got "
                            f"{type(strategy).__name__}.")
        return strategy
    if tf.distribute.has_strategy():
        return tf.distribute.get_strategy()
    gpu_count = int(config.GPU_COUNT)
    if gpu_count <= 1:
        return None
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) < gpu_count:
        raise ValueError(
            f"{type(config).__name__}.GPU_COUNT is {gpu_count} but "
            f"{len(gpus)} GPU{'' if len(gpus) == 1 else 's'} "
            f"{'is' if len(gpus) == 1 else 'are'} visible to TensorFlow"
            f"{' (' + ', '.join(g.name for g in gpus) + ')' if gpus else ''}. "
            f"GPU_COUNT > 1 trains data-parallel with tf.distribute.MirroredStrategy, one "
            f"replica of IMAGES_PER_GPU images per GPU. Set GPU_COUNT = "
            f"{max(1, len(gpus))} (and IMAGES_PER_GPU to the batch per device), make the "
            f"GPUs visible (CUDA_VISIBLE_DEVICES, drivers), or pass a strategy: "
            f"MaskRCNN(..., strategy=...).")
    devices = [g.name for g in gpus[:gpu_count]]
    logger.info("GPU_COUNT %d: training with MirroredStrategy over %s.", gpu_count, devices)
    return tf.distribute.MirroredStrategy(devices)


def scope(strategy):
    """``strategy.scope()``, or a no-op context for None."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def model_strategy(model):
    """The strategy of a ``MaskRCNN`` (its ``strategy`` attribute), or None."""
    return getattr(model, "strategy", None)


def num_replicas(strategy):
    """Replicas in sync (1 without a strategy)."""
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def _cluster(strategy):
    """(task_type, task_id, cluster_spec dict) of a multi-worker strategy, else None."""
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is None:
        return None
    spec = resolver.cluster_spec().as_dict()
    if not spec:
        return None
    return resolver.task_type, resolver.task_id, spec


def num_workers(strategy):
    """Workers (processes) of the strategy: 1 unless a multi-worker cluster."""
    if strategy is None:
        return 1
    extended = strategy.extended
    count = getattr(extended, "_num_workers", None)
    if count is not None:
        return int(count)
    cluster = _cluster(strategy)
    if cluster is None:
        return 1
    _, _, spec = cluster
    return sum(len(spec.get(t, [])) for t in ("chief", "worker"))


def worker_index(strategy):
    """This worker's index among the workers that hold replicas (0 on one machine)."""
    cluster = _cluster(strategy) if num_workers(strategy) > 1 else None
    if cluster is None:
        return 0
    task_type, task_id, spec = cluster
    # Replica order of MultiWorkerMirroredStrategy: chief first, then workers.
    if task_type == "chief":
        return 0
    return int(task_id) + len(spec.get("chief", []))


def is_chief(strategy):
    """Whether this process writes checkpoints and logs.

    True without a strategy and for one-machine strategies; in a cluster,
    the ``chief`` task, or ``worker`` 0 when the cluster has no chief
    (TensorFlow's convention).
    """
    cluster = _cluster(strategy)
    if cluster is None:
        return True
    task_type, task_id, spec = cluster
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and int(task_id or 0) == 0 and "chief" not in spec


def global_batch_size(config, strategy):
    """Images per training step over all replicas.

    No strategy: ``config.BATCH_SIZE`` (IMAGES_PER_GPU * GPU_COUNT, with
    GPU_COUNT 1 after ``resolve_strategy``). With a strategy:
    ``IMAGES_PER_GPU * num_replicas_in_sync``; a GPU_COUNT that disagrees with
    the strategy's replicas is logged and ignored.
    """
    if strategy is None:
        return int(config.BATCH_SIZE)
    replicas = num_replicas(strategy)
    local = replicas // max(1, num_workers(strategy))
    if int(config.GPU_COUNT) not in (1, local):
        logger.warning("GPU_COUNT is %d but the strategy has %d replicas per worker; the "
                       "strategy decides: %d replicas of IMAGES_PER_GPU=%d images.",
                       config.GPU_COUNT, local, replicas, config.IMAGES_PER_GPU)
    return int(config.IMAGES_PER_GPU) * replicas


def common_seed(strategy, seed):
    """The data-order seed every worker uses.

    ``seed`` when given. With several workers and no seed, each worker would
    draw its own and the workers would read different image orders: the
    chief's random seed is used by all (the initial value of a variable made
    in a MultiWorkerMirroredStrategy scope is broadcast from worker 0).
    """
    if seed is not None or num_workers(strategy) <= 1:
        return seed
    draw = int(np.random.SeedSequence().entropy % (2 ** 31))
    with strategy.scope():
        shared = tf.Variable(draw, dtype=tf.int64, trainable=False, name="mrcnn_data_seed")
    value = int(shared.numpy())
    logger.info("Multi-worker training without a seed: every worker uses the chief's data "
                "seed %d.", value)
    return value


############################################################
#  The train step
############################################################

def replica_loss(loss):
    """The loss of one replica for its gradient: ``loss / num_replicas_in_sync``
    (the optimizer sums the replicas' gradients). Identity on one replica."""
    context = tf.distribute.get_replica_context()
    n = 1 if context is None else context.num_replicas_in_sync
    if n == 1:
        return loss
    return loss * tf.constant(1.0 / n, loss.dtype)


def loss_count(loss_name, inputs):
    """How many terms the loss ``loss_name`` averages, for the inputs of its
    ``LossOutput`` layer (see ``mrcnn.losses`` for the formulas). float32 scalar.

    rpn_class_loss: non-neutral anchors; rpn_bbox_loss: positive anchors that
    have a target row; mrcnn_class_loss: ROIs whose predicted class is active
    in their image's data set (padding rows count, as in Matterport);
    mrcnn_bbox_loss, mrcnn_mask_loss: positive ROIs. (Each loss also averages
    over the 4 deltas or the mask pixels, a constant factor that cancels.)
    """
    if loss_name == "rpn_class_loss":
        match = _squeeze_match(inputs[0])
        return tf.reduce_sum(tf.cast(tf.not_equal(match, 0), tf.float32))
    if loss_name == "rpn_bbox_loss":
        target_bbox, match = inputs[0], _squeeze_match(inputs[1])
        positive = tf.equal(match, 1)
        rank = tf.cumsum(tf.cast(positive, tf.int32), axis=1) - 1
        used = tf.logical_and(positive, rank < tf.shape(target_bbox)[1])
        return tf.reduce_sum(tf.cast(used, tf.float32))
    if loss_name == "mrcnn_class_loss":
        _, logits, active = inputs
        predicted = tf.argmax(tf.cast(logits, tf.float32), axis=2)
        return tf.reduce_sum(tf.gather(tf.cast(active, tf.float32), predicted, batch_dims=1))
    if loss_name in ("mrcnn_bbox_loss", "mrcnn_mask_loss"):
        class_ids = tf.cast(inputs[1], tf.int64)
        return tf.reduce_sum(tf.cast(class_ids > 0, tf.float32))
    raise ValueError(f"loss_count: unknown loss {loss_name!r}.")


def globally_normalized(loss_name, loss, inputs):
    """A replica's loss rescaled so that the mean over the replicas is the
    loss of the global batch (module docstring). Identity on one replica.

    loss: the replica's loss, a mean over ``n_r = loss_count(...)`` terms.
    Returns ``num_replicas * loss * n_r / sum_r(n_r)`` (0 when no replica
    has a term: every replica's loss is 0 then).
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return loss
    n = tf.stop_gradient(loss_count(loss_name, inputs))
    total = tf.stop_gradient(context.all_reduce(tf.distribute.ReduceOp.SUM, n))
    scale = tf.math.divide_no_nan(n * float(context.num_replicas_in_sync), total)
    return loss * scale


def configure_batch_norm(keras_model, strategy, synchronized=True):
    """Batch statistics across replicas (``SYNC_BATCH_NORM``): set Keras'
    ``synchronized`` flag on every BatchNormalization of the model (nested
    models and TimeDistributed included) when the strategy has several
    replicas. Keras reads the flag at call time; it only matters for layers
    that use batch statistics. Returns the number of layers changed."""
    if strategy is None or num_replicas(strategy) == 1:
        return 0
    changed = set()
    for layer in _walk_layers(keras_model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = bool(synchronized)
            changed.add(id(layer))
    return len(changed)


def _walk_layers(model):
    """Every layer inside ``model``: nested models' layers and the layer a
    TimeDistributed wraps included (public attributes only)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk_layers(layer)
        inner = getattr(layer, "layer", None)
        if isinstance(inner, keras.layers.Layer):
            yield inner


def sync_moments(x, axes):
    """Mean and variance of ``x`` over ``axes`` and over all replicas (the
    statistics of the global batch), computed in two passes.

    Keras' ``synchronized=True`` computes ``E[x**2] - E[x]**2`` from one
    all-reduce of the sums: in float32 that cancels badly when the mean is
    large against the spread (a first conv on raw pixels: measured 2% off the
    single-device update of a 64x64 ResNet-like stem after one step). Here
    the global mean is all-reduced first, then the sum of squared deviations
    from it, as ``tf.nn.moments`` on one device does. Two sequential
    all-reduces of 2 * channels floats per BatchNorm layer.

    x: [..., C] float (float16/bfloat16 computed in float32). Returns
    (mean, variance), each [C] in x's dtype. Without a replica context (or
    with one replica), ``tf.nn.moments``.
    """
    context = tf.distribute.get_replica_context()
    dtype = x.dtype
    x32 = tf.cast(x, tf.float32)
    if context is None or context.num_replicas_in_sync == 1:
        mean, variance = tf.nn.moments(x32, axes)
    else:
        count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x32), axes)), tf.float32)
        total, n = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                      [tf.reduce_sum(x32, axis=axes), count])
        mean = tf.math.divide_no_nan(total, n)
        deviation = tf.reduce_sum(tf.math.squared_difference(x32, mean), axis=axes)
        variance = tf.math.divide_no_nan(
            context.all_reduce(tf.distribute.ReduceOp.SUM, deviation), n)
    if dtype != tf.float32:
        mean, variance = tf.cast(mean, dtype), tf.cast(variance, dtype)
    return mean, variance


def skip_symbolic_build(keras_model):
    """Whether Keras' ``_maybe_symbolic_build`` can be skipped: the model and
    its optimizer are built already (see the module docstring for why it must
    be skipped under a strategy)."""
    optimizer = getattr(keras_model, "optimizer", None)
    return bool(keras_model.built) and (optimizer is None or optimizer.built)


def agree_on_nonfinite(optimizer, grads):
    """Under several replicas and a ``LossScaleOptimizer``: make every
    replica's gradients non-finite when any replica's are, so that all skip
    the step and halve the loss scale together (module docstring). Else the
    gradients unchanged."""
    context = tf.distribute.get_replica_context()
    if (context is None or context.num_replicas_in_sync == 1
            or not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)):
        return grads
    present = [g for g in grads if g is not None]
    if not present:
        return grads
    local_bad = tf.cast(tf.logical_not(tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(g)) for g in present])), tf.float32)
    any_bad = context.all_reduce(tf.distribute.ReduceOp.SUM, local_bad) > 0
    # NaN (not 0) where any replica overflowed: LossScaleOptimizer.check_finite
    # then says "skip" on every replica.
    poison = tf.where(any_bad, tf.constant(np.nan, tf.float32), tf.constant(0.0, tf.float32))
    return [None if g is None else g + tf.cast(poison, g.dtype) for g in grads]


def step_logs(logs):
    """The train/test step's ``{name: scalar}`` results, as ``fit`` can reduce them.

    Under MultiWorkerMirroredStrategy Keras 3 reduces each per-replica
    result with ``strategy.reduce("MEAN", value, axis=0)``
    (``reduce_per_replica``, reduction "auto" -> "mean"), which fails on a
    scalar ("Invalid reduction dimension 0 for input with 0 dimensions",
    tensorflow/tensorflow#72388). There each value is returned with shape
    [1]: the reduce then averages over the replicas and gives a scalar.
    Elsewhere the values are returned as they are.
    """
    strategy = tf.distribute.get_strategy()
    extended = strategy.extended
    if getattr(extended, "_in_multi_worker_mode", lambda: False)():
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}
    return logs


############################################################
#  The optimizer
############################################################

def fused_optimizer_supported(strategy):
    """Whether ``ClippedMomentumSGD``'s fused kernel is known to work under
    ``strategy`` (tested: none, MirroredStrategy, MultiWorkerMirroredStrategy,
    OneDeviceStrategy). Returns (bool, reason)."""
    if strategy is None:
        return True, "no strategy"
    known = (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy,
             tf.distribute.OneDeviceStrategy)
    if isinstance(strategy, known):
        return True, type(strategy).__name__
    return False, (f"{type(strategy).__name__} is not one of the strategies the fused "
                   f"ResourceApplyKerasMomentum update was tested under "
                   f"({', '.join(k.__name__ for k in known)})")


def make_optimizer(keras_model, learning_rate, momentum, clip_norm):
    """Matterport's SGD for ``keras_model``'s strategy: ``ClippedMomentumSGD``
    (fused), or :class:`KerasPathClippedSGD` (same update through Keras' SGD
    ops, clipping after the all-reduce too) with a logged reason under a
    strategy the fused kernel was not tested with. Call inside the
    strategy's scope."""
    # The strategy the model was built under (Keras' _distribute_strategy),
    # else the one whose scope is active, else none.
    strategy = getattr(keras_model, "_distribute_strategy", None)
    if strategy is None and tf.distribute.has_strategy():
        strategy = tf.distribute.get_strategy()
    ok, reason = fused_optimizer_supported(strategy)
    cls = ClippedMomentumSGD
    if not ok:
        logger.warning("Fused SGD update disabled: %s. Using Keras' SGD update with the "
                       "same clipping (KerasPathClippedSGD).", reason)
        cls = KerasPathClippedSGD
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        learning_rate = float(learning_rate)
    return cls(learning_rate=learning_rate, momentum=float(momentum), clip_norm=clip_norm)
