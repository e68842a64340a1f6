"""Unit tests of the graph parts: BatchNorm modes, TimeDistributed folding,
RPN anchor order, head shapes, backbone shapes, Config translation.
Tiny shapes, numbers worked out by hand or by a direct NumPy re-computation."""
import json

import keras
import numpy as np
import pytest

from mrcnn.config import Config
from mrcnn.graph.backbone import BatchNorm, compute_backbone_shapes, resnet_graph
from mrcnn.graph.build import check_image_shape, compute_backbone_shapes as config_backbone_shapes
from mrcnn.graph.build import layer_args
from mrcnn.graph.heads import TimeDistributed, classifier_head_graph, mask_head_graph
from mrcnn.graph.rpn import build_rpn_model

EPS = 1e-3  # Keras' (and Matterport's) BatchNormalization epsilon


def _bn_with_stats(train_bn, channels=3):
    """A built BatchNorm with known statistics: mean 1, variance 4, gamma 2, beta 0.5."""
    bn = BatchNorm(train_bn=train_bn, name="bn_test")
    bn.build((None, channels))
    bn.set_weights([np.full(channels, 2.0, "f4"), np.full(channels, 0.5, "f4"),
                    np.full(channels, 1.0, "f4"), np.full(channels, 4.0, "f4")])
    return bn


X = np.array([[0.0, 1.0, 2.0], [4.0, 5.0, 6.0]], dtype="f4")  # batch mean 2..4, batch var 4


def _frozen(x):
    return (x - 1.0) / np.sqrt(4.0 + EPS) * 2.0 + 0.5


def _batch_stats(x):
    return (x - x.mean(0)) / np.sqrt(x.var(0) + EPS) * 2.0 + 0.5


def test_batchnorm_frozen_ignores_training_flag():
    bn = _bn_with_stats(train_bn=False)
    out = np.asarray(bn(X, training=True))
    np.testing.assert_allclose(out, _frozen(X), rtol=1e-6)
    # Frozen: the moving statistics were not updated by the training call.
    np.testing.assert_array_equal(bn.get_weights()[2], np.full(3, 1.0, "f4"))


def test_batchnorm_none_follows_training_flag():
    bn = _bn_with_stats(train_bn=None)
    np.testing.assert_allclose(np.asarray(bn(X, training=False)), _frozen(X), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(bn(X, training=True)), _batch_stats(X), rtol=1e-5)


def test_batchnorm_true_uses_batch_statistics_at_inference():
    bn = _bn_with_stats(train_bn=True)
    np.testing.assert_allclose(np.asarray(bn(X, training=False)), _batch_stats(X), rtol=1e-5)


def test_batchnorm_config_round_trip_and_bad_value():
    bn = BatchNorm(train_bn=False, name="bn_x")
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(bn)))
    assert config["registered_name"] == "mrcnn>BatchNorm"
    clone = keras.saving.deserialize_keras_object(config)
    assert isinstance(clone, BatchNorm) and clone.train_bn is False and clone.name == "bn_x"
    with pytest.raises(ValueError, match="train_bn"):
        BatchNorm(train_bn="no")


def _bn4d(train_bn, dtype=None):
    """A built BatchNorm on [B, H, W, 3] maps, statistics as _bn_with_stats."""
    bn = BatchNorm(train_bn=train_bn, name="bn_test4d", dtype=dtype)
    bn.build((None, 2, 2, 3))
    bn.set_weights([np.array([2.0, 1.0, 0.5], "f4"), np.array([0.5, -1.0, 0.0], "f4"),
                    np.array([1.0, 0.0, -2.0], "f4"), np.array([4.0, 1.0, 0.25], "f4")])
    return bn


X4 = np.arange(2 * 2 * 2 * 3, dtype="f4").reshape(2, 2, 2, 3) / 4.0 - 2.0


def _frozen4d(x):
    gamma, beta = np.array([2.0, 1.0, 0.5]), np.array([0.5, -1.0, 0.0])
    mean, var = np.array([1.0, 0.0, -2.0]), np.array([4.0, 1.0, 0.25])
    return (x - mean) / np.sqrt(var + EPS) * gamma + beta


