"""Ground truth of one training image: image, meta, class ids, boxes, masks.

* :func:`load_ground_truth`: image, image meta, class ids, boxes and masks of
  one image, resized (``transform.resize_for_model``) and augmented the way
  the model sees it; :func:`load_image_gt` is Matterport's signature of it
  (a ``config`` instead of a ``GroundTruthSpec``).

The RPN and head targets are in ``mrcnn.targets`` (re-exported here for old
imports), the training data pipeline in ``mrcnn.pipeline``.

Pixel boxes are ``(y1, x1, y2, x2)`` with y2, x2 exclusive; masks are
``[height, width, instances]`` bool; deltas are ``(dy, dx, log(dh), log(dw))``.

Robustness rules (Matterport crashed or silently mis-trained on these):

* An image with no instances (none loaded, or all dropped below) is returned
  by ``load_image_gt`` with ``class_ids`` of shape [0]; ``data_generator``
  skips it and logs a warning with the running count of skipped images.
  ``targets.build_rpn_targets`` on it marks every anchor outside crowds
  negative (Matterport raised on ``argmax`` of an empty array).
* A zero-area mask coming from the dataset: the instance is dropped with a
  warning naming the image id. Instances whose mask vanishes through resizing
  or augmentation are dropped with a debug log (Matterport did the same).
* A class id of 0 or with ``abs(id) >= dataset.num_classes``: ValueError
  naming the image id. Negative ids are crowd boxes (COCO ``iscrowd``).
* More than ``MAX_GT_INSTANCES`` instances: the first ``MAX_GT_INSTANCES``
  are kept, with a warning (Matterport drew a random subset in
  ``data_generator``).
* Masks whose size differs from the image's, or whose count differs from the
  class ids', float masks with NaN or infinite values: ValueError naming the
  image id.
* An image that is not [H, W, IMAGE_CHANNEL_COUNT], has no pixels, has
  non-finite values, or is so thin that resizing leaves it no row or column
  (e.g. 1x10000 at IMAGE_MAX_DIM 64): ValueError naming the image id.
"""
import logging
import random
from typing import Optional

import numpy as np

from mrcnn.arguments import GroundTruthSpec, ground_truth_spec
from mrcnn.boxes import extract_bboxes
from mrcnn.masks import minimize_mask
from mrcnn.meta import compose_image_meta
from mrcnn.resize import resize_mask
# Re-exported: these lived here before mrcnn.targets existed.
from mrcnn.targets import (build_detection_targets, build_rpn_targets,  # noqa: F401
                           generate_random_rois)
from mrcnn.transform import resize_for_model

__all__ = ["load_ground_truth", "load_image_gt", "describe_image"]

logger = logging.getLogger(__name__)


############################################################
#  Ground truth of one image
############################################################

def describe_image(dataset, image_id: int) -> str:
    """'image id 3 (path/to/file.jpg)' for error messages."""
    try:
        ref = dataset.image_reference(image_id) or dataset.image_info[image_id].get("path", "")
    except Exception:  # a broken image_reference must not hide the real error
        ref = ""
    return f"image id {image_id}" + (f" ({ref})" if ref else "")


