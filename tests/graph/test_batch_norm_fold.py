"""Folding frozen BatchNorms into their convolutions at inference
(``layers.fold_batch_norms``, INFERENCE_PRECISION "float32" and "bfloat16").

Tiny shapes and hand-set statistics. What is checked: the folded pair is the
same function as the two layers (within float32 round-off), its traced graph
has no normalization op left and feeds the conv's bias straight into the
ReLU (the pattern Grappler fuses), the switch is read at trace time, fit()
is unchanged, and the heads' TimeDistributed pairs and the CPU recipe's
backbone fold too. The golden numbers of the folded G1 model are in
test_golden_g1.py / test_inference_g1.py.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from mrcnn.config import Config
from mrcnn.graph.backbone import conv_bn
from mrcnn.graph.build import layer_args
from mrcnn.graph.heads import classifier_head_graph, mask_head_graph
from mrcnn.graph.small_backbone import small_resnet_graph
from mrcnn.layers.batch_norm import (BatchNorm, FoldedConv2D, fold_batch_norms,
                                     pair_conv_bn, paired_batch_norms)

# Folded against unfolded float32 on these tiny maps (values up to ~10):
# measured <= 2e-6; bound 1e-5.
ATOL = 1e-5


def _set_stats(model, seed=3):
    """Random weights for every layer; BatchNorm statistics with
    gamma in [0.5, 2], beta and mean in [-1, 1], variance in [0.2, 3]."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, BatchNorm):
            c = inner.gamma.shape[0]
            inner.set_weights([rng.uniform(0.5, 2, c), rng.uniform(-1, 1, c),
                               rng.uniform(-1, 1, c), rng.uniform(0.2, 3, c)])
        elif inner.weights:   # kernels std 1/sqrt(fan in): maps stay of order 1
            inner.set_weights([rng.normal(0, 1 / np.sqrt(np.prod(w.shape[:-1])), w.shape)
                               if w.ndim > 1 else rng.normal(0, 0.1, w.shape)
                               for w in inner.get_weights()])


def _pair_model(train_bn=False, use_bias=True):
    """input [B, 6, 6, 3] -> conv_bn (3x3, 4 filters, same) -> ReLU."""
    inputs = keras.Input((6, 6, 3))
    x = conv_bn(inputs, 4, (3, 3), "conv_t", "bn_t", train_bn, padding="same",
                use_bias=use_bias)
    model = keras.Model(inputs, keras.layers.Activation("relu", name="relu_t")(x))
    _set_stats(model)
    return model


X = np.random.default_rng(7).normal(size=(2, 6, 6, 3)).astype("f4")


def _graph(model, x, training=False):
    return tf.function(lambda x: model(x, training=training)).get_concrete_function(
        tf.constant(x)).graph


@pytest.mark.parametrize("train_bn, use_bias", [(False, True), (False, False), (None, True)])
def test_folded_pair_is_the_same_function_without_a_normalization_op(train_bn, use_bias):
    model = _pair_model(train_bn, use_bias)
    exact = model.predict_on_batch(X)
    exact_ops = [op.name for op in _graph(model, X).get_operations()]
    assert fold_batch_norms(model) == 1
    folded = model.predict_on_batch(X)
    assert float(np.abs(exact).max()) > 1.0 and (exact == 0).mean() > 0.1   # ReLU cut some
    np.testing.assert_allclose(folded, exact, rtol=0, atol=ATOL)
    graph = _graph(model, X)
    assert any("/bn_t" in name for name in exact_ops)
    assert not any("/bn_t" in op.name for op in graph.get_operations())
    # conv -> bias -> ReLU, nothing in between: Grappler's _FusedConv2D pattern
    relu = next(op for op in graph.get_operations() if op.type == "Relu")
    bias_add = relu.inputs[0].op
    assert bias_add.type == "BiasAdd" and bias_add.inputs[0].op.type == "Conv2D"
    # and the BatchNorm hands its input through unchanged
    bn = model.get_layer("bn_t")
    y = tf.constant(X[..., :1].repeat(4, -1))
    assert bn.call(y, training=False) is y


