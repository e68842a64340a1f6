"""mrcnn.utils beyond the golden cases: hand-computed values, bit-identity of
the vectorized / fast paths with Matterport's loop + skimage formulation on
random inputs, the Dataset class, clear errors for bad input, and the
offline behaviour of download_trained_weights."""
import io
import math
import os
import urllib.error
import urllib.request

import numpy as np
import pytest

from mrcnn import boxes as mrcnn_boxes, resize as mrcnn_resize, utils


# --------------------------------------------------------------------------
# Reference implementations: Matterport's loop formulations, to check that
# the vectorized versions give bit-identical results on random data.
# --------------------------------------------------------------------------

def _ref_compute_overlaps(boxes1, boxes2):
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    overlaps = np.zeros((boxes1.shape[0], boxes2.shape[0]))
    with np.errstate(invalid="ignore"):
        for i in range(overlaps.shape[1]):
            overlaps[:, i] = utils.compute_iou(boxes2[i], boxes1, area2[i], area1)
    return overlaps


def _ref_minimize_mask(bbox, mask, mini_shape):
    mini_mask = np.zeros(mini_shape + (mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        m = mask[:, :, i].astype(bool)
        y1, x1, y2, x2 = bbox[i][:4]
        m = m[y1:y2, x1:x2]
        m = utils.resize(m, mini_shape)  # skimage, bool -> float64
        mini_mask[:, :, i] = np.around(m).astype(bool)
    return mini_mask


def _ref_expand_mask(bbox, mini_mask, image_shape):
    mask = np.zeros(image_shape[:2] + (mini_mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        m = mini_mask[:, :, i]
        y1, x1, y2, x2 = bbox[i][:4]
        m = utils.resize(m, (y2 - y1, x2 - x1))
        mask[y1:y2, x1:x2, i] = np.around(m).astype(bool)
    return mask


def _random_instances(rng, height, width, n):
    """n random blob masks [height, width, n] and their boxes."""
    mask = np.zeros((height, width, n), dtype=bool)
    for i in range(n):
        h, w = rng.integers(1, height // 2), rng.integers(1, width // 2)
        y, x = rng.integers(0, height - h), rng.integers(0, width - w)
        mask[y:y + h, x:x + w, i] = rng.random((h, w)) < 0.7
        mask[y, x, i] = True  # never empty
    return mask, utils.extract_bboxes(mask)


# --------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------

def test_extract_bboxes_by_hand():
    mask = np.zeros((10, 12, 3), dtype=np.uint8)
    mask[2:5, 3:7, 0] = 1          # rows 2..4, cols 3..6
    mask[9, 11, 1] = 1             # one pixel in the corner
    # instance 2 empty
    boxes = utils.extract_bboxes(mask)
    assert boxes.dtype == np.int32
    np.testing.assert_array_equal(boxes, [[2, 3, 5, 7], [9, 11, 10, 12], [0, 0, 0, 0]])


def test_extract_bboxes_matches_loop_on_random_masks():
    rng = np.random.default_rng(0)
    mask = rng.random((40, 50, 30)) < 0.002  # sparse, some instances empty
    expected = np.zeros((30, 4), np.int32)
    for i in range(30):
        ys, xs = np.where(mask[:, :, i])
        if len(ys):
            expected[i] = [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]
    np.testing.assert_array_equal(utils.extract_bboxes(mask), expected)


def test_compute_overlaps_by_hand():
    boxes1 = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)
    boxes2 = np.array([[0, 0, 10, 10], [0, 10, 10, 20], [5, 0, 15, 10]], np.float32)
    o = utils.compute_overlaps(boxes1, boxes2)
    assert o.dtype == np.float64 and o.shape == (2, 3)
    # [0,0,10,5] vs [5,0,15,10]: intersection 5x5=25, union 50+100-25=125
    np.testing.assert_allclose(o, [[1, 0, 50 / 150], [0.5, 0, 25 / 125]], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_compute_overlaps_bit_identical_to_loop(dtype):
    rng = np.random.default_rng(1)
    # more rows than one chunk, so chunk boundaries are covered
    n1 = mrcnn_boxes._OVERLAP_CHUNK_ELEMENTS // 7 * 3 + 5
    yx = rng.uniform(-50, 500, (n1, 2))
    boxes1 = np.concatenate([yx, yx + rng.uniform(0, 200, (n1, 2))], axis=1).astype(dtype)
    boxes1[:3] = boxes1[3]           # duplicates
    boxes1[4, 2:] = boxes1[4, :2]    # zero area
    yx = rng.uniform(0, 400, (7, 2))
    boxes2 = np.concatenate([yx, yx + rng.uniform(1, 150, (7, 2))], axis=1).astype(dtype)
    boxes2[0] = boxes1[4]            # zero area vs zero area -> NaN
    got = utils.compute_overlaps(boxes1, boxes2)
    exp = _ref_compute_overlaps(boxes1, boxes2)
    assert got.dtype == exp.dtype == np.float64
    np.testing.assert_array_equal(got, exp)  # NaNs in the same places
    assert np.isnan(got[4, 0])


def test_compute_overlaps_masks_by_hand():
    m1 = np.zeros((4, 4, 2), bool)
    m1[:2, :, 0] = True   # 8 pixels
    m2 = np.zeros((4, 4, 2), bool)
    m2[:, :2, 0] = True   # 8 pixels, 4 shared with m1[..., 0]
    o = utils.compute_overlaps_masks(m1, m2)
    assert o.dtype == np.float32
    assert o[0, 0] == pytest.approx(4 / 12)
    assert o[0, 1] == 0 and np.isnan(o[1, 1])  # empty vs empty: 0/0


def test_non_max_suppression_by_hand():
    boxes = np.array([[0, 0, 10, 10],     # score .9, kept
                      [0, 0, 10, 9],      # IoU .9 with box 0 -> suppressed
                      [0, 5, 10, 15],     # IoU 50/150 = 1/3 with box 0 -> kept at .34
                      [20, 20, 30, 30]],  # disjoint, kept
                     np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    keep = utils.non_max_suppression(boxes, scores, 0.34)
    assert keep.dtype == np.int32
    np.testing.assert_array_equal(keep, [3, 0, 2])
    np.testing.assert_array_equal(utils.non_max_suppression(boxes, scores, 0.3), [3, 0])


def test_non_max_suppression_no_boxes_is_value_and_assertion_error():
    with pytest.raises(ValueError, match="no boxes"):
        utils.non_max_suppression(np.zeros((0, 4)), np.zeros(0), 0.5)
    with pytest.raises(AssertionError):  # what Matterport raised
        utils.non_max_suppression(np.zeros((0, 4)), np.zeros(0), 0.5)


def test_non_max_suppression_matches_matterport_loop():
    rng = np.random.default_rng(2)
    yx = rng.uniform(0, 100, (300, 2))
    boxes = np.concatenate([yx, yx + rng.uniform(5, 40, (300, 2))], axis=1).astype(np.float32)
    scores = rng.random(300).astype(np.float32)
    # Matterport's np.delete loop
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    ixs, pick = scores.argsort()[::-1], []
    while len(ixs) > 0:
        i = ixs[0]
        pick.append(i)
        iou = utils.compute_iou(boxes[i], boxes[ixs[1:]], area[i], area[ixs[1:]])
        ixs = np.delete(np.delete(ixs, np.where(iou > 0.5)[0] + 1), 0)
    np.testing.assert_array_equal(utils.non_max_suppression(boxes, scores, 0.5), pick)


def test_box_deltas_round_trip():
    boxes = np.array([[10, 20, 50, 60], [0, 0, 8, 4]], np.float32)
    gt = np.array([[12, 18, 44, 70], [1, 1, 9, 9]], np.float32)
    deltas = utils.box_refinement(boxes, gt)
    # by hand, box 0: h=40, w=40, centre (30, 40); gt h=32, w=52, centre (28, 44)
    np.testing.assert_allclose(deltas[0], [-2 / 40, 4 / 40, math.log(32 / 40),
                                           math.log(52 / 40)], rtol=1e-6)
    np.testing.assert_allclose(utils.apply_box_deltas(boxes, deltas), gt, atol=1e-5)


def test_norm_denorm_boxes():
    boxes = np.array([[0, 0, 256, 256], [10, 20, 11, 21]])
    norm = utils.norm_boxes(boxes, (256, 256))
    np.testing.assert_allclose(norm[0], [0, 0, 1, 1])
    np.testing.assert_allclose(norm[1], [10 / 255, 20 / 255, 10 / 255, 20 / 255], rtol=1e-6)
    np.testing.assert_array_equal(utils.denorm_boxes(norm, (256, 256)), boxes)


@pytest.mark.parametrize("func, args", [
    (utils.compute_overlaps, (np.zeros((4, 3)), np.zeros((2, 4)))),
    (utils.compute_overlaps, (np.zeros((3, 4)), np.zeros(4))),
    (utils.apply_box_deltas, (np.zeros((3, 4)), np.zeros((3, 5)))),
    (utils.box_refinement, (np.zeros(4), np.zeros((1, 4)))),
    (utils.extract_bboxes, (np.zeros((5, 5)),)),
    (utils.norm_boxes, (np.zeros((1, 4)), (64, 64, 3))),
    (utils.non_max_suppression, (np.zeros((3, 4)), np.zeros(2), 0.5)),
    (utils.compute_recall, (np.zeros((3, 4)), np.zeros((0, 4)), 0.5)),
])
def test_bad_input_raises_value_error_naming_function(func, args):
    with pytest.raises(ValueError, match=func.__name__):
        func(*args)


def test_trim_zeros():
    x = np.array([[0, 0], [1, 0], [0, 0], [0, 2]])
    np.testing.assert_array_equal(utils.trim_zeros(x), [[1, 0], [0, 2]])


# --------------------------------------------------------------------------
# Resizing and masks
# --------------------------------------------------------------------------

@pytest.mark.parametrize("in_shape, out_shape", [
    ((37, 23), (56, 56)), ((120, 90), (28, 28)), ((1, 1), (8, 8)), ((5, 3), (1, 1)),
    ((28, 28), (28, 28)), ((28, 28), (70, 9)), ((64, 64), (32, 32)), ((3, 200), (7, 7)),
])
@pytest.mark.parametrize("kind", ["binary", "ones", "float32", "half"])
def test_fast_bilinear_is_bit_identical_to_skimage(in_shape, out_shape, kind):
    rng = np.random.default_rng(hash((in_shape, out_shape, kind)) % 2**32)
    if kind == "binary":
        a = (rng.random(in_shape) < 0.5).astype(np.float64)
    elif kind == "ones":
        a = np.ones(in_shape)
    elif kind == "half":
        a = np.full(in_shape, 0.5, np.float32)
    else:
        a = rng.random(in_shape).astype(np.float32)
    got = mrcnn_resize._resize_bilinear(a, out_shape)
    exp = utils.resize(a, out_shape)
    assert got.dtype == exp.dtype and got.shape == exp.shape
    np.testing.assert_array_equal(got, exp)


def test_minimize_expand_bit_identical_to_skimage_loop():
    rng = np.random.default_rng(3)
    mask, boxes = _random_instances(rng, 96, 128, 40)
    mini = utils.minimize_mask(boxes, mask, (28, 28))
    np.testing.assert_array_equal(mini, _ref_minimize_mask(boxes, mask, (28, 28)))
    full = utils.expand_mask(boxes, mini, (96, 128, 3))
    np.testing.assert_array_equal(full, _ref_expand_mask(boxes, mini, (96, 128, 3)))


def test_minimize_expand_round_trip_of_solid_boxes_is_exact():
    # A solid box fills its own bounding box: its mini mask is all True and
    # expands back to exactly the box.
    mask = np.zeros((50, 60, 3), bool)
    mask[3:40, 5:9, 0] = True
    mask[10:11, 10:60, 1] = True
    mask[0:50, 0:60, 2] = True
    boxes = utils.extract_bboxes(mask)
    mini = utils.minimize_mask(boxes, mask, (56, 56))
    assert mini.all()
    np.testing.assert_array_equal(utils.expand_mask(boxes, mini, mask.shape), mask)


def test_minimize_mask_zero_area_box_names_instance():
    mask = np.ones((10, 10, 2), bool)
    boxes = np.array([[0, 0, 10, 10], [3, 3, 3, 8]])
    with pytest.raises(ValueError, match="instance 1"):
        utils.minimize_mask(boxes, mask, (8, 8))


def test_unmold_mask_by_hand():
    mask = np.zeros((4, 4), np.float32)
    mask[:2] = 1.0  # top half
    full = utils.unmold_mask(mask, np.array([2, 3, 6, 7]), (8, 10, 3))
    assert full.dtype == bool and full.shape == (8, 10)
    expected = np.zeros((8, 10), bool)
    expected[2:4, 3:7] = True
    np.testing.assert_array_equal(full, expected)


def test_resize_image_square_1024():
    image = np.full((600, 800, 3), 200, np.uint8)
    out, window, scale, padding, crop = utils.resize_image(image, 800, 1024, 0, "square")
    # min_dim 800 -> scale 800/600 = 1.333, but 800*1.333 = 1067 > 1024 -> 1024/800
    assert scale == 1.28 and out.shape == (1024, 1024, 3) and out.dtype == np.uint8
    assert window == (128, 0, 896, 1024)
    assert padding == [(128, 128), (0, 0), (0, 0)] and crop is None
    # inside the window, away from the border blend, the value is kept
    assert (out[300:700, 10:1000] == 200).all() and (out[:128] == 0).all()


def test_resize_image_pad64_and_crop():
    image = np.arange(100 * 130 * 3, dtype=np.uint32).reshape(100, 130, 3).astype(np.uint8)
    out, window, scale, padding, _ = utils.resize_image(image, mode="pad64")
    assert out.shape == (128, 192, 3) and scale == 1
    assert padding == [(14, 14), (31, 31), (0, 0)] and window == (14, 31, 114, 161)
    np.testing.assert_array_equal(out[14:114, 31:161], image)
    out, window, scale, padding, crop = utils.resize_image(image, min_dim=64, mode="crop")
    y, x, h, w = crop
    assert (h, w) == (64, 64) and window == (0, 0, 64, 64)
    np.testing.assert_array_equal(out, image[y:y + 64, x:x + 64])


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="fit"), "not supported"),
    (dict(mode="square", max_dim=None), "max_dim"),
    (dict(mode="pad64", min_dim=100), "multiple of 64"),
    (dict(mode="crop", min_dim=None), "min_dim"),
])
def test_resize_image_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        utils.resize_image(np.zeros((10, 10, 3), np.uint8), **kwargs)


def test_resize_mask_follows_resize_image():
    mask = np.zeros((100, 200, 1), bool)
    mask[10:50, 20:100, 0] = True
    _, window, scale, padding, _ = utils.resize_image(np.zeros((100, 200, 3), np.uint8),
                                                      min_dim=50, max_dim=100)
    out = utils.resize_mask(mask, scale, padding)
    assert out.shape == (100, 100, 1) and out.dtype == bool
    np.testing.assert_array_equal(utils.extract_bboxes(out), [[5 + 25, 10, 25 + 25, 50]])


# --------------------------------------------------------------------------
# Anchors
# --------------------------------------------------------------------------

def test_pyramid_anchors_1024():
    shapes = np.array([[256, 256], [128, 128], [64, 64], [32, 32], [16, 16]])
    anchors = utils.generate_pyramid_anchors((32, 64, 128, 256, 512), [0.5, 1, 2], shapes,
                                             [4, 8, 16, 32, 64], 1)
    assert anchors.shape == (261888, 4) and anchors.dtype == np.float64
    r = math.sqrt(2)
    # first cell (0, 0) of P2: ratios 0.5 (tall), 1, 2 (wide), centred on (0, 0)
    np.testing.assert_allclose(anchors[:3], [[-16 * r, -8 * r, 16 * r, 8 * r],
                                             [-16, -16, 16, 16],
                                             [-8 * r, -16 * r, 8 * r, 16 * r]])
    # cell (0, 1) of P2 is shifted by the stride 4 in x
    np.testing.assert_allclose(anchors[4], [-16, -12, 16, 20])
    # first anchor of P6 (stride 64, scale 512) comes after 3 * (256² + 128² + 64² + 32²)
    first_p6 = 3 * (256 ** 2 + 128 ** 2 + 64 ** 2 + 32 ** 2)
    np.testing.assert_allclose(anchors[first_p6 + 1], [-256, -256, 256, 256])
    np.testing.assert_allclose(anchors[-2], [15 * 64 - 256, 15 * 64 - 256,
                                             15 * 64 + 256, 15 * 64 + 256])


def test_generate_anchors_matches_meshgrid_formulation():
    scales, ratios = [16, 24], [0.5, 1, 2]
    got = utils.generate_anchors(scales, ratios, (5, 7), 8, 2)
    # Matterport's meshgrid construction
    s, r = np.meshgrid(np.array(scales), np.array(ratios))
    s, r = s.flatten(), r.flatten()
    heights, widths = s / np.sqrt(r), s * np.sqrt(r)
    sx, sy = np.meshgrid(np.arange(0, 7, 2) * 8, np.arange(0, 5, 2) * 8)
    bw, bcx = np.meshgrid(widths, sx)
    bh, bcy = np.meshgrid(heights, sy)
    centers = np.stack([bcy, bcx], axis=2).reshape([-1, 2])
    sizes = np.stack([bh, bw], axis=2).reshape([-1, 2])
    exp = np.concatenate([centers - 0.5 * sizes, centers + 0.5 * sizes], axis=1)
    np.testing.assert_array_equal(got, exp)


def test_pyramid_anchors_level_count_mismatch():
    with pytest.raises(ValueError, match="one of each"):
        utils.generate_pyramid_anchors((32, 64), [1], [[8, 8]], [4], 1)


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------

def _square_mask(shape, y1, x1, y2, x2):
    m = np.zeros(shape, bool)
    m[y1:y2, x1:x2] = True
    return m


def test_compute_matches_gt_matched_once():
    """Two predictions on the same gt: only the better-scoring one matches
    (Matterport's "> 0" test let prediction 1 match gt 0 as well)."""
    gt_boxes = np.array([[0, 0, 10, 10]])
    gt_masks = _square_mask((20, 20), 0, 0, 10, 10)[..., None]
    pred_boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9]])
    pred_masks = np.stack([_square_mask((20, 20), 0, 0, 10, 10),
                           _square_mask((20, 20), 0, 0, 10, 9)], axis=-1)
    gt_match, pred_match, overlaps = utils.compute_matches(
        gt_boxes, np.array([1]), gt_masks, pred_boxes, np.array([1, 1]),
        np.array([0.9, 0.8]), pred_masks)
    np.testing.assert_array_equal(gt_match, [0])
    np.testing.assert_array_equal(pred_match, [0, -1])
    np.testing.assert_allclose(overlaps[:, 0], [1.0, 0.9])
    ap, precisions, recalls, _ = utils.compute_ap(
        gt_boxes, np.array([1]), gt_masks, pred_boxes, np.array([1, 1]),
        np.array([0.9, 0.8]), pred_masks)
    assert ap == 1.0
    np.testing.assert_array_equal(recalls, [0, 1, 1, 1])  # never above 1


