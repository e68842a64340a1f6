"""Training: trainable-layer presets, compile, train().

``MaskRCNN.train()`` (Matterport's API) is a thin wrapper around :func:`train`
here. The pieces, in the order training uses them:

* :data:`LAYER_PRESETS` and :func:`set_trainable`: which layers learn
  (``layers="heads"``, ``"3+"``, ``"4+"``, ``"5+"``, ``"all"`` or a regex,
  matched against layer names with ``re.fullmatch`` as in Matterport).
* :func:`compile_model`: SGD with momentum and per-tensor gradient norm
  clipping (``GRADIENT_CLIP_NORM``), as Matterport
  (``optimizers.ClippedMomentumSGD``), on the training model
  (``graph.training_model.MaskRCNNTrainingModel``, whose ``train_step`` adds
  up the five losses and Matterport's L2 weight decay).
* :func:`train`: Matterport's ``train()`` semantics (``epochs`` is the final
  epoch; a second call continues where the first stopped), fed by the data
  pipeline (``pipeline.DataSequence``), writing checkpoints
  (:class:`Checkpoint`, with its retention policy) and TensorBoard logs.

``DataSequence``, ``Checkpoint``, ``MaskRCNNTrainingModel`` and
``ClippedMomentumSGD`` are re-exported here (they lived here before).
"""

import collections
import datetime
import errno
import json
import logging
import math
import os
import re
import shutil
import time
from typing import List, Optional, Sequence

import keras

from mrcnn import checkpoints, distribute, precision, weights
from mrcnn.arguments import pipeline_spec
from mrcnn.distribute_data import data_sequence, fit_inputs
from mrcnn.config import LOSS_NAMES
from mrcnn.graph.training_model import MaskRCNNTrainingModel
from mrcnn.optimizers import ClippedMomentumSGD
from mrcnn.pipeline import MAX_LOAD_ERRORS, DataSequence  # noqa: F401

logger = logging.getLogger(__name__)

__all__ = ["LAYER_PRESETS", "LOSS_NAMES", "MaskRCNNTrainingModel", "ClippedMomentumSGD",
           "compile_model", "set_trainable", "DataSequence", "Checkpoint", "CheckpointWriteError",
           "ProgressEstimate",
           "train", "resolve_layers"]

_HEADS = r"(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)"
# Pre-defined layer regular expressions of Matterport's train(layers=...).
LAYER_PRESETS = {
    # all layers but the backbone
    "heads": _HEADS,
    # From a specific Resnet stage and up
    "3+": r"(res3.*)|(bn3.*)|(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|" + _HEADS,
    "4+": r"(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|" + _HEADS,
    "5+": r"(res5.*)|(bn5.*)|" + _HEADS,
    # All layers
    "all": ".*",
}


def resolve_layers(layers: str) -> str:
    """A preset name ("heads", "3+", "4+", "5+", "all") or a regex -> the regex.

    Raises ValueError for something that is neither (e.g. "4" or a bad regex).
    """
    if layers in LAYER_PRESETS:
        return LAYER_PRESETS[layers]
    if not isinstance(layers, str):
        raise ValueError(f"train(layers=...): expected one of {sorted(LAYER_PRESETS)} or a "
                         f"regular expression string, got {layers!r}.")
    try:
        re.compile(layers)
    except re.error as e:
        raise ValueError(f"train(layers={layers!r}) is neither a preset "
                         f"({', '.join(LAYER_PRESETS)}) nor a valid regular expression: {e}.")
    return layers


############################################################
#  Compile
############################################################

def _is_schedule(learning_rate) -> bool:
    return isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule)


