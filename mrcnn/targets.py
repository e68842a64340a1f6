"""Training targets on the NumPy side: which anchors the RPN learns from, and
the heads' targets (for notebooks and head-only training).

* :func:`rpn_targets` (Matterport's ``build_rpn_targets``): vectorized;
  identical to Matterport on the U1 golden cases, including the
  ``np.random.choice`` draws on NumPy's legacy global RNG, so a seeded run
  samples the same anchors.
* :func:`roi_targets` (``build_detection_targets``),
  :func:`generate_random_rois`: NumPy versions of the heads' targets, for
  notebooks and for training the heads without the RPN (``random_rois``).
  In training the graph computes them (``layers.DetectionTargetLayer``).

Pixel boxes are ``(y1, x1, y2, x2)`` with y2, x2 exclusive; deltas are
``(dy, dx, log(dh), log(dw))``.
"""
import numpy as np

from mrcnn.arguments import (DetectionTargetSpec, RpnTargetSpec, detection_target_spec,
                             rpn_target_spec)
from mrcnn.boxes import box_refinement, compute_overlaps
from mrcnn.resize import resize

__all__ = ["rpn_targets", "build_rpn_targets", "generate_random_rois", "roi_targets",
           "build_detection_targets", "RPN_POSITIVE_IOU", "RPN_NEGATIVE_IOU", "CROWD_IOU"]

# Anchor / gt IoU thresholds of the RPN (Faster R-CNN paper, section 3.1.2).
RPN_POSITIVE_IOU = 0.7
RPN_NEGATIVE_IOU = 0.3
# An anchor overlapping a crowd box this much is never a negative.
CROWD_IOU = 0.001


############################################################
#  RPN targets
############################################################

def rpn_targets(anchors: np.ndarray, gt_class_ids, gt_boxes, spec: RpnTargetSpec,
                legacy_zero_iou_match: bool = False):
    """Finds the anchors the RPN trains on and the deltas they should predict.

    anchors: [num_anchors, (y1, x1, y2, x2)] pixels.
    gt_class_ids: [num_gt] int; negative ids are crowd boxes.
    gt_boxes: [num_gt, (y1, x1, y2, x2)] pixels.
    spec: anchors_per_image (RPN_TRAIN_ANCHORS_PER_IMAGE) and bbox_std_dev
        (RPN_BBOX_STD_DEV), see ``arguments.rpn_target_spec``.
    legacy_zero_iou_match: Matterport's behaviour for a gt box that overlaps
        no anchor (max IoU 0): it marks *every* anchor with IoU 0 to that box
        positive (``overlaps == max`` is true for all of them), thousands of
        nonsense positives with deltas towards a far box. The default (False)
        skips such a gt box in the "best anchor per gt box" step. Both agree
        whenever every gt box overlaps some anchor.

    Rules (Matterport's): negatives have max IoU < 0.3 and crowd IoU < 0.001;
    positives have IoU >= 0.7, plus for each gt box every anchor whose IoU
    equals that box's maximum. Then at most anchors_per_image // 2
    positives and anchors_per_image in all are kept, the extra ones
    reset to neutral with ``np.random.choice`` on NumPy's legacy global RNG
    (same calls, same order as Matterport). With no non-crowd gt box every
    anchor outside crowds is negative.

    Returns:
      rpn_match: [num_anchors] int32, 1 positive, -1 negative, 0 neutral.
      rpn_bbox: [anchors_per_image, (dy, dx, log(dh), log(dw))]
        float64, the deltas of the positive anchors in anchor order, divided
        by bbox_std_dev, zero padded.
    """
    anchors = np.asarray(anchors)
    gt_class_ids = np.asarray(gt_class_ids)
    gt_boxes = np.asarray(gt_boxes).reshape(-1, 4)
    num_anchors = anchors.shape[0]
    train_anchors = int(spec.anchors_per_image)
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
        crowd_overlaps = compute_overlaps(anchors, crowd_boxes)
        no_crowd_bool = np.amax(crowd_overlaps, axis=1) < CROWD_IOU
    else:
        no_crowd_bool = np.ones([num_anchors], dtype=bool)

    if gt_boxes.shape[0] == 0:
        rpn_match[no_crowd_bool] = -1
        anchor_iou_argmax = np.zeros([num_anchors], dtype=np.int64)
    else:
        overlaps = compute_overlaps(anchors, gt_boxes)   # [anchors, gt]
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
        rpn_bbox[:n] /= np.asarray(spec.bbox_std_dev, dtype=np.float64)
    return rpn_match, rpn_bbox


def build_rpn_targets(image_shape, anchors, gt_class_ids, gt_boxes, config,
                      legacy_zero_iou_match=False):
    """Matterport's signature of :func:`rpn_targets`: ``config`` gives
    RPN_TRAIN_ANCHORS_PER_IMAGE and RPN_BBOX_STD_DEV (or pass an
    RpnTargetSpec); ``image_shape`` is unused, as in Matterport."""
    spec = config if isinstance(config, RpnTargetSpec) else rpn_target_spec(config)
    return rpn_targets(anchors, gt_class_ids, gt_boxes, spec,
                       legacy_zero_iou_match=legacy_zero_iou_match)


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


