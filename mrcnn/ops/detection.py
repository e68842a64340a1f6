"""Final detections from classified proposals (Matterport's refine_detections_graph).

Pure TensorFlow, no Keras, no Config; callable eagerly on NumPy arrays.

Shape shorthand: B = images, N = ROIs per image, C = classes (background
included), D = max_instances (``DETECTION_MAX_INSTANCES``).

Semantics copied from Matterport (GOLDEN.md §6.5) because existing weights
are tuned to them: each ROI takes its argmax class (background too, then
dropped), that class's deltas refine the box, boxes are clipped to the image
window, per-class NMS, then the top D by score. Zero-area boxes are kept.

Batched formulation: Matterport ran NMS once per class present in each image
on the gathered subset of that class. Here every (image, class) pair present
runs ``tf.image.non_max_suppression`` on all N boxes of its image with the
other boxes' scores set to -inf; NMS skips boxes scoring at or below its
``score_threshold`` (-inf), so the kept set is the same, and relative index
order (the tie-break) is unchanged. The "kept set in ascending ROI index,
then top_k by score" step becomes one ``top_k`` over all N with dropped
boxes at -inf, which picks the same rows in the same order.
"""
import tensorflow as tf

from mrcnn.ops.boxes import apply_box_deltas_graph, as_float32, clip_boxes_graph

__all__ = ["refine_detections"]


