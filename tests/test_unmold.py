"""detect()'s NumPy half: unmolding detections and pasting masks, against
Matterport's golden numbers (G1 detect_* and the U1 unmold_mask cases)."""
import json
import types

import numpy as np
import pytest

from mrcnn import utils
from mrcnn.masks import _bilinear_matrix
from mrcnn.model import MaskRCNN, paste_masks


@pytest.fixture(scope="module")
def g1(golden_dir):
    return np.load(golden_dir / "g1_model.npz")


def _u1_unmold_cases(golden_dir):
    idx = json.load(open(golden_dir / "u1_utils.json"))
    z = np.load(golden_dir / "u1_utils.npz")
    for c in idx["cases"]:
        if c["function"] == "mrcnn.utils.unmold_mask":
            args = [z[e["key"]] if "key" in e else e["value"] for e in c["args"]]
            yield c["id"], args, z[c["outputs"][0]["key"]]


def test_paste_masks_matches_matterport_unmold_mask(golden_dir):
    cases = list(_u1_unmold_cases(golden_dir))
    assert len(cases) == 5
    for case_id, (mask, bbox, shape), expected in cases:
        got = paste_masks(mask[None], np.asarray(bbox)[None], shape[:2])[..., 0]
        assert got.dtype == bool
        np.testing.assert_array_equal(got, expected, err_msg=case_id)
        # and the same as the utils function it replaces
        np.testing.assert_array_equal(utils.unmold_mask(mask, bbox, shape), expected)


def test_paste_masks_clips_boxes_past_the_image():
    mask = np.ones((28, 28), np.float32)
    full = paste_masks(mask[None], np.array([[-5, 90, 10, 120]]), (100, 100))
    assert full.shape == (100, 100, 1)
    assert full[:10, 90:, 0].all() and full.sum() == 10 * 10


def test_unmold_detections_reproduces_g1_detect(g1):
    """Golden network outputs in, golden detect() results out."""
    # unmold_detections only needs the wrapper's methods, not a built network.
    model = MaskRCNN.__new__(MaskRCNN)
    meta = g1["image_meta"][0]
    window = g1["window"][0]
    rois, class_ids, scores, masks = model.unmold_detections(
        g1["mrcnn_detection"][0], g1["mrcnn_mask"][0],
        original_image_shape=(512, 512, 3), image_shape=tuple(meta[4:7].astype(int)),
        window=window)
    np.testing.assert_array_equal(rois, g1["detect_rois"])
    np.testing.assert_array_equal(class_ids, g1["detect_class_ids"])
    np.testing.assert_allclose(scores, g1["detect_scores"], rtol=0, atol=0)
    assert masks.shape == (512, 512, 50) and masks.dtype == bool
    np.testing.assert_array_equal(masks, g1["detect_masks"].astype(bool))


def test_unmold_detections_drops_zero_area_and_padding():
    model = MaskRCNN.__new__(MaskRCNN)
    det = np.zeros((4, 6), np.float32)
    det[0] = [0.1, 0.1, 0.5, 0.5, 1, 0.9]
    det[1] = [0.3, 0.3, 0.3, 0.3, 2, 0.8]   # zero area: becomes a 1-pixel box, kept (Matterport)
    mask = np.full((4, 28, 28, 3), 0.9, np.float32)
    rois, class_ids, scores, masks = model.unmold_detections(
        det, mask, (101, 101, 3), (101, 101, 3), np.array([0, 0, 101, 101]))
    assert class_ids.tolist() == [1, 2]
    assert rois.tolist() == [[10, 10, 51, 51], [30, 30, 31, 31]]
    assert masks.shape == (101, 101, 2)
    assert masks[..., 0].sum() == 41 * 41 and masks[30, 30, 1]