def test_the_switch_is_read_when_the_call_is_traced():
    """fold_batch_norms drops the model's compiled predict function, so
    predict_on_batch follows the switch, and switching back gives the
    unfolded numbers bit for bit."""
    model = _pair_model()
    exact = model.predict_on_batch(X)
    fold_batch_norms(model, True)
    folded = model.predict_on_batch(X)
    assert not np.array_equal(folded, exact)     # another rounding: it really changed
    fold_batch_norms(model, False)
    np.testing.assert_array_equal(model.predict_on_batch(X), exact)


def test_fit_is_unchanged_by_the_inference_fold():
    """A backbone pair (in_fit True) folds in fit() as before; a head pair
    (in_fit False) keeps its FusedBatchNormV3 in fit(), folded at inference or
    not; batch statistics (TRAIN_BN True) never fold."""
    backbone = _pair_model()
    fold_batch_norms(backbone, True)
    bn = backbone.get_layer("bn_t")
    assert bn.folds_into_conv(True) and bn.folds_into_conv(False)

    conv = FoldedConv2D(4, (3, 3), padding="same", name="conv_h")
    head_bn = BatchNorm(train_bn=False, name="bn_h")
    pair_conv_bn(conv, head_bn, in_fit=False)
    inputs = keras.Input((6, 6, 3))
    head = keras.Model(inputs, head_bn(conv(inputs)))
    _set_stats(head)
    ops_before = [op.type for op in _graph(head, X, training=True).get_operations()]
    assert fold_batch_norms(head, True) == 1
    assert not head_bn.folds_into_conv(True) and head_bn.folds_into_conv(False)
    ops_after = [op.type for op in _graph(head, X, training=True).get_operations()]
    assert ops_after == ops_before and ops_after.count("FusedBatchNormV3") == 1

    batch_stats = _pair_model(train_bn=True)
    fold_batch_norms(batch_stats, True)
    assert not batch_stats.get_layer("bn_t").folds_into_conv(False)


def test_pair_conv_bn_names_what_it_needs():
    with pytest.raises(TypeError, match="FoldedConv2D and a BatchNorm"):
        pair_conv_bn(keras.layers.Conv2D(2, 1), BatchNorm())


def test_heads_fold_inside_time_distributed():
    """The classifier head's two and the mask head's four conv/BatchNorm
    pairs (TimeDistributed, Matterport's names) fold at inference."""
    pooled = keras.Input((None, 7, 7, 8))
    pooled_mask = keras.Input((None, 14, 14, 8))
    outputs = list(classifier_head_graph(pooled, 7, num_classes=3, train_bn=False,
                                         fc_layers_size=16))
    outputs.append(mask_head_graph(pooled_mask, num_classes=3, train_bn=False))
    model = keras.Model([pooled, pooled_mask], outputs)
    _set_stats(model)
    assert type(model.get_layer("mrcnn_mask_conv1").layer) is FoldedConv2D
    assert sorted(bn.name for bn in paired_batch_norms(model)) == [
        "mrcnn_class_bn1", "mrcnn_class_bn2", "mrcnn_mask_bn1", "mrcnn_mask_bn2",
        "mrcnn_mask_bn3", "mrcnn_mask_bn4"]
    rng = np.random.default_rng(2)
    x = [rng.normal(size=(2, 3, 7, 7, 8)).astype("f4"),
         rng.normal(size=(2, 2, 14, 14, 8)).astype("f4")]
    exact = model.predict_on_batch(x)
    assert fold_batch_norms(model) == 6
    folded = model.predict_on_batch(x)
    for a, b in zip(folded, exact):
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)
    assert not np.array_equal(folded[0], exact[0])
    graph = tf.function(lambda a, b: model([a, b], training=False)).get_concrete_function(
        *[tf.constant(v) for v in x]).graph
    # only the TimeDistributed wrappers' reshapes are left in the BatchNorms' scopes
    assert {op.type for op in graph.get_operations() if "_bn" in op.name} == {
        "Const", "Reshape"}
    # the classifier's kernels cover their whole input (7x7 on 7x7, 1x1 on
    # 1x1): one MatMul each; the mask head's 3x3 "same" ones stay Conv2D
    types = {name: {op.type for op in graph.get_operations() if f"/{name}" in op.name}
             for name in ("mrcnn_class_conv1", "mrcnn_class_conv2", "mrcnn_mask_conv1")}
    assert "MatMul" in types["mrcnn_class_conv1"] and "MatMul" in types["mrcnn_class_conv2"]
    assert "Conv2D" not in types["mrcnn_class_conv1"] | types["mrcnn_class_conv2"]
    assert "Conv2D" in types["mrcnn_mask_conv1"] and "MatMul" not in types["mrcnn_mask_conv1"]


