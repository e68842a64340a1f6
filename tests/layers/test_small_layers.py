"""The keras-style layer test (tests/layers/layer_test.py) on every custom
layer besides the four Matterport ones, each with values checked by hand."""
import numpy as np
import pytest
import tensorflow as tf

from mrcnn.anchors import AnchorSpec
from mrcnn.layers import (ActiveClassIds, Anchors, BatchNorm, DetectionBoxes, FirstRows,
                          FoldedConv2D, LossOutput, NormBoxes, SparseGradConv2D,
                          TimeDistributed)
from mrcnn.losses import rpn_class_loss_graph
from tests.layers.layer_test import run_layer_test

RNG = np.random.default_rng(0)


def test_batch_norm_frozen():
    x = RNG.normal(size=(1, 4, 5, 3)).astype(np.float32)
    gamma, beta = np.array([2.0, 1.0, 0.5], np.float32), np.array([1.0, 0.0, -1.0], np.float32)
    mean, var = np.array([0.5, 0.0, 2.0], np.float32), np.array([4.0, 1.0, 0.25], np.float32)
    (out,) = run_layer_test(BatchNorm, {"train_bn": False, "name": "bn"}, [x],
                            expected_num_weights=4, set_weights=[gamma, beta, mean, var],
                            atol=1e-6)
    expected = gamma * (x - mean) / np.sqrt(var + 1e-3) + beta
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_folded_conv2d_alone_is_a_conv2d():
    x = RNG.normal(size=(1, 6, 6, 2)).astype(np.float32)
    kernel = RNG.normal(size=(3, 3, 2, 4)).astype(np.float32)
    bias = np.arange(4, dtype=np.float32)
    (out,) = run_layer_test(FoldedConv2D, {"filters": 4, "kernel_size": 3, "padding": "same"},
                            [x], expected_num_weights=2, set_weights=[kernel, bias], atol=1e-5)
    np.testing.assert_allclose(out, tf.nn.conv2d(x, kernel, 1, "SAME").numpy() + bias,
                               rtol=1e-5, atol=1e-5)


def test_sparse_grad_conv2d_forward_is_a_conv2d():
    x = RNG.normal(size=(1, 8, 8, 3)).astype(np.float32)
    kernel = RNG.normal(size=(3, 3, 3, 5)).astype(np.float32)
    bias = np.linspace(-1, 1, 5).astype(np.float32)
    (out,) = run_layer_test(SparseGradConv2D, {"filters": 5, "kernel_size": 3, "strides": 2,
                                               "padding": "same", "activation": "relu"},
                            [x], expected_num_weights=2, set_weights=[kernel, bias], atol=1e-5)
    expected = np.maximum(tf.nn.conv2d(x, kernel, 2, "SAME").numpy() + bias, 0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_time_distributed_applies_the_layer_to_every_row():
    import keras
    x = RNG.normal(size=(1, 5, 4)).astype(np.float32)
    kernel = RNG.normal(size=(4, 3)).astype(np.float32)
    bias = np.array([1.0, 2.0, 3.0], np.float32)
    (out,) = run_layer_test(TimeDistributed, {"layer": keras.layers.Dense(3, name="d")}, [x],
                            expected_num_weights=2, set_weights=[kernel, bias], atol=1e-5)
    np.testing.assert_allclose(out, x @ kernel + bias, rtol=1e-5, atol=1e-5)


def test_anchors_are_the_anchor_specs():
    spec = AnchorSpec(scales=(8.0, 16.0, 32.0, 64.0, 128.0), ratios=(0.5, 1.0, 2.0),
                      strides=(4, 8, 16, 32, 64), anchor_stride=2)
    shapes = spec.backbone_shapes((64, 64)).tolist()
    kwargs = dict(image_shape=(64, 64), scales=spec.scales, ratios=spec.ratios,
                  backbone_shapes=shapes, strides=spec.strides, anchor_stride=2)
    image = np.zeros((1, 64, 64, 3), np.float32)
    (out,) = run_layer_test(Anchors, kwargs, [image])
    # 3 ratios at every second cell: 8x8, 4x4, 2x2, 1x1, 1x1 cells
    assert out.shape == (1, 3 * (64 + 16 + 4 + 1 + 1), 4)
    np.testing.assert_array_equal(out[0], spec.normalized_anchors((64, 64)))


def test_norm_boxes_keeps_padding_rows_zero():
    boxes = np.array([[[0, 0, 11, 21], [5, 10, 6, 11], [0, 0, 0, 0]]], np.float32)
    image = np.zeros((1, 11, 21, 3), np.float32)
    (out,) = run_layer_test(NormBoxes, {}, [boxes, image])
    # (y1 / (H - 1), x1 / (W - 1), (y2 - 1) / (H - 1), (x2 - 1) / (W - 1))
    np.testing.assert_allclose(out[0], [[0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5], [0, 0, 0, 0]],
                               atol=1e-7)


def test_detection_boxes_and_first_rows():
    detections = RNG.random((1, 4, 6)).astype(np.float32)
    (out,) = run_layer_test(DetectionBoxes, {}, [detections])
    np.testing.assert_array_equal(out, detections[..., :4])
    (out,) = run_layer_test(FirstRows, {"rows": 3}, [detections])
    np.testing.assert_array_equal(out, detections[:, :3])
    with pytest.raises(ValueError, match="rows"):
        FirstRows(0)


def test_active_class_ids_is_the_end_of_the_meta():
    meta = np.concatenate([np.arange(12), [1, 0, 1]]).astype(np.float32)[None]
    (out,) = run_layer_test(ActiveClassIds, {}, [meta])
    np.testing.assert_array_equal(out, [[1, 0, 1]])


def test_loss_output_is_the_loss_averaged_over_the_batch():
    rpn_match = np.array([[[1], [-1], [0], [-1]]], np.int32)
    logits = RNG.normal(size=(1, 4, 2)).astype(np.float32)
    (out,) = run_layer_test(LossOutput, {"loss": "rpn_class_loss"}, [rpn_match, logits],
                            batch_axis=False, atol=1e-6)
    assert out.shape == ()
    np.testing.assert_allclose(out, rpn_class_loss_graph(rpn_match, logits).numpy(), rtol=1e-6)
    # by hand: softmax cross entropy of the 3 anchors that are not neutral
    z = logits[0, [0, 1, 3]]
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out, -np.log(p[[0, 1, 2], [1, 0, 0]]).mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="unknown loss"):
        LossOutput("focal_loss")
