"""COCO segmentations -> RLE, safe for whatever an annotation tool wrote.

pycocotools trusts its input: a polygon with a NaN, an infinite or a very
large coordinate (beyond ~4e8) makes ``frPyObjects`` allocate without bound
or crash the process (measured: SIGKILL by the out-of-memory killer, or a
segmentation fault), an RLE ``size`` of 100000x100000 decodes into 10 GB, and
an empty or malformed ``counts`` string decodes to garbage values. So every
segmentation is checked here first (``CocoDataset.annToRLE`` /
``annToMask`` / ``load_mask`` use :func:`segmentation_rle`):

=====================================  ======================================
what the annotation has                what happens
=====================================  ======================================
polygon part with < 3 points, an odd   the part is dropped (``problems``
number of coordinates, non-numbers,    lists why; ``load_coco`` logs one
NaN or infinite coordinates            summary warning per file)
polygon part partly or wholly outside  clipped to the image (Sutherland-
the image, huge coordinates            Hodgman against the image rectangle
                                       plus a one-pixel margin: the pixels
                                       inside are exactly pycocotools')
no usable polygon, no segmentation     the ``bbox`` (4 finite numbers, width
                                       and height > 0, clipped), else no mask
RLE whose ``size`` is not the image's  ``RleSizeError`` (load_mask: a
                                       ValueError naming the annotation,
                                       crowds get the whole image as in
                                       Matterport), checked before decoding
RLE with negative counts, counts that  ValueError naming the annotation
do not add up to height * width, an
empty or undecodable counts string
=====================================  ======================================
"""
import math
from typing import List, Optional, Tuple

import numpy as np

__all__ = ["clip_polygon", "segmentation_rle", "RleSizeError"]


class RleSizeError(ValueError):
    """An RLE segmentation whose ``size`` differs from the image's."""

    def __init__(self, size, message):
        super().__init__(message)
        self.size = size


def clip_polygon(xs, ys, x_min, y_min, x_max, y_max) -> Tuple[np.ndarray, np.ndarray]:
    """The polygon (xs, ys) intersected with a rectangle (Sutherland-Hodgman).

    Exact for the part inside the rectangle (the intersection of a polygon
    with a convex region); returns fewer than 3 points when nothing is left.
    """
    points = list(zip((float(x) for x in xs), (float(y) for y in ys)))
    for axis, bound, keep_below in ((0, x_min, False), (0, x_max, True),
                                    (1, y_min, False), (1, y_max, True)):
        if not points:
            break

        def inside(p):
            return p[axis] <= bound if keep_below else p[axis] >= bound

        def cross(p, q):
            t = (bound - p[axis]) / (q[axis] - p[axis])
            other = 1 - axis
            point = [0.0, 0.0]
            point[axis] = bound
            point[other] = p[other] + t * (q[other] - p[other])
            return tuple(point)

        out = []
        for k, q in enumerate(points):
            p = points[k - 1]
            if inside(q):
                if not inside(p):
                    out.append(cross(p, q))
                out.append(q)
            elif inside(p):
                out.append(cross(p, q))
        points = out
    if not points:
        return np.zeros(0), np.zeros(0)
    arr = np.asarray(points, dtype=np.float64)
    return arr[:, 0], arr[:, 1]


def _numbers(values) -> Optional[List[float]]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    if any(isinstance(v, (bool, str)) for v in values):
        return None
    return out


def _polygon_parts(segm, height, width, problems):
    parts = []
    for part in segm:
        if not isinstance(part, (list, tuple)):
            problems.append("a polygon that is not a list of numbers")
            continue
        coords = _numbers(part)
        if coords is None:
            problems.append("a polygon with non-numeric coordinates")
        elif len(coords) % 2:
            problems.append(f"a polygon with an odd number of coordinates ({len(coords)})")
        elif len(coords) < 6:
            problems.append(f"a polygon with {len(coords) // 2} point(s)")
        elif not all(math.isfinite(v) for v in coords):
            problems.append("a polygon with NaN or infinite coordinates")
        else:
            xs, ys = clip_polygon(coords[0::2], coords[1::2], -1.0, -1.0,
                                  width + 1.0, height + 1.0)
            if len(xs) >= 3:
                parts.append(np.stack([xs, ys], axis=1).ravel().tolist())
    return parts


