"""Box arithmetic in TensorFlow: normalization, deltas, clipping, IoU.

Pure TensorFlow, no Keras, no Config. Every function accepts NumPy arrays or
tensors, works eagerly (for notebooks) and inside ``tf.function``.

Conventions (Matterport's, see GOLDEN.md §6.1):

* A box is ``(y1, x1, y2, x2)`` in the last axis.
* **Pixel** boxes have y2, x2 exclusive: a box covering rows 10..19 has
  ``y1=10, y2=20``.
* **Normalized** boxes are ``(y1/(H-1), x1/(W-1), (y2-1)/(H-1), (x2-1)/(W-1))``
  for an image of ``H x W`` pixels, so the whole image is ``(0, 0, 1, 1)``.
* **Deltas** are ``(dy, dx, log(dh), log(dw))``: the centre shift in units of
  the box height/width and the log of the size ratio.

All box functions work on any number of leading (batch) dimensions; the
arithmetic is done in float32 in exactly Matterport's operation order, so the
results are bit-identical to its graph functions.
"""
import tensorflow as tf

# The cap on log-scale box refinements (a box grows at most 62.5x), shared
# with the NumPy apply_box_deltas; see mrcnn.utils.
from mrcnn.boxes import BBOX_LOG_SCALE_CLIP

__all__ = [
    "as_float32",
    "norm_boxes_graph",
    "denorm_boxes_graph",
    "apply_box_deltas_graph",
    "clip_boxes_graph",
    "box_refinement_graph",
    "overlaps_graph",
]


def as_float32(x):
    """``x`` (NumPy array or tensor of any float/int dtype) as a float32 tensor.

    Box and score arithmetic always runs in float32: under a reduced-precision
    policy (Config.INFERENCE_PRECISION = "bfloat16") the network hands over
    bfloat16 tensors, and bfloat16 boxes would be off by up to 1/256.
    """
    x = tf.convert_to_tensor(x)
    return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)


def _as_boxes(boxes, name="boxes"):
    """Converts to a float32 tensor and checks that the last axis has 4 values."""
    boxes = as_float32(boxes)
    if boxes.shape.rank is not None and boxes.shape.rank == 0:
        raise ValueError(f"{name} must have a last axis of size 4 (y1, x1, y2, x2), got a scalar.")
    last = boxes.shape[-1] if boxes.shape.rank is not None else None
    if last is not None and last != 4:
        raise ValueError(
            f"{name} must have a last axis of size 4 (y1, x1, y2, x2), got shape {boxes.shape}."
        )
    return boxes


def _norm_scale_shift(shape):
    """Scale ``[H-1, W-1, H-1, W-1]`` and shift ``[0, 0, 1, 1]`` for (de)normalizing.

    shape: [..., (height, width)] image size in pixels; any numeric dtype.
    """
    shape = tf.cast(tf.convert_to_tensor(shape), tf.float32)
    h, w = shape[..., 0:1], shape[..., 1:2]
    scale = tf.concat([h, w, h, w], axis=-1) - tf.constant(1.0)
    shift = tf.constant([0.0, 0.0, 1.0, 1.0])
    return scale, shift


def norm_boxes_graph(boxes, shape):
    """Converts pixel boxes to normalized coordinates.

    boxes: [..., (y1, x1, y2, x2)] pixel coordinates (y2, x2 exclusive).
    shape: [(height, width)] (or [..., 2], broadcast against ``boxes``) image
        size in pixels.

    Returns: [..., (y1, x1, y2, x2)] float32, normalized coordinates:
    ``(box - [0, 0, 1, 1]) / [H-1, W-1, H-1, W-1]``.
    """
    boxes = _as_boxes(boxes)
    scale, shift = _norm_scale_shift(shape)
    return tf.divide(boxes - shift, scale)


def denorm_boxes_graph(boxes, shape):
    """Converts normalized boxes back to pixel coordinates.

    boxes: [..., (y1, x1, y2, x2)] normalized coordinates.
    shape: [(height, width)] (or [..., 2]) image size in pixels.

    Returns: [..., (y1, x1, y2, x2)] int32 pixel coordinates (y2, x2 exclusive):
    ``round(box * [H-1, W-1, H-1, W-1] + [0, 0, 1, 1])`` with round half to
    even. A zero-size normalized box becomes a 1-pixel box, as in Matterport.
    """
    boxes = _as_boxes(boxes)
    scale, shift = _norm_scale_shift(shape)
    return tf.cast(tf.round(tf.multiply(boxes, scale) + shift), tf.int32)


