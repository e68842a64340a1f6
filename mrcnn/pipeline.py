"""The training data pipeline: a ``Dataset`` -> padded training batches.

* :class:`DataSequence`: a ``keras.utils.PyDataset`` (worker threads, no
  pickling of the dataset) that ``train()`` feeds to ``fit``. Every batch has
  the same shapes (ground truth padded to MAX_GT_INSTANCES), so the train
  step is traced once.
* :func:`data_generator`: Matterport's Python generator, kept for old code.

Both load images with ``data.load_ground_truth`` and build the RPN targets
with ``targets.rpn_targets`` on the anchors of ``anchors.AnchorSpec``, the
ones the graph uses.

Ground truth that cannot be trained on is handled, never crashed on. Most of
it is done by ``data.load_ground_truth``; the rest here (counted in
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
import math
import threading

import keras
import numpy as np

from mrcnn.arguments import PipelineSpec, detection_target_spec, pipeline_spec
from mrcnn.data import describe_image, load_ground_truth
from mrcnn.targets import generate_random_rois, roi_targets, rpn_targets
from mrcnn.transform import mold_image

__all__ = ["DataSequence", "data_generator", "MAX_LOAD_ERRORS"]

logger = logging.getLogger(__name__)

# Matterport stopped after this many images that failed to load.
MAX_LOAD_ERRORS = 5


class _NothingToTrainError(ValueError):
    """A whole pass over the dataset found no image with instances."""


############################################################
#  The PyDataset of train()
############################################################

class DataSequence(keras.utils.PyDataset):
    """Training batches from a ``utils.Dataset``, as a Keras PyDataset.

    Matterport's ``data_generator`` as a PyDataset: images are loaded with
    ``data.load_ground_truth`` (augmented unless their source is in
    ``no_augmentation_sources``), RPN targets built with
    ``targets.rpn_targets``, ground truth zero-padded to MAX_GT_INSTANCES,
    so every batch has the same shapes and the train step is traced once.

    Args:
        dataset: a prepared ``utils.Dataset``.
        config: the training Config, or a ``PipelineSpec``
            (``arguments.pipeline_spec(config)``: what is read from it).
        shuffle: shuffle the image order at every pass over the data set.
        augmentation: albumentations ``Compose`` or callable (see data.py), or None.
        no_augmentation_sources: sources whose images are never augmented.
        steps: batches per Keras epoch (``__len__``); default STEPS_PER_EPOCH.
        batch_size: default BATCH_SIZE.
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
        spec = config if isinstance(config, PipelineSpec) else pipeline_spec(config)
        self.dataset = dataset
        self.spec = spec
        self.shuffle = bool(shuffle)
        self.augmentation = augmentation
        self.no_augmentation_sources = set(no_augmentation_sources or [])
        self.steps = int(steps if steps is not None else spec.steps)
        self.batch_size = int(batch_size if batch_size is not None else spec.batch_size)
        self.seed = int(np.random.SeedSequence().entropy % (2 ** 31)) if seed is None else int(seed)
        self.epoch = 0
        self.image_ids = np.asarray(dataset.image_ids)
        if len(self.image_ids) == 0:
            raise ValueError("The training Dataset has no images; call add_image() and "
                             "prepare() first.")
        num_classes = getattr(dataset, "num_classes", spec.num_classes)
        if num_classes != spec.num_classes:
            raise ValueError(
                f"The {type(dataset).__name__} has {num_classes} classes (background "
                f"included) but the config's NUM_CLASSES is {spec.num_classes}; they must "
                f"be equal (the image meta and the heads have one slot per class).")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps ({self.steps}) and batch_size ({self.batch_size}) must "
                             f"be >= 1.")
        # Anchors in pixels, for the RPN targets: [A, (y1, x1, y2, x2)]
        self.anchors = spec.anchors.pixel_anchors(spec.image_shape)
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
        spec = self.spec
        source = self.dataset.image_info[image_id].get("source")
        augmentation = None if source in self.no_augmentation_sources else self.augmentation
        image, image_meta, class_ids, boxes, masks = load_ground_truth(
            self.dataset, image_id, spec.ground_truth, augmentation=augmentation)

        expected = tuple(spec.image_shape)
        if tuple(image.shape) != expected:
            raise ValueError(
                f"Image {image_id} ({self._reference(image_id)}) is {image.shape[:2]} after "
                f"resizing, but the training graph is built for IMAGE_SHAPE {expected[:2]}. "
                f"Train with IMAGE_RESIZE_MODE 'square' or 'crop' so every image gets the "
                f"same size (mode {spec.ground_truth.image.mode!r} gave another size).")
        class_ids = np.asarray(class_ids).astype(np.int32).reshape(-1)
        boxes = np.asarray(boxes).reshape(-1, 4)
        bad = class_ids[class_ids >= spec.num_classes]
        if bad.size:
            raise ValueError(
                f"Image {image_id} ({self._reference(image_id)}) has instances of class id "
                f"{sorted(set(bad.tolist()))}, but NUM_CLASSES is {spec.num_classes} "
                f"(ids 1..{spec.num_classes - 1}). Raise NUM_CLASSES in the Config or fix "
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

        rpn_match, rpn_bbox = rpn_targets(self.anchors, class_ids, boxes, spec.rpn_targets)
        return image, image_meta, rpn_match, rpn_bbox, class_ids, boxes, masks

    # -- one batch ----------------------------------------------------------

    def __getitem__(self, index):
        spec = self.spec
        gt = spec.ground_truth
        B, G = self.batch_size, int(gt.max_instances)
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

        mh, mw = gt.mini_mask_shape if gt.use_mini_mask else spec.image_shape[:2]
        batch = {
            "input_image": np.zeros((B,) + tuple(spec.image_shape), np.float32),
            "input_image_meta": np.zeros((B, spec.image_meta_size), np.float32),
            "input_rpn_match": np.zeros((B, len(self.anchors), 1), np.int32),
            "input_rpn_bbox": np.zeros((B, spec.rpn_targets.anchors_per_image, 4), np.float32),
            "input_gt_class_ids": np.zeros((B, G), np.int32),
            "input_gt_boxes": np.zeros((B, G, 4), np.float32),
            "input_gt_masks": np.zeros((B, int(mh), int(mw), G), bool),
        }
        if spec.random_rois:
            batch["input_roi"] = np.zeros((B, spec.random_rois, 4), np.int32)
        for b, (image, meta, rpn_match, rpn_bbox, class_ids, boxes, masks) in enumerate(items):
            n = len(class_ids)
            batch["input_image"][b] = mold_image(image.astype(np.float32), gt.image)
            batch["input_image_meta"][b] = meta
            batch["input_rpn_match"][b, :, 0] = rpn_match
            batch["input_rpn_bbox"][b] = rpn_bbox
            batch["input_gt_class_ids"][b, :n] = class_ids
            batch["input_gt_boxes"][b, :n] = boxes
            batch["input_gt_masks"][b, :, :, :n] = masks
            if spec.random_rois:
                batch["input_roi"][b] = generate_random_rois(image.shape, spec.random_rois,
                                                             class_ids, boxes)
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
#  Matterport's data generator
############################################################

def data_generator(dataset, config, shuffle=True, augment=False, augmentation=None,
                   random_rois=0, batch_size=1, detection_targets=False,
                   no_augmentation_sources=None):
    """Matterport's generator of training batches (kept for old code).

    dataset: a prepared ``utils.Dataset``.
    config: the model Config.
    shuffle: reshuffle the image ids at the start of every epoch
        (``np.random.shuffle``).
    augment: deprecated horizontal flips, see ``load_image_gt``.
    augmentation: albumentations-style callable, see ``load_image_gt``.
    random_rois: if > 0, also yield that many random proposals per image
        (``generate_random_rois``), for training the heads without the RPN.
    batch_size: images per batch.
    detection_targets: with random_rois, also yield the heads' targets
        (``build_detection_targets``), for debugging.
    no_augmentation_sources: sources whose images are never augmented.

    Yields ``(inputs, outputs)`` forever:
      inputs: [images [batch, H, W, C] float32 molded,
               image_meta [batch, IMAGE_META_SIZE] float64,
               rpn_match [batch, anchors, 1] int32,
               rpn_bbox [batch, RPN_TRAIN_ANCHORS_PER_IMAGE, 4] float64,
               gt_class_ids [batch, MAX_GT_INSTANCES] int32,
               gt_boxes [batch, MAX_GT_INSTANCES, (y1, x1, y2, x2)] int32 pixels,
               gt_masks [batch, height, width, MAX_GT_INSTANCES] bool]
              (+ rpn_rois [batch, random_rois, 4] with random_rois,
               + rois with detection_targets)
      outputs: [] (or class ids [batch, T, 1], deltas, masks with
               detection_targets).
    Images without instances are skipped with a warning carrying the count;
    if a whole pass over the dataset finds none, ValueError. Other errors are
    logged with the image and skipped; the sixth one is raised.
    """
    b = 0
    image_index = -1
    image_ids = np.copy(dataset.image_ids)
    if len(image_ids) == 0:
        raise ValueError("data_generator: the dataset has no images (did you call prepare()?).")
    error_count = 0
    skipped = 0
    skipped_in_a_row = 0
    no_augmentation_sources = no_augmentation_sources or []

    # Config -> plain arguments, once.
    spec = pipeline_spec(config)
    gt_spec = spec.ground_truth
    G = int(gt_spec.max_instances)
    anchors = spec.anchors.pixel_anchors(spec.image_shape)
    roi_spec = detection_target_spec(config) if detection_targets else None

    while True:
        image_id = None
        try:
            image_index = (image_index + 1) % len(image_ids)
            if shuffle and image_index == 0:
                np.random.shuffle(image_ids)
            image_id = image_ids[image_index]

            if dataset.image_info[image_id]["source"] in no_augmentation_sources:
                aug = None
            else:
                aug = augmentation
            image, image_meta, gt_class_ids, gt_boxes, gt_masks = load_ground_truth(
                dataset, image_id, gt_spec, augmentation=aug, augment=augment)

            # Skip images without instances (e.g. training on a subset of
            # classes), as Matterport, but say so.
            if not np.any(gt_class_ids > 0):
                skipped += 1
                skipped_in_a_row += 1
                log = logger.warning if math.log10(skipped).is_integer() else logger.debug
                log("%s has no instances; skipped (%d image(s) skipped so far).",
                    describe_image(dataset, image_id), skipped)
                if skipped_in_a_row >= len(image_ids):
                    raise _NothingToTrainError(f"data_generator: {skipped_in_a_row} images in a row without "
                                     f"instances; the dataset has nothing to train on.")
                continue
            skipped_in_a_row = 0

            rpn_match, rpn_bbox = rpn_targets(anchors, gt_class_ids, gt_boxes, spec.rpn_targets)

            if random_rois:
                rpn_rois = generate_random_rois(image.shape, random_rois, gt_class_ids, gt_boxes)
                if detection_targets:
                    rois, mrcnn_class_ids, mrcnn_bbox, mrcnn_mask = roi_targets(
                        rpn_rois, gt_class_ids, gt_boxes, gt_masks, roi_spec)

            if b == 0:
                batch_image_meta = np.zeros((batch_size,) + image_meta.shape,
                                            dtype=image_meta.dtype)
                batch_rpn_match = np.zeros([batch_size, anchors.shape[0], 1],
                                           dtype=rpn_match.dtype)
                batch_rpn_bbox = np.zeros([batch_size, spec.rpn_targets.anchors_per_image, 4],
                                          dtype=rpn_bbox.dtype)
                batch_images = np.zeros((batch_size,) + image.shape, dtype=np.float32)
                batch_gt_class_ids = np.zeros((batch_size, G),
                                              dtype=np.int32)
                batch_gt_boxes = np.zeros((batch_size, G, 4),
                                          dtype=np.int32)
                batch_gt_masks = np.zeros((batch_size, gt_masks.shape[0], gt_masks.shape[1],
                                           G), dtype=gt_masks.dtype)
                if random_rois:
                    batch_rpn_rois = np.zeros((batch_size, rpn_rois.shape[0], 4),
                                              dtype=rpn_rois.dtype)
                    if detection_targets:
                        batch_rois = np.zeros((batch_size,) + rois.shape, dtype=rois.dtype)
                        batch_mrcnn_class_ids = np.zeros((batch_size,) + mrcnn_class_ids.shape,
                                                         dtype=mrcnn_class_ids.dtype)
                        batch_mrcnn_bbox = np.zeros((batch_size,) + mrcnn_bbox.shape,
                                                    dtype=mrcnn_bbox.dtype)
                        batch_mrcnn_mask = np.zeros((batch_size,) + mrcnn_mask.shape,
                                                    dtype=mrcnn_mask.dtype)

            # load_image_gt already kept at most MAX_GT_INSTANCES.
            n = gt_class_ids.shape[0]
            batch_image_meta[b] = image_meta
            batch_rpn_match[b] = rpn_match[:, np.newaxis]
            batch_rpn_bbox[b] = rpn_bbox
            batch_images[b] = mold_image(image.astype(np.float32), gt_spec.image)
            batch_gt_class_ids[b, :n] = gt_class_ids
            batch_gt_boxes[b, :n] = gt_boxes
            batch_gt_masks[b, :, :, :n] = gt_masks
            if random_rois:
                batch_rpn_rois[b] = rpn_rois
                if detection_targets:
                    batch_rois[b] = rois
                    batch_mrcnn_class_ids[b] = mrcnn_class_ids
                    batch_mrcnn_bbox[b] = mrcnn_bbox
                    batch_mrcnn_mask[b] = mrcnn_mask
            b += 1

            if b >= batch_size:
                inputs = [batch_images, batch_image_meta, batch_rpn_match, batch_rpn_bbox,
                          batch_gt_class_ids, batch_gt_boxes, batch_gt_masks]
                outputs = []
                if random_rois:
                    inputs.extend([batch_rpn_rois])
                    if detection_targets:
                        inputs.extend([batch_rois])
                        # Keras wants outputs and targets of the same rank.
                        batch_mrcnn_class_ids = np.expand_dims(batch_mrcnn_class_ids, -1)
                        outputs.extend([batch_mrcnn_class_ids, batch_mrcnn_bbox,
                                        batch_mrcnn_mask])
                yield inputs, outputs
                b = 0
        except (GeneratorExit, KeyboardInterrupt, _NothingToTrainError):
            raise
        except Exception:
            if image_id is None:
                raise
            logger.exception("Error processing %s", describe_image(dataset, image_id))
            error_count += 1
            if error_count > 5:
                raise
