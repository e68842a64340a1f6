"""Training: the train step, trainable-layer presets, the data pipeline, train().

``MaskRCNN.train()`` (Matterport's API) is a thin wrapper around :func:`train`
here. The pieces, in the order training uses them:

* :data:`LAYER_PRESETS` and :func:`set_trainable`: which layers learn
  (``layers="heads"``, ``"3+"``, ``"4+"``, ``"5+"``, ``"all"`` or a regex,
  matched against layer names with ``re.fullmatch`` as in Matterport).
* :class:`MaskRCNNTrainingModel`: the Keras model that
  ``build_training_model`` returns. Its ``train_step`` sums the five loss
  outputs weighted by ``LOSS_WEIGHTS`` plus Matterport's L2 weight decay, and
  reports every loss under its Matterport name (progress bar, History,
  TensorBoard) plus the total as ``loss``.
* :func:`compile_model`: SGD with momentum and per-tensor gradient norm
  clipping (``GRADIENT_CLIP_NORM``), as Matterport.
* :class:`DataSequence`: a ``keras.utils.PyDataset`` (threads, no pickling)
  that turns a ``Dataset`` into padded training batches.
* :class:`Checkpoint`: per-epoch checkpoints in Matterport's Keras-2 HDF5
  layout and file names, written atomically.
* :func:`train`: Matterport's ``train()`` semantics (``epochs`` is the final
  epoch; a second call continues where the first stopped).

Ground truth that cannot be trained on is handled, never crashed on. Most of
it is done by ``data.load_image_gt``; the rest here (counted in
``DataSequence.stats`` and logged once per image):

===============================================  ====================================
case                                             what happens
===============================================  ====================================
image without instances (or none left)           skipped, counted ("no_instances")
instance with an empty mask (zero area)          dropped by load_image_gt (warning)
instance box of zero width or height             dropped, counted ("degenerate_box")
                                                 (boxes come from masks, so only a
                                                 custom load_image_gt can give one)
a one-pixel-wide or -high instance               trained on: its normalized box has
                                                 zero width, it is never a positive
                                                 ROI (IoU 0), the RPN still learns it
more instances than MAX_GT_INSTANCES             load_image_gt keeps the first ones
                                                 (warning)
class id 0, or >= NUM_CLASSES                    ``ValueError`` naming the image, the
                                                 ids and the valid range
image of another size than IMAGE_SHAPE           ``ValueError`` naming the image and
                                                 the resize settings to use
an image file that cannot be read                logged with the image reference and
                                                 skipped ("load_error"); the 6th such
                                                 error is raised (Matterport's rule)
===============================================  ====================================

Negative class ids are crowd regions (COCO ``iscrowd``) and are kept: the
detection targets never use them as positives or negatives.
"""

import collections
import logging
import os
import re
import threading

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger("mrcnn")

__all__ = ["LAYER_PRESETS", "LOSS_NAMES", "MaskRCNNTrainingModel", "compile_model",
           "set_trainable", "DataSequence", "Checkpoint", "train", "resolve_layers"]

# The five losses in Matterport's order.
LOSS_NAMES = ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss",
              "mrcnn_bbox_loss", "mrcnn_mask_loss")

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

# Matterport stopped after this many images that failed to load.
MAX_LOAD_ERRORS = 5


def resolve_layers(layers):
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
#  The training model
############################################################