def apply_box_deltas_graph(boxes, deltas):
    """Applies refinement deltas to boxes.

    boxes: [..., (y1, x1, y2, x2)] boxes to update (any coordinate frame).
    deltas: [..., (dy, dx, log(dh), log(dw))] refinements, already multiplied
        by the std-dev (e.g. ``RPN_BBOX_STD_DEV``); same leading shape as
        ``boxes`` (or broadcastable).

    Returns: [..., (y1, x1, y2, x2)] float32 refined boxes, same frame as the
    input: ``cy += dy * h; cx += dx * w; h *= exp(dh); w *= exp(dw)``, with
    dh and dw capped at BBOX_LOG_SCALE_CLIP (no inf or NaN boxes).
    """
    boxes = _as_boxes(boxes)
    deltas = _as_boxes(deltas, "deltas")
    # Convert to centre and size (Matterport's operation order, for bit-exactness).
    height = boxes[..., 2] - boxes[..., 0]
    width = boxes[..., 3] - boxes[..., 1]
    center_y = boxes[..., 0] + 0.5 * height
    center_x = boxes[..., 1] + 0.5 * width
    # "c - (-d) * h" is bit-identical to "c + d * h" (IEEE sign flips are
    # exact) but keeps Grappler's AddOpsRewrite from merging the two adds
    # into one AddN with reordered operands inside tf.function when shapes are
    # static, which moves results by 1 ulp away from Matterport's numbers.
    center_y = center_y - (-deltas[..., 0]) * height
    center_x = center_x - (-deltas[..., 1]) * width
    height *= tf.exp(tf.minimum(deltas[..., 2], BBOX_LOG_SCALE_CLIP))
    width *= tf.exp(tf.minimum(deltas[..., 3], BBOX_LOG_SCALE_CLIP))
    y1 = center_y - 0.5 * height
    x1 = center_x - 0.5 * width
    y2 = y1 + height
    x2 = x1 + width
    return tf.stack([y1, x1, y2, x2], axis=-1)


def clip_boxes_graph(boxes, window):
    """Clips boxes to a window.

    boxes: [..., (y1, x1, y2, x2)].
    window: [(y1, x1, y2, x2)] one window for all boxes, or [..., 4] with the
        leading shape of ``boxes`` minus its box axis (e.g. [batch, 4] for
        boxes [batch, N, 4]): one window per image. Same frame as ``boxes``.

    Returns: [..., (y1, x1, y2, x2)] float32; every coordinate clamped into the
    window (``max(min(v, w_hi), w_lo)``), so boxes outside it collapse onto its
    edge with zero area.
    """
    boxes = _as_boxes(boxes)
    window = _as_boxes(window, "window")
    if window.shape.rank is not None and window.shape.rank > 1:
        # One window per image: [..., 4] -> [..., 1, 4] to broadcast over boxes.
        window = tf.expand_dims(window, -2)
    wy1, wx1, wy2, wx2 = (window[..., i] for i in range(4))
    y1 = tf.maximum(tf.minimum(boxes[..., 0], wy2), wy1)
    x1 = tf.maximum(tf.minimum(boxes[..., 1], wx2), wx1)
    y2 = tf.maximum(tf.minimum(boxes[..., 2], wy2), wy1)
    x2 = tf.maximum(tf.minimum(boxes[..., 3], wx2), wx1)
    return tf.stack([y1, x1, y2, x2], axis=-1)


def box_refinement_graph(box, gt_box):
    """Computes the deltas that turn ``box`` into ``gt_box``.

    box, gt_box: [..., (y1, x1, y2, x2)], same shape, same frame.

    Returns: [..., (dy, dx, log(dh), log(dw))] float32, not divided by any
    std-dev. Inverse of :func:`apply_box_deltas_graph`.
    """
    box = _as_boxes(box, "box")
    gt_box = _as_boxes(gt_box, "gt_box")
    height = box[..., 2] - box[..., 0]
    width = box[..., 3] - box[..., 1]
    center_y = box[..., 0] + 0.5 * height
    center_x = box[..., 1] + 0.5 * width

    gt_height = gt_box[..., 2] - gt_box[..., 0]
    gt_width = gt_box[..., 3] - gt_box[..., 1]
    gt_center_y = gt_box[..., 0] + 0.5 * gt_height
    gt_center_x = gt_box[..., 1] + 0.5 * gt_width

    dy = (gt_center_y - center_y) / height
    dx = (gt_center_x - center_x) / width
    dh = tf.math.log(gt_height / height)
    dw = tf.math.log(gt_width / width)
    return tf.stack([dy, dx, dh, dw], axis=-1)


def overlaps_graph(boxes1, boxes2):
    """IoU matrix between two sets of boxes.

    boxes1: [..., N, (y1, x1, y2, x2)].
    boxes2: [..., M, (y1, x1, y2, x2)], same leading (batch) shape.

    Returns: [..., N, M] float32 IoU, without Matterport's NumPy "+1" pixel
    convention. Two zero-area boxes give 0/0 = NaN, as in Matterport.
    """
    boxes1 = _as_boxes(boxes1, "boxes1")
    boxes2 = _as_boxes(boxes2, "boxes2")
    b1 = tf.expand_dims(boxes1, -2)  # [..., N, 1, 4]
    b2 = tf.expand_dims(boxes2, -3)  # [..., 1, M, 4]
    y1 = tf.maximum(b1[..., 0], b2[..., 0])
    x1 = tf.maximum(b1[..., 1], b2[..., 1])
    y2 = tf.minimum(b1[..., 2], b2[..., 2])
    x2 = tf.minimum(b1[..., 3], b2[..., 3])
    intersection = tf.maximum(x2 - x1, 0) * tf.maximum(y2 - y1, 0)
    b1_area = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    b2_area = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    union = b1_area + b2_area - intersection
    return intersection / union
