"""mrcnn.ops.boxes: hand-worked values, round trips, and Matterport's NumPy utilities (U1)."""
import json

import numpy as np
import pytest
import tensorflow as tf

from mrcnn.ops.boxes import (
    apply_box_deltas_graph,
    box_refinement_graph,
    clip_boxes_graph,
    denorm_boxes_graph,
    norm_boxes_graph,
    overlaps_graph,
)


@pytest.fixture(scope="module")
def u1(golden_dir):
    index = json.loads((golden_dir / "u1_utils.json").read_text())
    arrays = np.load(golden_dir / "u1_utils.npz")
    cases = {c["id"]: c for c in index["cases"]}

    def case(cid):
        c = cases[cid]
        args = [arrays[a["key"]] if "key" in a else a["value"] for a in c["args"]]
        outs = [arrays[o["key"]] if "key" in o else o["value"] for o in c["outputs"]]
        return args, outs

    return case


def test_norm_denorm_by_hand():
    # 256x256 image: the full image (0, 0, 256, 256) is (0, 0, 1, 1); scale 255.
    out = norm_boxes_graph([[0, 0, 256, 256], [10, 20, 30, 40]], (256, 256)).numpy()
    np.testing.assert_allclose(out, [[0, 0, 1, 1], [10 / 255, 20 / 255, 29 / 255, 39 / 255]], rtol=1e-6)
    assert out.dtype == np.float32
    # Round half to even: 0.125*4 = 0.5 -> 0, 0.375*4 = 1.5 -> 2, 0.625*4 + 1 = 3.5 -> 4.
    den = denorm_boxes_graph([[0.125, 0.375, 0.625, 0.875]], (5, 5)).numpy()
    np.testing.assert_array_equal(den, [[0, 2, 4, 4]])
    assert den.dtype == np.int32
    # A zero-size normalized box becomes a 1-pixel box.
    np.testing.assert_array_equal(denorm_boxes_graph([[0.3, 0.3, 0.3, 0.3]], (100, 200)), [[30, 60, 31, 61]])


def test_norm_denorm_match_matterport_numpy(u1):
    for cid in ("c078", "c079", "c088"):
        (boxes, shape), (expected,) = u1(cid)
        np.testing.assert_allclose(norm_boxes_graph(boxes, shape), expected, rtol=0, atol=1e-7, err_msg=cid)
    for cid in ("c080", "c081", "c089"):
        (boxes, shape), (expected,) = u1(cid)
        np.testing.assert_array_equal(denorm_boxes_graph(boxes, shape), expected, err_msg=cid)


def test_norm_denorm_round_trip_batched():
    pix = np.array([[[0, 0, 64, 32], [5, 7, 20, 31]], [[1, 2, 3, 4], [60, 0, 64, 9]]], np.int32)
    norm = norm_boxes_graph(pix, [64, 32])
    assert norm.shape == (2, 2, 4)
    np.testing.assert_array_equal(denorm_boxes_graph(norm, [64, 32]), pix)


def test_apply_box_deltas_by_hand_and_u1(u1):
    # Box 10x20 at (0, 0): dy = 0.5 moves the centre by 5, log(dw) = log(2) doubles the width.
    out = apply_box_deltas_graph([[0.0, 0.0, 10.0, 20.0]], [[0.5, 0.0, 0.0, np.log(2.0)]]).numpy()
    np.testing.assert_allclose(out, [[5.0, -10.0, 15.0, 30.0]], rtol=0, atol=1e-5)
    for cid in ("c019", "c020", "c021"):
        (boxes, deltas), (expected,) = u1(cid)
        np.testing.assert_allclose(apply_box_deltas_graph(boxes, deltas), expected, rtol=1e-6, atol=1e-5, err_msg=cid)


def test_apply_and_refine_are_inverse_on_any_batch_shape():
    rng = np.random.default_rng(0)
    y1x1 = rng.uniform(0, 0.5, (2, 3, 5, 2)).astype(np.float32)
    boxes = np.concatenate([y1x1, y1x1 + rng.uniform(0.05, 0.5, (2, 3, 5, 2)).astype(np.float32)], -1)
    gt = np.concatenate([y1x1 + 0.01, y1x1 + rng.uniform(0.05, 0.5, (2, 3, 5, 2)).astype(np.float32)], -1)
    deltas = box_refinement_graph(boxes, gt)
    assert deltas.shape == (2, 3, 5, 4)
    np.testing.assert_allclose(apply_box_deltas_graph(boxes, deltas), gt, rtol=0, atol=1e-6)


