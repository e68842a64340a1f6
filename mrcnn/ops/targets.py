"""Detection targets: which proposals the heads train on, and what they should predict.

Pure TensorFlow, no Keras, no Config. Callable eagerly on NumPy input (for
notebooks) and inside ``tf.function``. The Keras wrapper is
:class:`mrcnn.layers.detection_target.DetectionTargetLayer`.

Semantics are Matterport's ``detection_targets_graph`` (per image):

1. Zero rows are padding: proposals and gt boxes whose four coordinates are
   all 0 are ignored.
2. Crowd boxes (COCO ``iscrowd``, given a negative class id) are not targets.
   A proposal whose IoU with any crowd box is >= 0.001 is never a negative.
3. Positives: max IoU with a (non-crowd) gt box >= 0.5. Negatives: max IoU
   < 0.5 and not touching a crowd.
4. At most ``int(T * ratio)`` positives are kept (random subset); then
   ``int(float32(1 / ratio) * n_pos) - n_pos`` negatives (random subset), so
   ``n_pos + n_neg <= T``. Rows: positives, negatives, zero padding.
5. Each positive is assigned the gt box of highest IoU (first on ties);
   its class id, its deltas ``box_refinement / bbox_std_dev``, and its mask:
   ``crop_and_resize`` of the gt mask on the proposal box (in mini-mask
   coordinates when ``use_mini_mask``), rounded to 0/1 (half to even).

Differences from Matterport, none of which changes a value it produces:

* Vectorized over the batch (no ``batch_slice``); the random subsets come from
  sorting uniform random keys (``tf.random.uniform``, seedable) instead of
  ``tf.random.shuffle``. Both give a uniformly random subset in random order.
* Never NaN: IoUs of two zero-area boxes (0/0) count as 0, deltas and mini-mask
  boxes are only computed from positives (whose gt box has IoU >= 0.5 and
  therefore a non-zero area). Matterport's ``tf.Assert`` that there is at least
  one proposal is dropped: no proposals give all-padding outputs.
* The outputs carry no gradient (``tf.stop_gradient`` on the proposals), as
  the Faster R-CNN paper's approximate joint training prescribes. In
  Matterport a gradient could flow from the target deltas and masks back
  through the ProposalLayer into the RPN's box predictions; forward values
  are the same, only that stray gradient is gone.
* No gt instances (or only crowds): no positives, hence, by rule 4, no
  negatives either; every output row is zero padding with class id 0. This is
  what Matterport computes; the classifier loss still sees those rows as
  background.
"""
import tensorflow as tf

from mrcnn.ops.boxes import box_refinement_graph, overlaps_graph

__all__ = ["detection_targets", "trim_zeros_mask"]

# Thresholds of Matterport's detection_targets_graph (Mask R-CNN paper, §3:
# "an RoI is considered positive if it has IoU with a ground-truth box of at
# least 0.5 and negative otherwise").
POSITIVE_IOU = 0.5
# A proposal overlapping a crowd region this much is neither positive nor negative.
CROWD_IOU = 0.001


def trim_zeros_mask(boxes):
    """Which rows are real boxes (not zero padding).

    boxes: [..., N, (y1, x1, y2, x2)] any float dtype.

    Returns: [..., N] bool, True where any coordinate is non-zero (Matterport's
    ``trim_zeros_graph`` criterion: sum of absolute values > 0).
    """
    return tf.reduce_sum(tf.abs(boxes), axis=-1) > 0


def _safe_overlaps(boxes1, boxes2):
    """overlaps_graph with 0/0 (two zero-area boxes) mapped to 0 instead of NaN.

    boxes1: [B, N, 4], boxes2: [B, M, 4] float32. Returns [B, N, M] float32.
    """
    iou = overlaps_graph(boxes1, boxes2)
    return tf.where(tf.math.is_nan(iou), tf.zeros_like(iou), iou)


def _pad_rows_to(x, n, axis=1):
    """Zero-pads ``x`` along ``axis`` to at least ``n`` rows (dynamic shapes)."""
    extra = tf.maximum(n - tf.shape(x)[axis], 0)
    paddings = [[0, 0]] * x.shape.rank
    paddings[axis] = [0, extra]
    return tf.pad(x, paddings)


def _random_order(candidates, seed=None):
    """Indices that list the True entries of each row first, in random order.

    candidates: [B, N] bool.

    Returns: [B, N] int32 column indices; in each row the first
    ``count(candidates[b])`` indices point at the candidates, in a uniformly
    random order, the rest at non-candidates.
    """
    keys = tf.random.uniform(tf.shape(candidates), 0.0, 1.0, seed=seed)
    # Non-candidates get keys above every candidate's key (2 > 1).
    keys = tf.where(candidates, keys, 2.0 + keys)
    return tf.argsort(keys, axis=1, stable=True, direction="ASCENDING")


