"""Boxes on the NumPy side: boxes from masks, IoU, NMS, deltas, normalization.

Matterport's ``mrcnn/utils.py`` names and numbers (``mrcnn.utils``
re-exports them). The TensorFlow versions used inside the graph are in
``mrcnn.ops.boxes``.

Conventions:

* **pixel boxes** ``[N, (y1, x1, y2, x2)]``: (y2, x2) lies just *outside* the
  box, so a box covering rows 10..19 has y1=10, y2=20.
* **normalized boxes** (``norm_boxes``): ``(y1/(H-1), x1/(W-1), (y2-1)/(H-1),
  (x2-1)/(W-1))``; the whole image is (0, 0, 1, 1).
* **deltas** ``[N, (dy, dx, log(dh), log(dw))]``: box centre shift relative to
  the box size, and log of the size ratio.
"""
import math
from typing import Sequence

import numpy as np

from mrcnn._checks import _EmptyInputError, _as_boxes, _as_masks

__all__ = ["extract_bboxes", "compute_iou", "compute_overlaps", "compute_overlaps_masks",
           "non_max_suppression", "BBOX_LOG_SCALE_CLIP", "apply_box_deltas", "box_refinement",
           "norm_boxes", "denorm_boxes"]


def extract_bboxes(mask: np.ndarray) -> np.ndarray:
    """Compute bounding boxes from masks.

    mask: [height, width, num_instances]. Mask pixels are either 1 or 0
        (any nonzero value counts as inside).

    Returns: bbox array [num_instances, (y1, x1, y2, x2)] int32, pixel
    coordinates with (y2, x2) one past the last pixel: a single pixel at
    (y, x) gives (y, x, y+1, x+1). An empty instance gives (0, 0, 0, 0)
    (it can happen after resizing or cropping).
    """
    mask = _as_masks(mask, "mask", "extract_bboxes")
    height, width, n = mask.shape
    rows = np.any(mask, axis=1)  # [height, n]: instance i has a pixel in row y
    cols = np.any(mask, axis=0)  # [width, n]
    boxes = np.zeros([n, 4], dtype=np.int32)
    if n == 0 or height == 0 or width == 0:
        return boxes
    present = cols.any(axis=0)
    # argmax of a bool array is the first True; on the reversed axis it
    # counts from the end.
    boxes[:, 0] = np.argmax(rows, axis=0)
    boxes[:, 1] = np.argmax(cols, axis=0)
    boxes[:, 2] = height - np.argmax(rows[::-1], axis=0)
    boxes[:, 3] = width - np.argmax(cols[::-1], axis=0)
    boxes[~present] = 0
    return boxes


def compute_iou(box: np.ndarray, boxes: np.ndarray, box_area, boxes_area: np.ndarray) -> np.ndarray:
    """Calculates IoU of the given box with the array of the given boxes.

    box: 1D vector [y1, x1, y2, x2]
    boxes: [boxes_count, (y1, x1, y2, x2)]
    box_area: float. the area of 'box'
    boxes_area: array of length boxes_count.

    Returns: [boxes_count] IoU, in the promoted dtype of the inputs (float32
    for float32 boxes, float64 for integer boxes). Two zero-area boxes give
    0/0 = NaN (and "NaN > threshold" is False, so ``non_max_suppression``
    never suppresses with it).

    Note: the areas are passed in rather than calculated here for
    efficiency. Calculate once in the caller to avoid duplicate work.
    """
    box = np.asarray(box)
    boxes = _as_boxes(boxes, "boxes", "compute_iou")
    if box.shape != (4,):
        raise ValueError(f"compute_iou: box must have shape (4,), got {box.shape}.")
    # Calculate intersection areas
    y1 = np.maximum(box[0], boxes[:, 0])
    y2 = np.minimum(box[2], boxes[:, 2])
    x1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[3], boxes[:, 3])
    intersection = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    union = box_area + boxes_area[:] - intersection[:]
    with np.errstate(invalid="ignore"):  # 0/0 -> NaN is the documented result
        iou = intersection / union
    return iou


