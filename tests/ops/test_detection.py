"""mrcnn.ops.detection: a hand-worked case and Matterport's golden DetectionLayer cases."""
import numpy as np
import pytest
import tensorflow as tf

from mrcnn.ops.boxes import norm_boxes_graph
from mrcnn.ops.detection import refine_detections

# Five ROIs, three classes (0 = background).
ROIS = np.array(
    [
        [0.10, 0.10, 0.30, 0.30],  # r0: class 1, 0.9
        [0.11, 0.10, 0.31, 0.30],  # r1: class 1, 0.8, IoU 0.905 with r0 -> suppressed
        [0.11, 0.10, 0.31, 0.30],  # r2: class 2, 0.85, other class -> kept; dx = 1 shifts it by 0.02
        [0.50, 0.50, 0.60, 0.60],  # r3: background
        [0.60, 0.60, 0.90, 1.20],  # r4: class 2, 0.5, clipped to x2 = 1
    ],
    np.float32,
)
PROBS = np.array(
    [[0.05, 0.9, 0.05], [0.1, 0.8, 0.1], [0.05, 0.1, 0.85], [0.6, 0.2, 0.2], [0.25, 0.25, 0.5]], np.float32
)
DELTAS = np.zeros((5, 3, 4), np.float32)
DELTAS[2, 2] = [0.0, 1.0, 0.0, 0.0]  # x std 0.1 -> dx 0.1 of width 0.2
DELTAS[2, 1] = [5.0, 5.0, 5.0, 5.0]  # deltas of a class the ROI does not take: ignored
R0 = [0.10, 0.10, 0.30, 0.30, 1, 0.9]
R2 = [0.11, 0.12, 0.31, 0.32, 2, 0.85]
R4 = [0.60, 0.60, 0.90, 1.00, 2, 0.5]
ZERO = [0.0] * 6
WINDOW = [0.0, 0.0, 1.0, 1.0]


def _run(window=WINDOW, **kwargs):
    args = dict(min_confidence=0.0, max_instances=4, nms_threshold=0.3)
    args.update(kwargs)
    return refine_detections(ROIS[None], PROBS[None], DELTAS[None], window, **args).numpy()


def test_hand_worked_case():
    out = _run()
    assert out.shape == (1, 4, 6) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], [R0, R2, R4, ZERO], rtol=0, atol=1e-6)


def test_confidence_filter_and_max_instances():
    np.testing.assert_allclose(_run(min_confidence=0.7)[0], [R0, R2, ZERO, ZERO], rtol=0, atol=1e-6)
    np.testing.assert_allclose(_run(max_instances=2)[0], [R0, R2], rtol=0, atol=1e-6)
    # More rows than ROIs: zero padded.
    out = _run(max_instances=9)[0]
    assert out.shape == (9, 6) and not out[3:].any()
    # A looser NMS threshold keeps r1 (IoU 0.905 < 0.95).
    r1 = [0.11, 0.10, 0.31, 0.30, 1, 0.8]
    np.testing.assert_allclose(_run(nms_threshold=0.95)[0], [R0, R2, r1, R4], rtol=0, atol=1e-6)


def test_per_image_windows_and_batch():
    windows = np.array([WINDOW, [0.0, 0.0, 0.5, 0.5]], np.float32)
    out = refine_detections(
        np.stack([ROIS, ROIS]), np.stack([PROBS, PROBS]), np.stack([DELTAS, DELTAS]), windows,
        min_confidence=0.0, max_instances=4, nms_threshold=0.3,
    ).numpy()
    np.testing.assert_allclose(out[0], _run()[0], rtol=0, atol=0)
    # Second image: r4 collapses to the window corner (zero area) and is still kept.
    np.testing.assert_allclose(out[1, 2], [0.5, 0.5, 0.5, 0.5, 2, 0.5], rtol=0, atol=1e-6)


def test_equal_scores_lower_roi_first():
    probs = PROBS.copy()
    probs[0] = [0.05, 0.85, 0.10]  # r0 ties r2 at 0.85
    out = refine_detections(ROIS[None], probs[None], DELTAS[None], WINDOW, (0.1, 0.1, 0.2, 0.2), 0.0, 4, 0.3).numpy()
    np.testing.assert_array_equal(out[0, :2, 4], [1, 2])