def compile_model(keras_model: keras.Model, learning_rate, momentum: float,
                  gradient_clip_norm: Optional[float] = 5.0,
                  optimizer: Optional[keras.optimizers.Optimizer] = None,
                  initial_step: int = 0) -> keras.Model:
    """Matterport's compile(): SGD with momentum and gradient norm clipping.

    keras_model: a MaskRCNNTrainingModel.
    learning_rate: a float (LEARNING_RATE) or a Keras
        ``LearningRateSchedule`` (e.g. ``keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps, warmup_target=0.04, warmup_steps=100)``), evaluated
        at the optimizer's step count.
    momentum: SGD momentum (LEARNING_MOMENTUM).
    gradient_clip_norm: GRADIENT_CLIP_NORM; as Keras 2's ``clipnorm``, each
        gradient tensor is clipped to this norm on its own.
    optimizer: optional Keras optimizer instance to use instead
        (``learning_rate``, ``momentum`` and ``gradient_clip_norm`` are then
        the optimizer's own business).
    initial_step: the optimizer's step count to start from, so that a
        schedule resumed at a later epoch continues where it stopped
        (``train()`` passes ``epoch * STEPS_PER_EPOCH``).

    Call it again after :func:`set_trainable`: the train step is traced with
    the trainable weights of the moment. Like Matterport, every call starts
    from a fresh optimizer state (zero momentum). When the trainable weights,
    momentum, clipping and learning-rate kind are those of the previous
    call, the optimizer is reset and given the new learning rate instead of
    being replaced, which keeps the traced train step (tracing takes a while
    on a CPU).
    """
    if not isinstance(keras_model, MaskRCNNTrainingModel):
        raise TypeError("compile_model() needs the training model "
                        "(MaskRCNN(mode='training', ...).keras_model).")
    if optimizer is not None and not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(f"compile_model(optimizer=...) needs a keras.optimizers.Optimizer "
                        f"instance, got {type(optimizer).__name__}.")
    schedule = _is_schedule(learning_rate)
    if not schedule and optimizer is None:
        learning_rate = float(learning_rate)
    clipnorm = None if gradient_clip_norm is None else float(gradient_clip_norm)
    # A schedule cannot replace a float learning rate in place (nor the
    # other way): the kind, and the very schedule object, are in the key.
    lr_kind = ("schedule", id(learning_rate)) if schedule else ("constant",)
    key = (tuple(id(v) for v in keras_model.trainable_variables), float(momentum), clipnorm,
           lr_kind)
    current = getattr(keras_model, "optimizer", None)
    # The optimizer is made and built in the model's tf.distribute scope,
    # fused or not as the strategy allows, loss-scaled for float16
    # (mrcnn.distribute.make_optimizer, mrcnn.precision).
    with keras_model.distribute_strategy.scope():
        if (optimizer is None and current is not None
                and getattr(keras_model, "_mrcnn_compile_key", None) == key):
            precision.reset_optimizer(current, learning_rate, initial_step)
            return keras_model
        if optimizer is None:
            optimizer = distribute.make_optimizer(keras_model, learning_rate, momentum, clipnorm)
            keras_model._mrcnn_compile_key = key
        else:
            keras_model._mrcnn_compile_key = None
        optimizer = precision.wrap_optimizer(optimizer, keras_model)
        # No XLA: NMS, crop_and_resize and the dynamic sampling do not compile.
        keras_model.compile(optimizer=optimizer, jit_compile=False)
        optimizer.build(keras_model.trainable_variables)
        optimizer.iterations.assign(int(initial_step))
    return keras_model


############################################################
#  Trainable layers
############################################################