def test_box_refinement_u1(u1):
    for cid in ("c022", "c023", "c024"):
        (box, gt_box), (expected,) = u1(cid)
        np.testing.assert_allclose(box_refinement_graph(box, gt_box), expected, rtol=1e-5, atol=1e-5, err_msg=cid)


def test_apply_box_deltas_is_bit_identical_in_tf_function():
    # Grappler rewrites "a + b + c" chains inside tf.function when shapes are static;
    # the ops are written so the graph gives exactly the eager (Matterport) numbers.
    rng = np.random.default_rng(1)
    boxes = rng.uniform(0, 1, (1, 3000, 4)).astype(np.float32)
    deltas = rng.normal(0, 0.3, (1, 3000, 4)).astype(np.float32)
    eager = apply_box_deltas_graph(boxes, deltas).numpy()
    graph = tf.function(apply_box_deltas_graph)(tf.constant(boxes), tf.constant(deltas)).numpy()
    np.testing.assert_array_equal(graph, eager)


def test_clip_boxes_one_window_and_per_image_windows():
    boxes = np.array([[[-0.1, 0.2, 0.5, 1.3], [1.2, 1.2, 1.5, 1.5]], [[0.1, 0.1, 0.9, 0.9], [0.0, 0.0, 0.0, 0.0]]], np.float32)
    out = clip_boxes_graph(boxes, [0.0, 0.0, 1.0, 1.0]).numpy()
    np.testing.assert_array_equal(out[0], np.float32([[0.0, 0.2, 0.5, 1.0], [1.0, 1.0, 1.0, 1.0]]))
    windows = np.array([[0.0, 0.0, 1.0, 1.0], [0.25, 0.0, 0.75, 1.0]], np.float32)
    out = clip_boxes_graph(boxes, windows).numpy()
    np.testing.assert_array_equal(out[1], np.float32([[0.25, 0.1, 0.75, 0.9], [0.25, 0.0, 0.25, 0.0]]))


def test_overlaps_by_hand_batched_and_u1(u1):
    b1 = np.array([[0, 0, 10, 10]], np.float32)
    b2 = np.array([[0, 10, 10, 20], [0, 0, 10, 5], [0, 0, 10, 10], [5, 5, 15, 15]], np.float32)
    np.testing.assert_allclose(overlaps_graph(b1, b2), [[0.0, 0.5, 1.0, 25 / 175]], rtol=1e-6)
    batched = overlaps_graph(np.stack([b1, b1 + 5]), np.stack([b2, b2]))
    assert batched.shape == (2, 1, 4)
    np.testing.assert_allclose(batched[1], [[25 / 175, 0.0, 25 / 175, 1.0]], rtol=1e-6)
    # Matterport's NumPy compute_overlaps uses the same no-"+1" formula.
    for cid in ("c006", "c009"):
        (boxes1, boxes2), (expected,) = u1(cid)
        np.testing.assert_allclose(overlaps_graph(boxes1, boxes2), expected, rtol=1e-6, atol=1e-7, err_msg=cid)


def test_bad_last_axis_raises():
    with pytest.raises(ValueError, match="last axis of size 4"):
        apply_box_deltas_graph(np.zeros((3, 5), np.float32), np.zeros((3, 4), np.float32))


def test_huge_log_scale_deltas_are_capped_not_nan():
    """A diverged head's log-scale of 100 would overflow exp() and give NaN
    boxes (inf - inf); it is capped at log(1000/16): the box grows 62.5x
    about its centre. Deltas below the cap are untouched (bit-identical)."""
    from mrcnn import utils
    from mrcnn.utils import BBOX_LOG_SCALE_CLIP
    assert BBOX_LOG_SCALE_CLIP == pytest.approx(np.log(62.5))
    boxes = np.array([[10.0, 10.0, 14.0, 12.0], [0.0, 0.0, 8.0, 8.0]], np.float32)
    deltas = np.array([[0.0, 0.0, 100.0, 1e30], [0.0, 0.0, 4.0, -3.0]], np.float32)
    # box 0: centre (12, 11), h 4 -> 250, w 2 -> 125
    expected0 = [12 - 125.0, 11 - 62.5, 12 + 125.0, 11 + 62.5]
    for out in (apply_box_deltas_graph(boxes, deltas).numpy(), utils.apply_box_deltas(boxes, deltas)):
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out[0], expected0, rtol=1e-5)
        np.testing.assert_allclose(out[1], [4 - 4 * np.exp(4.0), 4 - 4 * np.exp(-3.0),
                                            4 + 4 * np.exp(4.0), 4 + 4 * np.exp(-3.0)], rtol=1e-5)
