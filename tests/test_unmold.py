"""detect()'s NumPy half: unmolding detections and pasting masks, against
Matterport's golden numbers (G1 detect_* and the U1 unmold_mask cases)."""
import json
import types

import numpy as np
import pytest

from mrcnn import utils
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
