"""Tests for mrcnn/weights.py: Keras 2 (Matterport) and Keras 3 HDF5 weight files.

A toy model with the structure patterns of Mask R-CNN and Matterport's names
(Conv2D + BatchNormalization backbone, a nested "rpn_model" applied to two
feature maps, TimeDistributed Conv2D / BatchNormalization / Dense /
Conv2DTranspose heads) stands in for the real graph, so these run in seconds.
Files in Matterport's layout are written here by hand with h5py.
"""
import os
import zlib

import h5py
import keras
import numpy as np
import pytest
from keras import layers as KL

from mrcnn import weight_files
from mrcnn import weights as W

NUM_ANCHORS = 3
FEATURE_DEPTH = 6


def build_rpn_model():
    """Nested RPN model, as Matterport's build_rpn_model (tiny depths)."""
    feature_map = KL.Input((None, None, FEATURE_DEPTH), name="input_rpn_feature_map")
    shared = KL.Conv2D(8, 3, padding="same", activation="relu",
                       name="rpn_conv_shared")(feature_map)
    logits = KL.Conv2D(2 * NUM_ANCHORS, 1, name="rpn_class_raw")(shared)
    deltas = KL.Conv2D(4 * NUM_ANCHORS, 1, name="rpn_bbox_pred")(shared)
    return keras.Model([feature_map], [logits, deltas], name="rpn_model")


def build_toy_model(num_classes=4):
    image = KL.Input((16, 16, 3), name="input_image")
    x = KL.ZeroPadding2D(1)(image)
    x = KL.Conv2D(4, 3, name="conv1")(x)
    x = KL.BatchNormalization(name="bn_conv1")(x)
    x = KL.Activation("relu")(x)
    p2 = KL.Conv2D(FEATURE_DEPTH, 1, name="fpn_c2p2")(x)
    p3 = KL.MaxPooling2D(2, name="fpn_p3")(p2)
    rpn = build_rpn_model()
    rpn2, rpn3 = rpn([p2]), rpn([p3])
    # Pooled ROIs: [batch, num_rois, 3, 3, depth]
    rois = KL.Input((5, 3, 3, FEATURE_DEPTH), name="input_pooled_rois")
    h = KL.TimeDistributed(KL.Conv2D(10, 3), name="mrcnn_class_conv1")(rois)
    h = KL.TimeDistributed(KL.BatchNormalization(), name="mrcnn_class_bn1")(h)
    h = KL.Reshape((5, 10), name="pool_squeeze")(h)
    logits = KL.TimeDistributed(KL.Dense(num_classes), name="mrcnn_class_logits")(h)
    bbox = KL.TimeDistributed(KL.Dense(4 * num_classes), name="mrcnn_bbox_fc")(h)
    bbox = KL.Reshape((5, num_classes, 4), name="mrcnn_bbox")(bbox)
    m = KL.TimeDistributed(KL.Conv2DTranspose(6, 2, strides=2), name="mrcnn_mask_deconv")(rois)
    m = KL.TimeDistributed(KL.Conv2D(num_classes, 1), name="mrcnn_mask")(m)
    return keras.Model([image, rois], [rpn2[0], rpn3[1], logits, bbox, m], name="mask_rcnn")


# Weight-carrying layers in `model.layers` order. Keras 3 orders a functional
# model's layers as Keras 2 did (by decreasing depth from the outputs, then by
# discovery order), so the heads fed by the shallow ROI input come early here.
TOY_WEIGHTED_LAYER_ORDER = [
    "conv1", "bn_conv1", "mrcnn_class_conv1", "mrcnn_class_bn1", "fpn_c2p2",
    "mrcnn_bbox_fc", "mrcnn_mask_deconv", "rpn_model", "mrcnn_class_logits", "mrcnn_mask",
]


