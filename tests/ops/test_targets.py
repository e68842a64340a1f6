"""detection_targets on hand-made cases whose answers are worked out below.

Coordinates are dyadic fractions so every IoU and delta is exact in float32.
Image 17x17 (H-1 = 16) and 5x5 mask targets make crop_and_resize sample whole
pixels: sample j of a box x1..x2 is at column 16*x1 + j*16*(x2-x1)/4.
"""
import math

import numpy as np
import pytest
import tensorflow as tf

from mrcnn.ops.targets import detection_targets

STD = (0.1, 0.1, 0.2, 0.2)
G1 = (0.125, 0.125, 0.375, 0.375)     # class 1, 0.25 x 0.25
G2 = (0.5, 0.5, 1.0, 1.0)             # class 2, 0.5 x 0.5

# 6 proposals: 3 positives, 2 negatives, 1 padding row.
PROPOSALS = [
    G1,                               # IoU 1 with G1
    (0.125, 0.125, 0.375, 0.4375),    # IoU 0.0625/0.078125 = 0.8 with G1
    (0.5, 0.5, 1.0, 0.75),            # IoU 0.125/0.25 = 0.5 with G2: positive (>=)
    (0.5, 0.5, 1.0, 0.734375),        # IoU 0.46875 with G2: negative
    (0.0, 0.0, 0.0625, 0.0625),       # IoU 0: negative
    (0.0, 0.0, 0.0, 0.0),             # padding
]
# Expected class and deltas (before / std) of each positive proposal.
EXPECTED_POSITIVES = {
    0: (1, (0.0, 0.0, 0.0, 0.0)),
    # centre x 0.28125 -> 0.25: dx = -0.03125 / 0.3125 = -0.1; dw = log(0.25 / 0.3125)
    1: (1, (0.0, -0.1, 0.0, math.log(0.8))),
    # centre x 0.625 -> 0.75: dx = 0.125 / 0.25 = 0.5; dw = log(0.5 / 0.25)
    2: (2, (0.0, 0.5, 0.0, math.log(2.0))),
}
NEGATIVES = {3, 4}


def _full_masks():
    """[17, 17, 2]: G1's mask is all ones, G2's has columns >= 10 set."""
    m = np.zeros((17, 17, 2), bool)
    m[:, :, 0] = True
    m[:, 10:, 1] = True
    return m


def _row_index(box, proposals=PROPOSALS):
    for i, p in enumerate(proposals):
        if np.allclose(box, p, atol=0):
            return i
    raise AssertionError(f"output roi {box} is not one of the proposals")


def _run(proposals=PROPOSALS, class_ids=(1, 2), boxes=(G1, G2), masks=None, T=8,
         ratio=0.5, mask_shape=(5, 5), use_mini_mask=False, seed=None):
    masks = _full_masks() if masks is None else masks
    out = detection_targets(
        np.asarray([proposals], np.float32).reshape(1, -1, 4),
        np.asarray([class_ids], np.int32).reshape(1, -1),
        np.asarray([boxes], np.float32).reshape(1, -1, 4),
        masks[None], T, ratio, mask_shape, use_mini_mask, STD, seed=seed)
    return [o.numpy() for o in out]


