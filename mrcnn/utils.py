"""
Mask R-CNN
Common utility functions and classes (NumPy side of the model).

Same public names, argument orders and numbers as Matterport's
``mrcnn/utils.py`` (commit 3deaec5): the functions here reproduce all 75
``mrcnn.utils`` cases of the U1 golden set (``tests/golden/u1_utils.*``)
exactly (values, dtypes and shapes), including Matterport's quirks, which
are listed in the docstrings (see also ``GOLDEN.md`` section 6).

Conventions used throughout:

* **pixel boxes** ``[N, (y1, x1, y2, x2)]``: (y2, x2) lies just *outside* the
  box, so a box covering rows 10..19 has y1=10, y2=20.
* **normalized boxes**: ``norm_boxes``: ``(y1/(H-1), x1/(W-1), (y2-1)/(H-1),
  (x2-1)/(W-1))``; the whole image is (0, 0, 1, 1).
* **masks** ``[height, width, num_instances]``, one channel per instance,
  bool (or 0/1).
* **deltas** ``[N, (dy, dx, log(dh), log(dw))]``: box centre shift relative to
  the box size, and log of the size ratio.

What changed compared with Matterport, without changing any result:

* ``compute_overlaps``, ``extract_bboxes``, ``resize_image``,
  ``resize_mask`` and the mini-mask helpers are vectorized or call scipy
  directly (see ``bench/bench_utils.py``): 261,888 anchors of a 1024x1024
  image against 100 boxes take ~0.1-0.3 s instead of ~1.5 s. Each fast path
  is bit-identical to Matterport's formulation (tests/test_utils.py checks
  that on random inputs): ``minimize_mask``/``expand_mask``/``unmold_mask``
  and ``resize_image`` call the very ``scipy.ndimage.zoom`` that
  ``skimage.transform.resize`` calls, without skimage's per-call overhead;
  ``resize_mask`` gathers rows and columns with index maps that
  ``scipy.ndimage.zoom`` itself produces.
* Images are read by ``read_image`` (Pillow): grayscale, alpha, palette,
  CMYK, 16/32-bit and float files, EXIF rotation and multi-frame files all
  give a well-defined uint8 array; broken files raise ``ImageReadError``
  naming the file.
* Bad input (a box array whose last axis is not 4, a 2-D mask ...) raises
  ``ValueError`` naming the function and the expected shape.
* TensorFlow is imported only by ``batch_slice``/``box_refinement_graph``
  (legacy helpers), so the data pipeline does not pay for it.

One deliberate deviation: ``compute_matches`` matches each ground-truth
instance at most once. Matterport's "already matched" test (``> 0``) missed
a match with the top-scoring prediction 0, which could then be counted as a
true positive twice (recall above 1). No golden case depends on it.

Licensed under the MIT License (Matterport's original is MIT as well).
"""

import math
import os
import random
import shutil
import urllib.error
import urllib.request
import warnings

import numpy as np
import scipy.ndimage
import skimage.transform

__all__ = [
    "COCO_MODEL_URL", "ImageReadError", "WeightsDownloadError",
    # boxes
    "extract_bboxes", "compute_iou", "compute_overlaps", "compute_overlaps_masks",
    "non_max_suppression", "apply_box_deltas", "box_refinement", "box_refinement_graph",
    "norm_boxes", "denorm_boxes",
    # dataset and images
    "Dataset", "read_image", "resize", "resize_image", "resize_mask",
    "minimize_mask", "expand_mask", "unmold_mask",
    # anchors
    "generate_anchors", "generate_pyramid_anchors",
    # evaluation
    "trim_zeros", "compute_matches", "compute_ap", "compute_ap_range", "compute_recall",
    # misc
    "batch_slice", "download_trained_weights",
]

# URL from which to download the latest COCO trained weights
COCO_MODEL_URL = "https://github.com/matterport/Mask_RCNN/releases/download/v2.0/mask_rcnn_coco.h5"


class ImageReadError(OSError):
    """An image file exists but cannot be decoded (corrupt, truncated, or a
    pixel format we cannot turn into the requested channels). The message
    names the file."""


class WeightsDownloadError(OSError):
    """``download_trained_weights`` could not fetch the file. The message says
    where to download it by hand and where to put it."""


class _EmptyInputError(ValueError, AssertionError):
    """Empty input where Matterport used ``assert``: a ``ValueError`` with a
    message, that old code catching ``AssertionError`` still catches."""


############################################################
#  Input checks
############################################################

def _as_boxes(boxes, name, func):
    """Returns ``boxes`` as an ndarray [N, 4], or raises ValueError naming
    ``func`` and ``name`` (e.g. when boxes are passed as [4, N])."""
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"{func}: {name} must have shape [N, (y1, x1, y2, x2)], got shape "
            f"{boxes.shape}. For a single box use box[None]; boxes stored as "
            f"[4, N] need a transpose.")
    return boxes