def test_compute_ap_by_hand():
    """Two gt, three predictions sorted by score: hit, miss, hit.
    precision 1, 1/2, 2/3; recall 1/2, 1/2, 1 -> AP = 0.5 * 1 + 0.5 * 2/3."""
    shape = (30, 30)
    gt_masks = np.stack([_square_mask(shape, 0, 0, 10, 10),
                         _square_mask(shape, 15, 15, 25, 25)], axis=-1)
    gt_boxes = np.array([[0, 0, 10, 10], [15, 15, 25, 25]])
    pred_masks = np.stack([_square_mask(shape, 15, 15, 25, 25),   # score .5 (3rd)
                           _square_mask(shape, 0, 0, 10, 10),     # score .9 (1st)
                           _square_mask(shape, 20, 0, 30, 5)],    # score .7 (2nd), miss
                          axis=-1)
    pred_boxes = np.array([[15, 15, 25, 25], [0, 0, 10, 10], [20, 0, 30, 5]])
    ap, precisions, recalls, _ = utils.compute_ap(
        gt_boxes, np.array([1, 1]), gt_masks, pred_boxes, np.array([1, 1, 1]),
        np.array([0.5, 0.9, 0.7]), pred_masks)
    assert ap == pytest.approx(0.5 + 0.5 * 2 / 3)
    np.testing.assert_allclose(recalls, [0, 0.5, 0.5, 1, 1])
    ap_range = utils.compute_ap_range(
        gt_boxes, np.array([1, 1]), gt_masks, pred_boxes, np.array([1, 1, 1]),
        np.array([0.5, 0.9, 0.7]), pred_masks, iou_thresholds=np.array([0.5, 0.99]),
        verbose=0)
    assert ap_range == pytest.approx(0.5 + 0.5 * 2 / 3)  # perfect masks: same at 0.99