def set_trainable(keras_model: keras.Model, layer_regex: str, verbose: int = 1,
                  indent: int = 0) -> List[str]:
    """Make the layers whose names fully match ``layer_regex`` trainable and
    freeze all other weight-carrying layers (Matterport's set_trainable).

    keras_model: the Keras model (nested models such as ``rpn_model`` are
        searched too, with the same regex on their own layers).
    layer_regex: a regex or a preset name from LAYER_PRESETS.
    verbose: > 0 prints the trainable layers (a display for notebooks,
        Matterport's listing; ``train()`` logs a one-line summary instead).

    A ``TimeDistributed`` wrapper is matched by its name and its inner layer
    follows it. BatchNorm layers follow the regex like any other layer, as in
    Matterport: with TRAIN_BN False (the default) their moving statistics
    never change (backbone.BatchNorm always normalizes with them), but the
    gamma and beta of a selected BatchNorm layer are trained.

    Returns: the names of the layers made trainable (nested ones as
    "rpn_model/rpn_conv_shared").
    """
    layer_regex = resolve_layers(layer_regex)
    if verbose > 0 and indent == 0:
        print("Selecting layers to train")
    selected = []
    for layer in keras_model.layers:
        if isinstance(layer, keras.Model):
            if verbose > 0:
                print(" " * indent + "In model: ", layer.name)
            # The nested model stays trainable; its layers decide.
            layer.trainable = True
            inner = set_trainable(layer, layer_regex, verbose=verbose, indent=indent + 4)
            selected += [f"{layer.name}/{n}" for n in inner]
            continue
        if not layer.weights:
            continue
        trainable = bool(re.fullmatch(layer_regex, layer.name))
        inner = layer.layer if isinstance(layer, keras.layers.TimeDistributed) else layer
        layer.trainable = trainable
        inner.trainable = trainable
        if trainable:
            selected.append(layer.name)
            if verbose > 0:
                print("{}{:20}   ({})".format(" " * indent, layer.name,
                                             layer.__class__.__name__))
    return selected


############################################################
#  train()
############################################################