def test_frozen_batchnorm_in_fit_is_one_fused_op_with_the_same_values_and_gradients():
    """Inside fit() (training=True) a frozen BatchNorm runs as one
    FusedBatchNormV3; values and gradients are those of the formula:
    d(sum y)/d gamma = sum over B, H, W of (x - mean) / sqrt(var + eps),
    d(sum y)/d beta = B*H*W = 8, d(sum y)/dx = gamma / sqrt(var + eps)."""
    import tensorflow as tf
    bn = _bn4d(train_bn=False)
    x = tf.constant(X4)

    @tf.function
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bn(x, training=True)
            total = tf.reduce_sum(y)
        return y, tape.gradient(total, [x, bn.gamma, bn.beta])

    ops = {op.type for op in run.get_concrete_function(x).graph.get_operations()}
    assert "FusedBatchNormV3" in ops
    y, (dx, dgamma, dbeta) = run(x)
    np.testing.assert_allclose(y.numpy(), _frozen4d(X4), rtol=1e-5, atol=1e-6)
    mean, var = np.array([1.0, 0.0, -2.0]), np.array([4.0, 1.0, 0.25])
    xhat = (X4 - mean) / np.sqrt(var + EPS)
    np.testing.assert_allclose(dgamma.numpy(), xhat.sum(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(dbeta.numpy(), [8.0, 8.0, 8.0], rtol=1e-6)
    np.testing.assert_allclose(dx.numpy(), np.broadcast_to(
        np.array([2.0, 1.0, 0.5]) / np.sqrt(var + EPS), X4.shape), rtol=1e-5)
    # The moving statistics stay as they were.
    np.testing.assert_array_equal(bn.moving_mean.numpy(), [1.0, 0.0, -2.0])


def test_float32_inference_keeps_the_keras_formula_and_bfloat16_uses_the_fused_op():
    """Float32 inference is not fused (its results stay bit-for-bit those of
    the Keras formula the golden tests check); bfloat16 inference is, and
    stays within bfloat16 rounding (8 bits: relative 2^-8) of the formula."""
    import tensorflow as tf
    bn = _bn4d(train_bn=False)
    graph = tf.function(lambda x: bn(x, training=False)).get_concrete_function(
        tf.constant(X4)).graph
    assert "FusedBatchNormV3" not in {op.type for op in graph.get_operations()}
    np.testing.assert_allclose(np.asarray(bn(X4, training=False)), _frozen4d(X4), rtol=1e-6,
                               atol=1e-6)

    bn16 = _bn4d(train_bn=False, dtype="mixed_bfloat16")
    x16 = tf.cast(X4, tf.bfloat16)
    graph = tf.function(lambda x: bn16(x, training=False)).get_concrete_function(x16).graph
    assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}
    out = bn16(x16, training=False)
    assert out.dtype == tf.bfloat16
    want = _frozen4d(tf.cast(x16, tf.float32).numpy())
    np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), want, rtol=2 ** -7, atol=2e-2)


def _conv_bn_model(train_bn, use_bias=True):
    """input [B, 5, 5, 2] -> conv_bn (3x3, 4 filters, same) -> ReLU, with
    non-trivial BatchNorm weights."""
    from mrcnn.graph.backbone import conv_bn
    rng = np.random.default_rng(4)
    inputs = keras.Input((5, 5, 2))
    x = conv_bn(inputs, 4, (3, 3), "conv_t", "bn_t", train_bn, padding="same",
                use_bias=use_bias)
    model = keras.Model(inputs, keras.layers.Activation("relu")(x))
    conv, bn = model.get_layer("conv_t"), model.get_layer("bn_t")
    conv.set_weights([rng.normal(size=w.shape).astype("f4") for w in conv.get_weights()])
    bn.set_weights([np.array([1.5, -0.5, 0.8, 2.0], "f4"), np.array([0.1, 0.2, -0.3, 0.0], "f4"),
                    np.array([0.3, -1.0, 0.0, 2.0], "f4"), np.array([2.0, 0.5, 1.0, 9.0], "f4")])
    return model


