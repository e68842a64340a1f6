"""Matterport's per-image TensorFlow helpers, kept so old user code runs.

Matterport wrote its graph functions for one image and ran them on every
image of a batch with ``batch_slice`` (a Python loop). Our graph is batched
(``mrcnn.ops``); these are thin per-image adapters over the batched ops,
with Matterport's names and signatures (``mrcnn.model`` and ``mrcnn.utils``
re-export them): ``batch_slice``, ``log2_graph``, ``trim_zeros_graph``,
``batch_pack_graph``, ``detection_targets_graph``, ``refine_detections_graph``.
"""
import tensorflow as tf

from mrcnn.ops.detection import refine_detections
from mrcnn.ops.targets import detection_targets, trim_zeros_mask

__all__ = ["batch_slice", "log2_graph", "trim_zeros_graph", "batch_pack_graph",
           "detection_targets_graph", "refine_detections_graph"]


def batch_slice(inputs, graph_fn, batch_size, names=None):
    """Splits inputs into slices and feeds each slice to a copy of the given
    computation graph and then combines the results. It allows you to run a
    graph on a batch of inputs even if the graph is written to support one
    instance only.

    inputs: list of tensors. All must have the same first dimension length
    graph_fn: A function that returns a TF tensor that's part of a graph.
    batch_size: number of slices to divide the data into.
    names: If provided, assigns names to the resulting tensors.

    Returns: the per-slice outputs stacked on a new axis 0 (a list if
    graph_fn returns several tensors).
    """
    if not isinstance(inputs, list):
        inputs = [inputs]

    outputs = []
    for i in range(batch_size):
        inputs_slice = [x[i] for x in inputs]
        output_slice = graph_fn(*inputs_slice)
        if not isinstance(output_slice, (tuple, list)):
            output_slice = [output_slice]
        outputs.append(output_slice)
    # Change outputs from a list of slices where each is
    # a list of outputs to a list of outputs and each has
    # a list of slices
    outputs = list(zip(*outputs))

    if names is None:
        names = [None] * len(outputs)

    result = [tf.stack(o, axis=0, name=n)
              for o, n in zip(outputs, names)]
    if len(result) == 1:
        result = result[0]

    return result


def log2_graph(x):
    """Implementation of Log2. TF doesn't have a native implementation."""
    return tf.math.log(x) / tf.math.log(2.0)


def trim_zeros_graph(boxes, name="trim_zeros"):
    """Often boxes are represented with matrices of shape [N, 4] and
    are padded with zeros. This removes zero boxes.

    boxes: [N, 4] matrix of boxes.
    Returns: (boxes [M, 4] without the zero rows, non_zeros [N] bool).
    """
    non_zeros = trim_zeros_mask(boxes)
    boxes = tf.boolean_mask(boxes, non_zeros, name=name)
    return boxes, non_zeros


def batch_pack_graph(x, counts, num_rows):
    """Picks different number of values from each row in x depending on
    the values in counts: [num_rows, ...] -> [sum(counts[:num_rows]), ...]."""
    outputs = []
    for i in range(num_rows):
        outputs.append(x[i, :counts[i]])
    return tf.concat(outputs, axis=0)


def detection_targets_graph(proposals, gt_class_ids, gt_boxes, gt_masks, config):
    """Matterport's per-image ``detection_targets_graph``: the batched
    ``ops.targets.detection_targets`` on a batch of one.

    proposals: [POST_NMS_ROIS_TRAINING, (y1, x1, y2, x2)] normalized;
    gt_class_ids [MAX_GT_INSTANCES]; gt_boxes [MAX_GT_INSTANCES, 4]
    normalized; gt_masks [height, width, MAX_GT_INSTANCES].
    config: TRAIN_ROIS_PER_IMAGE, ROI_POSITIVE_RATIO, MASK_SHAPE,
        USE_MINI_MASK, BBOX_STD_DEV.
    Returns rois [T, 4], class_ids [T], deltas [T, 4], masks [T, h, w].
    """
    outputs = detection_targets(
        proposals[None], gt_class_ids[None], gt_boxes[None], gt_masks[None],
        train_rois_per_image=int(config.TRAIN_ROIS_PER_IMAGE),
        roi_positive_ratio=float(config.ROI_POSITIVE_RATIO),
        mask_shape=tuple(int(v) for v in config.MASK_SHAPE),
        use_mini_mask=bool(config.USE_MINI_MASK),
        bbox_std_dev=tuple(float(v) for v in config.BBOX_STD_DEV))
    return [o[0] for o in outputs]


def refine_detections_graph(rois, probs, deltas, window, config):
    """Matterport's per-image ``refine_detections_graph``: the batched
    ``ops.detection.refine_detections`` on a batch of one.

    rois: [N, (y1, x1, y2, x2)] normalized; probs [N, num_classes]; deltas
    [N, num_classes, 4]; window [4] normalized.
    config: BBOX_STD_DEV, DETECTION_MIN_CONFIDENCE, DETECTION_MAX_INSTANCES,
        DETECTION_NMS_THRESHOLD.
    Returns [DETECTION_MAX_INSTANCES, (y1, x1, y2, x2, class_id, score)].
    """
    detections = refine_detections(
        rois[None], probs[None], deltas[None], tf.reshape(window, [1, 4]),
        bbox_std_dev=tuple(float(v) for v in config.BBOX_STD_DEV),
        min_confidence=float(config.DETECTION_MIN_CONFIDENCE),
        max_instances=int(config.DETECTION_MAX_INSTANCES),
        nms_threshold=float(config.DETECTION_NMS_THRESHOLD))
    return detections[0]