# --------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------

class _TwoSourceDataset(utils.Dataset):
    def load(self):
        self.add_class("coco", 1, "person")
        self.add_class("coco", 3, "car,automobile")
        self.add_class("coco", 1, "person")  # duplicate: ignored
        self.add_class("balloon", 1, "balloon")
        self.add_image("coco", 42, "/data/42.jpg", width=640, height=480)
        self.add_image("balloon", "a.jpg", "/data/a.jpg")


def test_dataset_prepare_and_maps():
    ds = _TwoSourceDataset()
    ds.load()
    ds.prepare()
    assert ds.num_classes == 4 and ds.num_images == 2
    assert ds.class_names == ["BG", "person", "car", "balloon"]
    np.testing.assert_array_equal(ds.class_ids, [0, 1, 2, 3])
    np.testing.assert_array_equal(ds.image_ids, [0, 1])
    assert ds.map_source_class_id("coco.3") == 2
    assert ds.map_source_class_id("balloon.1") == 3
    assert ds.get_source_class_id(2, "coco") == 3
    assert ds.class_from_source_map[".0"] == 0
    assert ds.image_from_source_map == {"coco.42": 0, "balloon.a.jpg": 1}
    assert ds.sources == ["", "coco", "balloon"]
    assert ds.source_class_ids == {"": [0], "coco": [0, 1, 2], "balloon": [0, 3]}
    assert ds.image_info[0]["width"] == 640
    assert ds.source_image_link(1) == "/data/a.jpg"
    assert ds.image_reference(0) == ""
    mask, class_ids = ds.load_mask(0)
    assert mask.shape == (0, 0, 0) and class_ids.dtype == np.int32
    with pytest.raises(ValueError, match="balloon"):
        ds.get_source_class_id(3, "coco")
    with pytest.raises(ValueError, match="dot"):
        ds.add_class("a.b", 1, "x")