class MaskRCNNTrainingModel(keras.Model):
    """The training graph as a ``keras.Model`` with Mask R-CNN's train step.

    Built functionally (``MaskRCNNTrainingModel(inputs, outputs, ...)``, see
    ``mrcnn.graph.training_graph.build_training_model``); the five outputs
    named after LOSS_NAMES are scalar losses.

    Args (besides Keras' ``inputs``, ``outputs``, ``name``):
        loss_weights: {loss name: weight}, ``Config.LOSS_WEIGHTS`` (missing
            names weigh 1, as Matterport's ``.get(name, 1.)``).
        weight_decay: ``Config.WEIGHT_DECAY``.

    Each step minimizes::

        sum_l  w_l * loss_l
        + weight_decay * sum_{trainable w, no gamma/beta}  sum(w**2) / size(w)

    which is Matterport's compile(): Keras' ``l2(WEIGHT_DECAY)(w)`` divided by
    the number of elements, BatchNorm gammas and betas excluded. Metrics, per
    batch averaged over the epoch: ``loss`` (the total, decay included) and
    each weighted loss by name; validation adds the ``val_`` prefix.
    """

    def __init__(self, *args, loss_weights=None, weight_decay=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        loss_weights = dict(loss_weights or {})
        unknown = set(loss_weights) - set(LOSS_NAMES)
        if unknown:
            raise ValueError(f"LOSS_WEIGHTS has unknown names {sorted(unknown)}; the losses "
                             f"are {', '.join(LOSS_NAMES)}.")
        self.loss_weights = {n: float(loss_weights.get(n, 1.0)) for n in LOSS_NAMES}
        self.weight_decay = float(weight_decay)
        names = [t._keras_history.operation.name for t in self.outputs]
        missing = [n for n in LOSS_NAMES if n not in names]
        if missing:
            raise ValueError(f"MaskRCNNTrainingModel: no output named {missing}; the outputs "
                             f"are {names}.")
        # Position of each loss among the outputs.
        self._loss_index = {n: names.index(n) for n in LOSS_NAMES}
        self._trackers = {n: keras.metrics.Mean(name=n) for n in ("loss",) + LOSS_NAMES}

    @property
    def metrics(self):
        # Keras resets these at the start of each epoch and of evaluate().
        return list(self._trackers.values())

    def regularization_loss(self):
        """Matterport's L2 weight decay on the current trainable weights ([] float32)."""
        terms = [tf.reduce_sum(tf.square(w)) / tf.cast(tf.size(w), tf.float32)
                 for w in self.trainable_variables
                 if "gamma" not in w.path and "beta" not in w.path]
        if not terms or self.weight_decay == 0.0:
            return tf.constant(0.0)
        return self.weight_decay * tf.add_n(terms)

    def compute_losses(self, outputs):
        """{name: weighted loss} for the five losses, and "loss", the total
        including weight decay. ``outputs``: the model's output list."""
        losses = {n: tf.reduce_mean(outputs[self._loss_index[n]]) * self.loss_weights[n]
                  for n in LOSS_NAMES}
        losses["loss"] = tf.add_n(list(losses.values())) + self.regularization_loss()
        return losses

    def _update_trackers(self, losses):
        for name, value in losses.items():
            self._trackers[name].update_state(value)
        return {name: t.result() for name, t in self._trackers.items()}

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            outputs = self(x, training=True)
            losses = self.compute_losses(outputs)
        variables = self.trainable_variables
        grads = tape.gradient(losses["loss"], variables)
        # Weights that do not reach any loss (none in Mask R-CNN, but a
        # custom backbone may have some) get no gradient.
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return self._update_trackers(losses)

    def test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        outputs = self(x, training=False)
        return self._update_trackers(self.compute_losses(outputs))


@keras.saving.register_keras_serializable(package="mrcnn")
class ClippedMomentumSGD(keras.optimizers.SGD):
    """Keras' SGD with momentum and per-tensor gradient norm clipping, the
    update of each weight done by one fused TensorFlow kernel.

    Same update as ``keras.optimizers.SGD(learning_rate, momentum,
    clipnorm=clip_norm)`` (Matterport's optimizer): for each weight ``w``
    with gradient ``g`` and momentum buffer ``m``::

        g <- g * clip_norm / max(||g||, clip_norm)
        m <- momentum * m - learning_rate * g
        w <- w + m

    Keras does this in about nine passes over every weight tensor (four for
    the clipping, five for the update). Here the clipping factor is a scalar
    folded into the learning rate, and ``ResourceApplyKerasMomentum`` reads
    ``w``, ``m`` and ``g`` once and writes ``w`` and ``m`` once: two passes
    instead of nine over the 64 M weights of ResNet-101 at every step. The
    results are Keras' up to float rounding. Other backends, and
    ``momentum == 0``, take the Keras path.

    clip_norm: GRADIENT_CLIP_NORM, or None for no clipping.
    """

    def __init__(self, learning_rate=0.001, momentum=0.9, clip_norm=None, **kwargs):
        for key in ("clipnorm", "global_clipnorm", "clipvalue"):
            if kwargs.get(key) is not None:
                raise ValueError(f"ClippedMomentumSGD clips with clip_norm; got {key}.")
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        self.clip_norm = None if clip_norm is None else float(clip_norm)

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf
        if keras.backend.backend() != "tensorflow" or self.momentum == 0:
            if self.clip_norm is not None:
                gradient = tf.clip_by_norm(gradient, self.clip_norm)
            return super().update_step(gradient, variable, learning_rate)
        lr = tf.cast(learning_rate, variable.dtype)
        gradient = tf.cast(gradient, variable.dtype)
        if self.clip_norm is not None:
            # ||g|| from l2_loss (sum(g^2) / 2, one pass). A zero gradient
            # gives factor 1, as tf.clip_by_norm.
            clip = tf.constant(self.clip_norm, variable.dtype)
            norm = tf.sqrt(2.0 * tf.nn.l2_loss(gradient))
            lr = lr * (clip / tf.maximum(norm, clip))
        m = self.momentums[self._get_variable_index(variable)]
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=m.value.handle, lr=lr, grad=gradient,
            momentum=tf.constant(self.momentum, variable.dtype),
            use_locking=False, use_nesterov=bool(self.nesterov))

    def get_config(self):
        config = super().get_config()
        config["clip_norm"] = self.clip_norm
        return config