def expected_manifest(num_classes=4):
    """The toy model's weights as Keras 2 stored them, worked out by hand."""
    n = num_classes
    entries = [
        ("conv1", "conv1/kernel:0", (3, 3, 3, 4)),
        ("conv1", "conv1/bias:0", (4,)),
        ("bn_conv1", "bn_conv1/gamma:0", (4,)),
        ("bn_conv1", "bn_conv1/beta:0", (4,)),
        ("bn_conv1", "bn_conv1/moving_mean:0", (4,)),
        ("bn_conv1", "bn_conv1/moving_variance:0", (4,)),
        ("fpn_c2p2", "fpn_c2p2/kernel:0", (1, 1, 4, 6)),
        ("fpn_c2p2", "fpn_c2p2/bias:0", (6,)),
        ("rpn_model", "rpn_conv_shared/kernel:0", (3, 3, 6, 8)),
        ("rpn_model", "rpn_conv_shared/bias:0", (8,)),
        ("rpn_model", "rpn_class_raw/kernel:0", (1, 1, 8, 6)),
        ("rpn_model", "rpn_class_raw/bias:0", (6,)),
        ("rpn_model", "rpn_bbox_pred/kernel:0", (1, 1, 8, 12)),
        ("rpn_model", "rpn_bbox_pred/bias:0", (12,)),
        ("mrcnn_class_conv1", "mrcnn_class_conv1/kernel:0", (3, 3, 6, 10)),
        ("mrcnn_class_conv1", "mrcnn_class_conv1/bias:0", (10,)),
        ("mrcnn_class_bn1", "mrcnn_class_bn1/gamma:0", (10,)),
        ("mrcnn_class_bn1", "mrcnn_class_bn1/beta:0", (10,)),
        ("mrcnn_class_bn1", "mrcnn_class_bn1/moving_mean:0", (10,)),
        ("mrcnn_class_bn1", "mrcnn_class_bn1/moving_variance:0", (10,)),
        ("mrcnn_class_logits", "mrcnn_class_logits/kernel:0", (10, n)),
        ("mrcnn_class_logits", "mrcnn_class_logits/bias:0", (n,)),
        ("mrcnn_bbox_fc", "mrcnn_bbox_fc/kernel:0", (10, 4 * n)),
        ("mrcnn_bbox_fc", "mrcnn_bbox_fc/bias:0", (4 * n,)),
        # Conv2DTranspose kernel is [kh, kw, cout, cin]
        ("mrcnn_mask_deconv", "mrcnn_mask_deconv/kernel:0", (2, 2, 6, 6)),
        ("mrcnn_mask_deconv", "mrcnn_mask_deconv/bias:0", (6,)),
        ("mrcnn_mask", "mrcnn_mask/kernel:0", (1, 1, 6, n)),
        ("mrcnn_mask", "mrcnn_mask/bias:0", (n,)),
    ]
    return sorted(entries, key=lambda e: TOY_WEIGHTED_LAYER_ORDER.index(e[0]))  # stable


# Layer order of a Matterport file: topological, weightless layers included,
# different from the order of the Keras 3 model's `layers`.
MATTERPORT_LAYER_ORDER = [
    "input_image", "zero_padding2d", "conv1", "bn_conv1", "activation",
    "fpn_c2p2", "fpn_p3", "input_rpn_feature_map_unused", "rpn_model",
    "input_pooled_rois", "mrcnn_class_conv1", "mrcnn_class_bn1", "pool_squeeze",
    "mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask_deconv", "mrcnn_mask",
]


def recipe_value(weight_name, shape):
    """A distinct, reproducible float32 array per weight name."""
    rng = np.random.default_rng(zlib.crc32(weight_name.encode()))
    return rng.standard_normal(shape).astype(np.float32)