def _as_masks(masks, name, func):
    """Returns ``masks`` as an ndarray [H, W, N], or raises ValueError."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(
            f"{func}: {name} must have shape [height, width, num_instances], got "
            f"shape {masks.shape}. For one mask use mask[..., None].")
    return masks


############################################################
#  Bounding Boxes
############################################################

def extract_bboxes(mask):
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


def compute_iou(box, boxes, box_area, boxes_area):
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


def compute_overlaps(boxes1, boxes2):
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


def compute_overlaps_masks(masks1, masks2):
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


def non_max_suppression(boxes, scores, threshold):
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


def apply_box_deltas(boxes, deltas):
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


def box_refinement(box, gt_box):
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


def box_refinement_graph(box, gt_box):
    """TensorFlow version of ``box_refinement`` (kept for old user code).

    box, gt_box: [N, (y1, x1, y2, x2)] tensors; returns [N, (dy, dx, log(dh),
    log(dw))] float32. The same as ``mrcnn.ops.box_refinement_graph``.
    """
    from mrcnn.ops.boxes import box_refinement_graph as _graph  # imports TensorFlow
    return _graph(box, gt_box)


############################################################
#  Reading images
############################################################

# Pillow modes that already are 8 bits per channel and convert exactly to RGB.
_RGB_CONVERTIBLE = ("RGB", "YCbCr", "LAB", "HSV", "RGBX")


def _high_bit_to_uint8(array, mode):
    """Scales a single-channel integer (mode "I") or float (mode "F") image
    to uint8; the rules are listed in ``read_image``."""
    if mode == "F":
        a = np.asarray(array, dtype=np.float64)
        a = np.where(np.isfinite(a), a, 0.0)
        if a.size and a.min() >= 0.0 and a.max() <= 1.0:
            a = a * 255.0
        return np.rint(np.clip(a, 0.0, 255.0)).astype(np.uint8)
    a = np.asarray(array).astype(np.int64)
    if a.size == 0 or (a.min() >= 0 and a.max() <= 65535):
        return (a >> 8).astype(np.uint8)                      # 16-bit: top 8 bits
    return (np.clip(a, 0, 2 ** 31 - 1) >> 23).astype(np.uint8)  # 32-bit: top 8 of 31 bits


def _pil_to_array(img, channels, path):
    """Converts an opened (loaded, transposed) Pillow image to uint8
    [H, W, channels] following the rules of ``read_image``."""
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        gray = _high_bit_to_uint8(np.asarray(img), "F" if mode == "F" else "I")
        if gray.ndim != 2:
            raise ImageReadError(f"{path}: unsupported pixel layout {mode} {gray.shape}.")
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
        if channels == 1:
            return gray[:, :, None]
        if channels == 3:
            return rgb
        return np.concatenate([rgb, np.full_like(gray[:, :, None], 255)], axis=2)

    # Palette images: expand through RGBA so a transparency entry does not
    # trigger Pillow's warning; alpha is then dropped or kept below.
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
    elif mode == "1":
        img = img.convert("L")            # 0/1 bits -> 0/255
    elif mode == "LA" or mode == "La":
        img = img.convert("LA")
    elif mode == "RGBa":
        img = img.convert("RGBA")
    elif mode in _RGB_CONVERTIBLE or mode == "CMYK":
        # CMYK: Pillow's conversion R = round((255 - C) * (255 - K) / 255)
        img = img.convert("RGB")
    elif mode not in ("L", "RGBA"):
        img = img.convert("RGBA")
    mode = img.mode

    a = np.asarray(img)
    if mode == "L":
        gray, color, alpha = a, None, None
    elif mode == "LA":
        gray, color, alpha = a[..., 0], None, a[..., 1]
    elif mode == "RGB":
        gray, color, alpha = None, a, None
    else:  # RGBA
        gray, color, alpha = None, a[..., :3], a[..., 3]

    if channels == 1:
        if gray is None:
            # ITU-R 601-2 luma, Pillow's own "L" conversion
            gray = np.asarray(img.convert("RGB").convert("L"))
        return np.ascontiguousarray(gray)[:, :, None]
    if color is None:
        color = np.repeat(gray[:, :, None], 3, axis=2)
    if channels == 3:
        return np.ascontiguousarray(color)
    if alpha is None:
        alpha = np.full(color.shape[:2], 255, dtype=np.uint8)
    return np.concatenate([color, alpha[:, :, None]], axis=2)


def read_image(path, channels=3):
    """Reads an image file into a uint8 array [height, width, channels].

    path: path of any image Pillow can read (JPEG, PNG, TIFF, BMP, GIF,
        WebP, PNM ...).
    channels: 3 (default) gives RGB; 1 grayscale [H, W, 1]; 4 RGBA (alpha
        255 when the file has none). Other counts (e.g. a 5-band TIFF), and
        files Pillow cannot identify, are read with ``skimage.io.imread``
        (tifffile, imageio); then the file must have exactly that many
        channels (or be gray, for 1/3/4).

    Conversion rules (the same for every file, so a data set mixing formats
    gives consistent arrays):
    * EXIF orientation is applied (``PIL.ImageOps.exif_transpose``): the
      array is upright as a photo viewer shows it.
    * Multi-frame files (GIF, TIFF stacks, APNG): the first frame.
    * Grayscale (``L``, bilevel ``1`` as 0/255) is repeated into R, G, B.
    * An alpha channel (``LA``, ``RGBA``, ``PA``) is dropped for 3 channels
      (colours kept as stored, not blended with a background), as Matterport.
    * Palette (``P``) images are expanded through the palette; their
      transparency becomes alpha.
    * CMYK is converted by Pillow: R = round((255 - C) * (255 - K) / 255),
      likewise G from M and B from Y (not by dropping K).
    * More than 8 bits per sample: the top 8 bits are kept. 16-bit:
      v >> 8 = floor(v / 256), so 0 -> 0, 65535 -> 255 and 8-bit data stored
      as 16 bits (257 * k) -> k. This is what Pillow does itself when it
      decodes 16-bit colour PNG/TIFF files, and what
      ``skimage.util.img_as_ubyte`` does, so gray and colour files agree.
      32-bit integer images (Pillow mode "I", signed) whose values all fit
      in 0..65535 are 16-bit data (16-bit PGM files, some TIFFs) and get the
      same rule; otherwise negatives clip to 0 and v >> 23 (the top 8 of the
      31 value bits).
    * Float images (float TIFF): if every value is in [0, 1], round(v * 255);
      otherwise the values are taken as 0..255, clipped and rounded. NaN and
      infinities become 0.
    * For 1 channel, colour images use Pillow's ITU-R 601-2 luma
      L = round(0.299 R + 0.587 G + 0.114 B).

    Raises FileNotFoundError if the file does not exist and ImageReadError
    (an OSError) naming the file if it is not an image, is truncated or
    corrupt, or cannot give the requested channels.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = os.fspath(path)
    channels = int(channels)
    if channels < 1:
        raise ValueError(f"read_image: channels must be >= 1, got {channels}.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"Image file not found: {path}")
    if channels not in (1, 3, 4):
        return _read_n_channels(path, channels)
    try:
        with Image.open(path) as img:
            img.seek(0)        # multi-frame: first frame
            img.load()         # decode now so truncation is reported here
            img = ImageOps.exif_transpose(img)
            return _pil_to_array(img, channels, path)
    except UnidentifiedImageError as e:
        # Not a format Pillow knows (e.g. a 2- or 5-band TIFF): try skimage.io.
        return _read_n_channels(path, channels, cause=e)
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # Pillow reports truncated data as OSError("image file is truncated")
        # and some corrupt headers as SyntaxError / ValueError.
        raise ImageReadError(
            f"Cannot decode image {path}: {e}. The file is probably truncated or "
            f"corrupt; re-download or re-export it, or remove it from the data set.") from e


def _read_n_channels(path, channels, cause=None):
    """Reads a file Pillow cannot (e.g. a 5-band or 2-band TIFF) with
    ``skimage.io.imread``. Gray gives 1/3/4 channels as ``read_image`` does;
    otherwise the file must have exactly ``channels`` channels. uint16 data
    keeps its top 8 bits, as in ``read_image``."""
    import skimage.io
    try:
        image = np.asarray(skimage.io.imread(path))
    except Exception as e:  # any decoder failure
        detail = f"{cause}; skimage.io: {e}" if cause is not None else str(e)
        raise ImageReadError(
            f"Cannot decode image {path}: {detail}. The file is probably truncated, "
            f"corrupt or not an image; re-export it or remove it from the data set.") from e
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ImageReadError(f"{path}: {image.dtype} data with shape {image.shape} is not "
                             f"converted automatically; override Dataset.load_image.")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim == 3 and image.shape[-1] == 1 and channels in (3, 4):
        image = np.repeat(image, 3, axis=2)
        if channels == 4:
            image = np.concatenate([image, np.full_like(image[..., :1], 255)], axis=2)
    if image.ndim != 3 or image.shape[-1] != channels:
        raise ImageReadError(
            f"{path} has shape {image.shape} but {channels} channels were requested "
            f"(Dataset.image_channel_count / config.IMAGE_CHANNEL_COUNT). Override "
            f"Dataset.load_image to build {channels}-channel images from it.")
    return image


############################################################
#  Dataset
############################################################

class Dataset(object):
    """The base class for dataset classes.

    To use it, create a new class that adds functions specific to the dataset
    you want to use. For example::

        class CatsAndDogsDataset(Dataset):
            def load_cats_and_dogs(self):
                ...
            def load_mask(self, image_id):
                ...
            def image_reference(self, image_id):
                ...

    See ``mrcnn.datasets`` (shapes, VIA balloons, COCO) for examples.

    Ids: every image and class has an internal integer id (its index in
    ``image_info`` / ``class_info``, class 0 is the background "BG") and a
    source id (``"<source>.<id in that source>"``); ``prepare()`` builds the
    maps between them.

    image_channel_count: channels ``load_image`` returns (3 = RGB, 1 =
        grayscale, 4 = RGBA/RGB-D); pass ``config.IMAGE_CHANNEL_COUNT``:
        ``MyDataset(image_channel_count=config.IMAGE_CHANNEL_COUNT)`` or set
        the attribute. Subclasses that override ``__init__`` without calling
        ``super().__init__`` get the class default 3.
    """

    image_channel_count = 3

    def __init__(self, class_map=None, image_channel_count=None):
        self._image_ids = []
        self.image_info = []
        # Background is always the first class
        self.class_info = [{"source": "", "id": 0, "name": "BG"}]
        self.source_class_ids = {}
        if image_channel_count is not None:
            self.image_channel_count = int(image_channel_count)

    def add_class(self, source, class_id, class_name):
        """Registers class ``class_id`` of ``source`` (a source name must not
        contain a dot). Adding the same (source, class_id) twice is a no-op."""
        if "." in source:
            raise ValueError(f"Dataset.add_class: source name {source!r} cannot contain a dot.")
        # Does the class exist already?
        for info in self.class_info:
            if info['source'] == source and info["id"] == class_id:
                # source.class_id combination already available, skip
                return
        # Add the class
        self.class_info.append({
            "source": source,
            "id": class_id,
            "name": class_name,
        })

    def add_image(self, source, image_id, path, **kwargs):
        """Registers an image: ``image_id`` is its id within ``source``,
        ``path`` its file (or URL); extra keyword arguments (e.g. width,
        height, polygons, annotations) are kept in ``image_info``."""
        image_info = {
            "id": image_id,
            "source": source,
            "path": path,
        }
        image_info.update(kwargs)
        self.image_info.append(image_info)

    def image_reference(self, image_id):
        """Return a link to the image in its source Website or details about
        the image that help looking it up or debugging it.

        Override for your dataset, but pass to this function
        if you encounter images not in your dataset.
        """
        return ""

    def prepare(self, class_map=None):
        """Prepares the Dataset class for use: builds ``num_classes``,
        ``class_ids``, ``class_names`` (text before the first comma),
        ``num_images``, ``image_ids`` and the source maps
        ``class_from_source_map``/``image_from_source_map``
        (``"source.id"`` -> internal id), ``sources`` and ``source_class_ids``
        (source -> internal class ids, BG included in every source).

        class_map: not supported yet (ignored), as in Matterport.
        """

        def clean_name(name):
            """Returns a shorter version of object names for cleaner display."""
            return ",".join(name.split(",")[:1])

        # Build (or rebuild) everything else from the info dicts.
        self.num_classes = len(self.class_info)
        self.class_ids = np.arange(self.num_classes)
        self.class_names = [clean_name(c["name"]) for c in self.class_info]
        self.num_images = len(self.image_info)
        self._image_ids = np.arange(self.num_images)

        # Mapping from source class and image IDs to internal IDs
        self.class_from_source_map = {"{}.{}".format(info['source'], info['id']): id
                                      for info, id in zip(self.class_info, self.class_ids)}
        self.image_from_source_map = {"{}.{}".format(info['source'], info['id']): id
                                      for info, id in zip(self.image_info, self.image_ids)}

        # Map sources to class_ids they support (first-seen order, so it does
        # not change from run to run like Matterport's list(set(...)) did)
        self.sources = list(dict.fromkeys(i['source'] for i in self.class_info))
        self.source_class_ids = {}
        for source in self.sources:
            # Include BG class in all datasets
            self.source_class_ids[source] = [
                i for i, info in enumerate(self.class_info)
                if i == 0 or source == info['source']]

    def map_source_class_id(self, source_class_id):
        """Takes a source class ID and returns the int class ID assigned to it.

        For example:
        dataset.map_source_class_id("coco.12") -> 23
        """
        return self.class_from_source_map[source_class_id]

    def get_source_class_id(self, class_id, source):
        """Map an internal class ID to the corresponding class ID in the source dataset."""
        info = self.class_info[class_id]
        if info['source'] != source:
            raise ValueError(f"Dataset.get_source_class_id: class {class_id} belongs to "
                             f"source {info['source']!r}, not {source!r}.")
        return info['id']

    @property
    def image_ids(self):
        """Internal image ids, ``np.arange(num_images)`` after ``prepare()``."""
        return self._image_ids

    def source_image_link(self, image_id):
        """Returns the path or URL to the image.
        Override this to return a URL to the image if it's available online for easy
        debugging.
        """
        return self.image_info[image_id]["path"]

    def load_image(self, image_id):
        """Load the specified image and return a [H, W, C] uint8 array, C =
        ``self.image_channel_count`` (3: RGB).

        Reads ``image_info[image_id]["path"]`` with ``read_image``, which
        documents the conversions (grayscale, alpha, palette, CMYK, 16-bit,
        EXIF rotation, first frame). A file that cannot be read raises
        FileNotFoundError / ImageReadError naming the file and the image id.
        """
        path = self.image_info[image_id]["path"]
        channels = getattr(self, "image_channel_count", 3)
        try:
            return read_image(path, channels=channels)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"Image id {image_id}: {e}") from e
        except ImageReadError as e:
            raise ImageReadError(f"Image id {image_id}: {e}") from e

    def load_mask(self, image_id):
        """Load instance masks for the given image.

        Different datasets use different ways to store masks. Override this
        method to load instance masks and return them in the form of am
        array of binary masks of shape [height, width, instances].

        Returns:
            masks: A bool array of shape [height, width, instance count] with
                a binary mask per instance.
            class_ids: a 1D array of class IDs of the instance masks.
        """
        # Override this function to load a mask from your dataset.
        # Otherwise, it returns an empty mask.
        mask = np.empty([0, 0, 0])
        class_ids = np.empty([0], np.int32)
        return mask, class_ids