def compile_model(keras_model, learning_rate, momentum, gradient_clip_norm=5.0):
    """Matterport's compile(): SGD with momentum and gradient norm clipping.

    keras_model: a MaskRCNNTrainingModel.
    learning_rate, momentum: SGD settings (LEARNING_RATE, LEARNING_MOMENTUM).
    gradient_clip_norm: GRADIENT_CLIP_NORM; as Keras 2's ``clipnorm``, each
        gradient tensor is clipped to this norm on its own.

    Call it again after :func:`set_trainable`: the train step is traced with
    the trainable weights of the moment. Like Matterport, every call starts
    from a fresh optimizer state (zero momentum). When the trainable weights,
    momentum and clipping are those of the previous call, the optimizer is
    reset and given the new learning rate instead of being replaced, which
    keeps the traced train step (tracing takes a while on a CPU).
    """
    if not isinstance(keras_model, MaskRCNNTrainingModel):
        raise TypeError("compile_model() needs the training model "
                        "(MaskRCNN(mode='training', ...).keras_model).")
    clipnorm = None if gradient_clip_norm is None else float(gradient_clip_norm)
    key = (tuple(id(v) for v in keras_model.trainable_variables), float(momentum), clipnorm)
    optimizer = getattr(keras_model, "optimizer", None)
    if optimizer is not None and getattr(keras_model, "_mrcnn_compile_key", None) == key:
        lr = optimizer._learning_rate
        for v in optimizer.variables:
            if v is not lr:
                v.assign(keras.ops.zeros(v.shape, v.dtype))  # iterations, momentums
        optimizer.learning_rate = float(learning_rate)
        return keras_model
    optimizer = ClippedMomentumSGD(learning_rate=float(learning_rate),
                                   momentum=float(momentum), clip_norm=clipnorm)
    # No XLA: NMS, crop_and_resize and the dynamic sampling do not compile.
    keras_model.compile(optimizer=optimizer, jit_compile=False)
    keras_model._mrcnn_compile_key = key
    return keras_model


############################################################
#  Trainable layers
############################################################