@pytest.fixture(scope="module")
def g1(golden_dir):
    return np.load(golden_dir / "g1_model.npz")


def _window(meta):
    return norm_boxes_graph(meta[:, 7:11], meta[0, 4:6])


@pytest.mark.parametrize(
    "key, kwargs",
    [
        ("A", {}),
        ("B", {"min_confidence": 0.7, "max_instances": 5}),
        ("C", {"nms_threshold": 0.6, "max_instances": 8}),
    ],
)
def test_golden_detlayer_cases(g1, key, kwargs):
    args = dict(min_confidence=0.0, max_instances=50, nms_threshold=0.3)
    args.update(kwargs)
    out = refine_detections(
        g1["detlayer_rois"], g1["detlayer_probs"], g1["detlayer_deltas"], _window(g1["detlayer_image_meta"]), **args
    )
    np.testing.assert_allclose(out.numpy(), g1[f"detlayer_out_{key}"], rtol=0, atol=1e-6)


def test_golden_model_detections_eager_and_graph(g1):
    args = (g1["ROI"], g1["mrcnn_class"], g1["mrcnn_bbox"], _window(g1["image_meta"]))
    kwargs = dict(min_confidence=0.0, max_instances=50, nms_threshold=0.3)
    np.testing.assert_allclose(refine_detections(*args, **kwargs).numpy(), g1["mrcnn_detection"], rtol=0, atol=1e-6)
    graph = tf.function(lambda *a: refine_detections(*a, **kwargs))(*args)
    np.testing.assert_allclose(graph.numpy(), g1["mrcnn_detection"], rtol=0, atol=1e-6)


def test_bad_rank_raises():
    with pytest.raises(ValueError, match="deltas must have rank 4"):
        refine_detections(ROIS[None], PROBS[None], DELTAS, WINDOW)


def test_all_background_or_no_rois_gives_zero_rows():
    probs = np.zeros((2, 3, 4), np.float32)
    probs[..., 0] = 1.0
    out = refine_detections(np.full((2, 3, 4), 0.5, np.float32), probs, np.zeros((2, 3, 4, 4), np.float32), WINDOW,
                            min_confidence=0.0, max_instances=5)
    assert out.shape == (2, 5, 6) and not out.numpy().any()
    empty = refine_detections(np.zeros((1, 0, 4), np.float32), np.zeros((1, 0, 4), np.float32),
                              np.zeros((1, 0, 4, 4), np.float32), WINDOW, max_instances=5)
    assert empty.shape == (1, 5, 6) and not empty.numpy().any()


def test_cross_class_nms():
    # R0 (class 1, 0.9) and R2 (class 2, 0.85) overlap: intersection
    # 0.19 * 0.18 = 0.0342, union 0.04 + 0.04 - 0.0342 = 0.0458, IoU 0.747.
    np.testing.assert_allclose(_run(cross_class_nms_threshold=None)[0], [R0, R2, R4, ZERO], rtol=0, atol=1e-6)
    # Above 0.5 the lower-scoring R2 goes, R4 (no overlap) moves up.
    np.testing.assert_allclose(_run(cross_class_nms_threshold=0.5)[0], [R0, R4, ZERO, ZERO], rtol=0, atol=1e-6)
    # 0.75 is just above their IoU: both stay.
    np.testing.assert_allclose(_run(cross_class_nms_threshold=0.75)[0], [R0, R2, R4, ZERO], rtol=0, atol=1e-6)
    # Batched, traced: each image has its own agnostic NMS.
    windows = np.array([WINDOW, WINDOW], np.float32)
    run = tf.function(lambda r, p, d: refine_detections(
        r, p, d, windows, min_confidence=0.0, max_instances=4, nms_threshold=0.3,
        cross_class_nms_threshold=0.5))
    probs2 = PROBS.copy()
    probs2[0] = [0.9, 0.05, 0.05]  # image 2: r0 is background, so R2 survives
    out = run(np.stack([ROIS, ROIS]), np.stack([PROBS, probs2]), np.stack([DELTAS, DELTAS])).numpy()
    np.testing.assert_allclose(out[0], [R0, R4, ZERO, ZERO], rtol=0, atol=1e-6)
    np.testing.assert_allclose(out[1], [R2, R4, ZERO, ZERO], rtol=0, atol=1e-6)
