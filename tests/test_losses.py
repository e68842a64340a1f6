"""The five losses on small inputs whose values are worked out by hand."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from mrcnn import losses


def _f(x):
    return float(np.asarray(x))


def test_smooth_l1_loss():
    out = losses.smooth_l1_loss(np.zeros((1, 4)), np.array([[0.5, -2.0, 1.0, 0.0]]))
    # 0.5 * 0.5^2, 2 - 0.5, |d| = 1 is not < 1 so 1 - 0.5, 0
    np.testing.assert_allclose(out.numpy(), [[0.125, 1.5, 0.5, 0.0]])


def test_rpn_class_loss():
    match = np.array([[[1], [-1], [0], [1]]], np.int32)
    logits = np.array([[[0, 0], [0, math.log(3)], [100, -100], [0, math.log(3)]]], np.float32)
    # log 2 (fg at 1/2), log 4 (bg at 1/4), neutral ignored, log 4/3 (fg at 3/4)
    expected = (math.log(2) + math.log(4) + math.log(4 / 3)) / 3
    assert _f(losses.rpn_class_loss_graph(match, logits)) == pytest.approx(expected, rel=1e-6)
    # rpn_match without the trailing axis works too.
    assert _f(losses.rpn_class_loss_graph(match[..., 0], logits)) == pytest.approx(expected, rel=1e-6)


def _rpn_bbox_case():
    match = np.array([[1, 0, 1, -1], [0, 1, 0, 0]], np.int32)[..., None]
    target = np.zeros((2, 3, 4), np.float32)
    target[0, 0] = [1, 0, 0, 0]
    target[0, 1] = [0, 0, 0, 0.5]
    pred = np.full((2, 4, 4), 50.0, np.float32)   # non-positive anchors: ignored
    pred[0, 0] = 0
    pred[0, 2] = 0
    pred[1, 1] = [3, 0, 0, 0]
    # |d| = 1 -> 0.5; |d| = 0.5 -> 0.125; |d| = 3 -> 2.5; over 3 anchors x 4 deltas.
    return target, match, pred, (0.5 + 0.125 + 2.5) / 12


def test_rpn_bbox_loss_batch_agnostic():
    target, match, pred, expected = _rpn_bbox_case()
    assert _f(losses.rpn_bbox_loss_graph(target, match, pred)) == pytest.approx(expected, rel=1e-6)
    # Matterport's argument order, with its config first.
    cfg = SimpleNamespace(IMAGES_PER_GPU=2)
    assert _f(losses.rpn_bbox_loss_graph(cfg, target, match, pred)) == pytest.approx(expected, rel=1e-6)
    # Inside tf.function with a dynamic batch size.
    fn = tf.function(losses.rpn_bbox_loss_graph, input_signature=[
        tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None, 1], tf.int32),
        tf.TensorSpec([None, None, 4])])
    assert _f(fn(target, match, pred)) == pytest.approx(expected, rel=1e-6)
    assert _f(fn(target[1:], match[1:], pred[1:])) == pytest.approx(2.5 / 4, rel=1e-6)


def test_mrcnn_class_loss_uses_each_images_active_classes():
    target = np.array([[1, 0], [2, 0]], np.int32)
    logits = np.array([[[0, 0, 0], [0, math.log(2), 0]],
                       [[0, 0, 5], [math.log(3), 0, 0]]], np.float32)
    active = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
    # Image 1, ROI 0 predicts class 2, inactive in image 1: left out.
    expected = (math.log(3) + math.log(4) + math.log(5 / 3)) / 3
    assert _f(losses.mrcnn_class_loss_graph(target, logits, active)) == pytest.approx(expected, rel=1e-6)
    # Float class ids (Keras used to pass them) give the same.
    assert _f(losses.mrcnn_class_loss_graph(target.astype(np.float32), logits, active)) == pytest.approx(
        expected, rel=1e-6)


def test_mrcnn_bbox_loss():
    target_ids = np.array([[2, 0, 1]], np.int32)
    target = np.array([[[1, 1, 1, 1], [9, 9, 9, 9], [0, 0, 0, 0]]], np.float32)
    pred = np.full((1, 3, 3, 4), 7.0, np.float32)   # wrong classes and negatives: ignored
    pred[0, 0, 2] = [1, 1, 1, 1]
    pred[0, 2, 1] = [0, 0, 0, 2]
    assert _f(losses.mrcnn_bbox_loss_graph(target, target_ids, pred)) == pytest.approx(1.5 / 8, rel=1e-6)


def test_mrcnn_mask_loss():
    target_ids = np.array([[1, 0]], np.int32)
    target = np.array([[[[1, 0, 0]], [[1, 1, 1]]]], np.float32)     # [1, 2, 1, 3]
    pred = np.zeros((1, 2, 1, 3, 2), np.float32)
    pred[0, 0, 0, :, 1] = [0.5, 0.25, 1.0]
    pred[0, 0, 0, :, 0] = 0.9                       # other class: ignored
    eps = 1e-7
    # p = 1 is clipped to float32(1 - 1e-7) = 1 - 2**-23, so log(1 - p + eps) stays finite.
    p_clipped = np.float32(1.0) - np.float32(eps)
    last = -math.log(float(np.float32(1.0) - p_clipped + np.float32(eps)))
    expected = (-math.log(0.5 + eps) - math.log(0.75 + eps) + last) / 3
    assert _f(losses.mrcnn_mask_loss_graph(target, target_ids, pred)) == pytest.approx(expected, rel=1e-5)


def test_nothing_to_average_gives_zero_and_finite_gradients():
    logits = tf.Variable(np.ones((1, 4, 2), np.float32))
    rpn_bbox = tf.Variable(np.ones((1, 4, 4), np.float32))
    class_logits = tf.Variable(np.ones((1, 3, 3), np.float32))
    pred_bbox = tf.Variable(np.ones((1, 3, 3, 4), np.float32))
    pred_masks = tf.Variable(np.full((1, 3, 2, 2, 3), 0.5, np.float32))
    no_match = np.zeros((1, 4, 1), np.int32)
    no_pos = np.zeros((1, 3), np.int32)
    with tf.GradientTape(persistent=True) as tape:
        values = [
            losses.rpn_class_loss_graph(no_match, logits),
            losses.rpn_bbox_loss_graph(np.zeros((1, 2, 4)), no_match, rpn_bbox),
            losses.mrcnn_class_loss_graph(no_pos, class_logits, np.zeros((1, 3))),  # nothing active
            losses.mrcnn_bbox_loss_graph(np.zeros((1, 3, 4)), no_pos, pred_bbox),
            losses.mrcnn_mask_loss_graph(np.zeros((1, 3, 2, 2)), no_pos, pred_masks),
        ]
    for value, var in zip(values, [logits, rpn_bbox, class_logits, pred_bbox, pred_masks]):
        assert value.dtype == tf.float32 and value.shape == ()
        assert _f(value) == 0.0
        grad = tape.gradient(value, var)
        assert grad is None or np.all(np.isfinite(tf.convert_to_tensor(grad).numpy()))
