"""mrcnn.ops.roi_align: level rule and multi-level ROIAlign vs Matterport's golden output."""
import numpy as np
import pytest

from mrcnn.ops.roi_align import pyramid_roi_align, roi_level

IMAGE_SHAPE = (256, 256, 3)


@pytest.fixture(scope="module")
def g1(golden_dir):
    return np.load(golden_dir / "g1_model.npz")


def _fpn(g1):
    return [g1[f"fpn_p{i}"] for i in range(2, 6)]


def test_roi_level_matches_golden(g1):
    shape = g1["image_meta"][0, 4:7]
    np.testing.assert_array_equal(roi_level(g1["roialign_boxes8"][0], shape), g1["roialign_levels8"])
    # Zero-area boxes: log2(0) = -inf -> INT_MIN -> clamped to P2.
    np.testing.assert_array_equal(roi_level(g1["roialign_edge_boxes"][0], shape), g1["roialign_edge_levels"])


def test_roi_level_by_hand():
    # Square boxes of side s pixels in a 256x256 image: level 4 + round(log2(s / 224)).
    sides = np.array([224.0, 112.0, 448.0, 56.0, 28.0, 150.0, 160.0])
    boxes = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides / 256, sides / 256], axis=1)
    # 150/224 -> log2 = -0.58 -> -1 -> 3; 160/224 -> -0.49 -> 0 -> 4; 28 -> 1 clamped to 2.
    np.testing.assert_array_equal(roi_level(boxes, IMAGE_SHAPE), [4, 3, 5, 2, 2, 3, 4])
    # Works on any leading shape and with int image shapes.
    lv = roi_level(boxes.reshape(1, 7, 4), np.array([256, 256]))
    assert lv.shape == (1, 7) and lv.dtype == "int32"


def test_pyramid_roi_align_matches_golden_bit_exact(g1):
    shape = g1["image_meta"][0, 4:7]
    fpn = _fpn(g1)
    cases = [
        ("roialign_boxes8", (7, 7), "roialign_out8"),
        ("roialign_boxes8", (14, 14), "roialign_out8_14"),
        ("roialign_edge_boxes", (7, 7), "roialign_edge_out"),
    ]
    for boxes_key, pool, out_key in cases:
        out = pyramid_roi_align(g1[boxes_key], fpn, shape, pool).numpy()
        np.testing.assert_array_equal(out, g1[out_key], err_msg=out_key)
    out = pyramid_roi_align(g1["ROI"][:, :32], fpn, shape, (7, 7)).numpy()
    np.testing.assert_array_equal(out, g1["roi_align_classifier_first32"])


def test_pyramid_roi_align_edge_semantics(g1):
    shape = g1["image_meta"][0, 4:7]
    out = pyramid_roi_align(g1["roialign_edge_boxes"], _fpn(g1), shape, (7, 7)).numpy()
    # The all-zero padding box samples P2's corner pixel in every cell.
    np.testing.assert_array_equal(out[0, 0], np.broadcast_to(g1["fpn_p2"][0, 0, 0], (7, 7, 256)))
    # Row 2 of the edge case lies entirely outside the image: all zeros.
    assert np.all(out[0, 2] == 0)


def test_pyramid_roi_align_by_hand_and_row_order():
    # One image, 4 levels whose values encode (level, y, x): v = 1000*level + 10*y + x.
    maps = []
    for level, size in zip(range(2, 6), (8, 4, 2, 1)):
        yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        maps.append((1000.0 * level + 10 * yy + xx)[None, :, :, None].astype(np.float32))
    # Image 32x32: a full-image box has sqrt(area)=32 px -> 4 + round(log2(32/224)) = 1 -> P2.
    # A box 2x the image (only way to reach higher levels in a small image) -> still P2;
    # use image_shape 1792 so the full box is 1792 px -> log2(8) = 3 -> 7 -> P5.
    full = [0.0, 0.0, 1.0, 1.0]
    half = [0.0, 0.0, 0.5, 0.5]  # 896 px -> log2(4) = 2 -> 6 -> P5 too
    quarter = [0.0, 0.0, 0.125, 0.125]  # 224 px -> P4
    eighth = [0.0, 0.0, 0.0625, 0.0625]  # 112 px -> P3
    boxes = np.array([[quarter, full, eighth, [0, 0, 0, 0]]], np.float32)
    out = pyramid_roi_align(boxes, maps, (1792, 1792), (2, 2)).numpy()
    assert out.shape == (1, 4, 2, 2, 1)
    # quarter box on P4 (2x2 map): samples at y, x in {0, 0.125} -> bilinear of 4000 + 10y + x.
    np.testing.assert_allclose(out[0, 0, :, :, 0], [[4000, 4000.125], [4001.25, 4001.375]], rtol=0, atol=1e-3)
    # full box on P5 (1x1 map): both samples at 0 -> the single value.
    np.testing.assert_array_equal(out[0, 1, :, :, 0], [[5000, 5000], [5000, 5000]])
    # eighth box on P3 (4x4): samples at 0 and 0.1875.
    np.testing.assert_allclose(out[0, 2, :, :, 0], [[3000, 3000.1875], [3001.875, 3002.0625]], rtol=0, atol=1e-3)
    # zero box -> P2 corner.
    np.testing.assert_array_equal(out[0, 3, :, :, 0], np.full((2, 2), 2000.0))


def test_pyramid_roi_align_batch_rows_go_back_in_place(g1):
    shape = g1["image_meta"][0, 4:7]
    fpn = _fpn(g1)
    boxes = g1["roialign_boxes8"]
    # Batch of two different images: the second one has negated features and reversed boxes.
    fpn2 = [np.concatenate([f, -f], axis=0) for f in fpn]
    boxes2 = np.concatenate([boxes, boxes[:, ::-1]], axis=0)
    out = pyramid_roi_align(boxes2, fpn2, shape, (7, 7)).numpy()
    np.testing.assert_array_equal(out[0], g1["roialign_out8"][0])
    np.testing.assert_array_equal(out[1], -g1["roialign_out8"][0, ::-1])


def test_pyramid_roi_align_rejects_bad_boxes():
    with pytest.raises(ValueError, match="boxes must be"):
        pyramid_roi_align(np.zeros((3, 4), np.float32), [np.zeros((1, 4, 4, 1), np.float32)], (32, 32), (2, 2))


def test_gradient_reaches_feature_maps_not_boxes(g1):
    import tensorflow as tf

    shape = g1["image_meta"][0, 4:7]
    fpn = [tf.constant(f) for f in _fpn(g1)]
    boxes = tf.constant(g1["roialign_boxes8"])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(fpn)
        tape.watch(boxes)
        loss = tf.reduce_sum(pyramid_roi_align(boxes, fpn, shape, (7, 7)))
    grads = tape.gradient(loss, fpn)
    # Two boxes per level in roialign_boxes8: every level gets a non-zero gradient.
    assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)
    assert tape.gradient(loss, boxes) is None  # stop_gradient, as in Matterport
