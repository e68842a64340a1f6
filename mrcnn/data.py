"""Training data on the NumPy side: ground truth, RPN targets, the old generator.

Matterport's functions, names and signatures:

* :func:`load_image_gt`: image, image meta, class ids, boxes and masks of one
  image, resized (and augmented) the way the model sees it.
* :func:`build_rpn_targets`: which anchors the RPN trains on and their deltas.
  Vectorized; identical to Matterport on the U1 golden cases, including the
  ``np.random.choice`` draws on NumPy's legacy global RNG, so a seeded run
  samples the same anchors.
* :func:`build_detection_targets`, :func:`generate_random_rois`: NumPy
  versions of the heads' targets, for notebooks and for training the heads
  without the RPN (``random_rois``).
* :func:`data_generator`: Matterport's Python generator, kept for old code.

Pixel boxes are ``(y1, x1, y2, x2)`` with y2, x2 exclusive; masks are
``[height, width, instances]`` bool; deltas are ``(dy, dx, log(dh), log(dw))``.

Robustness rules (Matterport crashed or silently mis-trained on these):

* An image with no instances (none loaded, or all dropped below) is returned
  by ``load_image_gt`` with ``class_ids`` of shape [0]; ``data_generator``
  skips it and logs a warning with the running count of skipped images.
  ``build_rpn_targets`` on it marks every anchor outside crowds negative
  (Matterport raised on ``argmax`` of an empty array).
* A zero-area mask coming from the dataset: the instance is dropped with a
  warning naming the image id. Instances whose mask vanishes through resizing
  or augmentation are dropped with a debug log (Matterport did the same).
* A class id of 0 or with ``abs(id) >= dataset.num_classes``: ValueError
  naming the image id. Negative ids are crowd boxes (COCO ``iscrowd``).
* More than ``MAX_GT_INSTANCES`` instances: the first ``MAX_GT_INSTANCES``
  are kept, with a warning (Matterport drew a random subset in
  ``data_generator``).
* Masks whose size differs from the image's, or whose count differs from the
  class ids': ValueError naming the image id.
"""
import logging
import math
import random

import numpy as np

from mrcnn import utils
from mrcnn.meta import compose_image_meta, mold_image

__all__ = [
    "load_image_gt",
    "build_rpn_targets",
    "build_detection_targets",
    "generate_random_rois",
    "data_generator",
]

logger = logging.getLogger(__name__)


class _NothingToTrainError(ValueError):
    """A whole pass over the dataset found no image with instances."""

# Anchor / gt IoU thresholds of the RPN (Faster R-CNN paper, §3.1.2).
RPN_POSITIVE_IOU = 0.7
RPN_NEGATIVE_IOU = 0.3
# An anchor overlapping a crowd box this much is never a negative.
CROWD_IOU = 0.001


############################################################
#  Ground truth of one image
############################################################

def _describe(dataset, image_id):
    """'image id 3 (path/to/file.jpg)' for error messages."""
    try:
        ref = dataset.image_reference(image_id) or dataset.image_info[image_id].get("path", "")
    except Exception:  # a broken image_reference must not hide the real error
        ref = ""
    return f"image id {image_id}" + (f" ({ref})" if ref else "")


def _check_instances(dataset, image_id, image, mask, class_ids):
    """Validates load_mask()'s output; drops empty masks with a warning.

    Returns mask [H, W, N] bool and class_ids [N] int32.
    """
    where = _describe(dataset, image_id)
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