def write_matterport_file(path, num_classes=4, strings="bytes", under_model_weights=False,
                          drop_layers=(), shuffle_bn=False, layer_order=None):
    """Writes a file in Matterport's Keras 2 layout with h5py, by hand.

    strings: "bytes" (fixed-length byte strings, as Keras 2 wrote them),
        "vlen" (variable-length str) or "chunked" (layer_names0/1, as Keras
        splits attributes too big for one object header).
    Returns {(group, weight name): array} of what was written.
    """
    manifest = [e for e in expected_manifest(num_classes) if e[0] not in drop_layers]
    groups = {}
    for group, name, shape in manifest:
        groups.setdefault(group, []).append(name)
    if shuffle_bn:  # a writer that listed BN statistics first
        groups["bn_conv1"] = groups["bn_conv1"][::-1]
    order = [n for n in (layer_order or MATTERPORT_LAYER_ORDER) if n not in drop_layers]

    def attr(values):
        if strings == "vlen":
            return np.array(values, dtype=h5py.string_dtype("utf-8"))
        return np.array([v.encode("utf8") for v in values]) if values else np.asarray([])

    written = {}
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if under_model_weights else f
        if strings == "chunked":
            root.attrs["layer_names0"] = attr(order[:7])
            root.attrs["layer_names1"] = attr(order[7:])
        else:
            root.attrs["layer_names"] = attr(order)
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.1.6"
        shapes = {(g, n): s for g, n, s in manifest}
        for layer_name in order:
            g = root.create_group(layer_name)
            names = groups.get(layer_name, [])
            g.attrs["weight_names"] = attr(names)
            for name in names:
                value = recipe_value(name, shapes[(layer_name, name)])
                g.create_dataset(name, data=value)
                written[(layer_name, name)] = value
    return written


def model_values(model):
    """{(group, weight name): array} of a model, via our manifest naming."""
    return {(layer.name, name): keras.ops.convert_to_numpy(w).copy()
            for layer in model.layers for w, name in W._layer_entries(layer)}