############################################################
#  Resizing
############################################################

def resize(image, output_shape, order=1, mode='constant', cval=0, clip=True,
           preserve_range=False, anti_aliasing=False, anti_aliasing_sigma=None):
    """A wrapper for Scikit-Image resize() with Matterport's defaults
    (bilinear, zero padding outside, no anti-aliasing).

    image: [H, W] or [H, W, C] array. Bool input with order > 0 is converted
        to float64 0/1 first (old scikit-image did this; new versions refuse).
    output_shape: (height, width).

    Returns: float64 for integer/bool input (float32 stays float32); values
    in the input's range unless preserve_range=False rescales integers to
    [0, 1] (skimage's img_as_float).
    """
    image = np.asarray(image)
    if image.dtype == bool and order > 0:
        image = image.astype(np.float64)
    return skimage.transform.resize(
        image, output_shape,
        order=order, mode=mode, cval=cval, clip=clip,
        preserve_range=preserve_range, anti_aliasing=anti_aliasing,
        anti_aliasing_sigma=anti_aliasing_sigma)


def _resize_bilinear(image, output_shape):
    """``resize(image, output_shape)`` for a float32/float64 array [H, W] or
    [H, W, C], bit-identical, about twice as fast: the same
    ``scipy.ndimage.zoom`` (pixel-centre grid, zeros outside) run per channel
    instead of on the 3-D array (along the channel axis skimage's zoom
    factor is 1, whose interpolation weights are exactly 1 and 0), without
    skimage's per-call overhead, then skimage's clipping to the input range
    (widened to 0 when zero padding reached the output)."""
    factors = np.divide(image.shape[:2], tuple(output_shape)[:2])
    zoom = [1 / f for f in factors]
    kwargs = dict(order=1, mode="grid-constant", cval=0, grid_mode=True)
    if image.ndim == 2:
        out = scipy.ndimage.zoom(image, zoom, **kwargs)
    else:
        # the output size zoom itself derives from the factors
        size = tuple(int(round(n * z)) for n, z in zip(image.shape[:2], zoom))
        out = np.empty(size + image.shape[2:], dtype=image.dtype)
        for c in range(image.shape[2]):
            scipy.ndimage.zoom(image[:, :, c], zoom, output=out[:, :, c], **kwargs)
    # skimage's _clip_warp_output(mode="constant", cval=0)
    lo, hi = image.min(), image.max()
    if np.isnan(lo):
        lo, hi = np.nanmin(image), np.nanmax(image)
        out_lo, out_hi = np.nanmin(out), np.nanmax(out)
    else:
        out_lo, out_hi = out.min(), out.max()
    if not lo <= 0 <= hi and out_lo <= 0 <= out_hi:
        zero = image.dtype.type(0)
        lo, hi = min(lo, zero), max(hi, zero)
    np.clip(out, np.asarray(lo), np.asarray(hi), out=out)
    return out