def test_dataset_channel_count_option():
    assert utils.Dataset().image_channel_count == 3
    assert utils.Dataset(image_channel_count=1).image_channel_count == 1

    class NoSuper(utils.Dataset):
        def __init__(self):
            self.image_info = []

    assert NoSuper().image_channel_count == 3


# --------------------------------------------------------------------------
# Downloads and legacy helpers
# --------------------------------------------------------------------------

def test_download_trained_weights_offline(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    target = tmp_path / "weights" / "mask_rcnn_coco.h5"
    with pytest.raises(utils.WeightsDownloadError) as info:
        utils.download_trained_weights(str(target), verbose=0)
    msg = str(info.value)
    assert utils.COCO_MODEL_URL in msg and str(target) in msg and "by hand" in msg
    assert isinstance(info.value, OSError)
    assert not target.exists() and not os.path.exists(str(target) + ".part")


class _FakeResponse(io.BytesIO):
    def __init__(self, data, length):
        super().__init__(data)
        self.headers = {"Content-Length": str(length)}


def test_download_trained_weights_writes_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout: _FakeResponse(b"HDF5 bytes", 10))
    target = tmp_path / "mask_rcnn_coco.h5"
    utils.download_trained_weights(str(target))
    assert target.read_bytes() == b"HDF5 bytes"
    assert "done downloading" in capsys.readouterr().out