def assert_bit_exact(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.fixture(scope="module")
def toy():
    return build_toy_model()


@pytest.fixture
def fresh_toy():
    return build_toy_model()


########################################################################
# Naming and order
########################################################################

def test_manifest_matches_keras2_names(toy):
    assert [layer.name for layer in toy.layers if layer.weights] == TOY_WEIGHTED_LAYER_ORDER
    manifest = W.weight_manifest(toy)
    assert [tuple(e) for e in manifest] == expected_manifest()
    entry = manifest[0]
    assert (entry.group, entry.weight_name, str(entry.shape)) == \
        ("conv1", "conv1/kernel:0", "(3, 3, 3, 4)")


def test_manifest_names_follow_the_golden_tsv(toy, golden_dir):
    """Our naming of nested-model, TimeDistributed and BN weights is the one
    in mask_rcnn_coco.h5, for every toy layer that also exists there."""
    tsv = {}
    for line in (golden_dir / "matterport_r101_coco_weights.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            group, name, shape, dtype = line.split("\t")
            tsv.setdefault(group, []).append(name)
    ours = {}
    for e in W.weight_manifest(toy):
        ours.setdefault(e.group, []).append(e.weight_name)
    shared = set(ours) & set(tsv)
    assert {"conv1", "bn_conv1", "fpn_c2p2", "rpn_model", "mrcnn_class_conv1",
            "mrcnn_class_bn1", "mrcnn_class_logits", "mrcnn_bbox_fc",
            "mrcnn_mask_deconv", "mrcnn_mask"} <= shared
    for group in shared:
        assert ours[group] == tsv[group], group


@pytest.mark.parametrize("trainable", [True, False])
def test_keras3_weight_order_is_keras2_order(trainable):
    """layer.weights (Keras 3) lists weights in Keras 2's HDF5 order
    (trainable_weights + non_trainable_weights), trainable or frozen."""
    toy = build_toy_model()
    for layer in toy.layers:
        layer.trainable = trainable
    kinds = {layer.name: [w.name for w in layer.weights] for layer in toy.layers}
    for name in ("conv1", "fpn_c2p2", "mrcnn_class_conv1", "mrcnn_class_logits",
                 "mrcnn_bbox_fc", "mrcnn_mask_deconv", "mrcnn_mask"):
        assert kinds[name] == ["kernel", "bias"], name
    for name in ("bn_conv1", "mrcnn_class_bn1"):
        assert kinds[name] == ["gamma", "beta", "moving_mean", "moving_variance"], name
    assert kinds["rpn_model"] == ["kernel", "bias"] * 3
    for layer in toy.layers:
        legacy = list(layer.trainable_weights) + list(layer.non_trainable_weights)
        assert [id(w) for w in legacy] == [id(w) for w in layer.weights], layer.name
    # and the file order does not depend on it
    assert [tuple(e) for e in W.weight_manifest(toy)] == expected_manifest()


########################################################################
# Reading Matterport's layout
########################################################################

@pytest.mark.parametrize("strings", ["bytes", "vlen", "chunked"])
@pytest.mark.parametrize("under_model_weights", [False, True])
def test_load_matterport_layout_by_name(tmp_path, fresh_toy, strings, under_model_weights):
    path = tmp_path / "mask_rcnn_toy.h5"
    written = write_matterport_file(path, strings=strings,
                                    under_model_weights=under_model_weights)
    report = W.load_weights(fresh_toy, path, by_name=True, verbose=0)
    loaded = model_values(fresh_toy)
    assert loaded.keys() == written.keys()
    for key, value in written.items():
        assert_bit_exact(loaded[key], value)
    assert report.format == "keras2"
    assert report.missing == [] and report.skipped == [] and report.unused == []
    assert len(report.loaded) == 10


def test_load_matterport_layout_in_order(tmp_path, fresh_toy):
    # In-order loading pairs weight-carrying layers by position, so the file
    # must list them in the model's order (true for files we wrote).
    order = [layer.name for layer in fresh_toy.layers]
    written = write_matterport_file(tmp_path / "w.h5", layer_order=order)
    report = W.load_weights(fresh_toy, tmp_path / "w.h5", by_name=False, verbose=0)
    loaded = model_values(fresh_toy)
    for key, value in written.items():
        assert_bit_exact(loaded[key], value)
    assert not report.by_name and len(report.loaded) == 10


def test_load_in_order_layer_count_mismatch(tmp_path, fresh_toy):
    write_matterport_file(tmp_path / "w.h5", drop_layers=("fpn_c2p2",))
    with pytest.raises(W.WeightMismatchError, match="9 layers with weights, the model 10"):
        W.load_weights(fresh_toy, tmp_path / "w.h5", verbose=0)


def test_load_in_order_wrong_order_suggests_by_name(tmp_path, fresh_toy, monkeypatch):
    monkeypatch.setattr(W, "_MAX_LISTED", 4)
    write_matterport_file(tmp_path / "w.h5")   # Matterport's order differs from ours
    with pytest.raises(W.WeightMismatchError) as info:
        W.load_weights(fresh_toy, tmp_path / "w.h5", by_name=False, verbose=0)
    message = str(info.value)
    # Model layer #2 (mrcnn_class_conv1) meets file layer #2 (fpn_c2p2).
    assert ("layer 'mrcnn_class_conv1' (file layer #2, 'fpn_c2p2'), weight "
            "'mrcnn_class_conv1/kernel:0': the file has shape (1, 1, 4, 6) (stored as "
            "'fpn_c2p2/kernel:0'), the model expects (3, 3, 6, 10)") in message
    assert ("paired model layer 'mrcnn_class_conv1' with file layer 'fpn_c2p2'. "
            "Load by name instead: load_weights(..., by_name=True)") in message
    assert "exclude=" not in message
    # 11 problems: 4 misplaced Conv/Dense layers x 2 weights, 3 count mismatches
    assert "\n  ... and 7 more\n" in message


def test_weights_paired_by_name_within_a_layer(tmp_path, fresh_toy):
    written = write_matterport_file(tmp_path / "w.h5", shuffle_bn=True)
    W.load_weights(fresh_toy, tmp_path / "w.h5", by_name=True, verbose=0)
    bn = fresh_toy.get_layer("bn_conv1")
    for w in bn.weights:
        assert_bit_exact(keras.ops.convert_to_numpy(w), written[("bn_conv1", f"bn_conv1/{w.name}:0")])


def test_missing_layers_left_untouched_and_listed(tmp_path, fresh_toy, capsys):
    before = model_values(fresh_toy)
    write_matterport_file(tmp_path / "w.h5", drop_layers=("fpn_c2p2", "mrcnn_mask"))
    report = W.load_weights(fresh_toy, tmp_path / "w.h5", by_name=True, verbose=1)
    assert report.missing == ["fpn_c2p2", "mrcnn_mask"]
    after = model_values(fresh_toy)
    assert_bit_exact(after[("fpn_c2p2", "fpn_c2p2/kernel:0")],
                     before[("fpn_c2p2", "fpn_c2p2/kernel:0")])
    out = capsys.readouterr().out
    assert "fpn_c2p2, mrcnn_mask" in out and "Loaded weights of 8 layers" in out


def test_empty_attribute_and_weightless_groups(tmp_path):
    """A weightless layer whose weight_names has no data space (h5py.Empty)."""
    path = tmp_path / "w.h5"
    kernel = recipe_value("conv1/kernel:0", (3, 3, 3, 4))
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"input_1", b"conv1"])
        f.create_group("input_1").attrs["weight_names"] = h5py.Empty("S1")
        g = f.create_group("conv1")
        g.attrs["weight_names"] = np.array([b"conv1/kernel:0", b"conv1/bias:0"])
        g["conv1/kernel:0"] = kernel
        g["conv1/bias:0"] = np.arange(4, dtype=np.float32)
    small = keras.Sequential([KL.Input((16, 16, 3)), KL.Conv2D(4, 3, name="conv1")])
    report = W.load_weights(small, path, verbose=0)
    assert report.loaded == ["conv1"]
    assert_bit_exact(keras.ops.convert_to_numpy(small.layers[0].kernel), kernel)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(small.layers[0].bias),
                                  [0, 1, 2, 3])