def resize_image(image, min_dim=None, max_dim=None, min_scale=None, mode="square"):
    """Resizes an image keeping the aspect ratio unchanged.

    image: [H, W, C] array (uint8 usually; the dtype is kept).
    min_dim: if provided, resizes the image such that it's smaller
        dimension == min_dim
    max_dim: if provided, ensures that the image longest side doesn't
        exceed this value.
    min_scale: if provided, ensure that the image is scaled up by at least
        this percent even if min_dim doesn't require it.
    mode: Resizing mode.
        none: No resizing. Return the image unchanged.
        square: Resize and pad with zeros to get a square image
            of size [max_dim, max_dim].
        pad64: Pads width and height with zeros to make them multiples of 64.
               If min_dim or min_scale are provided, it scales the image up
               before padding. max_dim is ignored in this mode.
               The multiple of 64 is needed to ensure smooth scaling of feature
               maps up and down the 6 levels of the FPN pyramid (2**6=64).
        crop: Picks random crops from the image. First, scales the image based
              on min_dim and min_scale, then picks a random crop of
              size min_dim x min_dim. Can be used in training only.
              max_dim is not used in this mode. The crop position comes from
              Python's ``random.randint`` (y first, then x), as Matterport.

    Scale: ``max(1, min_dim / min(h, w))``, at least ``min_scale``; in
    square mode reduced to ``max_dim / max(h, w)`` if ``round(max(h, w) *
    scale) > max_dim``. The new size is ``(round(h * scale), round(w *
    scale))`` (Python round, half to even); resizing is skimage bilinear with
    pixel-centre alignment and zeros outside (``resize``), then
    ``astype(dtype)``: uint8 values are truncated, not rounded.

    Returns:
    image: the resized image
    window: (y1, x1, y2, x2). If max_dim is provided, padding might
        be inserted in the returned image. If so, this window is the
        coordinates of the image part of the full image (excluding
        the padding). The x2, y2 pixels are not included.
    scale: The scale factor used to resize the image (int 1 if unscaled)
    padding: Padding added to the image [(top, bottom), (left, right), (0, 0)]
    crop: (y, x, height, width) of the crop in crop mode, else None
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"resize_image: image must be [H, W, C] (or [H, W]), got "
                         f"shape {image.shape}.")
    if mode not in ("none", "square", "pad64", "crop"):
        raise ValueError(f"resize_image: mode {mode!r} not supported; use 'none', "
                         f"'square', 'pad64' or 'crop'.")
    # Keep track of image dtype and return results in the same dtype
    image_dtype = image.dtype
    # Default window (y1, x1, y2, x2) and default scale == 1.
    h, w = image.shape[:2]
    window = (0, 0, h, w)
    scale = 1
    padding = [(0, 0), (0, 0), (0, 0)]
    crop = None

    if mode == "none":
        return image, window, scale, padding, crop
    if mode == "square" and not max_dim:
        raise ValueError("resize_image: mode 'square' needs max_dim (IMAGE_MAX_DIM).")
    if mode == "crop" and not min_dim:
        raise ValueError("resize_image: mode 'crop' needs min_dim (IMAGE_MIN_DIM), the crop size.")
    if mode == "pad64" and min_dim and min_dim % 64 != 0:
        raise ValueError(f"resize_image: mode 'pad64' needs min_dim (IMAGE_MIN_DIM) to be a "
                         f"multiple of 64, got {min_dim}.")
    if h == 0 or w == 0:
        raise ValueError(f"resize_image: image has no pixels (shape {image.shape}).")

    # Scale?
    if min_dim:
        # Scale up but not down
        scale = max(1, min_dim / min(h, w))
    if min_scale and scale < min_scale:
        scale = min_scale

    # Does it exceed max dim?
    if max_dim and mode == "square":
        image_max = max(h, w)
        if round(image_max * scale) > max_dim:
            scale = max_dim / image_max

    # Resize image using bilinear interpolation
    if scale != 1:
        new_shape = (round(h * scale), round(w * scale))
        if image.dtype.kind in "ui" or image.dtype in (np.float32, np.float64):
            # what resize(preserve_range=True) does, faster (same bits):
            # integers become float64, float32/64 stay as they are
            image = _resize_bilinear(image.astype(np.float64) if image.dtype.kind in "ui"
                                     else image, new_shape)
        else:
            image = resize(image, new_shape, preserve_range=True)
    # Back to the input dtype (truncation for integers) before padding:
    # same values, less memory to pad.
    image = image.astype(image_dtype, copy=False)

    # Need padding or cropping?
    h, w = image.shape[:2]
    if mode == "square":
        top_pad = (max_dim - h) // 2
        bottom_pad = max_dim - h - top_pad
        left_pad = (max_dim - w) // 2
        right_pad = max_dim - w - left_pad
        padding = [(top_pad, bottom_pad), (left_pad, right_pad), (0, 0)]
        image = np.pad(image, padding[:image.ndim], mode='constant', constant_values=0)
        window = (top_pad, left_pad, h + top_pad, w + left_pad)
    elif mode == "pad64":
        # Both sides must be divisible by 64
        top_pad, bottom_pad = _pad_to_multiple(h, 64)
        left_pad, right_pad = _pad_to_multiple(w, 64)
        padding = [(top_pad, bottom_pad), (left_pad, right_pad), (0, 0)]
        image = np.pad(image, padding[:image.ndim], mode='constant', constant_values=0)
        window = (top_pad, left_pad, h + top_pad, w + left_pad)
    elif mode == "crop":
        # Pick a random crop
        y = random.randint(0, (h - min_dim))
        x = random.randint(0, (w - min_dim))
        crop = (y, x, min_dim, min_dim)
        image = image[y:y + min_dim, x:x + min_dim]
        window = (0, 0, min_dim, min_dim)
    return image, window, scale, padding, crop


def _pad_to_multiple(size, multiple):
    """(before, after) zero padding that makes ``size`` a multiple of
    ``multiple``, split as evenly as possible with the extra pixel after."""
    if size % multiple == 0:
        return 0, 0
    total = size - (size % multiple) + multiple - size
    return total // 2, total - total // 2


def _zoom_nearest_index(size, scale):
    """Source index of each output pixel of ``scipy.ndimage.zoom(order=0)``
    along one axis of length ``size``, or -1 where zoom samples outside the
    input (it then gives cval 0). Obtained from scipy itself by zooming
    1..size, so it is exact: order 0 is separable, every axis maps its own
    coordinates."""
    with warnings.catch_warnings():
        # scipy warns that the output shape is computed with round()
        warnings.simplefilter("ignore")
        z = scipy.ndimage.zoom(np.arange(1, size + 1, dtype=np.float64), scale, order=0)
    return np.rint(z).astype(np.intp) - 1


def resize_mask(mask, scale, padding, crop=None):
    """Resizes a mask using the given scale and padding.

    Typically, you get the scale and padding from resize_image() to
    ensure both, the image and the mask, are resized consistently.

    mask: [height, width, num_instances] bool (any dtype is kept).
    scale: mask scaling factor
    padding: Padding to add to the mask in the form
            [(top, bottom), (left, right), (0, 0)]
    crop: (y, x, h, w) from resize_image's crop mode, or None.

    Nearest neighbour exactly as ``scipy.ndimage.zoom(mask, [scale, scale,
    1], order=0)`` (Matterport's call): output size ``round(size * scale)``,
    corner-aligned grid (unlike the image's pixel-centre bilinear resize).
    Computed as two index gathers (the per-axis index maps come from scipy),
    which is ~10x faster than zooming the whole [H, W, N] array.

    Returns: the resized mask, same dtype.
    """
    mask = _as_masks(mask, "mask", "resize_mask")
    iy = _zoom_nearest_index(mask.shape[0], scale)
    ix = _zoom_nearest_index(mask.shape[1], scale)
    if crop is not None:
        y, x, h, w = crop
        iy, ix = iy[y:y + h], ix[x:x + w]
    out = mask.take(np.maximum(iy, 0), axis=0).take(np.maximum(ix, 0), axis=1)
    # samples scipy takes from outside the mask are cval 0
    out[iy < 0] = 0
    out[:, ix < 0] = 0
    if crop is None:
        out = np.pad(out, padding, mode='constant', constant_values=0)
    return out


def _resize_mask_scipy(mask, scale, padding, crop=None):
    """Matterport's resize_mask (one scipy zoom of the whole array); kept as
    the reference the fast version is tested against."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask = scipy.ndimage.zoom(mask, zoom=[scale, scale, 1], order=0)
    if crop is not None:
        y, x, h, w = crop
        return mask[y:y + h, x:x + w]
    return np.pad(mask, padding, mode='constant', constant_values=0)


def minimize_mask(bbox, mask, mini_shape):
    """Resize masks to a smaller version to reduce memory load.

    Mini-masks can be resized back to image scale using expand_mask().

    bbox: [num_instances, (y1, x1, y2, x2)] int pixel boxes (extra columns
        ignored), usually from extract_bboxes(mask).
    mask: [height, width, num_instances], bool or 0/1.
    mini_shape: (mini_height, mini_width), e.g. config.MINI_MASK_SHAPE.

    Each instance's box is cut out and resized bilinearly (skimage
    conventions, see ``resize``), then rounded with ``np.around`` (exactly
    0.5 becomes False).

    Returns: mini_mask [mini_height, mini_width, num_instances] bool.
    Raises ValueError if a box has zero area.
    """
    mask = _as_masks(mask, "mask", "minimize_mask")
    bbox = np.asarray(bbox)
    mini_shape = tuple(int(s) for s in mini_shape)
    n = mask.shape[-1]
    if bbox.ndim != 2 or bbox.shape[0] < n or bbox.shape[1] < 4:
        raise ValueError(f"minimize_mask: bbox must be [num_instances={n}, (y1, x1, y2, x2)], "
                         f"got shape {bbox.shape}.")
    mini_mask = np.zeros(mini_shape + (n,), dtype=bool)
    for i in range(n):
        y1, x1, y2, x2 = (int(v) for v in bbox[i][:4])
        # Crop first, then cast: casting the whole [H, W] slice is the slow
        # part for big images.
        m = mask[y1:y2, x1:x2, i]
        if m.size == 0:
            raise ValueError(f"minimize_mask: instance {i} has an invalid bounding box with "
                             f"area of zero: {(y1, x1, y2, x2)}.")
        # Resize with bilinear interpolation
        m = _resize_bilinear(m.astype(bool).astype(np.float64), mini_shape)
        mini_mask[:, :, i] = np.around(m)
    return mini_mask


def expand_mask(bbox, mini_mask, image_shape):
    """Resizes mini masks back to image size. Reverses the change
    of minimize_mask().

    bbox: [num_instances, (y1, x1, y2, x2)] int pixel boxes.
    mini_mask: [mini_height, mini_width, num_instances] bool.
    image_shape: (height, width[, channels]) of the full image.

    Each mini mask is resized bilinearly to its box (skimage conventions)
    and rounded with ``np.around`` (0.5 becomes False).

    Returns: mask [height, width, num_instances] bool.
    """
    mini_mask = _as_masks(mini_mask, "mini_mask", "expand_mask")
    bbox = np.asarray(bbox)
    n = mini_mask.shape[-1]
    if bbox.ndim != 2 or bbox.shape[0] < n or bbox.shape[1] < 4:
        raise ValueError(f"expand_mask: bbox must be [num_instances={n}, (y1, x1, y2, x2)], "
                         f"got shape {bbox.shape}.")
    mask = np.zeros(tuple(image_shape[:2]) + (n,), dtype=bool)
    for i in range(n):
        m = mini_mask[:, :, i].astype(np.float64)
        y1, x1, y2, x2 = (int(v) for v in bbox[i][:4])
        h = y2 - y1
        w = x2 - x1
        # Resize with bilinear interpolation
        m = _resize_bilinear(m, (h, w))
        mask[y1:y2, x1:x2, i] = np.around(m)
    return mask


def unmold_mask(mask, bbox, image_shape):
    """Converts a mask generated by the neural network to a format similar
    to its original shape.

    mask: [height, width] of type float. A small, typically 28x28 mask.
    bbox: [y1, x1, y2, x2]. The box to fit the mask in.
    image_shape: (height, width[, channels]) of the original image.

    The mask is resized bilinearly to the box (skimage conventions: pixel
    centres aligned, zeros outside, result clipped to the input range) and
    thresholded at >= 0.5.

    Returns a binary mask [height, width] bool with the same size as the
    original image.
    """
    threshold = 0.5
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"unmold_mask: mask must be [height, width], got shape {mask.shape}.")
    y1, x1, y2, x2 = (int(v) for v in bbox)
    if mask.dtype.kind != "f":
        mask = mask.astype(np.float64)
    mask = _resize_bilinear(mask, (y2 - y1, x2 - x1)) >= threshold

    # Put the mask in the right location.
    full_mask = np.zeros(tuple(image_shape[:2]), dtype=bool)
    full_mask[y1:y2, x1:x2] = mask
    return full_mask


############################################################
#  Anchors
############################################################

def generate_anchors(scales, ratios, shape, feature_stride, anchor_stride):
    """Anchors of one feature map, in pixels.

    scales: 1D array of anchor sizes in pixels. Example: [32, 64, 128]
    ratios: 1D array of anchor ratios of width/height. Example: [0.5, 1, 2]
    shape: [height, width] spatial shape of the feature map over which
            to generate anchors.
    feature_stride: Stride of the feature map relative to the image in pixels.
    anchor_stride: Stride of anchors on the feature map. For example, if the
        value is 2 then generate anchors for every other feature map pixel.

    Anchor centres are at (y * feature_stride, x * feature_stride) for cell
    (y, x) (not the cell centre); heights scale / sqrt(ratio), widths
    scale * sqrt(ratio); corners are centre -/+ size / 2, unclipped.

    Returns: [num_cells * len(scales) * len(ratios), (y1, x1, y2, x2)]
    float64 pixels, ordered by row y, column x, then (ratio, scale) with
    scales varying fastest.
    """
    # Get all combinations of scales and ratios
    scales, ratios = np.meshgrid(np.array(scales), np.array(ratios))
    scales = scales.flatten()
    ratios = ratios.flatten()

    # Enumerate heights and widths from scales and ratios
    heights = scales / np.sqrt(ratios)
    widths = scales * np.sqrt(ratios)

    # Enumerate shifts in feature space
    shifts_y = np.arange(0, shape[0], anchor_stride) * feature_stride
    shifts_x = np.arange(0, shape[1], anchor_stride) * feature_stride
    shifts_x, shifts_y = np.meshgrid(shifts_x, shifts_y)

    # [cells, 1, 2] centres against [1, anchors, 2] sizes
    centers = np.stack([shifts_y.ravel(), shifts_x.ravel()], axis=1)[:, None, :]
    sizes = np.stack([heights, widths], axis=1)[None, :, :]
    half = 0.5 * sizes
    # Convert to corner coordinates (y1, x1, y2, x2)
    boxes = np.concatenate([centers - half, centers + half], axis=2)
    return boxes.reshape(-1, 4)


def generate_pyramid_anchors(scales, ratios, feature_shapes, feature_strides,
                             anchor_stride):
    """Generate anchors at different levels of a feature pyramid. Each scale
    is associated with a level of the pyramid, but each ratio is used in
    all levels of the pyramid.

    scales: [levels] anchor size per level, e.g. config.RPN_ANCHOR_SCALES.
    ratios: width/height ratios, e.g. config.RPN_ANCHOR_RATIOS.
    feature_shapes: [levels, (height, width)] backbone feature map shapes.
    feature_strides: [levels] strides, e.g. config.BACKBONE_STRIDES.
    anchor_stride: config.RPN_ANCHOR_STRIDE.

    Returns:
    anchors: [N, (y1, x1, y2, x2)] float64 pixels. All generated anchors in
        one array. Sorted with the same order of the given scales. So,
        anchors of scale[0] come first, then anchors of scale[1], and so on.
    """
    if not (len(scales) == len(feature_shapes) == len(feature_strides)):
        raise ValueError(
            f"generate_pyramid_anchors: got {len(scales)} scales, {len(feature_shapes)} "
            f"feature shapes and {len(feature_strides)} strides; give one of each per "
            f"pyramid level (RPN_ANCHOR_SCALES and BACKBONE_STRIDES must have equal length).")
    anchors = [generate_anchors(scales[i], ratios, feature_shapes[i],
                                feature_strides[i], anchor_stride)
               for i in range(len(scales))]
    return np.concatenate(anchors, axis=0)


############################################################
#  Miscellaneous
############################################################

def trim_zeros(x):
    """It's common to have tensors larger than the available data and
    pad with zeros. This function removes rows that are all zeros.

    x: [rows, columns].
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise _EmptyInputError(f"trim_zeros: x must be 2-D [rows, columns], got shape {x.shape}.")
    return x[~np.all(x == 0, axis=1)]


def compute_matches(gt_boxes, gt_class_ids, gt_masks,
                    pred_boxes, pred_class_ids, pred_scores, pred_masks,
                    iou_threshold=0.5, score_threshold=0.0):
    """Finds matches between prediction and ground truth instances.

    gt_boxes: [G, (y1, x1, y2, x2)], zero rows are padding and trimmed.
    gt_class_ids: [G] int. gt_masks: [H, W, G].
    pred_boxes: [P, (y1, x1, y2, x2)] (zero rows trimmed), pred_class_ids:
        [P], pred_scores: [P], pred_masks: [H, W, P].
    iou_threshold: minimum mask IoU for a match.
    score_threshold: despite the name, Matterport compares it with the IoU:
        gt candidates with IoU below it are not considered.

    Predictions are sorted by ``np.argsort(scores)[::-1]`` and matched
    greedily on *mask* IoU, the best-overlapping unmatched gt of the same
    class first. Each gt is matched at most once. (Matterport tested
    "already matched" with gt_match > 0, so a gt matched to the top-scoring
    prediction 0 could be matched again and counted twice; fixed here.)

    Returns:
        gt_match: [G'] float64. For each GT box the index of the matched
                  predicted box (in sorted order), -1 if none.
        pred_match: [P'] float64. For each predicted box (sorted by score),
                    the index of the matched ground truth box, -1 if none.
        overlaps: [P', G'] mask IoU (float32; float64 zeros when empty).
    """
    # Trim zero padding
    gt_boxes = trim_zeros(_as_boxes(gt_boxes, "gt_boxes", "compute_matches"))
    gt_masks = np.asarray(gt_masks)[..., :gt_boxes.shape[0]]
    pred_boxes = trim_zeros(_as_boxes(pred_boxes, "pred_boxes", "compute_matches"))
    pred_scores = np.asarray(pred_scores)[:pred_boxes.shape[0]]
    gt_class_ids = np.asarray(gt_class_ids)
    # Sort predictions by score from high to low
    indices = np.argsort(pred_scores)[::-1]
    pred_boxes = pred_boxes[indices]
    pred_class_ids = np.asarray(pred_class_ids)[indices]
    pred_masks = np.asarray(pred_masks)[..., indices]

    # Compute IoU overlaps [pred_masks, gt_masks]
    overlaps = compute_overlaps_masks(pred_masks, gt_masks)

    # Loop through predictions and find matching ground truth boxes
    pred_match = -1 * np.ones([pred_boxes.shape[0]])
    gt_match = -1 * np.ones([gt_boxes.shape[0]])
    for i in range(len(pred_boxes)):
        # Find best matching ground truth box
        # 1. Sort matches by score
        sorted_ixs = np.argsort(overlaps[i])[::-1]
        # 2. Remove low scores
        low_score_idx = np.where(overlaps[i, sorted_ixs] < score_threshold)[0]
        if low_score_idx.size > 0:
            sorted_ixs = sorted_ixs[:low_score_idx[0]]
        # 3. Find the match
        for j in sorted_ixs:
            # If ground truth box is already matched, go to next one.
            # Deviation from Matterport, whose test was "> 0" and so missed a
            # match with prediction 0: that gt could be matched (and counted
            # as a true positive) twice. No golden case depends on it.
            if gt_match[j] > -1:
                continue
            # If we reach IoU smaller than the threshold, end the loop
            iou = overlaps[i, j]
            if iou < iou_threshold:
                break
            # Do we have a match?
            if pred_class_ids[i] == gt_class_ids[j]:
                gt_match[j] = i
                pred_match[i] = j
                break

    return gt_match, pred_match, overlaps


def compute_ap(gt_boxes, gt_class_ids, gt_masks,
               pred_boxes, pred_class_ids, pred_scores, pred_masks,
               iou_threshold=0.5):
    """Compute Average Precision at a set IoU threshold (default 0.5).

    Arguments as ``compute_matches`` (mask IoU). The precision envelope is
    made monotone (VOC style) and AP is the area under the precision/recall
    step curve.

    Returns:
    mAP: float64 Mean Average Precision (NaN when there is no gt)
    precisions: [P' + 2] float64 precisions at different class score
        thresholds, padded with 0 at both ends.
    recalls: [P' + 2] float64 recall values, padded with 0 and 1.
    overlaps: [P', G'] IoU overlaps.
    """
    # Get matches and overlaps
    gt_match, pred_match, overlaps = compute_matches(
        gt_boxes, gt_class_ids, gt_masks,
        pred_boxes, pred_class_ids, pred_scores, pred_masks,
        iou_threshold)

    # Compute precision and recall at each prediction box step
    precisions = np.cumsum(pred_match > -1) / (np.arange(len(pred_match)) + 1)
    recalls = np.cumsum(pred_match > -1).astype(np.float32) / len(gt_match)

    # Pad with start and end values to simplify the math
    precisions = np.concatenate([[0], precisions, [0]])
    recalls = np.concatenate([[0], recalls, [1]])

    # Ensure precision values decrease but don't increase. This way, the
    # precision value at each recall threshold is the maximum it can be
    # for all following recall thresholds, as specified by the VOC paper.
    precisions = np.maximum.accumulate(precisions[::-1])[::-1]

    # Compute mean AP over recall range
    indices = np.where(recalls[:-1] != recalls[1:])[0] + 1
    mAP = np.sum((recalls[indices] - recalls[indices - 1]) *
                 precisions[indices])

    return mAP, precisions, recalls, overlaps


def compute_ap_range(gt_box, gt_class_id, gt_mask,
                     pred_box, pred_class_id, pred_score, pred_mask,
                     iou_thresholds=None, verbose=1):
    """Compute AP over a range or IoU thresholds. Default range is 0.5-0.95
    (``np.arange(0.5, 1.0, 0.05)``).

    Returns: float64 mean of ``compute_ap`` over the thresholds; prints each
    AP when verbose.
    """
    # Default is 0.5 to 0.95 with increments of 0.05 (None or empty)
    if iou_thresholds is None or len(iou_thresholds) == 0:
        iou_thresholds = np.arange(0.5, 1.0, 0.05)

    # Compute AP over range of IoU thresholds
    AP = []
    for iou_threshold in iou_thresholds:
        ap, precisions, recalls, overlaps =\
            compute_ap(gt_box, gt_class_id, gt_mask,
                       pred_box, pred_class_id, pred_score, pred_mask,
                       iou_threshold=iou_threshold)
        if verbose:
            print("AP @{:.2f}:\t {:.3f}".format(iou_threshold, ap))
        AP.append(ap)
    AP = np.array(AP).mean()
    if verbose:
        print("AP @{:.2f}-{:.2f}:\t {:.3f}".format(
            iou_thresholds[0], iou_thresholds[-1], AP))
    return AP


def compute_recall(pred_boxes, gt_boxes, iou):
    """Compute the recall at the given IoU threshold. It's an indication
    of how many GT boxes were found by the given prediction boxes.

    pred_boxes: [N, (y1, x1, y2, x2)] in image coordinates
    gt_boxes: [N, (y1, x1, y2, x2)] in image coordinates
    iou: box IoU threshold (>=).

    Returns: recall (Python float, the fraction of gt boxes that are the best
    match of some prediction with IoU >= iou) and positive_ids [K] int64,
    the predictions with such a match. Raises ValueError if there is no gt
    box (recall undefined).
    """
    gt_boxes = _as_boxes(gt_boxes, "gt_boxes", "compute_recall")
    if gt_boxes.shape[0] == 0:
        raise ValueError("compute_recall: gt_boxes is empty; recall is undefined "
                         "without ground truth.")
    # Measure overlaps
    overlaps = compute_overlaps(pred_boxes, gt_boxes)
    iou_max = np.max(overlaps, axis=1)
    iou_argmax = np.argmax(overlaps, axis=1)
    positive_ids = np.where(iou_max >= iou)[0]
    matched_gt_boxes = iou_argmax[positive_ids]

    recall = len(set(matched_gt_boxes)) / gt_boxes.shape[0]
    return recall, positive_ids


# ## Batch Slicing
# Matterport used this to run graph functions written for one image on each
# image of a batch. Our model does not use it (no Python loop over the batch
# in the graph); it is kept so old user code keeps working.
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
    import tensorflow as tf  # only this legacy helper needs TensorFlow

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


def download_trained_weights(coco_model_path, verbose=1, url=COCO_MODEL_URL, timeout=60):
    """Download COCO trained weights from Releases.

    coco_model_path: local path of COCO trained weights (e.g.
        "mask_rcnn_coco.h5"); parent folders are created.
    verbose: print progress messages if > 0.
    url: where to download from (Matterport's v2.0 release by default).
    timeout: seconds to wait for the server.

    The file is written to ``<path>.part`` and renamed when complete, so an
    interrupted download never leaves a truncated weights file behind.

    Raises WeightsDownloadError (an OSError) when offline or the transfer
    fails; the message gives the URL to fetch by hand and where to put it.
    """
    path = os.fspath(coco_model_path)
    if verbose > 0:
        print("Downloading pretrained model to " + path + " ...")
    folder = os.path.dirname(os.path.abspath(path))
    tmp = path + ".part"
    try:
        os.makedirs(folder, exist_ok=True)
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, 'wb') as out:
            expected = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
            shutil.copyfileobj(resp, out)
            written = out.tell()
        if expected is not None and int(expected) != written:
            raise OSError(f"got {written} of {expected} bytes")
        os.replace(tmp, path)
    except (urllib.error.URLError, OSError, ValueError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise WeightsDownloadError(
            f"Could not download the COCO weights from {url} ({e}). If this machine is "
            f"offline, download that file by hand (about 246 MB, "
            f"{os.path.basename(url)}) and save it as {os.path.abspath(path)}.") from e
    if verbose > 0:
        print("... done downloading pretrained model!")


def _height_width(shape, func):
    """(height, width) from a 2-element shape, or ValueError naming func."""
    if np.ndim(shape) != 1 or len(shape) != 2:
        raise ValueError(f"{func}: shape must be (height, width), got {shape!r}; "
                         f"pass image.shape[:2].")
    h, w = shape
    return h, w


def norm_boxes(boxes, shape):
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


def denorm_boxes(boxes, shape):
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