def detection_targets(proposals, gt_class_ids, gt_boxes, gt_masks,
                      train_rois_per_image, roi_positive_ratio, mask_shape,
                      use_mini_mask, bbox_std_dev, seed=None):
    """Subsamples proposals and computes the heads' training targets.

    Arguments:
      proposals: [B, P, (y1, x1, y2, x2)] float32, normalized coordinates,
        zero-padded (all-zero rows are ignored). P may be 0.
      gt_class_ids: [B, G] int, class ids; 0 is padding, negative ids are
        crowd boxes.
      gt_boxes: [B, G, (y1, x1, y2, x2)] float32, normalized, zero-padded.
      gt_masks: [B, h, w, G] bool or 0/1 numbers. Full-image masks
        (h, w = image size) or, with ``use_mini_mask``, mini-masks that cover
        only their gt box (h, w = MINI_MASK_SHAPE).
      train_rois_per_image: T, int, rows per image of every output.
      roi_positive_ratio: float in (0, 1], at most ``int(T * ratio)`` positives.
      mask_shape: (mh, mw) ints, size of the mask targets.
      use_mini_mask: bool, whether ``gt_masks`` are mini-masks.
      bbox_std_dev: 4 floats, the deltas are divided by them.
      seed: optional int, op seed of the random subsampling.

    Returns (all with the batch axis B, rows: positives, negatives, padding):
      rois: [B, T, (y1, x1, y2, x2)] float32, normalized; zero padding rows.
      target_class_ids: [B, T] int32; 0 for negatives and padding.
      target_deltas: [B, T, (dy, dx, log(dh), log(dw))] float32, divided by
        ``bbox_std_dev``; 0 for negatives and padding.
      target_masks: [B, T, mh, mw] float32 0/1; 0 for negatives and padding.
    """
    T = int(train_rois_per_image)
    if T <= 0:
        raise ValueError(f"train_rois_per_image must be a positive int, got {train_rois_per_image!r}.")
    if not 0.0 < float(roi_positive_ratio) <= 1.0:
        raise ValueError(f"roi_positive_ratio must be in (0, 1], got {roi_positive_ratio!r}.")
    mask_shape = tuple(int(s) for s in mask_shape)
    if len(mask_shape) != 2:
        raise ValueError(f"mask_shape must be (height, width), got {mask_shape!r}.")
    std = tf.constant([float(s) for s in bbox_std_dev], tf.float32)
    if std.shape != (4,):
        raise ValueError(f"bbox_std_dev must have 4 values, got {bbox_std_dev!r}.")
    # Matterport: positive_count = int(T * ratio) in Python floats.
    max_positives = int(T * float(roi_positive_ratio))

    # Targets are constants for the losses: no gradient flows back into the
    # proposals (the paper's "approximate joint training", Faster R-CNN §3.2).
    proposals = tf.stop_gradient(tf.cast(tf.convert_to_tensor(proposals), tf.float32))
    gt_class_ids = tf.cast(tf.convert_to_tensor(gt_class_ids), tf.int32)
    gt_boxes = tf.cast(tf.convert_to_tensor(gt_boxes), tf.float32)
    gt_masks = tf.convert_to_tensor(gt_masks)
    # crop_and_resize takes uint8 and returns float32: bool masks become uint8
    # (1 byte per pixel), not float32, since full-size masks can be large.
    if gt_masks.dtype == tf.bool:
        gt_masks = tf.cast(gt_masks, tf.uint8)
    elif gt_masks.dtype not in (tf.uint8, tf.float32):
        gt_masks = tf.cast(gt_masks, tf.float32)

    # At least T proposal rows and one gt column, so the fixed-size slices and
    # argmax below are defined; the added rows are zero padding (ignored).
    proposals = _pad_rows_to(proposals, T, axis=1)          # [B, P', 4], P' >= T
    gt_class_ids = _pad_rows_to(gt_class_ids, 1, axis=1)    # [B, G']
    gt_boxes = _pad_rows_to(gt_boxes, 1, axis=1)            # [B, G', 4]
    gt_masks = _pad_rows_to(gt_masks, 1, axis=3)            # [B, h, w, G']

    valid_proposal = trim_zeros_mask(proposals)                     # [B, P']
    valid_gt = trim_zeros_mask(gt_boxes)                            # [B, G']
    is_gt = tf.logical_and(valid_gt, gt_class_ids > 0)              # [B, G']
    is_crowd = tf.logical_and(valid_gt, gt_class_ids < 0)           # [B, G']

    overlaps = _safe_overlaps(proposals, gt_boxes)                  # [B, P', G']
    # Columns that are not (non-crowd) gt boxes never match: IoU -1.
    gt_overlaps = tf.where(is_gt[:, None, :], overlaps, -1.0)
    roi_iou_max = tf.reduce_max(gt_overlaps, axis=2)                # [B, P']
    crowd_overlaps = tf.where(is_crowd[:, None, :], overlaps, 0.0)
    no_crowd = tf.reduce_max(crowd_overlaps, axis=2) < CROWD_IOU    # [B, P']

    positive = tf.logical_and(valid_proposal, roi_iou_max >= POSITIVE_IOU)
    negative = tf.logical_and(
        valid_proposal, tf.logical_and(roi_iou_max < POSITIVE_IOU, no_crowd))

    # Counts per image, following Matterport's arithmetic exactly:
    # negatives = int(float32(1/ratio) * float32(n_pos)) - n_pos.
    num_pos = tf.minimum(tf.reduce_sum(tf.cast(positive, tf.int32), axis=1), max_positives)
    r = tf.constant(1.0 / float(roi_positive_ratio), tf.float32)
    num_neg = tf.cast(r * tf.cast(num_pos, tf.float32), tf.int32) - num_pos
    num_neg = tf.minimum(num_neg, tf.reduce_sum(tf.cast(negative, tf.int32), axis=1))
    num_neg = tf.minimum(num_neg, T - num_pos)   # never more than T rows in all

    pos_order = _random_order(positive, seed)    # [B, P'] positives first
    neg_order = _random_order(negative, None if seed is None else seed + 1)

    # Output row j: positive j if j < num_pos, else negative j - num_pos if
    # j < num_pos + num_neg, else padding.
    slot = tf.range(T)[None, :]                                           # [1, T]
    is_pos_row = slot < num_pos[:, None]                                  # [B, T]
    is_neg_row = tf.logical_and(~is_pos_row, slot < (num_pos + num_neg)[:, None])
    neg_slot = tf.clip_by_value(slot - num_pos[:, None], 0, tf.shape(proposals)[1] - 1)
    source = tf.where(is_pos_row,
                      tf.broadcast_to(pos_order[:, :T], tf.shape(is_pos_row)),
                      tf.gather(neg_order, neg_slot, batch_dims=1))       # [B, T]
    used_row = tf.logical_or(is_pos_row, is_neg_row)

    rois = tf.gather(proposals, source, batch_dims=1)                     # [B, T, 4]
    rois = tf.where(used_row[..., None], rois, 0.0)

    # Gt assignment: highest IoU, first index on ties (as tf.argmax over the
    # trimmed gt list in Matterport, whose order is preserved).
    assignment = tf.argmax(tf.gather(gt_overlaps, source, batch_dims=1), axis=2,
                           output_type=tf.int32)                          # [B, T]
    roi_gt_boxes = tf.gather(gt_boxes, assignment, batch_dims=1)          # [B, T, 4]
    roi_gt_class_ids = tf.gather(gt_class_ids, assignment, batch_dims=1)  # [B, T]
    target_class_ids = tf.where(is_pos_row, roi_gt_class_ids, 0)

    # Deltas only where positive: the gt box of a positive has a non-zero area.
    # Other rows get a harmless unit box so no inf/NaN is ever computed.
    unit = tf.constant([0.0, 0.0, 1.0, 1.0])
    safe_rois = tf.where(is_pos_row[..., None], rois, unit)
    safe_gt = tf.where(is_pos_row[..., None], roi_gt_boxes, unit)
    deltas = box_refinement_graph(safe_rois, safe_gt) / std
    target_deltas = tf.where(is_pos_row[..., None], deltas, 0.0)

    # Masks: only the first max_positives rows can be positive, crop just those.
    k = max_positives
    pos_rois = safe_rois[:, :k]                                           # [B, k, 4]
    pos_gt = safe_gt[:, :k]
    if use_mini_mask:
        # Proposal box in the mini-mask's frame: the gt box becomes (0, 0, 1, 1).
        gt_h = pos_gt[..., 2] - pos_gt[..., 0]
        gt_w = pos_gt[..., 3] - pos_gt[..., 1]
        crop_boxes = tf.stack([
            (pos_rois[..., 0] - pos_gt[..., 0]) / gt_h,
            (pos_rois[..., 1] - pos_gt[..., 1]) / gt_w,
            (pos_rois[..., 2] - pos_gt[..., 0]) / gt_h,
            (pos_rois[..., 3] - pos_gt[..., 1]) / gt_w,
        ], axis=-1)
    else:
        crop_boxes = pos_rois
    batch = tf.shape(gt_masks)[0]
    num_gt = tf.shape(gt_masks)[3]
    # [B, h, w, G'] -> [B * G', h, w, 1]: one image per (batch item, gt mask).
    mask_images = tf.reshape(tf.transpose(gt_masks, [0, 3, 1, 2]),
                             tf.concat([[batch * num_gt], tf.shape(gt_masks)[1:3], [1]], 0))
    mask_ids = tf.range(batch)[:, None] * num_gt + assignment[:, :k]     # [B, k]
    crops = tf.image.crop_and_resize(
        mask_images, tf.reshape(crop_boxes, [-1, 4]), tf.reshape(mask_ids, [-1]),
        mask_shape)                                                       # [B*k, mh, mw, 1]
    crops = tf.reshape(crops, [batch, k, mask_shape[0], mask_shape[1]])
    # Binary targets for the binary cross-entropy: threshold at 0.5.
    crops = tf.round(crops)
    crops = tf.where(is_pos_row[:, :k, None, None], crops, 0.0)
    target_masks = tf.pad(crops, [[0, 0], [0, T - k], [0, 0], [0, 0]])

    return rois, target_class_ids, target_deltas, target_masks