def _per_class_nms_mask(boxes, scores, class_ids, num_classes, candidates, max_instances, nms_threshold):
    """Marks the boxes that survive NMS within their own class.

    boxes: [B, N, (y1, x1, y2, x2)] float32.
    scores: [B, N] float32.
    class_ids: [B, N] int32.
    num_classes: int32 scalar, C.
    candidates: [B, N] bool, boxes that take part (not background, confident).
    max_instances: int, at most this many survivors per (image, class).
    nms_threshold: float IoU threshold.

    Returns: [B, N] bool, True for survivors.
    """
    num_boxes = tf.shape(boxes)[1]
    # One NMS per (image, class) pair that has candidates: key = image * C + class.
    image_ix = tf.broadcast_to(tf.range(tf.shape(boxes)[0])[:, None], tf.shape(class_ids))
    keys = image_ix * num_classes + class_ids
    pair_keys = tf.unique(tf.boolean_mask(keys, candidates))[0]
    neg_inf = tf.constant(float("-inf"), tf.float32)

    def nms_one_pair(key):
        b = key // num_classes
        in_class = tf.logical_and(candidates[b], tf.equal(keys[b], key))
        class_scores = tf.where(in_class, scores[b], neg_inf)
        keep = tf.image.non_max_suppression(
            boxes[b], class_scores, max_output_size=max_instances, iou_threshold=nms_threshold
        )
        # Pad with -1 so every pair returns [max_instances].
        keep = tf.pad(keep, [(0, max_instances - tf.shape(keep)[0])], constant_values=-1)
        return tf.reshape(keep, [max_instances])

    kept = tf.map_fn(
        nms_one_pair,
        pair_keys,
        fn_output_signature=tf.TensorSpec([max_instances], tf.int32),
    )  # [pairs, D] ROI indices, -1 padded
    kept_images = tf.broadcast_to((pair_keys // num_classes)[:, None], tf.shape(kept))
    valid = kept >= 0
    scatter_ix = tf.stack([tf.boolean_mask(kept_images, valid), tf.boolean_mask(kept, valid)], axis=1)
    return tf.scatter_nd(
        scatter_ix,
        tf.ones([tf.shape(scatter_ix)[0]], tf.bool),
        tf.stack([tf.shape(boxes)[0], num_boxes]),
    )


def _class_agnostic_nms_mask(boxes, scores, candidates, max_instances, nms_threshold):
    """[B, N] bool: the candidates that survive one NMS over all classes.

    boxes [B, N, 4], scores [B, N] float32, candidates [B, N] bool; boxes
    that are not candidates score -inf, which NMS skips.
    """
    neg_inf = tf.constant(float("-inf"), tf.float32)
    ranked = tf.where(candidates, scores, neg_inf)
    num_boxes = tf.shape(boxes)[1]

    def one_image(args):
        image_boxes, image_scores = args
        keep = tf.image.non_max_suppression(image_boxes, image_scores, max_instances,
                                            iou_threshold=float(nms_threshold))
        return tf.scatter_nd(keep[:, None], tf.ones_like(keep, tf.bool), [num_boxes])

    return tf.map_fn(one_image, (boxes, ranked), fn_output_signature=tf.TensorSpec([None], tf.bool))


def refine_detections(
    rois,
    probs,
    deltas,
    window,
    bbox_std_dev=(0.1, 0.1, 0.2, 0.2),
    min_confidence=0.7,
    max_instances=100,
    nms_threshold=0.3,
    cross_class_nms_threshold=None,
):
    """Refines classified ROIs into the final, NMS-filtered detections of each image.

    rois: [B, N, (y1, x1, y2, x2)] normalized proposals (zero padding allowed).
    probs: [B, N, C] class probabilities (``mrcnn_class``).
    deltas: [B, N, C, (dy, dx, log(dh), log(dw))] class-specific deltas
        (``mrcnn_bbox``), *before* multiplication by ``bbox_std_dev``.
    window: [B, (y1, x1, y2, x2)] (or [4] for all images) normalized window of
        the real image inside the padded one; boxes are clipped to it.
    bbox_std_dev: 4 floats multiplied into the deltas (``BBOX_STD_DEV``).
    min_confidence: ROIs whose class score is below this are dropped; 0 (or
        any falsy value) disables the filter, as in Matterport
        (``DETECTION_MIN_CONFIDENCE``).
    max_instances: D, detections per image (``DETECTION_MAX_INSTANCES``); also
        the per-class NMS output limit.
    nms_threshold: per-class NMS IoU threshold (``DETECTION_NMS_THRESHOLD``).
    cross_class_nms_threshold: None (Matterport: NMS within each class only),
        or an IoU threshold of a second, class-agnostic NMS over the per-class
        survivors: of two detections of different classes overlapping more
        than this, the lower-scoring one is dropped (one box per object;
        ``DETECTION_CROSS_CLASS_NMS_THRESHOLD``).

    Returns: [B, D, (y1, x1, y2, x2, class_id, score)] float32, normalized
    boxes, score descending (ties: lower ROI index first), zero rows after
    the last detection (class_id 0 marks padding).
    """
    rois = as_float32(rois)
    probs = as_float32(probs)
    deltas = as_float32(deltas)
    window = as_float32(window)
    for name, t, rank in [("rois", rois, 3), ("probs", probs, 3), ("deltas", deltas, 4)]:
        if t.shape.rank is not None and t.shape.rank != rank:
            raise ValueError(f"{name} must have rank {rank} (see refine_detections docstring), got shape {t.shape}.")
    max_instances = int(max_instances)

    # [B, N] top class per ROI (first index on ties) and its probability.
    class_ids = tf.argmax(probs, axis=-1, output_type=tf.int32)
    class_scores = tf.gather(probs, class_ids, batch_dims=2)
    # [B, N, 4] deltas of that class, then refined boxes clipped to the window.
    deltas_specific = tf.gather(deltas, class_ids, batch_dims=2)
    refined_rois = apply_box_deltas_graph(rois, deltas_specific * tf.constant(bbox_std_dev, tf.float32))
    refined_rois = clip_boxes_graph(refined_rois, window)

    # Drop background; the confidence filter only runs when min_confidence is set.
    candidates = class_ids > 0
    if min_confidence:
        candidates = tf.logical_and(candidates, class_scores >= min_confidence)

    survivors = _per_class_nms_mask(
        refined_rois, class_scores, class_ids, tf.shape(probs)[-1], candidates, max_instances, nms_threshold
    )
    survivors = tf.logical_and(survivors, candidates)
    if cross_class_nms_threshold is not None:
        survivors = tf.logical_and(survivors, _class_agnostic_nms_mask(
            refined_rois, class_scores, survivors, max_instances, cross_class_nms_threshold))

    # Top D survivors by score; dropped ROIs sink to -inf and are zeroed below.
    ranked = tf.where(survivors, class_scores, tf.constant(float("-inf"), tf.float32))
    k = tf.minimum(max_instances, tf.shape(ranked)[1])
    top_ix = tf.nn.top_k(ranked, k=k, sorted=True).indices  # [B, k]
    detections = tf.concat(
        [
            tf.gather(refined_rois, top_ix, batch_dims=1),
            tf.cast(tf.gather(class_ids, top_ix, batch_dims=1), tf.float32)[..., None],
            tf.gather(class_scores, top_ix, batch_dims=1)[..., None],
        ],
        axis=-1,
    )  # [B, k, 6]
    num_detections = tf.reduce_sum(tf.cast(survivors, tf.int32), axis=1)  # [B]
    is_real = tf.range(k)[None, :] < num_detections[:, None]
    detections = tf.where(is_real[..., None], detections, tf.zeros_like(detections))
    # Zero-pad to D rows when there are fewer than D ROIs.
    detections = tf.pad(detections, [(0, 0), (0, max_instances - k), (0, 0)])
    return tf.reshape(detections, [-1, max_instances, 6])