class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, no permission, ...);
    the message names the folder, and the previous checkpoints are intact."""


class Checkpoint(keras.callbacks.Callback):
    """Save the weights at the end of epochs, Matterport's way, with a
    retention policy.

    filepath: a path with an ``{epoch:04d}`` placeholder
        (``MaskRCNN.checkpoint_path``); ``epoch`` is 1-based, so the file
        written after the first epoch ends in ``_0001.h5``.
    keep_last: keep this many of the newest checkpoints of the run folder
        (default ``checkpoints.KEEP_LAST`` = 3); None keeps every one
        (Matterport). Older files are deleted only after the new one is
        safely written.
    keep_best: also keep the checkpoint of the lowest ``monitor`` value
        (default "val_loss"), even when older than the last ``keep_last``;
        an epoch that improves on it is always written. The best of earlier
        train() calls into the same run folder counts (the losses are stored
        in each file's ``mrcnn_metrics`` root attribute).
    save_every: write every this many epochs (epoch numbers divisible by
        it), and always after the last epoch of the run.

    Files use the Keras-2 HDF5 layout (``mrcnn.weights.save_weights``) so
    Matterport code can read them, and are written atomically: a crash
    mid-write never leaves a truncated checkpoint that ``find_last()``
    would pick up. Root attributes ``mrcnn_epoch``, ``mrcnn_iterations``
    (the optimizer's step) and ``mrcnn_metrics`` (the epoch's losses, JSON)
    are added. A write that fails (a full disk: ``errno.ENOSPC``) raises
    :class:`CheckpointWriteError` naming the folder and the last good
    checkpoint, which is kept; training stops there.

    ``saved``: paths written by this callback; ``best_path``, ``best``: the
    best checkpoint and its ``monitor`` value (keep_best).
    """

    def __init__(self, filepath, verbose=0, keep_last=checkpoints.KEEP_LAST, keep_best=False,
                 save_every=1, monitor="val_loss"):
        super().__init__()
        self.filepath = str(filepath)
        self.verbose = verbose
        if keep_last is not None and (not isinstance(keep_last, int) or isinstance(
                keep_last, bool) or keep_last < 1):
            raise ValueError(f"keep_last must be None (keep every checkpoint) or an integer "
                             f">= 1 (a run must keep one to resume from), got {keep_last!r}.")
        if not isinstance(save_every, int) or isinstance(save_every, bool) or save_every < 1:
            raise ValueError(f"save_every must be an integer >= 1 (write every k epochs), "
                             f"got {save_every!r}.")
        self.keep_last, self.keep_best = keep_last, bool(keep_best)
        self.save_every, self.monitor = save_every, str(monitor)
        self.saved = []
        self.deleted = []
        self.best = self.best_path = None
        self.folder = os.path.dirname(os.path.abspath(self.filepath.format(epoch=1)))
        match = re.match(r"mask_rcnn_(.+)_\{epoch", os.path.basename(self.filepath))
        self.name = match.group(1) if match else None

    def on_train_begin(self, logs=None):
        checkpoints.remove_stale_temp_files(self.folder)
        if self.keep_best and self.best_path is None and self.name:
            # The best of earlier train() calls into this run folder.
            for _, path in checkpoints.run_checkpoints(self.folder, self.name):
                value = checkpoints.checkpoint_metrics(path).get(self.monitor)
                if value is not None and math.isfinite(value) and (
                        self.best is None or value < self.best):
                    self.best, self.best_path = value, path

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        number = epoch + 1
        last = (self.params or {}).get("epochs")
        due = number % self.save_every == 0 or number == last
        value = logs.get(self.monitor)
        value = None if value is None else float(value)
        improved = (self.keep_best and value is not None and math.isfinite(value)
                    and (self.best is None or value < self.best))
        if not (due or improved):
            return
        path = self.filepath.format(epoch=number)
        self._write(path, number, logs)
        self.saved.append(path)
        if improved:
            self.best, self.best_path = value, path
        if self.name:
            self.deleted += checkpoints.prune_checkpoints(
                self.folder, self.name, number, self.keep_last, protect=[self.best_path])
        if self.verbose:
            logger.info("Epoch %d: saved weights to %s", number, path)

    def _write(self, path, number, logs):
        metrics = {k: float(v) for k, v in logs.items()
                   if isinstance(v, (int, float)) or hasattr(v, "__float__")}
        optimizer = getattr(self.model, "optimizer", None)
        attrs = {"mrcnn_epoch": int(number), "mrcnn_metrics": json.dumps(metrics)}
        if optimizer is not None:
            attrs["mrcnn_iterations"] = int(optimizer.iterations.numpy())  # a MirroredVariable under tf.distribute
        try:
            weights.save_weights(self.model, path, attrs=attrs)
        except OSError as e:
            previous = [p for _, p in checkpoints.run_checkpoints(self.folder, self.name)
                        if os.path.abspath(p) != os.path.abspath(path)] if self.name else []
            try:
                free = f"{shutil.disk_usage(self.folder).free / 2 ** 20:.0f} MB free"
            except OSError:
                free = "free space unknown"
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            raise CheckpointWriteError(
                e.errno,
                f"Could not write the checkpoint of epoch {number} to {self.folder} "
                f"({'the disk is full' if full else type(e).__name__}: {e}; {free}). "
                + (f"The previous checkpoint {previous[-1]} is intact; resume from it with "
                   f"model.load_weights(model.find_last()) once there is room. "
                   if previous else "No earlier checkpoint of this run exists. ")
                + "Free disk space, or keep fewer checkpoints: train(..., keep_last=1, "
                  "save_every=k).") from e


def _loss_logger(log_dir):
    """TensorBoard logs in ``log_dir``, or a CSV file when TensorBoard is not
    installed (TensorFlow no longer depends on it)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        path = os.path.join(log_dir, "history.csv")
        logger.warning("TensorBoard is not installed (pip install tensorboard); the losses "
                       "of every epoch are written to %s instead.", path)
        return keras.callbacks.CSVLogger(path, append=True)
    # write_graph=False: the graph of a custom train step is not the model's.
    return keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=0, write_graph=False,
                                       write_images=False)


def _default_workers():
    # Threads overlap image decoding/augmentation with the train step; TF
    # releases the GIL, so 2 threads keep the step fed on small machines.
    return max(1, min(4, (os.cpu_count() or 1)))