def test_keras1_style_weight_names_load_by_position(tmp_path):
    """Old files (e.g. fchollet's ImageNet ResNet-50 notop, which Matterport's
    get_imagenet_weights() loads by name) use names like conv1_W:0 and
    bn_conv1_running_std:0; they pair by position within a layer."""
    path = tmp_path / "resnet50_notop.h5"
    kernel = recipe_value("conv1_W", (3, 3, 3, 4))
    stats = [np.full(4, k, dtype=np.float32) for k in range(4)]
    with h5py.File(path, "w") as f:   # no keras_version / backend attributes
        f.attrs["layer_names"] = np.array([b"input_1", b"conv1", b"bn_conv1"])
        f.create_group("input_1").attrs["weight_names"] = np.asarray([])
        g = f.create_group("conv1")
        g.attrs["weight_names"] = np.array([b"conv1_W:0", b"conv1_b:0"])
        g["conv1_W:0"], g["conv1_b:0"] = kernel, np.ones(4, np.float32)
        g = f.create_group("bn_conv1")
        names = [f"bn_conv1_{k}:0" for k in ("gamma", "beta", "running_mean", "running_std")]
        g.attrs["weight_names"] = np.array([n.encode() for n in names])
        for n, v in zip(names, stats):
            g[n] = v
    small = keras.Sequential([KL.Input((16, 16, 3)), KL.Conv2D(4, 3, name="conv1"),
                              KL.BatchNormalization(name="bn_conv1")])
    report = W.load_weights(small, path, by_name=True, verbose=0)
    assert report.loaded == ["conv1", "bn_conv1"]
    assert_bit_exact(keras.ops.convert_to_numpy(small.layers[0].kernel), kernel)
    bn = small.layers[1]
    for k, w in enumerate([bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance]):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), np.full(4, k))


def test_unused_file_layers_reported(tmp_path):
    write_matterport_file(tmp_path / "w.h5")
    small = keras.Sequential([KL.Input((16, 16, 3)), KL.Conv2D(4, 3, name="conv1")])
    report = W.load_weights(small, tmp_path / "w.h5", by_name=True, verbose=0)
    assert report.loaded == ["conv1"]
    assert "rpn_model" in report.unused and "conv1" not in report.unused
    assert_bit_exact(keras.ops.convert_to_numpy(small.get_layer("conv1").kernel),
                     recipe_value("conv1/kernel:0", (3, 3, 3, 4)))


########################################################################
# exclude and head mismatches
########################################################################

