"""The five Mask R-CNN losses, with Matterport's names and formulas.

Each function takes explicit tensors (no Config) and returns a float32 scalar.
Every one is safe when there is nothing to average (no positive anchors, no
positive ROIs, no active predictions): it returns 0, never NaN.

Differences from Matterport, none of which changes a value it computes:

* ``rpn_bbox_loss_graph(target_bbox, rpn_match, rpn_bbox)`` does not need
  ``config.IMAGES_PER_GPU``: the per-image packing of ``target_bbox`` is
  vectorized, so the batch size stays dynamic. Matterport's argument order
  ``rpn_bbox_loss_graph(config, target_bbox, rpn_match, rpn_bbox)`` is still
  accepted. Positive anchors beyond the ``target_bbox`` rows of their image
  (impossible with ``build_rpn_targets``' output) are ignored instead of
  failing.
* ``mrcnn_class_loss_graph`` reads the active classes of each image of the
  batch (Matterport used image 0's for the whole batch, a TODO in its code);
  identical when all images come from the same data set.
* ``mrcnn_mask_loss_graph`` uses Keras 2's ``binary_crossentropy`` formula
  (clip to [1e-7, 1 - 1e-7], then ``log(p + 1e-7)``) so values match
  Matterport's; Keras 3's op drops the ``+ 1e-7``.
"""
import tensorflow as tf

__all__ = [
    "smooth_l1_loss",
    "rpn_class_loss_graph",
    "rpn_bbox_loss_graph",
    "mrcnn_class_loss_graph",
    "mrcnn_bbox_loss_graph",
    "mrcnn_mask_loss_graph",
]

# Keras' backend epsilon, used by Keras 2's binary_crossentropy.
_EPSILON = 1e-7


def _mean_or_zero(x):
    """Mean of all elements of ``x``, or 0.0 when ``x`` is empty."""
    x = tf.reshape(x, [-1])
    return tf.math.divide_no_nan(tf.reduce_sum(x), tf.cast(tf.size(x), x.dtype))


def _squeeze_match(rpn_match):
    """[batch, anchors, 1] or [batch, anchors] -> [batch, anchors] int32."""
    rpn_match = tf.convert_to_tensor(rpn_match)
    rpn_match = tf.reshape(rpn_match, tf.shape(rpn_match)[:2])
    return tf.cast(rpn_match, tf.int32)


def smooth_l1_loss(y_true, y_pred):
    """Smooth-L1 (Huber with delta 1) per element, as in Fast R-CNN.

    y_true, y_pred: same shape, e.g. [N, 4] float.

    Returns: the same shape, ``0.5 * d**2`` where ``|d| < 1``, else
    ``|d| - 0.5``, with ``d = y_true - y_pred``.
    """
    y_true = tf.cast(y_true, tf.float32)
    y_pred = tf.cast(y_pred, tf.float32)
    diff = tf.abs(y_true - y_pred)
    less_than_one = tf.cast(diff < 1.0, tf.float32)
    return (less_than_one * 0.5 * diff ** 2) + (1 - less_than_one) * (diff - 0.5)


def rpn_class_loss_graph(rpn_match, rpn_class_logits):
    """RPN anchor classifier loss: softmax cross-entropy over non-neutral anchors.

    rpn_match: [batch, anchors, 1] (or [batch, anchors]) int; 1 positive,
        -1 negative, 0 neutral (ignored).
    rpn_class_logits: [batch, anchors, 2] float, logits for (BG, FG).

    Returns: scalar float32, the mean over positive and negative anchors of
    the whole batch; 0 if there are none.
    """
    rpn_match = _squeeze_match(rpn_match)
    rpn_class_logits = tf.cast(rpn_class_logits, tf.float32)
    # -1/+1 match -> 0/1 class.
    anchor_class = tf.cast(tf.equal(rpn_match, 1), tf.int32)
    indices = tf.where(tf.not_equal(rpn_match, 0))
    logits = tf.gather_nd(rpn_class_logits, indices)
    anchor_class = tf.gather_nd(anchor_class, indices)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=anchor_class, logits=logits)
    return _mean_or_zero(loss)


def rpn_bbox_loss_graph(target_bbox, rpn_match, rpn_bbox, *legacy):
    """RPN box regression loss: smooth-L1 over the positive anchors.

    target_bbox: [batch, max positive anchors, (dy, dx, log(dh), log(dw))]
        float; the deltas of each image's positive anchors, in anchor order,
        zero padded (``build_rpn_targets``' ``rpn_bbox``, already divided by
        RPN_BBOX_STD_DEV).
    rpn_match: [batch, anchors, 1] (or [batch, anchors]) int; 1 positive,
        -1 negative, 0 neutral. Only positives contribute.
    rpn_bbox: [batch, anchors, (dy, dx, log(dh), log(dw))] float, predictions.

    Matterport's order ``(config, target_bbox, rpn_match, rpn_bbox)`` is also
    accepted; the config is not used.

    Returns: scalar float32, the mean over all (anchor, coordinate) elements
    of the positive anchors; 0 if there are none.
    """
    if legacy:
        if len(legacy) != 1 or not hasattr(target_bbox, "IMAGES_PER_GPU"):
            raise TypeError("rpn_bbox_loss_graph(target_bbox, rpn_match, rpn_bbox) takes 3 tensors "
                            "(or Matterport's (config, target_bbox, rpn_match, rpn_bbox)).")
        target_bbox, rpn_match, rpn_bbox = rpn_match, rpn_bbox, legacy[0]
    rpn_match = _squeeze_match(rpn_match)
    target_bbox = tf.cast(target_bbox, tf.float32)
    rpn_bbox = tf.cast(rpn_bbox, tf.float32)
    max_targets = tf.shape(target_bbox)[1]

    # The k-th positive anchor of an image (anchor order) pairs with row k of
    # that image's target_bbox (Matterport's batch_pack_graph).
    positive = tf.equal(rpn_match, 1)                                    # [B, A]
    rank = tf.cumsum(tf.cast(positive, tf.int32), axis=1) - 1            # [B, A]
    used = tf.logical_and(positive, rank < max_targets)
    pred = tf.boolean_mask(rpn_bbox, used)                               # [n, 4]
    counts = tf.reduce_sum(tf.cast(used, tf.int32), axis=1)              # [B]
    target = tf.boolean_mask(target_bbox, tf.range(max_targets)[None, :] < counts[:, None])
    return _mean_or_zero(smooth_l1_loss(target, pred))


