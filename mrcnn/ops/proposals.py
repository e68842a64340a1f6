"""Region proposals from RPN outputs (Matterport's ProposalLayer, GOLDEN.md §6.3).

Pure TensorFlow, no Keras, no Config; callable eagerly on NumPy arrays.

Shape shorthand: B = images in the batch, A = anchors per image,
K = min(pre_nms_limit, A) anchors kept before NMS, P = proposal_count.
"""
import tensorflow as tf

from mrcnn.ops.boxes import apply_box_deltas_graph, as_float32, clip_boxes_graph

__all__ = ["generate_proposals", "nms_padded"]


def nms_padded(boxes, scores, max_output_size, iou_threshold):
    """Greedy NMS on each image of a batch, results zero padded to a fixed size.

    boxes: [B, N, (y1, x1, y2, x2)] float32.
    scores: [B, N] float32.
    max_output_size: int, P.
    iou_threshold: float; a box is suppressed if its IoU with a kept box is
        greater than this.

    Returns: [B, P, (y1, x1, y2, x2)] float32, the kept boxes of each image in
    keep order (score descending, ties lower index first), then zero rows.

    ``tf.image.non_max_suppression`` per image (through ``tf.map_fn``) rather
    than ``tf.image.non_max_suppression_padded``: the batched op computes IoU
    differently (it adds an epsilon to the union) and is not guaranteed to
    keep exactly Matterport's boxes.
    """
    max_output_size = int(max_output_size)

    def one_image(args):
        image_boxes, image_scores = args
        keep = tf.image.non_max_suppression(
            image_boxes, image_scores, max_output_size, iou_threshold, name="rpn_non_max_suppression"
        )
        proposals = tf.gather(image_boxes, keep)
        padding = tf.maximum(max_output_size - tf.shape(proposals)[0], 0)
        proposals = tf.pad(proposals, [(0, padding), (0, 0)])
        return tf.reshape(proposals, [max_output_size, 4])

    return tf.map_fn(
        one_image,
        (boxes, scores),
        fn_output_signature=tf.TensorSpec([max_output_size, 4], tf.float32),
    )


def generate_proposals(
    rpn_probs,
    rpn_deltas,
    anchors,
    proposal_count,
    nms_threshold,
    pre_nms_limit=6000,
    rpn_bbox_std_dev=(0.1, 0.1, 0.2, 0.2),
):
    """Turns RPN scores and deltas into the top proposals of every image.

    rpn_probs: [B, A, (bg prob, fg prob)] softmax of the RPN classifier.
    rpn_deltas: [B, A, (dy, dx, log(dh), log(dw))] RPN box deltas, *before*
        multiplication by ``rpn_bbox_std_dev``.
    anchors: [B, A, (y1, x1, y2, x2)] or [A, (y1, x1, y2, x2)] normalized
        anchors (the same for all images in the [A, 4] form).
    proposal_count: int, P (``POST_NMS_ROIS_INFERENCE`` / ``_TRAINING``).
    nms_threshold: float IoU above which a lower-scored box is suppressed
        (``RPN_NMS_THRESHOLD``).
    pre_nms_limit: int, only the top ``min(pre_nms_limit, A)`` anchors by
        foreground probability go into NMS (``PRE_NMS_LIMIT``).
    rpn_bbox_std_dev: 4 floats multiplied into the deltas (``RPN_BBOX_STD_DEV``).

    Returns: [B, P, (y1, x1, y2, x2)] float32 normalized proposals, clipped to
    [0, 1], in NMS keep order (foreground probability descending), zero padded
    at the end when fewer than P survive.

    Steps, exactly as Matterport: rank by fg *probability* (``top_k``, ties
    lower index first), deltas times std-dev, apply to the anchors, clip to
    the image (not the window), NMS, pad.
    """
    rpn_probs = as_float32(rpn_probs)
    rpn_deltas = as_float32(rpn_deltas)
    anchors = as_float32(anchors)
    for name, t, rank, last in [
        ("rpn_probs", rpn_probs, 3, 2),
        ("rpn_deltas", rpn_deltas, 3, 4),
    ]:
        if t.shape.rank is not None and (t.shape.rank != rank or t.shape[-1] not in (None, last)):
            raise ValueError(f"{name} must be [batch, anchors, {last}], got shape {t.shape}.")
    if anchors.shape.rank is not None and (
        anchors.shape.rank not in (2, 3) or anchors.shape[-1] not in (None, 4)
    ):
        raise ValueError(f"anchors must be [batch, anchors, 4] or [anchors, 4], got shape {anchors.shape}.")

    # [B, A] foreground probability.
    scores = rpn_probs[:, :, 1]
    deltas = rpn_deltas * tf.constant(rpn_bbox_std_dev, tf.float32)

    # Keep the top K anchors by score; the rest of the work is on [B, K].
    k = tf.minimum(int(pre_nms_limit), tf.shape(scores)[1])
    top = tf.nn.top_k(scores, k, sorted=True, name="top_anchors")
    scores = top.values
    ix = top.indices
    deltas = tf.gather(deltas, ix, batch_dims=1)
    if anchors.shape.rank == 2:
        pre_nms_anchors = tf.gather(anchors, ix)  # shared anchors: [A, 4] -> [B, K, 4]
    else:
        pre_nms_anchors = tf.gather(anchors, ix, batch_dims=1)

    # [B, K, (y1, x1, y2, x2)] refined anchors, clipped to the image. In
    # normalized coordinates the image is [0, 1].
    boxes = apply_box_deltas_graph(pre_nms_anchors, deltas)
    boxes = clip_boxes_graph(boxes, tf.constant([0.0, 0.0, 1.0, 1.0]))

    # No small-box filter: per Xinlei Chen's paper (cited by Matterport) it
    # hurts small objects.
    return nms_padded(boxes, scores, proposal_count, nms_threshold)