def test_hand_made_case_classes_deltas_and_masks():
    rois, class_ids, deltas, masks = _run()
    assert rois.shape == (1, 8, 4) and rois.dtype == np.float32
    assert class_ids.shape == (1, 8) and class_ids.dtype == np.int32
    assert deltas.shape == (1, 8, 4) and masks.shape == (1, 8, 5, 5)
    # int(8 * 0.5) = 4 >= 3 positives kept; negatives int(2 * 3) - 3 = 3, only 2 exist.
    rows = [_row_index(b) for b in rois[0, :5]]
    assert sorted(rows[:3]) == [0, 1, 2]
    assert set(rows[3:5]) == NEGATIVES
    np.testing.assert_array_equal(rois[0, 5:], 0)
    for j, i in enumerate(rows[:3]):
        cls, d = EXPECTED_POSITIVES[i]
        assert class_ids[0, j] == cls
        np.testing.assert_allclose(deltas[0, j], np.array(d) / STD, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(class_ids[0, 3:], 0)
    np.testing.assert_array_equal(deltas[0, 3:], 0)
    np.testing.assert_array_equal(masks[0, 3:], 0)
    for j, i in enumerate(rows[:3]):
        if i in (0, 1):      # G1's mask is all ones
            np.testing.assert_array_equal(masks[0, j], 1)
        else:                # columns 8, 9, 10, 11, 12 of G2's mask: 0 0 1 1 1
            np.testing.assert_array_equal(masks[0, j], np.tile([0, 0, 1, 1, 1], (5, 1)))


def test_mini_mask_coordinates():
    # Mini-masks 9x9 cover the gt box: proposal 2 is (0, 0, 1, 0.5) in G2's
    # mini frame, so it samples mini columns 0..4.
    mini = np.zeros((9, 9, 2), bool)
    mini[:, :, 0] = True
    mini[:, 2:, 1] = True
    rois, class_ids, _, masks = _run(masks=mini, use_mini_mask=True)
    rows = [_row_index(b) for b in rois[0, :3]]
    j = rows.index(2)
    np.testing.assert_array_equal(masks[0, j], np.tile([0, 0, 1, 1, 1], (5, 1)))
    # Proposal 1 covers G1 and 0.0625 beyond its right edge: mini x from 0 to 1.25,
    # the last sample (x = 1.25 * 8 = 10) falls outside the 9-pixel mini-mask -> 0.
    j = rows.index(1)
    np.testing.assert_array_equal(masks[0, j], np.tile([1, 1, 1, 1, 0], (5, 1)))


def test_positive_cap_and_negative_ratio():
    # T=8, ratio 0.25: int(8 * 0.25) = 2 of the 3 positives; int(4.0 * 2) - 2 = 6
    # negatives wanted, 2 available.
    rois, class_ids, deltas, _ = _run(ratio=0.25, seed=3)
    rows = [_row_index(b) for b in rois[0, :4]]
    assert set(rows[:2]) <= {0, 1, 2} and len(set(rows[:2])) == 2
    assert set(rows[2:4]) == NEGATIVES
    assert np.all(class_ids[0, :2] > 0) and np.all(class_ids[0, 2:] == 0)
    np.testing.assert_array_equal(rois[0, 4:], 0)


def test_negatives_follow_positive_count():
    # One positive and many negatives: ratio 0.33 gives
    # int(float32(1/0.33) * 1) - 1 = 3 - 1 = 2 negatives.
    proposals = [G1] + [(0.0, 0.0625 * k, 0.0625, 0.0625 * (k + 1)) for k in range(10)]
    rois, class_ids, _, _ = _run(proposals=proposals, T=20, ratio=0.33)
    assert class_ids[0, 0] == 1
    real = np.any(rois[0] != 0, axis=1)
    assert real.sum() == 3


def test_crowd_box():
    crowd = (0.5, 0.5, 1.0, 1.0)
    proposals = [
        G1,                              # positive for G1
        (0.5, 0.5, 1.0, 0.75),           # IoU 0.5 with the crowd box: neither
        (0.5, 0.5, 0.5078125, 0.5078125),  # tiny, IoU ~0.0002 with crowd (< 0.001): negative
        (0.0, 0.875, 0.0625, 1.0),       # far away: negative
    ]
    masks = np.ones((17, 17, 2), bool)
    # ratio 0.25: 1 positive -> up to int(4 * 1) - 1 = 3 negatives.
    rois, class_ids, deltas, _ = _run(proposals=proposals, class_ids=(1, -1),
                                      boxes=(G1, crowd), masks=masks, ratio=0.25)
    rows = [_row_index(b, proposals) for b in rois[0] if np.any(b != 0)]
    assert rows[0] == 0 and class_ids[0, 0] == 1
    assert set(rows[1:]) == {2, 3}        # proposal 1 excluded: it touches the crowd
    np.testing.assert_array_equal(class_ids[0, 1:], 0)


def test_zero_gt_gives_padding_only_and_no_nan():
    rois, class_ids, deltas, masks = _run(class_ids=(0, 0), boxes=((0,) * 4, (0,) * 4))
    for x in (rois, deltas, masks):
        assert np.all(np.isfinite(x))
        np.testing.assert_array_equal(x, 0)
    np.testing.assert_array_equal(class_ids, 0)


def test_zero_area_gt_box_and_zero_area_proposal_never_nan():
    flat = (0.5, 0.5, 0.5, 0.5)
    proposals = [G1, flat, (0.0, 0.0, 0.0625, 0.0625)]
    for mini in (False, True):
        rois, class_ids, deltas, masks = _run(
            proposals=proposals, class_ids=(1, 2), boxes=(G1, flat),
            masks=np.ones((17, 17, 2), bool), use_mini_mask=mini, ratio=0.25)
        for x in (rois, deltas, masks):
            assert np.all(np.isfinite(x))
        rows = [_row_index(b, proposals) for b in rois[0] if np.any(b != 0)]
        # The flat proposal's 0/0 IoU with the flat gt counts as 0: a negative.
        assert rows[0] == 0 and set(rows[1:]) == {1, 2}
        np.testing.assert_array_equal(class_ids[0], [1] + [0] * 7)


def test_no_proposals():
    rois, class_ids, deltas, masks = _run(proposals=np.zeros((0, 4)))
    assert rois.shape == (1, 8, 4) and masks.shape == (1, 8, 5, 5)
    np.testing.assert_array_equal(rois, 0)
    np.testing.assert_array_equal(class_ids, 0)


def test_batch_items_are_independent_and_batch_size_is_dynamic():
    fn = tf.function(
        lambda p, c, b, m: detection_targets(p, c, b, m, 8, 0.5, (5, 5), False, STD),
        reduce_retracing=True)
    p = np.zeros((2, 6, 4), np.float32)
    p[0] = PROPOSALS
    p[1, :2] = [G2, (0.0, 0.0, 0.0625, 0.0625)]
    c = np.array([[1, 2], [2, 0]], np.int32)
    b = np.array([[G1, G2], [G2, (0,) * 4]], np.float32)
    m = np.stack([_full_masks(), _full_masks()[..., ::-1]])   # image 1: G2's mask first
    rois, class_ids, deltas, masks = [o.numpy() for o in fn(p, c, b, m)]
    assert sorted(class_ids[0, :3]) == [1, 1, 2]
    # Image 1: G2 is class 2 (first gt column), one positive with zero deltas, one negative.
    np.testing.assert_array_equal(class_ids[1], [2, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(rois[1, 0], G2)
    np.testing.assert_array_equal(rois[1, 1], (0.0, 0.0, 0.0625, 0.0625))
    np.testing.assert_array_equal(deltas[1], 0)
    # G2 itself samples columns 8, 10, 12, 14, 16 of its mask (set from column 10).
    np.testing.assert_array_equal(masks[1, 0], np.tile([0, 1, 1, 1, 1], (5, 1)))
    # The batch size and proposal count are not baked in: a batch of 3 with 10 proposals.
    p3 = np.concatenate([p, p[:1]], 0)
    out = fn(np.pad(p3, [(0, 0), (0, 4), (0, 0)]), np.concatenate([c, c[:1]]),
             np.concatenate([b, b[:1]]), np.concatenate([m, m[:1]]))
    assert out[0].shape == (3, 8, 4)


def test_seeded_sampling_is_reproducible():
    proposals = [G1] * 3 + [(0.0, 0.0625 * k, 0.0625, 0.0625 * (k + 1)) for k in range(12)]
    tf.random.set_seed(7)
    a = _run(proposals=proposals, T=6, ratio=0.5, seed=11)[0]
    tf.random.set_seed(7)
    b = _run(proposals=proposals, T=6, ratio=0.5, seed=11)[0]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [dict(T=0), dict(ratio=0.0), dict(ratio=1.5)])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        _run(**bad)


def _numpy_reference(proposals, class_ids, boxes):
    """Matterport's per-image rules in plain NumPy, before subsampling.

    Returns (positive index -> (class id, deltas before / std)), negative index set.
    """
    real = np.abs(proposals).sum(1) > 0
    valid = np.abs(boxes).sum(1) > 0
    gt = valid & (class_ids > 0)
    crowd = valid & (class_ids < 0)

    def iou(a, b):
        y1, x1 = max(a[0], b[0]), max(a[1], b[1])
        y2, x2 = min(a[2], b[2]), min(a[3], b[3])
        inter = max(x2 - x1, 0) * max(y2 - y1, 0)
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    positives, negatives = {}, set()
    for i in np.nonzero(real)[0]:
        ious = [iou(proposals[i], boxes[j]) if gt[j] else -1.0 for j in range(len(boxes))]
        crowd_max = max([iou(proposals[i], boxes[j]) for j in np.nonzero(crowd)[0]], default=0.0)
        j = int(np.argmax(ious))
        if ious[j] >= 0.5:
            p, g = proposals[i].astype(np.float64), boxes[j].astype(np.float64)
            h, w = p[2] - p[0], p[3] - p[1]
            gh, gw = g[2] - g[0], g[3] - g[1]
            d = [(g[0] + 0.5 * gh - p[0] - 0.5 * h) / h, (g[1] + 0.5 * gw - p[1] - 0.5 * w) / w,
                 np.log(gh / h), np.log(gw / w)]
            positives[i] = (class_ids[j], np.array(d) / STD)
        elif crowd_max < 0.001:
            negatives.add(i)
    return positives, negatives


def test_random_batch_against_numpy_reference():
    rng = np.random.default_rng(5)
    B, P, G, T = 3, 40, 5, 64
    boxes = np.zeros((B, G, 4), np.float32)
    class_ids = np.zeros((B, G), np.int32)
    proposals = np.zeros((B, P, 4), np.float32)
    for b in range(B):
        n_gt = 4 - b                                         # 4, 3, 2 real rows, then padding
        yx = rng.uniform(0, 0.6, (n_gt, 2))
        boxes[b, :n_gt] = np.concatenate([yx, yx + rng.uniform(0.1, 0.4, (n_gt, 2))], 1)
        class_ids[b, :n_gt] = rng.integers(1, 4, n_gt)
        class_ids[b, 0] = -1                                 # one crowd box per image
        src = rng.integers(0, n_gt, 25)
        proposals[b, :25] = boxes[b, src] + rng.normal(0, 0.03, (25, 4))
        yx = rng.uniform(0, 0.8, (10, 2))
        proposals[b, 25:35] = np.concatenate([yx, yx + rng.uniform(0.02, 0.2, (10, 2))], 1)
    masks = np.ones((B, 8, 8, G), bool)
    rois, out_ids, deltas, _ = [o.numpy() for o in detection_targets(
        proposals, class_ids, boxes, masks, T, 0.5, (4, 4), True, STD, seed=1)]
    checked = 0
    for b in range(B):
        positives, negatives = _numpy_reference(proposals[b], class_ids[b], boxes[b])
        assert 0 < len(positives) <= T // 2                   # so none is dropped
        n_pos = len(positives)
        n_neg = min(n_pos, len(negatives))                    # int(2 * n_pos) - n_pos
        rows = [int(np.nonzero((proposals[b] == r).all(1))[0][0]) for r in rois[b, :n_pos + n_neg]]
        assert set(rows[:n_pos]) == set(positives)
        assert set(rows[n_pos:]) <= negatives and len(set(rows[n_pos:])) == n_neg
        np.testing.assert_array_equal(rois[b, n_pos + n_neg:], 0)
        for j, i in enumerate(rows[:n_pos]):
            cls, d = positives[i]
            assert out_ids[b, j] == cls
            np.testing.assert_allclose(deltas[b, j], d, rtol=1e-4, atol=1e-4)
            checked += 1
        np.testing.assert_array_equal(out_ids[b, n_pos:], 0)
    assert checked >= 10


def test_targets_carry_no_gradient():
    proposals = tf.Variable(np.asarray([PROPOSALS], np.float32))
    with tf.GradientTape() as tape:
        rois, _, deltas, _ = detection_targets(
            proposals, np.array([[1, 2]], np.int32), np.array([[G1, G2]], np.float32),
            _full_masks()[None], 8, 0.5, (5, 5), False, STD)
        total = tf.reduce_sum(rois) + tf.reduce_sum(deltas)
    assert tape.gradient(total, proposals) is None