def roi_targets(rpn_rois, gt_class_ids, gt_boxes, gt_masks, spec: DetectionTargetSpec):
    """Targets of the classifier and mask heads in NumPy (Matterport's).

    Not used in normal training (``DetectionTargetLayer`` does it in the
    graph); useful for debugging and to train the heads without the RPN.

    rpn_rois: [N, (y1, x1, y2, x2)] proposal boxes, pixels.
    gt_class_ids: [instance_count] int class ids (crowds and padding, <= 0,
        are left out).
    gt_boxes: [instance_count, (y1, x1, y2, x2)] int pixels.
    gt_masks: [height, width, instance_count] bool, full size or mini-masks
        (``spec.use_mini_mask``).
    spec: train_rois (TRAIN_ROIS_PER_IMAGE), positive_ratio
        (ROI_POSITIVE_RATIO), num_classes, bbox_std_dev, mask_shape,
        use_mini_mask, image_shape (``arguments.detection_target_spec``).

    Foreground: IoU > 0.5 (strictly, unlike the graph version); background:
    IoU < 0.5. Subsampled with ``np.random.choice`` (legacy global RNG); when
    there are too few, background ROIs are repeated.

    Returns:
      rois: [train_rois, (y1, x1, y2, x2)] pixels.
      class_ids: [train_rois] int32.
      bboxes: [train_rois, num_classes, (dy, dx, log(dh), log(dw))]
        float32, class-specific deltas divided by BBOX_STD_DEV.
      masks: [train_rois, MASK_SHAPE[0], MASK_SHAPE[1], NUM_CLASSES]
        float32, class-specific masks in [0, 1].
    Raises ValueError when there are no ROIs or no instances.
    """
    rpn_rois = np.asarray(rpn_rois)
    gt_class_ids = np.asarray(gt_class_ids).astype(np.int32)
    gt_boxes = np.asarray(gt_boxes).astype(np.int32)
    gt_masks = np.asarray(gt_masks).astype(bool)
    if rpn_rois.shape[0] == 0:
        raise ValueError("build_detection_targets: no ROIs given.")
    train_rois = int(spec.train_rois)

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
    overlaps = compute_overlaps(rpn_rois, gt_boxes)        # [rois, gt]
    rpn_roi_iou_argmax = np.argmax(overlaps, axis=1)
    rpn_roi_iou_max = overlaps[np.arange(overlaps.shape[0]), rpn_roi_iou_argmax]
    rpn_roi_gt_boxes = gt_boxes[rpn_roi_iou_argmax]
    rpn_roi_gt_class_ids = gt_class_ids[rpn_roi_iou_argmax]

    fg_ids = np.where(rpn_roi_iou_max > 0.5)[0]
    bg_ids = np.where(rpn_roi_iou_max < 0.5)[0]

    # Subsample: aim for ROI_POSITIVE_RATIO foreground.
    fg_roi_count = int(train_rois * spec.positive_ratio)
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
    bboxes = np.zeros((train_rois, spec.num_classes, 4), dtype=np.float32)
    pos_ids = np.where(roi_gt_class_ids > 0)[0]
    bboxes[pos_ids, roi_gt_class_ids[pos_ids]] = box_refinement(
        rois[pos_ids], roi_gt_boxes[pos_ids, :4])
    bboxes /= np.asarray(spec.bbox_std_dev, dtype=np.float32)

    # Class-specific masks.
    mask_shape = tuple(spec.mask_shape)
    masks = np.zeros((train_rois,) + mask_shape + (spec.num_classes,), dtype=np.float32)
    for i in pos_ids:
        class_id = roi_gt_class_ids[i]
        gt_id = roi_gt_assignment[i]
        class_mask = gt_masks[:, :, gt_id]
        if spec.use_mini_mask:
            # Paste the mini-mask, resized to its gt box, into an image-sized mask.
            placeholder = np.zeros(tuple(spec.image_shape[:2]), dtype=bool)
            gt_y1, gt_x1, gt_y2, gt_x2 = gt_boxes[gt_id]
            placeholder[gt_y1:gt_y2, gt_x1:gt_x2] = np.round(
                resize(class_mask, (gt_y2 - gt_y1, gt_x2 - gt_x1))).astype(bool)
            class_mask = placeholder
        y1, x1, y2, x2 = rois[i].astype(np.int32)
        m = class_mask[y1:y2, x1:x2]
        masks[i, :, :, class_id] = resize(m, mask_shape)
    return rois, roi_gt_class_ids, bboxes, masks


def build_detection_targets(rpn_rois, gt_class_ids, gt_boxes, gt_masks, config):
    """Matterport's signature of :func:`roi_targets` (``config``: a
    Config or a DetectionTargetSpec)."""
    spec = config if isinstance(config, DetectionTargetSpec) else detection_target_spec(config)
    return roi_targets(rpn_rois, gt_class_ids, gt_boxes, gt_masks, spec)