@pytest.mark.parametrize("use_bias", [True, False])
def test_conv_bn_folds_a_frozen_batchnorm_in_fit_with_the_same_values_and_gradients(use_bias):
    """In fit() (training=True) with TRAIN_BN False the pair runs as one
    convolution with the normalization folded into kernel and bias: no batch
    normalization op, same output and same gradients for the conv's and the
    BatchNorm's weights as the unfolded layers (training=False)."""
    import tensorflow as tf
    model = _conv_bn_model(train_bn=False, use_bias=use_bias)
    x = tf.constant(np.random.default_rng(5).normal(size=(2, 5, 5, 2)).astype("f4"))
    w = tf.constant(np.random.default_rng(6).normal(size=(2, 5, 5, 4)).astype("f4"))
    variables = model.trainable_variables
    assert len(variables) == (4 if use_bias else 3)  # kernel, [bias], gamma, beta

    def run(training):
        @tf.function
        def f(x):
            with tf.GradientTape() as tape:
                y = model(x, training=training)
                loss = tf.reduce_sum(y * w)
            return y, tape.gradient(loss, variables)
        ops = {op.type for op in f.get_concrete_function(x).graph.get_operations()}
        return f(x), ops

    (y_fold, g_fold), ops_fold = run(True)
    (y_ref, g_ref), ops_ref = run(False)
    assert "FusedBatchNormV3" not in ops_fold and "Conv2D" in ops_fold
    assert "Conv2D" in ops_ref
    assert float(tf.reduce_max(tf.abs(y_ref))) > 1.0
    np.testing.assert_allclose(y_fold.numpy(), y_ref.numpy(), rtol=1e-5, atol=1e-5)
    for a, b, v in zip(g_fold, g_ref, variables):
        assert float(tf.reduce_max(tf.abs(b))) > 0, v.name
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4, err_msg=v.name)
    # The moving statistics are untouched.
    np.testing.assert_array_equal(model.get_layer("bn_t").moving_variance.numpy(),
                                  [2.0, 0.5, 1.0, 9.0])


def test_conv_bn_with_batch_statistics_does_not_fold():
    """TRAIN_BN None in fit(): batch statistics, which cannot be folded; the
    output has per-channel batch mean 0 before the BatchNorm's beta."""
    import tensorflow as tf
    model = _conv_bn_model(train_bn=None)
    bn = model.get_layer("bn_t")
    assert not bn.folds_into_conv(True) and not bn.folds_into_conv(False)
    x = tf.constant(np.random.default_rng(5).normal(size=(2, 5, 5, 2)).astype("f4"))
    pre_relu = keras.Model(model.inputs, bn.output)(x, training=True).numpy()
    gamma, beta = bn.gamma.numpy(), bn.beta.numpy()
    np.testing.assert_allclose(((pre_relu - beta) / gamma).mean(axis=(0, 1, 2)), 0, atol=1e-5)
    frozen = _conv_bn_model(train_bn=False).get_layer("bn_t")
    assert frozen.folds_into_conv(True) and not frozen.folds_into_conv(False)


def test_conv_bn_pair_round_trips_as_two_matterport_layers():
    """The pair is two layers in the model config (a registered FoldedConv2D
    with the Conv2D weights, a BatchNorm), and a model rebuilt from JSON
    gives the same inference output."""
    import tensorflow as tf
    model = _conv_bn_model(train_bn=False)
    x = np.random.default_rng(5).normal(size=(2, 5, 5, 2)).astype("f4")
    clone = keras.Model.from_config(json.loads(json.dumps(model.get_config())))
    clone.set_weights(model.get_weights())
    assert [type(layer).__name__ for layer in clone.layers[1:]] == [
        "FoldedConv2D", "BatchNorm", "Activation"]
    np.testing.assert_allclose(np.asarray(clone(x, training=False)),
                               np.asarray(model(tf.constant(x), training=False)), rtol=1e-6)


@pytest.mark.parametrize("train_bn, expect", [(False, _frozen), (None, _batch_stats)])
def test_time_distributed_batchnorm_honours_train_bn(train_bn, expect):
    """TimeDistributed(BatchNorm) inside a model run with training=True: a
    frozen BN (TRAIN_BN False) still uses the moving statistics; TRAIN_BN None
    gets the training flag through our TimeDistributed and uses batch ones."""
    inp = keras.Input((None, 3))
    td = TimeDistributed(BatchNorm(train_bn=train_bn, name="bn_td"), name="bn_td")
    model = keras.Model(inp, td(inp))
    td.layer.set_weights([np.full(3, 2.0, "f4"), np.full(3, 0.5, "f4"),
                          np.full(3, 1.0, "f4"), np.full(3, 4.0, "f4")])
    x = X[np.newaxis]  # [1, 2, 3]: batch 1, 2 steps
    # predict() is inference: moving statistics for every mode but True.
    np.testing.assert_allclose(model.predict_on_batch(x)[0], _frozen(X), rtol=1e-6)
    out = np.asarray(model(x, training=True))[0]
    np.testing.assert_allclose(out, expect(X), rtol=1e-5)