def test_download_trained_weights_truncated(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout: _FakeResponse(b"HDF5", 10))
    target = tmp_path / "mask_rcnn_coco.h5"
    with pytest.raises(utils.WeightsDownloadError, match="4 of 10 bytes"):
        utils.download_trained_weights(str(target), verbose=0)
    assert not target.exists()


def test_batch_slice_stacks_per_slice_results():
    tf = pytest.importorskip("tensorflow")
    x = tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    y = tf.constant([10.0, 20.0, 30.0])
    a, b = utils.batch_slice([x, y], lambda xi, yi: (tf.reduce_sum(xi) + yi, xi * 2), 3)
    np.testing.assert_allclose(a.numpy(), [13, 27, 41])
    np.testing.assert_allclose(b.numpy(), [[2, 4], [6, 8], [10, 12]])


@pytest.mark.parametrize("seed", range(4))
def test_resize_mask_bit_identical_to_scipy_zoom(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 200, 2))
        scale = float(rng.choice([rng.uniform(0.05, 4), 1024 / rng.integers(100, 2000),
                                  0.512, 2.1333333333333333, 1.28, 1]))
        mask = rng.random((h, w, 3)) < 0.5
        nh, nw = round(h * scale), round(w * scale)
        padding = [(2, 3), (0, 1), (0, 0)]
        np.testing.assert_array_equal(utils.resize_mask(mask, scale, padding),
                                      mrcnn_resize._resize_mask_scipy(mask, scale, padding))
        if nh > 4 and nw > 4:
            crop = (1, 2, nh - 3, nw - 4)
            got = utils.resize_mask(mask.astype(np.uint8), scale, None, crop)
            assert got.dtype == np.uint8
            np.testing.assert_array_equal(
                got, mrcnn_resize._resize_mask_scipy(mask.astype(np.uint8), scale, None, crop))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.uint16])