class ProgressEstimate(keras.callbacks.Callback):
    """Prints, after every epoch, how long it took and how long the rest of
    the run should take (a display, next to Keras' per-epoch progress bar):

        Epoch 3/16 done in 26 s (step 0.26 s); about 5.6 min to go, done at 15:42

    first_epoch: the epoch the run starts at (0-based, ``initial_epoch``).
    epochs: the last epoch (Matterport's meaning of ``epochs``).
    steps: training steps per epoch.
    """

    def __init__(self, first_epoch, epochs, steps):
        super().__init__()
        self.first_epoch, self.epochs, self.steps = int(first_epoch), int(epochs), int(steps)
        self.durations = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.monotonic() - self._start
        self.durations.append(seconds)
        # The first epoch includes tracing the train step: leave it out of
        # the estimate once there are others.
        recent = self.durations[1:] or self.durations
        left = (self.epochs - (epoch + 1)) * sum(recent) / len(recent)
        done = datetime.datetime.now() + datetime.timedelta(seconds=left)
        message = (f"Epoch {epoch + 1}/{self.epochs} done in {seconds:.0f} s "
                   f"(step {seconds / max(1, self.steps):.2f} s)")
        if left > 0:
            message += f"; about {left / 60:.1f} min to go, done at {done:%H:%M}"
        print(message, flush=True)