# Elements (rows of boxes1 x len(boxes2)) processed at once by
# compute_overlaps: the three work buffers stay in the CPU cache.
_OVERLAP_CHUNK_ELEMENTS = 1 << 17


def compute_overlaps(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Computes IoU overlaps between two sets of boxes.

    boxes1: [N1, (y1, x1, y2, x2)], boxes2: [N2, (y1, x1, y2, x2)]
        pixel or normalized coordinates (any numeric dtype). For speed pass
        the larger set (e.g. anchors) first.

    Returns: overlaps [N1, N2] float64, overlaps[i, j] = IoU(boxes1[i],
    boxes2[j]). As in Matterport the IoU is computed in the promoted dtype of
    the inputs (float32 for float32 boxes) and then stored as float64; two
    zero-area boxes give NaN. Bit-identical to Matterport's column loop over
    ``compute_iou``, but vectorized in cache-sized blocks of rows with
    in-place buffers (261,888 anchors x 100 boxes in ~0.1-0.2 s).
    """
    boxes1 = _as_boxes(boxes1, "boxes1", "compute_overlaps")
    boxes2 = _as_boxes(boxes2, "boxes2", "compute_overlaps")
    # Areas of anchors and GT boxes
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])

    n1, n2 = boxes1.shape[0], boxes2.shape[0]
    overlaps = np.zeros((n1, n2))
    if overlaps.size == 0:
        return overlaps
    b2 = np.ascontiguousarray(boxes2.T)  # [4, N2]: rows broadcast against boxes1
    dtype = np.result_type(boxes1.dtype, boxes2.dtype)
    chunk = max(1, _OVERLAP_CHUNK_ELEMENTS // n2)
    inter_h = np.empty((min(chunk, n1), n2), dtype)
    inter_w = np.empty_like(inter_h)
    tmp = np.empty_like(inter_h)
    with np.errstate(invalid="ignore"):  # 0/0 -> NaN is the documented result
        for start in range(0, n1, chunk):
            b1 = boxes1[start:start + chunk]
            m = b1.shape[0]
            h, w, t = inter_h[:m], inter_w[:m], tmp[:m]
            # The operations, operand dtypes and order of Matterport's
            # compute_iou(box2, boxes1, area2[j], area1), hence the same bits:
            # h = max(min(y2) - max(y1), 0), likewise w; inter = w * h;
            # union = (area2 + area1) - inter; iou = inter / union.
            np.minimum(b2[2], b1[:, 2:3], out=h)
            h -= np.maximum(b2[0], b1[:, 0:1], out=t)
            np.maximum(h, 0, out=h)
            np.minimum(b2[3], b1[:, 3:4], out=w)
            w -= np.maximum(b2[1], b1[:, 1:2], out=t)
            np.maximum(w, 0, out=w)
            w *= h
            np.add(area2[None, :], area1[start:start + m, None], out=t)
            t -= w
            if dtype.kind == "f":
                np.divide(w, t, out=w)
                overlaps[start:start + m] = w
            else:  # integer boxes: true division gives float64
                overlaps[start:start + m] = w / t
    return overlaps


def compute_overlaps_masks(masks1: np.ndarray, masks2: np.ndarray) -> np.ndarray:
    """Computes IoU overlaps between two sets of masks.

    masks1: [height, width, N1], masks2: [height, width, N2]; a pixel is
        inside where the value is > 0.5 (so exactly 0.5 is outside).

    Returns: overlaps [N1, N2] float32. Two empty masks give 0/0 = NaN. If
    either set has no instances the result is float64 zeros [N1, N2].
    """
    masks1 = _as_masks(masks1, "masks1", "compute_overlaps_masks")
    masks2 = _as_masks(masks2, "masks2", "compute_overlaps_masks")
    # If either set of masks is empty return empty result
    if masks1.shape[-1] == 0 or masks2.shape[-1] == 0:
        return np.zeros((masks1.shape[-1], masks2.shape[-1]))
    if masks1.shape[:2] != masks2.shape[:2]:
        raise ValueError(
            f"compute_overlaps_masks: masks1 is {masks1.shape[:2]} and masks2 is "
            f"{masks2.shape[:2]}; both sets must have the same height and width.")
    # flatten masks and compute their areas
    masks1 = np.reshape(masks1 > .5, (-1, masks1.shape[-1])).astype(np.float32)
    masks2 = np.reshape(masks2 > .5, (-1, masks2.shape[-1])).astype(np.float32)
    area1 = np.sum(masks1, axis=0)
    area2 = np.sum(masks2, axis=0)

    # intersections and union (sums of 0/1 values: exact in float32 below 2**24)
    intersections = np.dot(masks1.T, masks2)
    union = area1[:, None] + area2[None, :] - intersections
    with np.errstate(invalid="ignore"):  # 0/0 -> NaN is the documented result
        overlaps = intersections / union
    return overlaps


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Performs non-maximum suppression and returns indices of kept boxes.

    boxes: [N, (y1, x1, y2, x2)]. Notice that (y2, x2) lays outside the box.
        Integer boxes are converted to float32.
    scores: [N] box scores.
    threshold: Float. IoU threshold: a box is suppressed if its IoU with a
        kept, higher-scoring box is > threshold (equal is kept; NaN IoU of two
        zero-area boxes never suppresses).

    Returns: [num_kept] int32 indices into boxes, highest score first (ties
    in the order of ``scores.argsort()[::-1]``, as Matterport).
    Raises ValueError (also an AssertionError, Matterport asserted) if
    there are no boxes.
    """
    boxes = _as_boxes(boxes, "boxes", "non_max_suppression")
    scores = np.asarray(scores)
    if boxes.shape[0] == 0:
        raise _EmptyInputError("non_max_suppression: got no boxes (N = 0).")
    if scores.shape != (boxes.shape[0],):
        raise ValueError(f"non_max_suppression: scores has shape {scores.shape}, "
                         f"expected ({boxes.shape[0]},), one score per box.")
    if boxes.dtype.kind != "f":
        boxes = boxes.astype(np.float32)

    # Compute box areas
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    # Indices of boxes sorted by scores (highest first)
    order = scores.argsort()[::-1]
    suppressed = np.zeros(len(order), dtype=bool)  # indexed by rank
    pick = []
    for rank, i in enumerate(order):
        if suppressed[rank]:
            continue
        pick.append(i)
        # IoU of the picked box with every lower-ranked box still in play
        rest = rank + 1 + np.flatnonzero(~suppressed[rank + 1:])
        if rest.size == 0:
            break
        iou = compute_iou(boxes[i], boxes[order[rest]], area[i], area[order[rest]])
        suppressed[rest[iou > threshold]] = True
    return np.array(pick, dtype=np.int32)


# Largest log-scale refinement applied to a box height or width: a box can
# grow at most 1000/16 = 62.5x in one refinement (the bound torchvision and
# Detectron use). Matterport has no bound: an untrained or diverged head can
# output a log-scale of 100, exp() overflows to inf, and the box becomes
# NaN (inf - inf), which crashes crop_and_resize. Trained models never come
# near the bound, so their results are unchanged. Used here and by
# mrcnn.ops.boxes.apply_box_deltas_graph.
BBOX_LOG_SCALE_CLIP = math.log(1000.0 / 16)


def apply_box_deltas(boxes: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Applies the given deltas to the given boxes.

    boxes: [N, (y1, x1, y2, x2)]. Note that (y2, x2) is outside the box.
    deltas: [N, (dy, dx, log(dh), log(dw))], already multiplied by the std
        dev (no BBOX_STD_DEV here).

    Returns: [N, (y1, x1, y2, x2)] float32 (computed in float32; float64
    deltas are applied in float64 and stored back in float32, as Matterport).
    """
    boxes = _as_boxes(boxes, "boxes", "apply_box_deltas").astype(np.float32)
    deltas = _as_boxes(deltas, "deltas", "apply_box_deltas")
    # Convert to y, x, h, w
    height = boxes[:, 2] - boxes[:, 0]
    width = boxes[:, 3] - boxes[:, 1]
    center_y = boxes[:, 0] + 0.5 * height
    center_x = boxes[:, 1] + 0.5 * width
    # Apply deltas (in place: results stay float32)
    center_y += deltas[:, 0] * height
    center_x += deltas[:, 1] * width
    # Capped at BBOX_LOG_SCALE_CLIP: no inf/NaN boxes.
    height *= np.exp(np.minimum(deltas[:, 2], BBOX_LOG_SCALE_CLIP))
    width *= np.exp(np.minimum(deltas[:, 3], BBOX_LOG_SCALE_CLIP))
    # Convert back to y1, x1, y2, x2
    y1 = center_y - 0.5 * height
    x1 = center_x - 0.5 * width
    y2 = y1 + height
    x2 = x1 + width
    return np.stack([y1, x1, y2, x2], axis=1)


def box_refinement(box: np.ndarray, gt_box: np.ndarray) -> np.ndarray:
    """Compute refinement needed to transform box to gt_box.

    box, gt_box: [N, (y1, x1, y2, x2)]. (y2, x2) is assumed to be outside
        the box.

    Returns: [N, (dy, dx, log(dh), log(dw))] float32, not divided by
    BBOX_STD_DEV. A zero-height box gives inf/NaN, a zero-height gt box
    log(0) = -inf (NumPy warns).
    """
    box = _as_boxes(box, "box", "box_refinement").astype(np.float32)
    gt_box = _as_boxes(gt_box, "gt_box", "box_refinement").astype(np.float32)

    height = box[:, 2] - box[:, 0]
    width = box[:, 3] - box[:, 1]
    center_y = box[:, 0] + 0.5 * height
    center_x = box[:, 1] + 0.5 * width

    gt_height = gt_box[:, 2] - gt_box[:, 0]
    gt_width = gt_box[:, 3] - gt_box[:, 1]
    gt_center_y = gt_box[:, 0] + 0.5 * gt_height
    gt_center_x = gt_box[:, 1] + 0.5 * gt_width

    dy = (gt_center_y - center_y) / height
    dx = (gt_center_x - center_x) / width
    dh = np.log(gt_height / height)
    dw = np.log(gt_width / width)

    return np.stack([dy, dx, dh, dw], axis=1)


def _height_width(shape, func):
    """(height, width) from a 2-element shape, or ValueError naming func."""
    if np.ndim(shape) != 1 or len(shape) != 2:
        raise ValueError(f"{func}: shape must be (height, width), got {shape!r}; "
                         f"pass image.shape[:2].")
    h, w = shape
    return h, w


def norm_boxes(boxes: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Converts boxes from pixel coordinates to normalized coordinates.

    boxes: [N, (y1, x1, y2, x2)] in pixel coordinates
    shape: (height, width) in pixels

    Note: In pixel coordinates (y2, x2) is outside the box. But in normalized
    coordinates it's inside the box: norm = (box - (0, 0, 1, 1)) /
    (H-1, W-1, H-1, W-1), computed in float64.

    Returns:
        [N, (y1, x1, y2, x2)] float32 in normalized coordinates
    """
    h, w = _height_width(shape, "norm_boxes")
    scale = np.array([h - 1, w - 1, h - 1, w - 1])
    shift = np.array([0, 0, 1, 1])
    return np.divide((np.asarray(boxes) - shift), scale).astype(np.float32)


def denorm_boxes(boxes: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Converts boxes from normalized coordinates to pixel coordinates.

    boxes: [N, (y1, x1, y2, x2)] in normalized coordinates
    shape: (height, width) in pixels

    Note: In pixel coordinates (y2, x2) is outside the box. But in normalized
    coordinates it's inside the box: pixel = round(norm * (H-1, W-1, H-1,
    W-1) + (0, 0, 1, 1)), round half to even (``np.around``), so a zero-size
    normalized box becomes a 1-pixel box.

    Returns:
        [N, (y1, x1, y2, x2)] int32 in pixel coordinates
    """
    h, w = _height_width(shape, "denorm_boxes")
    scale = np.array([h - 1, w - 1, h - 1, w - 1])
    shift = np.array([0, 0, 1, 1])
    return np.around(np.multiply(boxes, scale) + shift).astype(np.int32)
