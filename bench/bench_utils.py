"""Speed of the NumPy utilities that run per image in training.

Run: ``python bench/bench_utils.py [--repeat N]``. Prints the median of N
runs in milliseconds for our ``mrcnn.utils`` and, side by side, for
Matterport's formulations (re-implemented here from its published code:
per-column ``compute_iou``, per-instance ``skimage.transform.resize``, one
``scipy.ndimage.zoom`` of the whole mask array), and checks that both give
identical results.

Workload (COCO-like training image): 1024x1024, anchors scales 32..512,
ratios 0.5/1/2, strides 4..64, anchor stride 1 -> 261,888 anchors; 100
ground-truth instances with boxes of 20..300 pixels.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mrcnn import resize, utils  # noqa: E402


def _median_ms(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times)


# Matterport's formulations (reference for speed and equality) ---------------

def matterport_compute_overlaps(boxes1, boxes2):
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    overlaps = np.zeros((boxes1.shape[0], boxes2.shape[0]))
    for i in range(overlaps.shape[1]):
        overlaps[:, i] = utils.compute_iou(boxes2[i], boxes1, area2[i], area1)
    return overlaps


def matterport_extract_bboxes(mask):
    boxes = np.zeros([mask.shape[-1], 4], dtype=np.int32)
    for i in range(mask.shape[-1]):
        m = mask[:, :, i]
        horizontal = np.where(np.any(m, axis=0))[0]
        vertical = np.where(np.any(m, axis=1))[0]
        if horizontal.shape[0]:
            boxes[i] = [vertical[0], horizontal[0], vertical[-1] + 1, horizontal[-1] + 1]
    return boxes


def matterport_minimize_mask(bbox, mask, mini_shape):
    mini_mask = np.zeros(mini_shape + (mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        m = mask[:, :, i].astype(bool)
        y1, x1, y2, x2 = bbox[i][:4]
        m = utils.resize(m[y1:y2, x1:x2], mini_shape)
        mini_mask[:, :, i] = np.around(m).astype(bool)
    return mini_mask


def matterport_expand_mask(bbox, mini_mask, image_shape):
    mask = np.zeros(image_shape[:2] + (mini_mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        y1, x1, y2, x2 = bbox[i][:4]
        m = utils.resize(mini_mask[:, :, i], (y2 - y1, x2 - x1))
        mask[y1:y2, x1:x2, i] = np.around(m).astype(bool)
    return mask


def matterport_resize_image_square(image, min_dim, max_dim):
    h, w = image.shape[:2]
    scale = max(1, min_dim / min(h, w))
    if round(max(h, w) * scale) > max_dim:
        scale = max_dim / max(h, w)
    image = utils.resize(image, (round(h * scale), round(w * scale)), preserve_range=True)
    h, w = image.shape[:2]
    top, left = (max_dim - h) // 2, (max_dim - w) // 2
    padding = [(top, max_dim - h - top), (left, max_dim - w - left), (0, 0)]
    return np.pad(image, padding, mode="constant").astype(np.uint8)


def _workload(seed=0, size=1024, n=100):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (800, 1066, 3), dtype=np.uint8)  # resized to 1024 square
    mask = np.zeros((size, size, n), dtype=bool)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        h, w = rng.integers(20, 300, 2)
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        cy, cx = y + h / 2, x + w / 2
        # an ellipse in its box (a realistic, non-rectangular instance)
        sl = (slice(y, y + h), slice(x, x + w))
        mask[sl + (i,)] = ((yy[sl] - cy) / (h / 2)) ** 2 + ((xx[sl] - cx) / (w / 2)) ** 2 <= 1
    return image, mask


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per measurement")
    args = parser.parse_args()
    r = args.repeat

    scales, ratios = (32, 64, 128, 256, 512), [0.5, 1, 2]
    strides = [4, 8, 16, 32, 64]
    shapes = np.array([[int(np.ceil(1024 / s))] * 2 for s in strides])
    image, mask = _workload()
    n = mask.shape[-1]

    anchors = utils.generate_pyramid_anchors(scales, ratios, shapes, strides, 1)
    boxes = utils.extract_bboxes(mask)
    mini = utils.minimize_mask(boxes, mask, (56, 56))

    # equality with Matterport's formulation (the golden tests cover the rest)
    assert anchors.shape == (261888, 4)
    assert np.array_equal(utils.compute_overlaps(anchors, boxes),
                          matterport_compute_overlaps(anchors, boxes), equal_nan=True)
    assert np.array_equal(boxes, matterport_extract_bboxes(mask))
    assert np.array_equal(mini, matterport_minimize_mask(boxes, mask, (56, 56)))
    assert np.array_equal(utils.expand_mask(boxes, mini, mask.shape),
                          matterport_expand_mask(boxes, mini, mask.shape))

    # masks of the 800x1066 image, resized as the image is
    _, _, scale, padding, _ = utils.resize_image(image, 800, 1024, 0, "square")
    image_mask = np.zeros(image.shape[:2] + (n,), dtype=bool)
    image_mask[:, :1024] = mask[:800]

    assert np.array_equal(utils.resize_image(image, 800, 1024, 0, "square")[0],
                          matterport_resize_image_square(image, 800, 1024))
    assert np.array_equal(utils.resize_mask(image_mask, scale, padding),
                          resize._resize_mask_scipy(image_mask, scale, padding))

    rows = [
        ("generate_pyramid_anchors 1024x1024 (261,888)",
         lambda: utils.generate_pyramid_anchors(scales, ratios, shapes, strides, 1), None),
        ("compute_overlaps 261,888 x 100 boxes",
         lambda: utils.compute_overlaps(anchors, boxes),
         lambda: matterport_compute_overlaps(anchors, boxes)),
        (f"extract_bboxes 1024x1024x{n}",
         lambda: utils.extract_bboxes(mask), lambda: matterport_extract_bboxes(mask)),
        (f"minimize_mask {n} instances -> 56x56",
         lambda: utils.minimize_mask(boxes, mask, (56, 56)),
         lambda: matterport_minimize_mask(boxes, mask, (56, 56))),
        (f"expand_mask {n} instances -> 1024x1024",
         lambda: utils.expand_mask(boxes, mini, mask.shape),
         lambda: matterport_expand_mask(boxes, mini, mask.shape)),
        ("resize_image 800x1066 -> 1024 square",
         lambda: utils.resize_image(image, 800, 1024, 0, "square"),
         lambda: matterport_resize_image_square(image, 800, 1024)),
        (f"resize_mask 800x1066x{n} -> 1024 square",
         lambda: utils.resize_mask(image_mask, scale, padding),
         lambda: resize._resize_mask_scipy(image_mask, scale, padding)),
    ]

    print(f"mrcnn.utils, median of {r} runs (ms); Matterport's loop formulation alongside")
    print(f"{'operation':48s} {'mrcnn':>10s} {'Matterport':>11s}")
    for name, ours, theirs in rows:
        t_ours = _median_ms(ours, r)
        t_theirs = f"{_median_ms(theirs, r):11.1f}" if theirs else f"{'(same)':>11s}"
        print(f"{name:48s} {t_ours:10.1f} {t_theirs}")


if __name__ == "__main__":
    main()