def test_time_distributed_folds_time_into_batch():
    """Our TimeDistributed equals the layer applied to every [b, t] slice, with
    the batch and time axes dynamic (one model, two values of N)."""
    rng = np.random.default_rng(0)
    conv = keras.layers.Conv2D(6, (3, 3), padding="valid", name="td_conv")
    inp = keras.Input((None, 5, 5, 4))
    model = keras.Model(inp, TimeDistributed(conv, name="td_conv")(inp))
    assert model.output.shape == (None, None, 3, 3, 6)
    for n in (3, 7):
        x = rng.normal(size=(2, n, 5, 5, 4)).astype("f4")
        out = model.predict_on_batch(x)
        assert out.shape == (2, n, 3, 3, 6)
        expected = np.stack([np.asarray(conv(x[b])) for b in range(2)])
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_time_distributed_serializes_as_mrcnn_class():
    td = TimeDistributed(keras.layers.Dense(4, name="d"), name="d")
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(td)))
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is TimeDistributed and isinstance(clone, keras.layers.TimeDistributed)
    assert clone.name == "d" and clone.layer.units == 4


def test_rpn_model_layout_and_anchor_order():
    """Outputs reshape row-major over (y, x, anchor); batch is dynamic."""
    rpn = build_rpn_model(anchor_stride=1, anchors_per_location=3, depth=8)
    assert rpn.name == "rpn_model"
    assert [l.name for l in rpn.layers if l.weights] == ["rpn_conv_shared", "rpn_class_raw",
                                                         "rpn_bbox_pred"]
    raw = keras.Model(rpn.inputs, [rpn.get_layer("rpn_class_raw").output,
                                   rpn.get_layer("rpn_bbox_pred").output])
    x = np.random.default_rng(1).normal(size=(2, 4, 5, 8)).astype("f4")
    logits, probs, bbox = rpn.predict_on_batch(x)
    raw_class, raw_bbox = raw.predict_on_batch(x)
    assert logits.shape == (2, 4 * 5 * 3, 2) and bbox.shape == (2, 60, 4)
    for b, y, xx, a in [(0, 0, 0, 0), (1, 2, 3, 1), (1, 3, 4, 2), (0, 1, 0, 2)]:
        row = (y * 5 + xx) * 3 + a
        np.testing.assert_array_equal(logits[b, row], raw_class[b, y, xx, 2 * a:2 * a + 2])
        np.testing.assert_array_equal(bbox[b, row], raw_bbox[b, y, xx, 4 * a:4 * a + 4])
    e = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_head_output_shapes_follow_num_classes():
    pooled = keras.Input((None, 7, 7, 16))
    pooled_mask = keras.Input((None, 14, 14, 16))
    logits, probs, bbox = classifier_head_graph(pooled, 7, num_classes=3, train_bn=False,
                                                fc_layers_size=32)
    mask = mask_head_graph(pooled_mask, num_classes=3, train_bn=False)
    model = keras.Model([pooled, pooled_mask], [logits, probs, bbox, mask])
    rng = np.random.default_rng(2)
    out = model.predict_on_batch([rng.normal(size=(2, 4, 7, 7, 16)).astype("f4"),
                                  rng.normal(size=(2, 5, 14, 14, 16)).astype("f4")])
    assert [o.shape for o in out] == [(2, 4, 3), (2, 4, 3), (2, 4, 3, 4), (2, 5, 28, 28, 3)]
    np.testing.assert_allclose(out[1].sum(-1), 1.0, rtol=1e-5)
    assert out[3].min() >= 0.0 and out[3].max() <= 1.0
    assert model.get_layer("mrcnn_class_logits").layer.kernel.shape == (32, 3)
    assert model.get_layer("mrcnn_bbox_fc").layer.kernel.shape == (32, 12)
    assert model.get_layer("mrcnn_mask").layer.kernel.shape == (1, 1, 256, 3)