def test_cpu_recipe_backbone_folds_at_inference_only():
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, small_resnet_graph(inputs, train_bn=False)[1:])
    _set_stats(model)
    bns = paired_batch_norms(model)
    assert len(bns) == 2 + 4 * 2 + 3          # stem, two per block, three shortcuts
    assert not any(bn._fold_in_fit for bn in bns)
    x = np.random.default_rng(1).normal(size=(1, 32, 32, 3)).astype("f4")
    exact = model.predict_on_batch(x)
    fold_batch_norms(model)
    for a, b in zip(model.predict_on_batch(x), exact):
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)


def test_bfloat16_pair_folds_within_bfloat16_rounding():
    """Under the bfloat16 policy of INFERENCE_PRECISION "bfloat16" the folded
    kernel is rounded to bfloat16 once: within bfloat16's 8 bits (relative
    2^-8 per rounding, a few roundings) of the float32 pair, and no
    FusedBatchNormV3 is left."""
    reference = _pair_model()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("bfloat16")
    try:
        model = _pair_model()
    finally:
        keras.config.set_dtype_policy(previous)
    model.set_weights(reference.get_weights())
    fold_batch_norms(model)
    ops = [op.type for op in _graph(model, X).get_operations()]
    assert "FusedBatchNormV3" not in ops and "Conv2D" in ops
    want = reference.predict_on_batch(X)
    got = np.asarray(model.predict_on_batch(X), np.float32)
    np.testing.assert_allclose(got, want, rtol=2 ** -6, atol=0.05 * np.abs(want).max())


@pytest.mark.parametrize("precision, fold", [("float32", True), ("float32_exact", False),
                                             ("bfloat16", True)])
def test_layer_args_say_whether_to_fold(precision, fold):
    config = type("C", (Config,), {"NAME": "c", "INFERENCE_PRECISION": precision})()
    assert layer_args(config)["inference"] == {"precision": precision, "fold_batch_norm": fold}


def test_config_rejects_an_unknown_precision_naming_the_values():
    with pytest.raises(ValueError, match="INFERENCE_PRECISION.*float32_exact"):
        type("C", (Config,), {"NAME": "c", "INFERENCE_PRECISION": "float16"})()


def test_scaled_kernels_wait_for_the_previous_convs_input_and_relus_stay_fusable():
    """At inference each pair's kernel scaling has a control input, a slice
    of the input of the pair traced before it (so the executor does not make
    every scaled kernel at the start and hold them all), the first pair none;
    no ReLU gets a control fan-out (that would stop Grappler fusing conv,
    bias and ReLU), and the pair after a ZeroPadding2D traces and runs (oneDNN
    fuses a Pad into the conv after it; an edge from the Pad into that conv's
    kernel scaling would be a cycle)."""
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Activation("relu")(conv_bn(x, 4, (3, 3), "conv_a", "bn_a", False))
    x = keras.layers.Activation("relu")(conv_bn(x, 4, (3, 3), "conv_b", "bn_b", False))
    model = keras.Model(inputs, x)
    _set_stats(model)
    exact = model.predict_on_batch(X)
    fold_batch_norms(model)
    graph = _graph(model, X)
    ops = graph.get_operations()
    # the variable reads of the kernel scaling, in the conv's name scope
    scaling = {name: [op for op in ops if f"/{name}" in op.name and op.type == "ReadVariableOp"]
               for name in ("conv_a", "conv_b")}
    assert len(scaling["conv_a"]) == 6 and len(scaling["conv_b"]) == 6
    assert not any(op.control_inputs for op in scaling["conv_a"])
    controls = {c.name for op in scaling["conv_b"] for c in op.control_inputs}
    assert len(controls) == 1 and graph.get_operation_by_name(
        controls.pop()).type == "StridedSlice"
    assert not any(c.type == "Relu" for op in ops for c in op.control_inputs)
    np.testing.assert_allclose(model.predict_on_batch(X), exact, rtol=0, atol=ATOL)