@pytest.mark.parametrize("in_shape, out_shape", [
    ((60, 90, 3), (128, 192)), ((300, 500, 3), (154, 256)), ((37, 51, 4), (17, 23)),
    ((800, 1066, 3), (768, 1024)), ((5, 7, 1), (20, 28)),
])
def test_fast_image_resize_is_bit_identical_to_skimage(in_shape, out_shape, dtype):
    rng = np.random.default_rng(in_shape[0])
    image = (rng.random(in_shape) * 200 + 30).astype(dtype)  # min > 0: clip widens to 0
    src = image.astype(np.float64) if dtype != np.float32 else image
    got = mrcnn_resize._resize_bilinear(src, out_shape)
    exp = utils.resize(image, out_shape, preserve_range=True)
    assert got.dtype == exp.dtype
    np.testing.assert_array_equal(got, exp)


def test_box_refinement_graph_equals_the_numpy_version():
    box = np.array([[0, 0, 10, 10], [5, 5, 25, 15]], np.float32)
    gt = np.array([[2, 1, 12, 13], [5, 6, 21, 15]], np.float32)
    got = np.asarray(utils.box_refinement_graph(box, gt))
    np.testing.assert_allclose(got, utils.box_refinement(box, gt), rtol=1e-6)
    # hand-checked row 0: dy = (7 - 5) / 10, dw = log(12 / 10)
    np.testing.assert_allclose(got[0], [0.2, 0.2, 0.0, np.log(1.2)], rtol=1e-6)