def _paste_masks_before(masks, boxes, image_shape, threshold=0.5):
    """paste_masks as it was before it was vectorized (kept as the reference):
    per detection, two float64 matrix products, skimage's clip to the mask's
    range, and a write into the [H, W, N] array."""
    H, W = int(image_shape[0]), int(image_shape[1])
    n = len(masks)
    full = np.zeros((H, W, n), dtype=bool)
    for i in range(n):
        y1, x1, y2, x2 = (int(v) for v in boxes[i])
        h, w = y2 - y1, x2 - x1
        if h <= 0 or w <= 0:
            continue
        m = masks[i].astype(np.float64)
        resized = _bilinear_matrix(h, m.shape[0]) @ m @ _bilinear_matrix(w, m.shape[1]).T
        mask = np.clip(resized, m.min(), m.max()) >= threshold
        cy1, cx1, cy2, cx2 = max(y1, 0), max(x1, 0), min(y2, H), min(x2, W)
        if cy2 > cy1 and cx2 > cx1:
            full[cy1:cy2, cx1:cx2, i] = mask[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
    return full


def _random_case(seed, n=60, shape=(97, 131), size=28):
    """Random smooth masks and boxes: inside the image, past each edge, fully
    outside, zero or negative size, and masks entirely above or below 0.5."""
    rng = np.random.default_rng(seed)
    H, W = shape
    masks = rng.uniform(0, 1, (n, size, size))
    masks = (masks + np.roll(masks, 1, 1) + np.roll(masks, 1, 2)) / 3     # smoother
    masks[0] = 0.9                                   # all above the threshold
    masks[1] = 0.2                                   # all below
    masks[2] = rng.uniform(0.5, 1.0, (size, size))   # min >= 0.5
    y1 = rng.integers(-30, H, n)
    x1 = rng.integers(-30, W, n)
    boxes = np.stack([y1, x1, y1 + rng.integers(1, 90, n), x1 + rng.integers(1, 120, n)], 1)
    boxes[3] = [10, 10, 10, 40]           # zero height
    boxes[4] = [10, 40, 30, 20]           # negative width
    boxes[5] = [H + 5, 3, H + 20, 50]     # below the image
    boxes[6] = [-40, -40, -5, -5]         # above and left of it
    boxes[7] = [-10, -10, H + 10, W + 10]  # larger than the image
    return masks.astype(np.float32), boxes.astype(np.int32), shape


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paste_masks_equals_the_per_detection_matrix_products(seed):
    """The vectorized paste gives the masks of the previous implementation
    (matrix products per detection) and of utils.unmold_mask (skimage's
    resize), pixel for pixel."""
    masks, boxes, shape = _random_case(seed)
    got = paste_masks(masks, boxes, shape)
    assert got.shape == shape + (60,) and got.dtype == bool
    want = _paste_masks_before(masks, boxes, shape)
    assert want.sum() > 10000 and 0 < want[..., 8:].mean() < 0.5   # not a vacuous case
    np.testing.assert_array_equal(got, want)
    assert not got[..., 1].any() and got[..., 0].any()
    assert not got[..., 3:7].any()
    H, W = shape
    for i in range(len(boxes)):
        y1, x1, y2, x2 = boxes[i]
        if 0 <= y1 < y2 <= H and 0 <= x1 < x2 <= W:
            np.testing.assert_array_equal(got[..., i], utils.unmold_mask(masks[i], boxes[i], shape))


def test_paste_masks_threshold_layout_and_no_detection():
    masks, boxes, shape = _random_case(3, n=12)
    for threshold in (0.3, 0.7):
        np.testing.assert_array_equal(paste_masks(masks, boxes, shape, threshold),
                                      _paste_masks_before(masks, boxes, shape, threshold))
    got = paste_masks(masks, boxes, shape)
    # one contiguous [H, W] plane per instance
    assert got[:, :, 5].flags.c_contiguous and not got.flags.c_contiguous
    assert paste_masks(np.zeros((0, 28, 28)), np.zeros((0, 4), int), (5, 7)).shape == (5, 7, 0)
    with pytest.raises(ValueError, match="boxes must be"):
        paste_masks(masks, boxes[:3], shape)