def test_head_shape_mismatch_names_layer_shapes_and_exclude(tmp_path, fresh_toy):
    write_matterport_file(tmp_path / "coco.h5", num_classes=81)
    before = model_values(fresh_toy)
    with pytest.raises(ValueError) as info:
        W.load_weights(fresh_toy, tmp_path / "coco.h5", by_name=True, verbose=0)
    message = str(info.value)
    assert isinstance(info.value, W.WeightMismatchError)
    assert str(tmp_path / "coco.h5") in message
    assert ("layer 'mrcnn_class_logits', weight 'mrcnn_class_logits/kernel:0': "
            "the file has shape (10, 81)") in message
    assert "the model expects (10, 4)" in message
    assert "'mrcnn_bbox_fc/kernel:0': the file has shape (10, 324)" in message
    assert ("'mrcnn_mask/kernel:0': the file has shape (1, 1, 6, 81), "
            "the model expects (1, 1, 6, 4)") in message
    assert ('exclude=["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]'
            in message)
    # Nothing was assigned: the error came before any layer was loaded.
    after = model_values(fresh_toy)
    for key in before:
        assert_bit_exact(after[key], before[key])


def test_exclude_heads_loads_the_rest(tmp_path, fresh_toy):
    written = write_matterport_file(tmp_path / "coco.h5", num_classes=81)
    before = model_values(fresh_toy)
    # exclude implies by_name, as in Matterport.
    report = W.load_weights(fresh_toy, tmp_path / "coco.h5", verbose=0,
                            exclude=["mrcnn_class_logits", "mrcnn_bbox_fc",
                                     "mrcnn_bbox", "mrcnn_mask"])
    assert report.by_name
    # in model order
    assert [n for n, _ in report.skipped] == ["mrcnn_bbox_fc", "mrcnn_class_logits",
                                              "mrcnn_mask"]
    after = model_values(fresh_toy)
    for (group, name), value in after.items():
        if group in W.HEAD_LAYERS:
            assert_bit_exact(value, before[(group, name)])
        else:
            assert_bit_exact(value, written[(group, name)])


def test_skip_mismatch_skips_heads(tmp_path, fresh_toy):
    written = write_matterport_file(tmp_path / "coco.h5", num_classes=81)
    report = W.load_weights(fresh_toy, tmp_path / "coco.h5", by_name=True,
                            skip_mismatch=True, verbose=0)
    # in model order
    assert [n for n, _ in report.skipped] == ["mrcnn_bbox_fc", "mrcnn_class_logits",
                                              "mrcnn_mask"]
    assert_bit_exact(model_values(fresh_toy)[("rpn_model", "rpn_bbox_pred/bias:0")],
                     written[("rpn_model", "rpn_bbox_pred/bias:0")])


########################################################################
# Bad files
########################################################################

def test_missing_file(tmp_path, toy):
    path = tmp_path / "nope.h5"
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        W.load_weights(toy, path, verbose=0)


def test_text_file_renamed_h5(tmp_path, toy):
    path = tmp_path / "mask_rcnn_coco.h5"
    path.write_text("<html>404 Not Found</html>\n")
    with pytest.raises(W.WeightFileError, match="not an HDF5 file") as info:
        W.load_weights(toy, path, by_name=True, verbose=0)
    assert str(path) in str(info.value)
    assert isinstance(info.value, OSError) and isinstance(info.value, ValueError)


def test_truncated_file(tmp_path, toy):
    path = tmp_path / "w.h5"
    W.save_weights(toy, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(W.WeightFileError) as info:
        W.load_weights(toy, path, by_name=True, verbose=0)
    assert str(path) in str(info.value)


def test_hdf5_file_of_unknown_layout(tmp_path, toy):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros(3))
    with pytest.raises(W.WeightFileError, match="neither a Keras 2 weight file"):
        W.load_weights(toy, path, verbose=0)


########################################################################
# Keras 3 files
########################################################################

@pytest.mark.parametrize("by_name", [False, True])
def test_keras3_weights_h5_round_trip(tmp_path, toy, fresh_toy, by_name):
    path = tmp_path / "toy.weights.h5"
    toy.save_weights(path)
    report = W.load_weights(fresh_toy, path, by_name=by_name, verbose=0)
    assert report.format == "keras3" and len(report.loaded) == 10
    expected, loaded = model_values(toy), model_values(fresh_toy)
    assert loaded.keys() == expected.keys()
    for key in expected:
        assert_bit_exact(loaded[key], expected[key])