def set_trainable(keras_model, layer_regex, verbose=1, indent=0):
    """Make the layers whose names fully match ``layer_regex`` trainable and
    freeze all other weight-carrying layers (Matterport's set_trainable).

    keras_model: the Keras model (nested models such as ``rpn_model`` are
        searched too, with the same regex on their own layers).
    layer_regex: a regex or a preset name from LAYER_PRESETS.
    verbose: > 0 prints the trainable layers.

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
        _log("Selecting layers to train")
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
                _log("{}{:20}   ({})".format(" " * indent, layer.name,
                                             layer.__class__.__name__))
    return selected


def _log(text):
    print(text)


############################################################
#  Data pipeline
############################################################

class DataSequence(keras.utils.PyDataset):
    """Training batches from a ``utils.Dataset``, as a Keras PyDataset.

    Matterport's ``data_generator`` as a PyDataset: images are loaded with
    ``data.load_image_gt`` (augmented unless their source is in
    ``no_augmentation_sources``), RPN targets built with
    ``data.build_rpn_targets``, ground truth zero-padded to MAX_GT_INSTANCES,
    so every batch has the same shapes and the train step is traced once.

    Args:
        dataset: a prepared ``utils.Dataset``.
        config: the training Config.
        shuffle: shuffle the image order at every pass over the data set.
        augmentation: albumentations ``Compose`` or callable (see data.py), or None.
        no_augmentation_sources: sources whose images are never augmented.
        steps: batches per Keras epoch (``__len__``); default STEPS_PER_EPOCH.
        batch_size: default config.BATCH_SIZE.
        seed: seed of the shuffling (None: random).
        workers, use_multiprocessing, max_queue_size: PyDataset's. Threads by
            default, so nothing needs pickling.

    Images are read as one endless stream: pass k over the data set is a
    permutation seeded by (seed, k), and batch ``i`` of Keras epoch ``e``
    starts at stream position ``(e * steps + i) * batch_size``. That makes the
    images of a batch a function of its index (the worker threads may ask in
    any order; the random anchor sampling of ``build_rpn_targets`` and the
    augmentation are not seeded by it), and an epoch need not be a whole pass
    over the data. An image that
    is skipped (see the module docstring) is replaced by the next images of
    the stream.

    ``__getitem__`` returns ``(inputs,)`` with ``inputs`` a dict keyed by the
    training model's input names:

    * input_image: [B, H, W, C] float32, molded (mean pixel subtracted)
    * input_image_meta: [B, IMAGE_META_SIZE] float32
    * input_rpn_match: [B, A, 1] int32
    * input_rpn_bbox: [B, RPN_TRAIN_ANCHORS_PER_IMAGE, 4] float32
    * input_gt_class_ids: [B, G] int32, zero-padded
    * input_gt_boxes: [B, G, (y1, x1, y2, x2)] float32 pixels, zero-padded
    * input_gt_masks: [B, mh, mw, G] bool, zero-padded
    * input_roi: [B, POST_NMS_ROIS_TRAINING, 4] int32 (USE_RPN_ROIS False only)

    ``stats``: a Counter of the ground-truth problems met (module docstring).
    """

    def __init__(self, dataset, config, shuffle=True, augmentation=None,
                 no_augmentation_sources=None, steps=None, batch_size=None, seed=None,
                 workers=1, use_multiprocessing=False, max_queue_size=10):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing,
                         max_queue_size=max_queue_size)
        from mrcnn.graph.training_graph import anchors_layer
        self.dataset = dataset
        self.config = config
        self.shuffle = bool(shuffle)
        self.augmentation = augmentation
        self.no_augmentation_sources = set(no_augmentation_sources or [])
        self.steps = int(steps if steps is not None else config.STEPS_PER_EPOCH)
        self.batch_size = int(batch_size if batch_size is not None else config.BATCH_SIZE)
        self.seed = int(np.random.SeedSequence().entropy % (2 ** 31)) if seed is None else int(seed)
        self.epoch = 0
        self.image_ids = np.asarray(dataset.image_ids)
        if len(self.image_ids) == 0:
            raise ValueError("The training Dataset has no images; call add_image() and "
                             "prepare() first.")
        num_classes = getattr(dataset, "num_classes", config.NUM_CLASSES)
        if num_classes != config.NUM_CLASSES:
            raise ValueError(
                f"The {type(dataset).__name__} has {num_classes} classes (background "
                f"included) but {type(config).__name__}.NUM_CLASSES is {config.NUM_CLASSES}; "
                f"they must be equal (the image meta and the heads have one slot per class).")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps ({self.steps}) and batch_size ({self.batch_size}) must "
                             f"be >= 1.")
        # Anchors in pixels, for the RPN targets: [A, (y1, x1, y2, x2)]
        self.anchors = anchors_layer(config).pixel_array()
        self.stats = collections.Counter()
        self._warned = set()
        self._lock = threading.Lock()
        self._orders = {}

    # -- stream of image ids ------------------------------------------------

    def _order(self, k):
        """Image ids of pass ``k`` over the data set (cached, thread-safe)."""
        with self._lock:
            order = self._orders.get(k)
            if order is None:
                if self.shuffle:
                    rng = np.random.default_rng([self.seed, k])
                    order = rng.permutation(self.image_ids)
                else:
                    order = self.image_ids
                if len(self._orders) > 4:  # keep memory flat
                    self._orders.pop(min(self._orders))
                self._orders[k] = order
            return order

    def _image_at(self, position):
        n = len(self.image_ids)
        return int(self._order(position // n)[position % n])

    def __len__(self):
        return self.steps

    def on_epoch_end(self):
        self.epoch += 1

    # -- one image ----------------------------------------------------------

    def _note(self, kind, image_id, message, count=1):
        """Count a ground-truth problem; log it once per (kind, image)."""
        with self._lock:
            self.stats[kind] += count
            total = self.stats[kind]
            first = (kind, image_id) not in self._warned
            self._warned.add((kind, image_id))
        if first:
            logger.warning("Image %s (%s): %s (%s: %d so far).", image_id,
                           self._reference(image_id), message, kind, total)

    def _reference(self, image_id):
        try:
            ref = self.dataset.image_reference(image_id)
        except Exception:  # noqa: BLE001 - a broken image_reference must not hide the error
            ref = None
        info = self.dataset.image_info[image_id]
        return f"source {info.get('source')!r}, {ref or info.get('path') or info.get('id')}"

    def load(self, image_id):
        """Ground truth of one image, cleaned; None when the image is skipped.

        Returns (image, image_meta, rpn_match, rpn_bbox, class_ids, boxes, masks)
        with class_ids [n] int32, boxes [n, 4] int pixels, masks [mh, mw, n]
        bool, n <= G. Raises ValueError naming the image for data the model
        cannot train on (see the module docstring).
        """
        from mrcnn import data
        config = self.config
        source = self.dataset.image_info[image_id].get("source")
        augmentation = None if source in self.no_augmentation_sources else self.augmentation
        image, image_meta, class_ids, boxes, masks = data.load_image_gt(
            self.dataset, config, image_id, augmentation=augmentation,
            use_mini_mask=config.USE_MINI_MASK)

        expected = tuple(int(v) for v in config.IMAGE_SHAPE)
        if tuple(image.shape) != expected:
            raise ValueError(
                f"Image {image_id} ({self._reference(image_id)}) is {image.shape[:2]} after "
                f"resizing, but the training graph is built for IMAGE_SHAPE {expected[:2]}. "
                f"Train with IMAGE_RESIZE_MODE 'square' or 'crop' so every image gets the "
                f"same size (mode {config.IMAGE_RESIZE_MODE!r} gave another size).")
        class_ids = np.asarray(class_ids).astype(np.int32).reshape(-1)
        boxes = np.asarray(boxes).reshape(-1, 4)
        bad = class_ids[class_ids >= config.NUM_CLASSES]
        if bad.size:
            raise ValueError(
                f"Image {image_id} ({self._reference(image_id)}) has instances of class id "
                f"{sorted(set(bad.tolist()))}, but NUM_CLASSES is {config.NUM_CLASSES} "
                f"(ids 1..{config.NUM_CLASSES - 1}). Raise NUM_CLASSES in the Config or fix "
                f"the dataset's load_mask().")

        # load_image_gt already dropped empty masks and kept at most
        # MAX_GT_INSTANCES. Boxes come from the masks, so they are at least
        # one pixel wide; this is a safety net for custom load_image_gt's.
        degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if degenerate.any():
            self._note("degenerate_box", image_id,
                       f"{int(degenerate.sum())} instance(s) whose box has zero width or "
                       f"height dropped", int(degenerate.sum()))
            keep = ~degenerate
            class_ids, boxes, masks = class_ids[keep], boxes[keep], masks[..., keep]

        # Skip images that have no instances. This can happen in cases where
        # we train on a subset of classes and the image doesn't have any of
        # the classes we care about (Matterport).
        if not np.any(class_ids > 0):
            self._note("no_instances", image_id, "no instances to train on; image skipped")
            return None

        rpn_match, rpn_bbox = data.build_rpn_targets(image.shape, self.anchors, class_ids,
                                                     boxes, config)
        return image, image_meta, rpn_match, rpn_bbox, class_ids, boxes, masks

    # -- one batch ----------------------------------------------------------

    def __getitem__(self, index):
        from mrcnn import data
        from mrcnn.meta import mold_image
        config = self.config
        B, G = self.batch_size, int(config.MAX_GT_INSTANCES)
        position = ((self.epoch * self.steps) + int(index)) * B
        items = []
        # Try at most every image of the data set once per missing slot.
        budget = B + len(self.image_ids)
        while len(items) < B:
            if budget == 0:
                raise ValueError(
                    f"Every image tried for batch {index} was skipped ({dict(self.stats)}); "
                    f"the training data set has no usable instances. Check load_mask() and "
                    f"the class ids.")
            budget -= 1
            image_id = self._image_at(position)
            position += 1
            try:
                item = self.load(image_id)
            except (ValueError, TypeError):
                # Clear errors naming the image (class id out of range, masks
                # of the wrong size, ...): the data set or config must change.
                raise
            except Exception as e:  # noqa: BLE001 - unreadable file: Matterport skipped it
                item = self._load_error(image_id, e)
            if item is not None:
                items.append(item)

        mh, mw = (config.MINI_MASK_SHAPE if config.USE_MINI_MASK else config.IMAGE_SHAPE[:2])
        batch = {
            "input_image": np.zeros((B,) + tuple(int(v) for v in config.IMAGE_SHAPE), np.float32),
            "input_image_meta": np.zeros((B, int(config.IMAGE_META_SIZE)), np.float32),
            "input_rpn_match": np.zeros((B, len(self.anchors), 1), np.int32),
            "input_rpn_bbox": np.zeros((B, int(config.RPN_TRAIN_ANCHORS_PER_IMAGE), 4),
                                       np.float32),
            "input_gt_class_ids": np.zeros((B, G), np.int32),
            "input_gt_boxes": np.zeros((B, G, 4), np.float32),
            "input_gt_masks": np.zeros((B, int(mh), int(mw), G), bool),
        }
        if not config.USE_RPN_ROIS:
            batch["input_roi"] = np.zeros((B, int(config.POST_NMS_ROIS_TRAINING), 4), np.int32)
        for b, (image, meta, rpn_match, rpn_bbox, class_ids, boxes, masks) in enumerate(items):
            n = len(class_ids)
            batch["input_image"][b] = mold_image(image.astype(np.float32), config)
            batch["input_image_meta"][b] = meta
            batch["input_rpn_match"][b, :, 0] = rpn_match
            batch["input_rpn_bbox"][b] = rpn_bbox
            batch["input_gt_class_ids"][b, :n] = class_ids
            batch["input_gt_boxes"][b, :n] = boxes
            batch["input_gt_masks"][b, :, :, :n] = masks
            if not config.USE_RPN_ROIS:
                batch["input_roi"][b] = data.generate_random_rois(
                    image.shape, int(config.POST_NMS_ROIS_TRAINING), class_ids, boxes)
        return (batch,)

    def _load_error(self, image_id, error):
        """Log and count an image that failed to load; raise after too many."""
        with self._lock:
            self.stats["load_error"] += 1
            count = self.stats["load_error"]
        logger.error("Error processing image %s (%s): %s: %s", image_id,
                     self._reference(image_id), type(error).__name__, error)
        if count > MAX_LOAD_ERRORS:
            raise RuntimeError(
                f"{count} images failed to load (the last: image {image_id}, "
                f"{self._reference(image_id)}); stopping. See the errors logged above.") \
                from error
        return None


############################################################
#  Callbacks and train()
############################################################

class Checkpoint(keras.callbacks.Callback):
    """Save the weights at the end of every epoch, Matterport's way.

    filepath: a path with an ``{epoch:04d}`` placeholder
        (``MaskRCNN.checkpoint_path``); ``epoch`` is 1-based, so the file
        written after the first epoch ends in ``_0001.h5``.

    Files use the Keras-2 HDF5 layout (``mrcnn.weights.save_weights``) so
    Matterport code can read them, and are written atomically: a crash
    mid-write never leaves a truncated checkpoint that ``find_last()``
    would pick up.
    """

    def __init__(self, filepath, verbose=0):
        super().__init__()
        self.filepath = str(filepath)
        self.verbose = verbose
        self.saved = []

    def on_epoch_end(self, epoch, logs=None):
        from mrcnn import weights
        path = self.filepath.format(epoch=epoch + 1)
        weights.save_weights(self.model, path)
        self.saved.append(path)
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: saved weights to {path}")


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


def train(model, train_dataset, val_dataset, learning_rate, epochs, layers,
          augmentation=None, custom_callbacks=None, no_augmentation_sources=None,
          verbose=1, workers=None, use_multiprocessing=False, seed=None):
    """Train the model (Matterport's ``MaskRCNN.train``).

    model: the ``MaskRCNN`` object, built in "training" mode.
    train_dataset, val_dataset: prepared ``utils.Dataset`` objects
        (val_dataset may be None: no validation).
    learning_rate: the learning rate to train with.
    epochs: the number of the LAST epoch to train. Epochs already trained
        (``model.epoch``, set by ``load_weights`` of a checkpoint) count, so
        this is the total, not the number of epochs of this call.
    layers: which layers to train: a regex, or one of
        heads: the RPN, classifier and mask heads of the network
        all: all the layers
        3+, 4+, 5+: ResNet stage 3 (4, 5) and up, plus the heads
    augmentation: optional albumentations ``Compose`` (or a callable with the
        same ``image=``, ``masks=`` contract) applied to training images.
    custom_callbacks: optional list of ``keras.callbacks.Callback``.
    no_augmentation_sources: optional list of Dataset sources never augmented.
    verbose: Keras' fit verbosity (1: progress bar).
    workers, use_multiprocessing: data loading (threads by default).
    seed: optional seed of the data order (reproducible runs).

    Writes ``model.checkpoint_path`` (one ``mask_rcnn_<name>_<epoch>.h5``
    per epoch) and TensorBoard logs in ``model.log_dir`` (``history.csv``
    there instead when the tensorboard package is not installed); sets
    ``model.epoch`` to the last epoch trained. Returns Keras' History.
    """
    if model.mode != "training":
        raise ValueError("Create model in training mode: MaskRCNN(mode='training', ...).")
    config = model.config
    layer_regex = resolve_layers(layers)
    workers = _default_workers() if workers is None else int(workers)

    train_seq = DataSequence(train_dataset, config, shuffle=True, augmentation=augmentation,
                             no_augmentation_sources=no_augmentation_sources,
                             steps=config.STEPS_PER_EPOCH, seed=seed, workers=workers,
                             use_multiprocessing=use_multiprocessing)
    train_seq.epoch = model.epoch
    val_seq = None
    if val_dataset is not None:
        val_seq = DataSequence(val_dataset, config, shuffle=True,
                               steps=config.VALIDATION_STEPS, seed=seed, workers=workers,
                               use_multiprocessing=use_multiprocessing)

    os.makedirs(model.log_dir, exist_ok=True)
    callbacks = [_loss_logger(model.log_dir), Checkpoint(model.checkpoint_path, verbose=0)]
    if custom_callbacks:
        callbacks += list(custom_callbacks)

    # Train
    _log("\nStarting at epoch {}. LR={}\n".format(model.epoch, learning_rate))
    _log("Checkpoint Path: {}".format(model.checkpoint_path))
    set_trainable(model.keras_model, layer_regex, verbose=verbose)
    compile_model(model.keras_model, learning_rate, config.LEARNING_MOMENTUM,
                  config.GRADIENT_CLIP_NORM)

    if model.epoch >= epochs:
        logger.warning("train(epochs=%d): the model has already trained %d epochs; nothing "
                       "to do (epochs is the final epoch number, not a count).",
                       epochs, model.epoch)
    history = model.keras_model.fit(
        train_seq,
        initial_epoch=model.epoch,
        epochs=epochs,
        callbacks=callbacks,
        validation_data=val_seq,
        verbose=verbose,
    )
    model.epoch = max(model.epoch, epochs)
    problems = train_seq.stats + (val_seq.stats if val_seq is not None else collections.Counter())
    if problems:
        logger.warning("Ground-truth problems met while training: %s (see the warnings "
                       "above; mrcnn.training explains each).", dict(problems))
    model.data_stats = dict(problems)
    return history