def mrcnn_class_loss_graph(target_class_ids, pred_class_logits, active_class_ids):
    """Classifier head loss: softmax cross-entropy, ignoring inactive predictions.

    target_class_ids: [batch, num_rois] int (or float) class ids; padding rows
        are 0 (background) and count, as in Matterport.
    pred_class_logits: [batch, num_rois, num_classes] float.
    active_class_ids: [batch, num_classes] 0/1: the classes of each image's
        data set (image meta). A ROI whose *predicted* class is not active
        does not contribute.

    Returns: scalar float32, sum of the contributing losses divided by their
    count; 0 if none contributes.
    """
    target_class_ids = tf.cast(target_class_ids, tf.int64)
    pred_class_logits = tf.cast(pred_class_logits, tf.float32)
    active_class_ids = tf.cast(active_class_ids, tf.float32)
    pred_class_ids = tf.argmax(pred_class_logits, axis=2)                 # [B, R]
    pred_active = tf.gather(active_class_ids, pred_class_ids, batch_dims=1)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=target_class_ids, logits=pred_class_logits)
    loss = loss * pred_active
    return tf.math.divide_no_nan(tf.reduce_sum(loss), tf.reduce_sum(pred_active))


def _positive_rows(target_class_ids):
    """Flat indices of positive ROIs and (index, class) pairs for gather_nd."""
    target_class_ids = tf.reshape(tf.cast(target_class_ids, tf.int64), [-1])
    positive_ix = tf.where(target_class_ids > 0)[:, 0]
    positive_class_ids = tf.gather(target_class_ids, positive_ix)
    return positive_ix, tf.stack([positive_ix, positive_class_ids], axis=1)


def mrcnn_bbox_loss_graph(target_bbox, target_class_ids, pred_bbox):
    """Box head loss: smooth-L1 on the deltas of the true class of positive ROIs.

    target_bbox: [batch, num_rois, (dy, dx, log(dh), log(dw))] float.
    target_class_ids: [batch, num_rois] int; > 0 marks positive ROIs.
    pred_bbox: [batch, num_rois, num_classes, (dy, dx, log(dh), log(dw))] float.

    Returns: scalar float32, the mean over positive ROIs and the 4 deltas;
    0 if there is no positive ROI.
    """
    target_bbox = tf.reshape(tf.cast(target_bbox, tf.float32), [-1, 4])
    pred_bbox = tf.cast(pred_bbox, tf.float32)
    pred_bbox = tf.reshape(pred_bbox, tf.stack([-1, tf.shape(pred_bbox)[2], 4]))
    positive_ix, indices = _positive_rows(target_class_ids)
    y_true = tf.gather(target_bbox, positive_ix)
    y_pred = tf.gather_nd(pred_bbox, indices)
    return _mean_or_zero(smooth_l1_loss(y_true, y_pred))


def mrcnn_mask_loss_graph(target_masks, target_class_ids, pred_masks):
    """Mask head loss: per-pixel binary cross-entropy on the true class's mask.

    target_masks: [batch, num_rois, height, width] float 0/1, zero padded.
    target_class_ids: [batch, num_rois] int; > 0 marks positive ROIs.
    pred_masks: [batch, num_rois, height, width, num_classes] float
        probabilities (sigmoid outputs).

    Returns: scalar float32, the mean over positive ROIs and pixels; 0 if
    there is no positive ROI.
    """
    target_masks = tf.cast(target_masks, tf.float32)
    pred_masks = tf.cast(pred_masks, tf.float32)
    mask_shape = tf.shape(target_masks)
    target_masks = tf.reshape(target_masks, tf.stack([-1, mask_shape[2], mask_shape[3]]))
    pred_shape = tf.shape(pred_masks)
    pred_masks = tf.reshape(pred_masks, tf.stack([-1, pred_shape[2], pred_shape[3], pred_shape[4]]))
    # [N, height, width, num_classes] -> [N, num_classes, height, width]
    pred_masks = tf.transpose(pred_masks, [0, 3, 1, 2])
    positive_ix, indices = _positive_rows(target_class_ids)
    y_true = tf.gather(target_masks, positive_ix)
    y_pred = tf.gather_nd(pred_masks, indices)
    # Keras 2 backend binary_crossentropy on probabilities.
    y_pred = tf.clip_by_value(y_pred, _EPSILON, 1.0 - _EPSILON)
    bce = -(y_true * tf.math.log(y_pred + _EPSILON)
            + (1.0 - y_true) * tf.math.log(1.0 - y_pred + _EPSILON))
    return _mean_or_zero(bce)