def test_compute_backbone_shapes():
    strides = [4, 8, 16, 32, 64]
    np.testing.assert_array_equal(compute_backbone_shapes((256, 256, 3), strides),
                                  [[64, 64], [32, 32], [16, 16], [8, 8], [4, 4]])
    # ceil, not floor: a 100x70 image gives 25x18 cells at stride 4, 2x2 at 64.
    np.testing.assert_array_equal(compute_backbone_shapes((100, 70), strides),
                                  [[25, 18], [13, 9], [7, 5], [4, 3], [2, 2]])
    custom = compute_backbone_shapes((64, 64), strides, lambda s: [[s[0] // 2, s[1] // 2]])
    np.testing.assert_array_equal(custom, [[32, 32]])


def test_config_backbone_shapes_use_compute_backbone_shape_for_callable():
    class Custom(Config):
        NAME = "custom"
        BACKBONE = staticmethod(lambda image, stage5=True, train_bn=None: None)
        COMPUTE_BACKBONE_SHAPE = staticmethod(lambda shape: np.array([[1, 2]] * 5))

    class Plain(Config):
        NAME = "plain"
        IMAGE_MAX_DIM = 128
        IMAGE_MIN_DIM = 128

    np.testing.assert_array_equal(config_backbone_shapes(Custom(), (64, 64)), [[1, 2]] * 5)
    np.testing.assert_array_equal(config_backbone_shapes(Plain(), Plain().IMAGE_SHAPE),
                                  [[32, 32], [16, 16], [8, 8], [4, 4], [2, 2]])


def test_layer_args_are_plain_json():
    class Small(Config):
        NAME = "small"
        NUM_CLASSES = 4
        BACKBONE = "resnet50"

    args = layer_args(Small())
    assert json.loads(json.dumps(args)) == json.loads(json.dumps(args))  # JSON-ready
    assert args["rpn"] == {"anchor_stride": 1, "anchors_per_location": 3, "depth": 256}
    assert args["classifier"] == {"pool_size": 7, "num_classes": 4, "train_bn": False,
                                  "fc_layers_size": 1024}
    assert args["mask"] == {"pool_size": 14, "num_classes": 4, "train_bn": False}
    assert args["proposal"]["rpn_bbox_std_dev"] == (0.1, 0.1, 0.2, 0.2)
    assert args["detection"]["detection_max_instances"] == 100


def test_bad_architecture_and_image_shape_raise_clearly():
    with pytest.raises(ValueError, match="resnet152"):
        resnet_graph(keras.Input((None, None, 3)), "resnet152")

    class Odd(Config):
        NAME = "odd"

    config = Odd()
    config.IMAGE_SHAPE = np.array([200, 256, 3])
    with pytest.raises(ValueError, match="IMAGE_SHAPE is 200x256.*divisible by 64"):
        check_image_shape(config)


def test_rpn_shared_conv_is_a_sparse_gradient_conv2d_equal_to_keras_conv2d():
    """rpn_conv_shared: same config, weights, output and gradients as
    keras.layers.Conv2D; round-trips through JSON."""
    import tensorflow as tf
    from mrcnn.graph.rpn import SparseGradConv2D
    rpn = build_rpn_model(2, 3, 8)
    assert type(rpn.get_layer("rpn_conv_shared")) is SparseGradConv2D
    ours = SparseGradConv2D(6, (3, 3), padding="same", activation="relu", strides=2)
    ref = keras.layers.Conv2D(6, (3, 3), padding="same", activation="relu", strides=2)
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 7, 9, 4)).astype("f4"))
    ours.build(x.shape)
    ref.build(x.shape)
    ref.set_weights(ours.get_weights())
    w = np.zeros((2, 4, 5, 6), "f4")
    w[0, 1, 2] = 1.0
    w[1, 3, 4] = -1.0
    results = []
    for layer in (ours, ref):
        with tf.GradientTape() as tape:
            y = layer(x)
            loss = tf.reduce_sum(y * w)
        results.append((y.numpy(), [g.numpy() for g in tape.gradient(loss, layer.trainable_variables)]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6, atol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        assert np.abs(b).max() > 0.01  # the two positions' gradients pass the ReLU
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    clone = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(ours))))
    assert type(clone) is SparseGradConv2D and clone.strides == (2, 2)