def train(model, train_dataset, val_dataset, learning_rate, epochs: int, layers: str,
          augmentation=None, custom_callbacks: Optional[Sequence] = None,
          no_augmentation_sources: Optional[Sequence[str]] = None, verbose: int = 1,
          workers: Optional[int] = None, use_multiprocessing: bool = False,
          seed: Optional[int] = None,
          optimizer: Optional[keras.optimizers.Optimizer] = None,
          keep_last: Optional[int] = checkpoints.KEEP_LAST, keep_best: bool = False,
          save_every: int = 1) -> keras.callbacks.History:
    """Train the model (Matterport's ``MaskRCNN.train``).

    model: the ``MaskRCNN`` object, built in "training" mode.
    train_dataset, val_dataset: prepared ``utils.Dataset`` objects
        (val_dataset may be None: no validation).
    learning_rate: the learning rate to train with: a float, or a Keras
        ``LearningRateSchedule`` of the global step (counted from epoch 0:
        a run resumed at epoch k starts the schedule at step
        ``k * STEPS_PER_EPOCH``). ``recipes.learning_rate_schedule`` makes
        the warm-up + cosine one of the CPU recipe.
    epochs: the number of the LAST epoch to train. Epochs already trained
        (``model.epoch``, set by ``load_weights`` of a checkpoint) count, so
        this is the total, not the number of epochs of this call.
    layers: which layers to train: a regex, or one of
        heads: the RPN, classifier and mask heads of the network
        all: all the layers
        3+, 4+, 5+: ResNet stage 3 (4, 5) and up, plus the heads
    augmentation: optional albumentations ``Compose`` (or a callable with the
        same ``image=``, ``masks=`` contract) applied to training images.
    custom_callbacks: optional list of ``keras.callbacks.Callback``; they see
        the losses by name in ``logs`` (``rpn_class_loss`` ... and ``loss``).
    no_augmentation_sources: optional list of Dataset sources never augmented.
    verbose: Keras' fit verbosity (1: progress bar; 1 and 2 also print the
        time per epoch and an estimate of the time left).
    workers, use_multiprocessing: data loading (threads by default).
    seed: optional seed of the data order (reproducible runs).
    optimizer: optional Keras optimizer instance used instead of
        Matterport's SGD (``learning_rate``, LEARNING_MOMENTUM and
        GRADIENT_CLIP_NORM are then the optimizer's own); its step count is
        set to ``model.epoch * STEPS_PER_EPOCH`` too.
    keep_last, keep_best, save_every: the checkpoint policy (``Checkpoint``):
        write every ``save_every`` epochs and after the last one, keep the
        ``keep_last`` newest (default 3; None keeps all, as Matterport) and,
        with ``keep_best``, the one of the lowest validation loss (needs
        val_dataset).

    Writes ``model.checkpoint_path`` (``mask_rcnn_<name>_<epoch>.h5``, see
    the policy above) and TensorBoard logs in ``model.log_dir`` (``history.csv``
    there instead when the tensorboard package is not installed); sets
    ``model.epoch`` to the last epoch trained. Returns Keras' History.
    """
    if model.mode != "training":
        raise ValueError("Create model in training mode: MaskRCNN(mode='training', ...).")
    config = model.config
    layer_regex = resolve_layers(layers)
    workers = _default_workers() if workers is None else int(workers)
    # Config -> plain arguments of the data pipeline, once for both sequences.
    spec = pipeline_spec(config)
    # Under a tf.distribute strategy: the global batch (IMAGES_PER_GPU per
    # replica), this worker's share of it, one data seed for all workers, and
    # files written by the chief only (mrcnn.distribute, distribute_data).
    strategy = distribute.model_strategy(model)
    batch_size = distribute.global_batch_size(config, strategy)
    seed = distribute.common_seed(strategy, seed)
    chief = distribute.is_chief(strategy)

    train_seq = data_sequence(strategy, train_dataset, spec, shuffle=True,
                              augmentation=augmentation,
                              no_augmentation_sources=no_augmentation_sources,
                              steps=spec.steps, seed=seed, workers=workers,
                              use_multiprocessing=use_multiprocessing, batch_size=batch_size)
    train_seq.epoch = model.epoch
    val_seq = None
    if val_dataset is not None:
        val_seq = data_sequence(strategy, val_dataset, spec, shuffle=True,
                                steps=config.VALIDATION_STEPS, seed=seed, workers=workers,
                                use_multiprocessing=use_multiprocessing, batch_size=batch_size)

    if keep_best and val_dataset is None:
        raise ValueError("train(keep_best=True) keeps the checkpoint of the lowest validation "
                         "loss: pass a val_dataset, or keep_best=False.")
    inputs, callbacks = fit_inputs(strategy, model.keras_model, train_seq, val_seq,
                                   model.epoch, workers=workers)
    if chief:
        os.makedirs(model.log_dir, exist_ok=True)
        checkpoint = Checkpoint(model.checkpoint_path, verbose=0, keep_last=keep_last,
                                keep_best=keep_best, save_every=save_every)
        callbacks += [_loss_logger(model.log_dir), checkpoint]
        if verbose:
            callbacks.append(ProgressEstimate(model.epoch, epochs, spec.steps))
    else:
        verbose = 0
    if custom_callbacks:
        callbacks += list(custom_callbacks)

    # Train
    initial_step = model.epoch * spec.steps
    if optimizer is not None:
        logger.info("Training with the given %s optimizer.", type(optimizer).__name__)
    logger.info("Starting at epoch %d (step %d). LR=%s", model.epoch, initial_step,
                learning_rate)
    logger.info("Checkpoint Path: %s", model.checkpoint_path)
    selected = set_trainable(model.keras_model, layer_regex, verbose=0)
    logger.info("Training %d weight layers matching %r.", len(selected), layers)
    compile_model(model.keras_model, learning_rate, config.LEARNING_MOMENTUM,
                  config.GRADIENT_CLIP_NORM, optimizer=optimizer, initial_step=initial_step)

    if model.epoch >= epochs:
        logger.warning("train(epochs=%d): the model has already trained %d epochs; nothing "
                       "to do (epochs is the final epoch number, not a count).",
                       epochs, model.epoch)
    history = model.keras_model.fit(
        # x, validation_data (+ steps with several workers); DataSequence
        # shuffles, fit's shuffle would reorder its batches again
        **inputs, shuffle=False,
        initial_epoch=model.epoch,
        epochs=epochs,
        callbacks=callbacks,
        verbose=verbose,
    )
    model.epoch = max(model.epoch, epochs)
    problems = train_seq.stats + (val_seq.stats if val_seq is not None else collections.Counter())
    if problems:
        logger.warning("Ground-truth problems met while training: %s (see the warnings "
                       "above; mrcnn.pipeline explains each).", dict(problems))
    model.data_stats = dict(problems)
    return history