def _check_image(image, channels, where):
    """load_image()'s output must be a non-empty [H, W, channels] array."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != channels:
        raise ValueError(f"{where}: load_image() returned an array of shape {image.shape}; "
                         f"expected [height, width, {channels}] (IMAGE_CHANNEL_COUNT).")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{where}: the image has no pixels (shape {image.shape}).")
    if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
        raise ValueError(f"{where}: the image has NaN or infinite pixel values.")
    return image


def _check_instances(dataset, image_id, image, mask, class_ids):
    """Validates load_mask()'s output; drops empty masks with a warning.

    Returns mask [H, W, N] bool and class_ids [N] int32.
    """
    where = describe_image(dataset, image_id)
    class_ids = np.asarray(class_ids).reshape(-1)
    mask = np.asarray(mask)
    if class_ids.size == 0 and mask.size == 0:
        # Dataset.load_mask's default is np.empty([0, 0, 0]): no instances.
        return np.zeros(image.shape[:2] + (0,), bool), np.zeros([0], np.int32)
    if class_ids.size and not np.issubdtype(class_ids.dtype, np.integer):
        if not np.all(np.equal(np.mod(class_ids, 1), 0)):
            raise ValueError(f"{where}: load_mask() returned non-integer class ids {class_ids}.")
    class_ids = class_ids.astype(np.int32)
    if mask.ndim != 3:
        raise ValueError(f"{where}: load_mask() must return masks of shape "
                         f"[height, width, instances], got {mask.shape}.")
    if mask.shape[:2] != image.shape[:2]:
        raise ValueError(f"{where}: masks are {mask.shape[0]}x{mask.shape[1]} but the image is "
                         f"{image.shape[0]}x{image.shape[1]}; load_mask() must return masks of "
                         f"the image's size.")
    if mask.shape[2] != class_ids.shape[0]:
        raise ValueError(f"{where}: load_mask() returned {mask.shape[2]} masks but "
                         f"{class_ids.shape[0]} class ids.")
    num_classes = getattr(dataset, "num_classes", None)
    bad = class_ids == 0
    if num_classes is not None:
        bad |= np.abs(class_ids) >= num_classes
    if np.any(bad):
        raise ValueError(
            f"{where}: class ids {class_ids[bad].tolist()} out of range; instance class ids "
            f"must be 1..{(num_classes or 0) - 1} (dataset.num_classes = {num_classes}; "
            f"negative = crowd). Check add_class()/load_mask() and call dataset.prepare().")
    if mask.dtype.kind == "f" and not np.all(np.isfinite(mask)):
        raise ValueError(f"{where}: load_mask() returned masks with NaN or infinite values; "
                         f"masks must be bool (or 0/1).")
    mask = mask.astype(bool, copy=False)
    empty = ~mask.any(axis=(0, 1))
    if np.any(empty):
        logger.warning("%s: dropped %d instance(s) with an empty mask (class ids %s).",
                       where, int(empty.sum()), class_ids[empty].tolist())
        mask, class_ids = mask[:, :, ~empty], class_ids[~empty]
    return mask, class_ids


def _augment(augmentation, image, mask, where):
    """Applies an albumentations-style callable to the image and its masks.

    augmentation: called as ``augmentation(image=image, masks=[m0, m1, ...])``
        with uint8 [H, W] masks; must return a dict with "image" (and
        "masks", same count). Geometric transforms move the masks with the
        image; colour transforms leave them unchanged.
    Returns (image, mask [H, W, N] bool).
    """
    n = mask.shape[2]
    masks = [mask[:, :, i].astype(np.uint8) for i in range(n)]
    out = augmentation(image=image, masks=masks)
    if not isinstance(out, dict) or "image" not in out:
        raise TypeError(f"{where}: augmentation must return a dict with 'image' (and 'masks'), "
                        f"as albumentations does; got {type(out).__name__}.")
    new_image = np.asarray(out["image"])
    new_masks = out.get("masks", masks)
    if len(new_masks) != n:
        raise ValueError(f"{where}: augmentation returned {len(new_masks)} masks for {n} instances.")
    if new_image.shape != image.shape:
        raise ValueError(f"{where}: augmentation changed the image shape from {image.shape} to "
                         f"{new_image.shape}; use transforms that keep the size (or crop/pad "
                         f"back to it) after resizing.")
    if n:
        new_mask = np.stack([np.asarray(m) for m in new_masks], axis=-1).astype(bool)
    else:
        new_mask = np.zeros(image.shape[:2] + (0,), bool)
    if new_mask.shape[:2] != image.shape[:2]:
        raise ValueError(f"{where}: augmentation returned masks of shape {new_mask.shape[:2]} "
                         f"for an image of shape {image.shape[:2]}.")
    return new_image, new_mask


def load_ground_truth(dataset, image_id: int, spec: GroundTruthSpec, augmentation=None,
                      augment: bool = False):
    """Loads and returns the ground truth of one image, resized as for training.

    dataset: a prepared ``utils.Dataset``.
    image_id: internal image id.
    spec: resizing (``spec.image``), mini-masks and the instance limit
        (``arguments.ground_truth_spec(config)``).
    augmentation: optional ``albumentations.Compose`` (or any callable with
        the ``augmentation(image=..., masks=[...]) -> {"image", "masks"}``
        contract), applied after resizing. Geometric transforms move the
        masks; the image size must not change.
    augment: Matterport's deprecated flag: flip horizontally half the time
        (Python's ``random``).

    Returns:
      image: [height, width, channels] as resized (uint8 usually).
      image_meta: [IMAGE_META_SIZE] float64, see ``compose_image_meta``.
      class_ids: [instance_count] int32 (negative = crowd).
      bbox: [instance_count, (y1, x1, y2, x2)] int32 pixels.
      mask: [height, width, instance_count] bool, or
        [MINI_MASK_SHAPE[0], MINI_MASK_SHAPE[1], instance_count] with mini-masks.
    An image without instances gives instance_count 0 (see the module
    docstring for the rules on bad input).
    """
    where = describe_image(dataset, image_id)
    image = _check_image(dataset.load_image(image_id), spec.image.channels, where)
    mask, class_ids = dataset.load_mask(image_id)
    mask, class_ids = _check_instances(dataset, image_id, image, mask, class_ids)
    original_shape = image.shape
    try:
        image, window, scale, padding, crop = resize_for_model(image, spec.image)
    except ValueError as e:
        raise ValueError(
            f"{where}: the {image.shape[0]}x{image.shape[1]} image cannot be resized for "
            f"the model (IMAGE_RESIZE_MODE {spec.image.mode!r}, IMAGE_MIN_DIM "
            f"{spec.image.min_dim}, IMAGE_MAX_DIM {spec.image.max_dim}): {e}. An image this "
            f"thin keeps no row or column; crop it or leave it out of the data set.") from e
    mask = resize_mask(mask, scale, padding, crop)

    if augment:
        logger.warning("'augment' is deprecated. Use 'augmentation' instead.")
        if random.randint(0, 1):
            image = np.fliplr(image)
            mask = np.fliplr(mask)

    if augmentation is not None:
        image, mask = _augment(augmentation, image, mask, where)

    # Instances whose mask got resized or cropped away.
    keep = mask.any(axis=(0, 1))
    if not np.all(keep):
        logger.debug("%s: %d instance(s) vanished after resizing/augmentation; dropped.",
                     where, int((~keep).sum()))
        mask, class_ids = mask[:, :, keep], class_ids[keep]

    max_instances = spec.max_instances
    if max_instances is not None and class_ids.shape[0] > max_instances:
        logger.warning("%s: %d instances, more than MAX_GT_INSTANCES=%d; keeping the first %d.",
                       where, class_ids.shape[0], max_instances, max_instances)
        mask, class_ids = mask[:, :, :max_instances], class_ids[:max_instances]

    bbox = extract_bboxes(mask)

    # Active classes: the classes of the image's source data set (training on
    # several data sets at once, each image only teaches its own classes).
    active_class_ids = np.zeros([dataset.num_classes], dtype=np.int32)
    source_class_ids = dataset.source_class_ids[dataset.image_info[image_id]["source"]]
    active_class_ids[source_class_ids] = 1

    if spec.use_mini_mask:
        mask = minimize_mask(bbox, mask, spec.mini_mask_shape)

    image_meta = compose_image_meta(image_id, original_shape, image.shape,
                                    window, scale, active_class_ids)
    return image, image_meta, class_ids, bbox, mask


def load_image_gt(dataset, config, image_id: int, augmentation=None,
                  use_mini_mask: Optional[bool] = None, *, augment: bool = False):
    """Matterport's ``load_image_gt``: :func:`load_ground_truth` with the
    settings of ``config`` (IMAGE_* resize fields, USE_MINI_MASK,
    MINI_MASK_SHAPE, MAX_GT_INSTANCES).

    use_mini_mask: True returns masks of MINI_MASK_SHAPE cut to each box;
        None means ``config.USE_MINI_MASK``. (Matterport's default was False;
        pass it explicitly to be unambiguous.)
    A bool passed positionally as ``augmentation`` (Matterport's argument
    order ``(..., image_id, augment, augmentation)``) is taken as ``augment``.
    Returns (image, image_meta, class_ids, bbox, mask), see load_ground_truth.
    """
    if isinstance(augmentation, bool):
        augment, augmentation = augmentation, None
    return load_ground_truth(dataset, image_id, ground_truth_spec(config, use_mini_mask),
                             augmentation=augmentation, augment=augment)