def test_keras3_exclude_heads(tmp_path, fresh_toy):
    other = build_toy_model(num_classes=7)
    path = tmp_path / "seven.weights.h5"
    other.save_weights(path)
    before = model_values(fresh_toy)
    with pytest.raises(W.WeightMismatchError, match='exclude=\\["mrcnn_class_logits"'):
        W.load_weights(fresh_toy, path, by_name=True, verbose=0)
    W.load_weights(fresh_toy, path, exclude=list(W.HEAD_LAYERS), verbose=0)
    source, after = model_values(other), model_values(fresh_toy)
    for key, value in after.items():
        expected = before[key] if key[0] in W.HEAD_LAYERS else source[key]
        assert_bit_exact(value, expected)


def test_keras3_in_order_mismatch(tmp_path, fresh_toy):
    path = tmp_path / "seven.weights.h5"
    build_toy_model(num_classes=7).save_weights(path)
    before = model_values(fresh_toy)
    with pytest.raises(W.WeightMismatchError) as info:
        W.load_weights(fresh_toy, path, by_name=False, verbose=0)
    message = str(info.value)
    assert str(path) in message
    assert ("layer 'mrcnn_class_logits', weight 'mrcnn_class_logits/kernel:0': the file "
            "has shape (10, 7) (stored as '/layers/time_distributed_4/layer/vars/0'), "
            "the model expects (10, 4)") in message
    assert 'by_name=True, exclude=["mrcnn_class_logits", "mrcnn_bbox_fc",' in message
    after = model_values(fresh_toy)   # nothing half-loaded
    for key in before:
        assert_bit_exact(after[key], before[key])


def test_keras3_in_order_with_other_layer_names(tmp_path):
    """Auto-named layers differ between two builds: in order falls back to
    Keras' structural loader, by name finds nothing to load."""
    def build():
        return keras.Sequential([KL.Input((8, 8, 3)), KL.Conv2D(4, 3), KL.BatchNormalization()])
    first, second = build(), build()
    assert [layer.name for layer in first.layers] != [layer.name for layer in second.layers]
    path = tmp_path / "auto.weights.h5"
    first.save_weights(path)
    report = W.load_weights(second, path, by_name=True, verbose=0)
    assert report.loaded == [] and report.missing == [layer.name for layer in second.layers]
    report = W.load_weights(second, path, by_name=False, verbose=0)
    assert report.loaded == [layer.name for layer in second.layers]
    for a, b in zip(first.weights, second.weights):
        assert_bit_exact(keras.ops.convert_to_numpy(b), keras.ops.convert_to_numpy(a))
    # A mismatch in Keras' own loader is reported without the variables' values.
    third = keras.Sequential([KL.Input((8, 8, 3)), KL.Conv2D(5, 3), KL.BatchNormalization()])
    with pytest.raises(W.WeightMismatchError) as info:
        W.load_weights(third, path, by_name=False, verbose=0)
    assert str(path) in str(info.value) and "value=[" not in str(info.value)


def test_keras3_file_under_another_name(tmp_path, toy):
    """Recognized by content, not by the .weights.h5 suffix."""
    path = tmp_path / "toy.weights.h5"
    toy.save_weights(path)
    renamed = tmp_path / "mask_rcnn_toy_0003.h5"
    path.rename(renamed)
    for by_name in (False, True):
        model = build_toy_model()
        report = W.load_weights(model, renamed, by_name=by_name, verbose=0)
        assert report.format == "keras3" and len(report.loaded) == 10
        assert_bit_exact(model_values(model)[("rpn_model", "rpn_class_raw/kernel:0")],
                         model_values(toy)[("rpn_model", "rpn_class_raw/kernel:0")])
    # Keras' structural loader (needed when names differ) wants the suffix.
    other = keras.Sequential([KL.Input((16, 16, 3)), KL.Conv2D(4, 3)])
    with pytest.raises(W.WeightFileError, match="Rename it, or pass by_name=True"):
        W.load_weights(other, renamed, by_name=False, verbose=0)


def test_directory_instead_of_file(tmp_path, toy):
    with pytest.raises(W.WeightFileError, match="is a directory"):
        W.load_weights(toy, tmp_path, verbose=0)