def _bbox_rle(bbox, height, width, mask_utils, problems):
    coords = _numbers(bbox) if isinstance(bbox, (list, tuple)) else None
    if coords is None or len(coords) != 4 or not all(math.isfinite(v) for v in coords):
        if bbox is not None:
            problems.append(f"a bbox that is not 4 finite numbers ({bbox!r:.60})")
        return None
    x, y, w, h = coords
    x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    if w <= 0 or h <= 0 or x2 <= x1 or y2 <= y1:
        return None
    box = np.array([[x1, y1, x2 - x1, y2 - y1]], dtype=np.float64)
    return mask_utils.frPyObjects(box, height, width)[0]


def segmentation_rle(ann: dict, height: int, width: int, mask_utils,
                     where: str = "COCO annotation") -> Tuple[Optional[dict], List[str]]:
    """An annotation's mask as an RLE of the image's size, checked.

    ann: a COCO annotation dict ("segmentation", "bbox").
    height, width: the image's size.
    mask_utils: ``pycocotools.mask``.
    where: names the annotation and image in errors.
    Returns (rle or None when nothing is left, problems: what was dropped).
    Raises RleSizeError / ValueError for RLE segmentations that cannot be
    used (module docstring).
    """
    problems = []
    segm = ann.get("segmentation")
    if isinstance(segm, (list, tuple)):
        parts = _polygon_parts(segm, height, width, problems)
        if parts:
            return mask_utils.merge(mask_utils.frPyObjects(parts, height, width)), problems
        return _bbox_rle(ann.get("bbox"), height, width, mask_utils, problems), problems
    if segm is None:
        return _bbox_rle(ann.get("bbox"), height, width, mask_utils, problems), problems
    if not isinstance(segm, dict) or "counts" not in segm or "size" not in segm:
        raise ValueError(f"{where}: 'segmentation' must be a list of polygons or an RLE dict "
                         f"with 'counts' and 'size', got {segm!r:.80}.")
    size = segm["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, (int, np.integer)) for v in size)):
        raise ValueError(f"{where}: RLE 'size' must be [height, width], got {size!r:.60}.")
    if tuple(int(v) for v in size) != (int(height), int(width)):
        raise RleSizeError(tuple(int(v) for v in size),
                           f"{where}: its RLE mask is {size[0]}x{size[1]} but the image is "
                           f"{height}x{width}")
    counts = segm["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 0
                   for c in counts):
            raise ValueError(f"{where}: uncompressed RLE counts must be integers >= 0.")
        if sum(int(c) for c in counts) != height * width:
            raise ValueError(f"{where}: uncompressed RLE counts add up to "
                             f"{sum(int(c) for c in counts)}, not height * width = "
                             f"{height * width}.")
        return mask_utils.frPyObjects(segm, height, width), problems
    if isinstance(counts, str):
        counts = counts.encode("ascii", errors="replace")
    if not isinstance(counts, bytes) or not counts:
        raise ValueError(f"{where}: compressed RLE counts must be a non-empty string.")
    rle = {"size": [int(height), int(width)], "counts": counts}
    try:
        # The decoded area must be the image's: a bad string decodes to
        # anything, or raises.
        area = float(mask_utils.area(rle))
        decoded = mask_utils.decode(rle)
    except (ValueError, TypeError, OverflowError) as e:
        raise ValueError(f"{where}: the RLE counts cannot be decoded ({e}).") from None
    if area > height * width or decoded.max(initial=0) > 1:
        raise ValueError(f"{where}: the RLE counts do not describe a {height}x{width} mask.")
    return rle, problems