def load_image_gt(dataset, config, image_id, augmentation=None, use_mini_mask=None,
                  *, augment=False):
    """Loads and returns the ground truth of one image, resized as for training.

    dataset: a prepared ``utils.Dataset``.
    config: the model Config (IMAGE_* resize fields, MINI_MASK_SHAPE,
        MAX_GT_INSTANCES).
    image_id: internal image id.
    augmentation: optional ``albumentations.Compose`` (or any callable with
        the ``augmentation(image=..., masks=[...]) -> {"image", "masks"}``
        contract), applied after resizing. Geometric transforms move the
        masks; the image size must not change.
    use_mini_mask: True returns masks of MINI_MASK_SHAPE cut to each box;
        None means ``config.USE_MINI_MASK``. (Matterport's default was False;
        pass it explicitly to be unambiguous.)
    augment: Matterport's deprecated flag: flip horizontally half the time
        (Python's ``random``). A bool passed positionally as ``augmentation``
        (Matterport's argument order) is taken as ``augment``.

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
    if isinstance(augmentation, bool):
        # Matterport's positional order was (..., image_id, augment, augmentation, ...).
        augment, augmentation = augmentation, None
    if use_mini_mask is None:
        use_mini_mask = config.USE_MINI_MASK
    where = _describe(dataset, image_id)
    image = dataset.load_image(image_id)
    mask, class_ids = dataset.load_mask(image_id)
    mask, class_ids = _check_instances(dataset, image_id, image, mask, class_ids)
    original_shape = image.shape
    image, window, scale, padding, crop = utils.resize_image(
        image,
        min_dim=config.IMAGE_MIN_DIM,
        min_scale=config.IMAGE_MIN_SCALE,
        max_dim=config.IMAGE_MAX_DIM,
        mode=config.IMAGE_RESIZE_MODE)
    mask = utils.resize_mask(mask, scale, padding, crop)

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

    max_instances = getattr(config, "MAX_GT_INSTANCES", None)
    if max_instances is not None and class_ids.shape[0] > max_instances:
        logger.warning("%s: %d instances, more than MAX_GT_INSTANCES=%d; keeping the first %d.",
                       where, class_ids.shape[0], max_instances, max_instances)
        mask, class_ids = mask[:, :, :max_instances], class_ids[:max_instances]

    bbox = utils.extract_bboxes(mask)

    # Active classes: the classes of the image's source data set (training on
    # several data sets at once, each image only teaches its own classes).
    active_class_ids = np.zeros([dataset.num_classes], dtype=np.int32)
    source_class_ids = dataset.source_class_ids[dataset.image_info[image_id]["source"]]
    active_class_ids[source_class_ids] = 1

    if use_mini_mask:
        mask = utils.minimize_mask(bbox, mask, config.MINI_MASK_SHAPE)

    image_meta = compose_image_meta(image_id, original_shape, image.shape,
                                    window, scale, active_class_ids)
    return image, image_meta, class_ids, bbox, mask


############################################################
#  RPN targets
############################################################

def build_rpn_targets(image_shape, anchors, gt_class_ids, gt_boxes, config,
                      legacy_zero_iou_match=False):
    """Finds the anchors the RPN trains on and the deltas they should predict.

    image_shape: (height, width, channels) of the molded image (unused, kept
        for Matterport's signature).
    anchors: [num_anchors, (y1, x1, y2, x2)] pixels.
    gt_class_ids: [num_gt] int; negative ids are crowd boxes.
    gt_boxes: [num_gt, (y1, x1, y2, x2)] pixels.
    config: reads RPN_TRAIN_ANCHORS_PER_IMAGE and RPN_BBOX_STD_DEV.
    legacy_zero_iou_match: Matterport's behaviour for a gt box that overlaps
        no anchor (max IoU 0): it marks *every* anchor with IoU 0 to that box
        positive (``overlaps == max`` is true for all of them), thousands of
        nonsense positives with deltas towards a far box. The default (False)
        skips such a gt box in the "best anchor per gt box" step. Both agree
        whenever every gt box overlaps some anchor.

    Rules (Matterport's): negatives have max IoU < 0.3 and crowd IoU < 0.001;
    positives have IoU >= 0.7, plus for each gt box every anchor whose IoU
    equals that box's maximum. Then at most RPN_TRAIN_ANCHORS_PER_IMAGE // 2
    positives and RPN_TRAIN_ANCHORS_PER_IMAGE in all are kept, the extra ones
    reset to neutral with ``np.random.choice`` on NumPy's legacy global RNG
    (same calls, same order as Matterport). With no non-crowd gt box every
    anchor outside crowds is negative.

    Returns:
      rpn_match: [num_anchors] int32, 1 positive, -1 negative, 0 neutral.
      rpn_bbox: [RPN_TRAIN_ANCHORS_PER_IMAGE, (dy, dx, log(dh), log(dw))]
        float64, the deltas of the positive anchors in anchor order, divided
        by RPN_BBOX_STD_DEV, zero padded.
    """
    anchors = np.asarray(anchors)
    gt_class_ids = np.asarray(gt_class_ids)
    gt_boxes = np.asarray(gt_boxes).reshape(-1, 4)
    num_anchors = anchors.shape[0]
    train_anchors = int(config.RPN_TRAIN_ANCHORS_PER_IMAGE)
    rpn_match = np.zeros([num_anchors], dtype=np.int32)
    rpn_bbox = np.zeros((train_anchors, 4))

    # COCO crowd boxes (negative class id) are not targets, but anchors on
    # them must not be negatives either.
    crowd_ix = np.where(gt_class_ids < 0)[0]
    if crowd_ix.shape[0] > 0:
        non_crowd_ix = np.where(gt_class_ids > 0)[0]
        crowd_boxes = gt_boxes[crowd_ix]
        gt_class_ids = gt_class_ids[non_crowd_ix]
        gt_boxes = gt_boxes[non_crowd_ix]
        crowd_overlaps = utils.compute_overlaps(anchors, crowd_boxes)
        no_crowd_bool = np.amax(crowd_overlaps, axis=1) < CROWD_IOU
    else:
        no_crowd_bool = np.ones([num_anchors], dtype=bool)

    if gt_boxes.shape[0] == 0:
        rpn_match[no_crowd_bool] = -1
        anchor_iou_argmax = np.zeros([num_anchors], dtype=np.int64)
    else:
        overlaps = utils.compute_overlaps(anchors, gt_boxes)   # [anchors, gt]
        # 1. Negatives first; matches below overwrite them.
        anchor_iou_argmax = np.argmax(overlaps, axis=1)
        anchor_iou_max = overlaps[np.arange(num_anchors), anchor_iou_argmax]
        rpn_match[(anchor_iou_max < RPN_NEGATIVE_IOU) & no_crowd_bool] = -1
        # 2. Every gt box gets its best anchor(s), whatever the IoU; all ties.
        gt_iou_max = np.max(overlaps, axis=0)
        best = overlaps == gt_iou_max
        if not legacy_zero_iou_match:
            best &= (gt_iou_max > 0)[None, :]
        rpn_match[np.nonzero(best)[0]] = 1
        # 3. High-overlap anchors.
        rpn_match[anchor_iou_max >= RPN_POSITIVE_IOU] = 1

    # Subsample to balance positives and negatives (Matterport's exact calls).
    ids = np.where(rpn_match == 1)[0]
    extra = len(ids) - (train_anchors // 2)
    if extra > 0:
        ids = np.random.choice(ids, extra, replace=False)
        rpn_match[ids] = 0
    ids = np.where(rpn_match == -1)[0]
    extra = len(ids) - (train_anchors - np.sum(rpn_match == 1))
    if extra > 0:
        ids = np.random.choice(ids, extra, replace=False)
        rpn_match[ids] = 0

    # Deltas from each positive anchor to its closest gt box (which may have
    # IoU < 0.7), in Matterport's float64 operation order.
    ids = np.where(rpn_match == 1)[0]
    if ids.shape[0]:
        gt = gt_boxes[anchor_iou_argmax[ids]]
        a = anchors[ids]
        gt_h = gt[:, 2] - gt[:, 0]
        gt_w = gt[:, 3] - gt[:, 1]
        gt_center_y = gt[:, 0] + 0.5 * gt_h
        gt_center_x = gt[:, 1] + 0.5 * gt_w
        a_h = a[:, 2] - a[:, 0]
        a_w = a[:, 3] - a[:, 1]
        a_center_y = a[:, 0] + 0.5 * a_h
        a_center_x = a[:, 1] + 0.5 * a_w
        with np.errstate(divide="ignore"):   # legacy path: log(0) for a zero-area gt
            deltas = np.stack([
                (gt_center_y - a_center_y) / a_h,
                (gt_center_x - a_center_x) / a_w,
                np.log(gt_h / a_h),
                np.log(gt_w / a_w),
            ], axis=1)
        n = min(ids.shape[0], train_anchors)
        rpn_bbox[:n] = deltas[:n]
        rpn_bbox[:n] /= config.RPN_BBOX_STD_DEV
    return rpn_match, rpn_bbox


############################################################
#  Detection targets in NumPy (notebooks, random_rois)
############################################################

def generate_random_rois(image_shape, count, gt_class_ids, gt_boxes):
    """Generates ROI proposals similar to what a region proposal network would.

    image_shape: (height, width[, channels]) pixels.
    count: number of ROIs.
    gt_class_ids: [N] int (unused, Matterport's signature).
    gt_boxes: [N, (y1, x1, y2, x2)] pixels.

    90% of the ROIs are drawn around the gt boxes (corners within one box
    size of the box), the rest anywhere; none has zero height or width.
    Uses NumPy's legacy global RNG with Matterport's calls.

    Returns: [count, (y1, x1, y2, x2)] int32 pixels.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    if height < 2 or width < 2:
        raise ValueError(f"generate_random_rois: image {height}x{width} is too small for "
                         f"boxes of non-zero size.")
    gt_boxes = np.asarray(gt_boxes).reshape(-1, 4)
    rois = np.zeros((count, 4), dtype=np.int32)

    def draw(y_lo, y_hi, x_lo, x_hi, n):
        # Draw twice as many corner pairs as needed and drop equal ones.
        while True:
            y1y2 = np.random.randint(y_lo, y_hi, (n * 2, 2))
            x1x2 = np.random.randint(x_lo, x_hi, (n * 2, 2))
            y1y2 = y1y2[np.abs(y1y2[:, 0] - y1y2[:, 1]) >= 1][:n]
            x1x2 = x1x2[np.abs(x1x2[:, 0] - x1x2[:, 1]) >= 1][:n]
            if y1y2.shape[0] == n and x1x2.shape[0] == n:
                break
        x1, x2 = np.split(np.sort(x1x2, axis=1), 2, axis=1)
        y1, y2 = np.split(np.sort(y1y2, axis=1), 2, axis=1)
        return np.hstack([y1, x1, y2, x2])

    # ROIs around gt boxes (90% of count).
    rois_per_box = int(0.9 * count / gt_boxes.shape[0]) if gt_boxes.shape[0] else 0
    for i in range(gt_boxes.shape[0] if rois_per_box else 0):
        gt_y1, gt_x1, gt_y2, gt_x2 = (int(v) for v in gt_boxes[i])
        h = gt_y2 - gt_y1
        w = gt_x2 - gt_x1
        r_y1, r_y2 = max(gt_y1 - h, 0), min(gt_y2 + h, height)
        r_x1, r_x2 = max(gt_x1 - w, 0), min(gt_x2 + w, width)
        # A range of fewer than 2 values can never give distinct corners
        # (Matterport looped forever): fall back to the whole image.
        if r_y2 - r_y1 < 2:
            r_y1, r_y2 = 0, height
        if r_x2 - r_x1 < 2:
            r_x1, r_x2 = 0, width
        rois[rois_per_box * i:rois_per_box * (i + 1)] = draw(r_y1, r_y2, r_x1, r_x2, rois_per_box)

    # ROIs anywhere in the image (the remaining ~10%).
    remaining_count = count - (rois_per_box * gt_boxes.shape[0])
    if remaining_count > 0:
        rois[-remaining_count:] = draw(0, height, 0, width, remaining_count)
    return rois


def build_detection_targets(rpn_rois, gt_class_ids, gt_boxes, gt_masks, config):
    """Targets of the classifier and mask heads in NumPy (Matterport's).

    Not used in normal training (``DetectionTargetLayer`` does it in the
    graph); useful for debugging and to train the heads without the RPN.

    rpn_rois: [N, (y1, x1, y2, x2)] proposal boxes, pixels.
    gt_class_ids: [instance_count] int class ids (crowds and padding, <= 0,
        are left out).
    gt_boxes: [instance_count, (y1, x1, y2, x2)] int pixels.
    gt_masks: [height, width, instance_count] bool, full size or mini-masks
        (``config.USE_MINI_MASK``).
    config: TRAIN_ROIS_PER_IMAGE, ROI_POSITIVE_RATIO, NUM_CLASSES,
        BBOX_STD_DEV, MASK_SHAPE, USE_MINI_MASK, IMAGE_SHAPE.

    Foreground: IoU > 0.5 (strictly, unlike the graph version); background:
    IoU < 0.5. Subsampled with ``np.random.choice`` (legacy global RNG); when
    there are too few, background ROIs are repeated.

    Returns:
      rois: [TRAIN_ROIS_PER_IMAGE, (y1, x1, y2, x2)] pixels.
      class_ids: [TRAIN_ROIS_PER_IMAGE] int32.
      bboxes: [TRAIN_ROIS_PER_IMAGE, NUM_CLASSES, (dy, dx, log(dh), log(dw))]
        float32, class-specific deltas divided by BBOX_STD_DEV.
      masks: [TRAIN_ROIS_PER_IMAGE, MASK_SHAPE[0], MASK_SHAPE[1], NUM_CLASSES]
        float32, class-specific masks in [0, 1].
    Raises ValueError when there are no ROIs or no instances.
    """
    rpn_rois = np.asarray(rpn_rois)
    gt_class_ids = np.asarray(gt_class_ids).astype(np.int32)
    gt_boxes = np.asarray(gt_boxes).astype(np.int32)
    gt_masks = np.asarray(gt_masks).astype(bool)
    if rpn_rois.shape[0] == 0:
        raise ValueError("build_detection_targets: no ROIs given.")
    train_rois = int(config.TRAIN_ROIS_PER_IMAGE)

    # It's common to add gt boxes to the ROIs; not done, as in Matterport
    # (XinLei Chen's paper found it does not help).
    instance_ids = np.where(gt_class_ids > 0)[0]
    if instance_ids.shape[0] == 0:
        raise ValueError("build_detection_targets: the image must contain instances "
                         "(class id > 0).")
    gt_class_ids = gt_class_ids[instance_ids]
    gt_boxes = gt_boxes[instance_ids]
    gt_masks = gt_masks[:, :, instance_ids]

    # Same IoU as Matterport's compute_iou loop over gt boxes.
    overlaps = utils.compute_overlaps(rpn_rois, gt_boxes)        # [rois, gt]
    rpn_roi_iou_argmax = np.argmax(overlaps, axis=1)
    rpn_roi_iou_max = overlaps[np.arange(overlaps.shape[0]), rpn_roi_iou_argmax]
    rpn_roi_gt_boxes = gt_boxes[rpn_roi_iou_argmax]
    rpn_roi_gt_class_ids = gt_class_ids[rpn_roi_iou_argmax]

    fg_ids = np.where(rpn_roi_iou_max > 0.5)[0]
    bg_ids = np.where(rpn_roi_iou_max < 0.5)[0]

    # Subsample: aim for ROI_POSITIVE_RATIO foreground.
    fg_roi_count = int(train_rois * config.ROI_POSITIVE_RATIO)
    if fg_ids.shape[0] > fg_roi_count:
        keep_fg_ids = np.random.choice(fg_ids, fg_roi_count, replace=False)
    else:
        keep_fg_ids = fg_ids
    remaining = train_rois - keep_fg_ids.shape[0]
    if bg_ids.shape[0] > remaining:
        keep_bg_ids = np.random.choice(bg_ids, remaining, replace=False)
    else:
        keep_bg_ids = bg_ids
    keep = np.concatenate([keep_fg_ids, keep_bg_ids])
    remaining = train_rois - keep.shape[0]
    if remaining > 0:
        # Not enough samples for the desired balance: fill up.
        if keep.shape[0] == 0:
            bg_ids = np.where(rpn_roi_iou_max < 0.5)[0]
            if bg_ids.shape[0] < remaining:
                raise ValueError(f"build_detection_targets: {bg_ids.shape[0]} background ROIs, "
                                 f"{remaining} needed.")
            keep_bg_ids = np.random.choice(bg_ids, remaining, replace=False)
            keep = np.concatenate([keep, keep_bg_ids])
        elif keep_bg_ids.shape[0] == 0:
            # Only foreground available: repeat it (Matterport drew from an
            # empty background list and crashed).
            keep = np.concatenate([keep, np.random.choice(keep_fg_ids, remaining, replace=True)])
        else:
            keep_extra_ids = np.random.choice(keep_bg_ids, remaining, replace=True)
            keep = np.concatenate([keep, keep_extra_ids])
    keep = keep.astype(np.int64)

    # Background ROIs get no gt box and class 0.
    rpn_roi_gt_boxes[keep_bg_ids, :] = 0
    rpn_roi_gt_class_ids[keep_bg_ids] = 0

    rois = rpn_rois[keep]
    roi_gt_boxes = rpn_roi_gt_boxes[keep]
    roi_gt_class_ids = rpn_roi_gt_class_ids[keep]
    roi_gt_assignment = rpn_roi_iou_argmax[keep]

    # Class-specific deltas.
    bboxes = np.zeros((train_rois, config.NUM_CLASSES, 4), dtype=np.float32)
    pos_ids = np.where(roi_gt_class_ids > 0)[0]
    bboxes[pos_ids, roi_gt_class_ids[pos_ids]] = utils.box_refinement(
        rois[pos_ids], roi_gt_boxes[pos_ids, :4])
    bboxes /= np.asarray(config.BBOX_STD_DEV, dtype=np.float32)

    # Class-specific masks.
    mask_shape = tuple(config.MASK_SHAPE)
    masks = np.zeros((train_rois,) + mask_shape + (config.NUM_CLASSES,), dtype=np.float32)
    for i in pos_ids:
        class_id = roi_gt_class_ids[i]
        gt_id = roi_gt_assignment[i]
        class_mask = gt_masks[:, :, gt_id]
        if config.USE_MINI_MASK:
            # Paste the mini-mask, resized to its gt box, into an image-sized mask.
            placeholder = np.zeros(tuple(config.IMAGE_SHAPE[:2]), dtype=bool)
            gt_y1, gt_x1, gt_y2, gt_x2 = gt_boxes[gt_id]
            placeholder[gt_y1:gt_y2, gt_x1:gt_x2] = np.round(
                utils.resize(class_mask, (gt_y2 - gt_y1, gt_x2 - gt_x1))).astype(bool)
            class_mask = placeholder
        y1, x1, y2, x2 = rois[i].astype(np.int32)
        m = class_mask[y1:y2, x1:x2]
        masks[i, :, :, class_id] = utils.resize(m, mask_shape)
    return rois, roi_gt_class_ids, bboxes, masks


############################################################
#  Matterport's data generator
############################################################

def _backbone_shapes(config, image_shape):
    """[levels, (height, width)] of the feature maps: ceil(image / stride)."""
    if callable(config.BACKBONE):
        return np.asarray(config.COMPUTE_BACKBONE_SHAPE(image_shape))
    return np.array([[int(math.ceil(image_shape[0] / stride)),
                      int(math.ceil(image_shape[1] / stride))]
                     for stride in config.BACKBONE_STRIDES])


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

    backbone_shapes = _backbone_shapes(config, config.IMAGE_SHAPE)
    anchors = utils.generate_pyramid_anchors(config.RPN_ANCHOR_SCALES,
                                             config.RPN_ANCHOR_RATIOS,
                                             backbone_shapes,
                                             config.BACKBONE_STRIDES,
                                             config.RPN_ANCHOR_STRIDE)

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
            image, image_meta, gt_class_ids, gt_boxes, gt_masks = load_image_gt(
                dataset, config, image_id, augmentation=aug,
                use_mini_mask=config.USE_MINI_MASK, augment=augment)

            # Skip images without instances (e.g. training on a subset of
            # classes), as Matterport, but say so.
            if not np.any(gt_class_ids > 0):
                skipped += 1
                skipped_in_a_row += 1
                log = logger.warning if math.log10(skipped).is_integer() else logger.debug
                log("%s has no instances; skipped (%d image(s) skipped so far).",
                    _describe(dataset, image_id), skipped)
                if skipped_in_a_row >= len(image_ids):
                    raise _NothingToTrainError(f"data_generator: {skipped_in_a_row} images in a row without "
                                     f"instances; the dataset has nothing to train on.")
                continue
            skipped_in_a_row = 0

            rpn_match, rpn_bbox = build_rpn_targets(image.shape, anchors,
                                                    gt_class_ids, gt_boxes, config)

            if random_rois:
                rpn_rois = generate_random_rois(image.shape, random_rois, gt_class_ids, gt_boxes)
                if detection_targets:
                    rois, mrcnn_class_ids, mrcnn_bbox, mrcnn_mask = build_detection_targets(
                        rpn_rois, gt_class_ids, gt_boxes, gt_masks, config)

            if b == 0:
                batch_image_meta = np.zeros((batch_size,) + image_meta.shape,
                                            dtype=image_meta.dtype)
                batch_rpn_match = np.zeros([batch_size, anchors.shape[0], 1],
                                           dtype=rpn_match.dtype)
                batch_rpn_bbox = np.zeros([batch_size, config.RPN_TRAIN_ANCHORS_PER_IMAGE, 4],
                                          dtype=rpn_bbox.dtype)
                batch_images = np.zeros((batch_size,) + image.shape, dtype=np.float32)
                batch_gt_class_ids = np.zeros((batch_size, config.MAX_GT_INSTANCES),
                                              dtype=np.int32)
                batch_gt_boxes = np.zeros((batch_size, config.MAX_GT_INSTANCES, 4),
                                          dtype=np.int32)
                batch_gt_masks = np.zeros((batch_size, gt_masks.shape[0], gt_masks.shape[1],
                                           config.MAX_GT_INSTANCES), dtype=gt_masks.dtype)
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
            batch_images[b] = mold_image(image.astype(np.float32), config)
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
            logger.exception("Error processing %s", _describe(dataset, image_id))
            error_count += 1
            if error_count > 5:
                raise