########################################################################
# Writing
########################################################################

def test_writer_layout(tmp_path, toy):
    path = tmp_path / "mask_rcnn_toy_0001.h5"
    W.save_weights(toy, path)
    with h5py.File(path, "r") as f:
        names = f.attrs["layer_names"]
        assert names.dtype.kind == "S"   # fixed-length bytes, as Keras 2 wrote
        assert [n.decode() for n in names] == [layer.name for layer in toy.layers]
        # h5py stores a bytes scalar as a variable-length string and returns str,
        # as it does for Keras 2's files.
        assert weight_files._decode(f.attrs["backend"]) == "tensorflow"
        assert weight_files._decode(f.attrs["keras_version"]) == keras.__version__
        assert list(f["rpn_model"].attrs["weight_names"]) == [
            b"rpn_conv_shared/kernel:0", b"rpn_conv_shared/bias:0",
            b"rpn_class_raw/kernel:0", b"rpn_class_raw/bias:0",
            b"rpn_bbox_pred/kernel:0", b"rpn_bbox_pred/bias:0"]
        assert f["rpn_model/rpn_class_raw/kernel:0"].shape == (1, 1, 8, 6)
        assert f["mrcnn_class_conv1/mrcnn_class_conv1/kernel:0"].shape == (3, 3, 6, 10)
        assert f["bn_conv1/bn_conv1/moving_variance:0"].dtype == np.float32
        # A weightless layer (Keras names it, e.g. "activation" or "activation_7"
        # when other models were built first) gets an empty weight_names.
        weightless = [layer.name for layer in toy.layers if not layer.weights]
        assert weightless
        for name in weightless:
            assert len(f[name].attrs["weight_names"]) == 0
        # Every weight, read back the way Keras 2 reads it.
        manifest = []
        for layer_name in names:
            group = f[layer_name.decode()]
            for w in group.attrs["weight_names"]:
                manifest.append((layer_name.decode(), w.decode(), group[w.decode()].shape))
    assert manifest == expected_manifest()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]   # no temp file left
    # Same permissions as a file created with open(), not mkstemp's 0600.
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


@pytest.mark.parametrize("by_name", [True, False])
def test_writer_round_trip_bit_exact(tmp_path, toy, fresh_toy, by_name):
    path = tmp_path / "w.h5"
    W.save_weights(toy, path)
    report = W.load_weights(fresh_toy, path, by_name=by_name, verbose=0)
    assert len(report.loaded) == 10
    expected, loaded = model_values(toy), model_values(fresh_toy)
    for key in expected:
        assert_bit_exact(loaded[key], expected[key])
    # and Keras 3's own legacy-h5 reader agrees
    third = build_toy_model()
    third.load_weights(path, skip_mismatch=False) if not by_name else \
        third.load_weights(path, by_name=True)
    for key, value in model_values(third).items():
        assert_bit_exact(value, expected[key])


def test_atomic_write_keeps_old_file_on_failure(tmp_path, toy, monkeypatch):
    path = tmp_path / "mask_rcnn_toy_0001.h5"
    W.save_weights(toy, path)
    old_bytes = path.read_bytes()

    calls = []
    real = keras.ops.convert_to_numpy

    def failing_convert(x):
        calls.append(1)
        if len(calls) == 12:   # halfway through the weights
            raise OSError(28, "No space left on device")
        return real(x)

    monkeypatch.setattr(W.keras.ops, "convert_to_numpy", failing_convert)
    other = build_toy_model()
    with pytest.raises(OSError, match="No space left"):
        W.save_weights(other, path)
    assert path.read_bytes() == old_bytes
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_save_creates_directory_and_overwrites(tmp_path, toy, fresh_toy):
    path = tmp_path / "logs" / "toy20240101T0000" / "mask_rcnn_toy_0002.h5"
    W.save_weights(fresh_toy, path)
    W.save_weights(toy, os.fspath(path))   # overwrite with other values
    W.load_weights(fresh_toy, path, verbose=0)
    assert_bit_exact(model_values(fresh_toy)[("conv1", "conv1/kernel:0")],
                     model_values(toy)[("conv1", "conv1/kernel:0")])
