"""Training: the training graph, presets, train step, data pipeline, train().

One tiny training model (ResNet-50, 64x64 images, 8 ROIs per image) is built
per module and shared: building and tracing the train step dominate the
run time, so the tests that fit reuse the same compiled model.
"""
import json
import logging
import os

import h5py
import keras
import numpy as np
import pytest

from mrcnn import training, utils
from mrcnn.config import Config
from mrcnn.datasets.shapes import ShapesDataset
from mrcnn.graph import training_graph
from mrcnn.graph.training_graph import (ActiveClassIds, Anchors, FirstRows, LossOutput,
                                        NormBoxes, max_positive_rois)

LOSS_NAMES = ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss",
              "mrcnn_bbox_loss", "mrcnn_mask_loss")


class TinyConfig(Config):
    NAME = "tiny"
    BACKBONE = "resnet50"
    NUM_CLASSES = 1 + 3  # background + square, circle, triangle
    GPU_COUNT = 1
    IMAGES_PER_GPU = 2
    IMAGE_MIN_DIM = 64
    IMAGE_MAX_DIM = 64
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    RPN_TRAIN_ANCHORS_PER_IMAGE = 32
    PRE_NMS_LIMIT = 256
    POST_NMS_ROIS_TRAINING = 64
    POST_NMS_ROIS_INFERENCE = 32
    TRAIN_ROIS_PER_IMAGE = 8
    MAX_GT_INSTANCES = 4
    MINI_MASK_SHAPE = (16, 16)
    FPN_CLASSIF_FC_LAYERS_SIZE = 64
    STEPS_PER_EPOCH = 2
    VALIDATION_STEPS = 1


def shapes(count, seed):
    ds = ShapesDataset()
    ds.load_shapes(count, 64, 64, seed=seed)
    ds.prepare()
    return ds


@pytest.fixture(scope="module")
def config():
    return TinyConfig()


@pytest.fixture(scope="module")
def model(config, tmp_path_factory):
    """A MaskRCNN in training mode (built once for the module)."""
    from mrcnn import model as modellib
    keras.utils.set_random_seed(1)
    return modellib.MaskRCNN(mode="training", config=config,
                             model_dir=str(tmp_path_factory.mktemp("logs")))


# ---------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------

def test_training_graph_inputs_and_outputs(model, config):
    km = model.keras_model
    assert isinstance(km, training.MaskRCNNTrainingModel)
    # 64x64 image: levels 16, 8, 4, 2, 1 cells, 3 anchors each
    A = 3 * (16 ** 2 + 8 ** 2 + 4 ** 2 + 2 ** 2 + 1)
    expected = {
        "input_image": ((None, 64, 64, 3), "float32"),
        "input_image_meta": ((None, 12 + 4), "float32"),
        "input_rpn_match": ((None, A, 1), "int32"),
        "input_rpn_bbox": ((None, 32, 4), "float32"),
        "input_gt_class_ids": ((None, 4), "int32"),
        "input_gt_boxes": ((None, 4, 4), "float32"),
        "input_gt_masks": ((None, 16, 16, 4), "bool"),
    }
    got = {t.name: (tuple(t.shape), t.dtype) for t in km.inputs}
    assert got == expected
    names = [t._keras_history.operation.name for t in km.outputs]
    assert names == ["rpn_class_logits", "rpn_class", "rpn_bbox", "mrcnn_class_logits",
                     "mrcnn_class", "mrcnn_bbox", "mrcnn_mask", "ROI", "output_rois",
                     *LOSS_NAMES]
    shapes_ = {n: tuple(t.shape) for n, t in zip(names, km.outputs)}
    assert shapes_["ROI"] == (None, 64, 4)
    assert shapes_["output_rois"] == (None, 8, 4)
    # The mask head runs on the int(8 * 0.33) = 2 rows that can be positive.
    assert shapes_["mrcnn_mask"] == (None, 2, 28, 28, 4)
    assert shapes_["mrcnn_bbox"] == (None, 8, 4, 4)
    for n in LOSS_NAMES:
        assert shapes_[n] == ()
    for n in ("proposal_targets", "anchors", "rpn_model", "roi_align_classifier",
              "roi_align_mask", "mrcnn_class_logits", "res4f_out", "fpn_p6"):
        km.get_layer(n)
    # The anchors are a constant, not a weight of the model.
    assert not any("anchor" in w.path for w in km.weights)


def test_frozen_backbone_batch_norms_are_folded_in_the_training_step(model, config):
    """TRAIN_BN False: in fit() every backbone BatchNorm is folded into its
    convolution (no batch-normalization op left for them); the heads' six
    run as one FusedBatchNormV3 each (folding them too gave no measurable
    gain on the shapes step: 2.84-3.08 s against 2.86-2.88 s in alternating
    runs; the heads' pairs fold at inference only). At inference
    (training=False) the training model's BatchNorms run as written (Keras'
    formula, no fused op): only inference models fold them there."""
    import tensorflow as tf
    assert config.TRAIN_BN is False
    km = model.keras_model
    bns = [layer for layer in _all_layers(km) if type(layer).__name__ == "BatchNorm"]
    assert len(bns) == 53 + 6  # ResNet-50's 53, mrcnn_class_bn1/2, mrcnn_mask_bn1..4
    paired = [bn for bn in bns if bn._folded_conv is not None]
    assert len(paired) == 53 + 6
    folded = [bn for bn in paired if bn._fold_in_fit]
    assert len(folded) == 53 and all(bn.name.startswith("bn") for bn in folded)
    assert not any(bn._fold_at_inference for bn in bns)
    inputs = [tf.zeros((config.BATCH_SIZE,) + tuple(t.shape[1:]), t.dtype) for t in km.inputs]

    def op_types(training):
        fn = tf.function(lambda x: km(x, training=training))
        return [op.type for op in fn.get_concrete_function(inputs).graph.get_operations()]

    assert op_types(True).count("FusedBatchNormV3") == 6
    assert op_types(False).count("FusedBatchNormV3") == 0


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        elif isinstance(layer, keras.layers.TimeDistributed):
            yield layer.layer
        else:
            yield layer


def test_anchor_layer_is_the_numpy_pyramid(config):
    layer = training_graph.anchors_layer(config)
    pixels = utils.generate_pyramid_anchors(
        config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
        np.array([[16, 16], [8, 8], [4, 4], [2, 2], [1, 1]]), config.BACKBONE_STRIDES, 1)
    out = keras.ops.convert_to_numpy(layer(np.zeros((3, 64, 64, 3), np.float32)))
    assert out.shape == (3, len(pixels), 4)
    np.testing.assert_array_equal(out[2], utils.norm_boxes(pixels, (64, 64)).astype(np.float32))
    # First anchor: scale 8, ratio 0.5 at cell (0, 0) of P2 (stride 4, centre 0):
    # height 8/sqrt(.5) = 11.31, width 8*sqrt(.5) = 5.66 -> normalized by 63.
    h, w = 8 / np.sqrt(0.5), 8 * np.sqrt(0.5)
    np.testing.assert_allclose(out[0, 0], [-h / 2 / 63, -w / 2 / 63, (h / 2 - 1) / 63,
                                           (w / 2 - 1) / 63], rtol=1e-5)
    clone = Anchors.from_config(json.loads(json.dumps(layer.get_config())))
    np.testing.assert_array_equal(clone.anchor_array(), layer.anchor_array())


def test_small_layers_round_trip_and_values():
    boxes = np.array([[[10, 20, 30, 40], [0, 0, 0, 0]]], np.float32)
    image = np.zeros((1, 65, 129, 3), np.float32)
    out = keras.ops.convert_to_numpy(NormBoxes()([boxes, image]))
    # (y1/(H-1), x1/(W-1), (y2-1)/(H-1), (x2-1)/(W-1)); padding stays zero.
    np.testing.assert_allclose(out[0, 0], [10 / 64, 20 / 128, 29 / 64, 39 / 128], rtol=1e-6)
    np.testing.assert_array_equal(out[0, 1], [0, 0, 0, 0])
    meta = np.arange(2 * 16, dtype=np.float32).reshape(2, 16)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ActiveClassIds()(meta)),
                                  meta[:, 12:])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(FirstRows(2)(meta[:, :, None])), meta[:, :2, None])
    for layer in (NormBoxes(name="n"), ActiveClassIds(name="a"), FirstRows(3, name="f"),
                  LossOutput("mrcnn_mask_loss")):
        cfg = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
        clone = keras.saving.deserialize_keras_object(cfg)
        assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="unknown loss"):
        LossOutput("mask_loss")


def test_mask_loss_on_the_positive_rows_equals_the_full_loss(config):
    """The mask head only sees the first P rows; the loss is Matterport's."""
    from mrcnn.losses import mrcnn_mask_loss_graph
    T, P = 32, max_positive_rois(
        type("C", (), {"TRAIN_ROIS_PER_IMAGE": 32, "ROI_POSITIVE_RATIO": 0.33}))
    assert P == 10
    rng = np.random.default_rng(0)
    class_ids = np.zeros((2, T), np.int32)
    class_ids[0, :10] = rng.integers(1, 4, 10)  # as many positives as allowed
    class_ids[1, :3] = rng.integers(1, 4, 3)    # fewer
    target = (rng.random((2, T, 28, 28)) > 0.5).astype(np.float32)
    pred = rng.random((2, T, 28, 28, 4)).astype(np.float32)
    full = float(mrcnn_mask_loss_graph(target, class_ids, pred))
    first = float(mrcnn_mask_loss_graph(target[:, :P], class_ids[:, :P], pred[:, :P]))
    assert full > 0
    np.testing.assert_allclose(first, full, rtol=1e-6)


# ---------------------------------------------------------------------------
# Trainable layers
# ---------------------------------------------------------------------------

def _trainable_layer_names(km):
    names = set()
    for layer in km.layers:
        if isinstance(layer, keras.Model):
            names |= {f"{layer.name}/{n}" for n in _trainable_layer_names(layer)}
        elif layer.trainable_weights:
            names.add(layer.name)
    return names


def test_presets_select_the_expected_layers(model):
    km = model.keras_model
    heads = training.set_trainable(km, "heads", verbose=0)
    assert set(heads) == _trainable_layer_names(km)
    assert "rpn_model/rpn_conv_shared" in heads and "fpn_c5p5" in heads
    assert "mrcnn_mask_deconv" in heads and "mrcnn_class_logits" in heads
    assert not any(n.startswith(("res", "bn", "conv1")) for n in heads)
    # As Matterport: the heads' BatchNorms are selected (gamma and beta
    # train; with TRAIN_BN False their moving statistics never change).
    assert "mrcnn_class_bn1" in heads and km.get_layer("mrcnn_class_bn1").trainable
    assert not km.get_layer("res2a_branch2a").trainable
    assert not km.get_layer("bn2a_branch2a").trainable
    # Kernels and biases of 8 FPN convs, 3 RPN convs, 2 class convs, 2 denses,
    # 4 mask convs, the deconv and the mask conv; gamma and beta of the 2 class
    # and 4 mask BatchNorms.
    assert len(km.trainable_weights) == 2 * (8 + 3 + 2 + 2 + 4 + 1 + 1) + 2 * (2 + 4)

    four = set(training.set_trainable(km, "4+", verbose=0))
    assert {"res4a_branch2a", "res4f_branch2c", "res5c_branch2c", "fpn_p2"} <= four
    assert "bn4a_branch2a" in four
    assert not any(n.startswith(("res2", "res3", "bn2", "bn3", "bn_conv1")) for n in four)
    assert four == set(heads) | {n for n in four
                                 if n.startswith(("res4", "res5", "bn4", "bn5"))}
    three = set(training.set_trainable(km, "3+", verbose=0))
    assert "res3a_branch2a" in three and "res2c_branch2c" not in three
    five = set(training.set_trainable(km, "5+", verbose=0))
    assert "res5a_branch1" in five and "res4a_branch2a" not in five
    everything = set(training.set_trainable(km, "all", verbose=0))
    assert "conv1" in everything and "bn_conv1" in everything
    # ResNet-50: 53 convs and 53 BatchNorms; FPN 8; RPN 3; heads: 2 class
    # convs and BatchNorms, 2 denses, 4 mask convs and BatchNorms, deconv,
    # mask conv.
    assert len(everything) == 53 * 2 + 8 + 3 + 2 * 2 + 2 + 4 * 2 + 1 + 1
    custom = training.set_trainable(km, r"mrcnn\_mask.*", verbose=0)
    assert set(custom) == {"mrcnn_mask_conv1", "mrcnn_mask_conv2", "mrcnn_mask_conv3",
                           "mrcnn_mask_conv4", "mrcnn_mask_deconv", "mrcnn_mask",
                           "mrcnn_mask_bn1", "mrcnn_mask_bn2", "mrcnn_mask_bn3",
                           "mrcnn_mask_bn4"}
    with pytest.raises(ValueError, match="preset"):
        training.set_trainable(km, "res(", verbose=0)


def test_losses_are_weighted_and_decay_matches_matterport(model):
    km = model.keras_model
    training.set_trainable(km, "heads", verbose=0)
    decay = 0
    for w in km.trainable_weights:
        if "gamma" in w.path or "beta" in w.path:
            continue
        v = keras.ops.convert_to_numpy(w).astype(np.float64)
        decay += np.sum(v ** 2) / v.size
    decay *= model.config.WEIGHT_DECAY
    assert decay > 0
    np.testing.assert_allclose(float(km.regularization_loss()), decay, rtol=1e-4)

    outputs = [None] * len(km.outputs)
    values = {"rpn_class_loss": 1.0, "rpn_bbox_loss": 2.0, "mrcnn_class_loss": 3.0,
              "mrcnn_bbox_loss": 4.0, "mrcnn_mask_loss": 5.0}
    for n, v in values.items():
        outputs[km._loss_index[n]] = np.float32(v)
    saved = dict(km.loss_weights)
    try:
        km.loss_weights.update({"rpn_bbox_loss": 0.5, "mrcnn_mask_loss": 2.0})
        losses = {k: float(v) for k, v in km.compute_losses(outputs).items()}
    finally:
        km.loss_weights = saved
    assert losses["rpn_bbox_loss"] == 1.0 and losses["mrcnn_mask_loss"] == 10.0
    np.testing.assert_allclose(losses["loss"], 1 + 1 + 3 + 4 + 10 + decay, rtol=1e-6)


# ---------------------------------------------------------------------------
# Data pipeline
# ---------------------------------------------------------------------------

def test_data_sequence_batches_are_padded_and_deterministic(config):
    ds = shapes(6, seed=3)
    seq = training.DataSequence(ds, config, steps=3, seed=7)
    (batch,) = seq[1]
    assert batch["input_image"].shape == (2, 64, 64, 3)
    assert batch["input_gt_masks"].dtype == bool and batch["input_gt_masks"].shape == (2, 16, 16, 4)
    assert batch["input_rpn_match"].shape == (2, 3 * 341, 1)
    assert batch["input_rpn_bbox"].shape == (2, 32, 4)
    n = (batch["input_gt_class_ids"] > 0).sum(axis=1)
    assert np.all(n >= 1)
    for b in range(2):  # zero padding after the real instances
        assert np.all(batch["input_gt_boxes"][b, n[b]:] == 0)
        assert not batch["input_gt_masks"][b, :, :, n[b]:].any()
        assert np.all(batch["input_gt_boxes"][b, :n[b], 2:] > batch["input_gt_boxes"][b, :n[b], :2])
    # The molded image is the image minus MEAN_PIXEL.
    image_id = int(batch["input_image_meta"][0, 0])
    np.testing.assert_allclose(batch["input_image"][0] + config.MEAN_PIXEL,
                               ds.load_image(image_id), atol=1e-4)
    # The images of a batch are a function of its index (worker threads ask
    # in any order); only the RPN's random anchor sampling differs.
    again = seq[1][0]
    for k in batch:
        if k not in ("input_rpn_match", "input_rpn_bbox"):
            np.testing.assert_array_equal(batch[k], again[k])
    assert (batch["input_rpn_match"] == 1).sum() == (again["input_rpn_match"] == 1).sum()
    # One epoch (3 batches of 2) is one pass over the 6 images, shuffled anew
    # each epoch.
    def epoch_ids():
        return [int(seq[i][0]["input_image_meta"][b, 0]) for i in range(3) for b in range(2)]
    first = epoch_ids()
    seq.on_epoch_end()
    second = epoch_ids()
    assert sorted(first) == sorted(second) == list(range(6))
    assert first != second


def test_augmentation_except_for_listed_sources(config):
    calls = []

    def flip(image, masks):  # albumentations' keyword contract
        calls.append(len(masks))
        return {"image": image[:, ::-1], "masks": [m[:, ::-1] for m in masks]}

    ds = shapes(2, seed=4)
    plain = training.DataSequence(ds, config, shuffle=False, steps=1)[0][0]
    flipped = training.DataSequence(ds, config, shuffle=False, steps=1, augmentation=flip)[0][0]
    assert len(calls) == 2
    np.testing.assert_array_equal(flipped["input_image"], plain["input_image"][:, :, ::-1])
    # Boxes follow the flip: x1' = 64 - x2, x2' = 64 - x1.
    n = (plain["input_gt_class_ids"][0] > 0).sum()
    box, fbox = plain["input_gt_boxes"][0, :n], flipped["input_gt_boxes"][0, :n]
    np.testing.assert_array_equal(fbox[:, [1, 3]], 64 - box[:, [3, 1]])
    skipped = training.DataSequence(ds, config, shuffle=False, steps=1, augmentation=flip,
                                    no_augmentation_sources=["shapes"])[0][0]
    assert len(calls) == 2
    np.testing.assert_array_equal(skipped["input_image"], plain["input_image"])


class DegenerateDataset(utils.Dataset):
    """Shapes images with the ground truth a real data set gets wrong."""

    CASES = ("normal", "no_instances", "empty_mask", "one_pixel_wide", "too_many", "crowd")

    def __init__(self, bad_class=False):
        super().__init__()
        self.bad_class = bad_class
        self.shapes = shapes(len(self.CASES), seed=11)
        for i, name in enumerate(SHAPE_NAMES):
            self.add_class("shapes", i + 1, name)
        for i, case in enumerate(self.CASES):
            self.add_image("shapes", image_id=i, path=f"synthetic/{case}.png", case=case)
        self.prepare()

    def load_image(self, image_id):
        return self.shapes.load_image(image_id)

    def load_mask(self, image_id):
        case = self.image_info[image_id]["case"]
        mask, class_ids = self.shapes.load_mask(image_id)
        if self.bad_class and case == "normal":
            class_ids = class_ids.copy()
            class_ids[0] = 7
        if case == "no_instances":
            return np.zeros((64, 64, 0), bool), np.zeros([0], np.int32)
        if case == "empty_mask":
            mask = np.concatenate([mask, np.zeros((64, 64, 1), bool)], axis=2)
            class_ids = np.append(class_ids, 1)
        if case == "one_pixel_wide":
            line = np.zeros((64, 64, 1), bool)
            line[10:40, 30] = True  # a box of normalized width 0
            mask, class_ids = line, np.array([2], np.int32)
        if case == "too_many":
            extra = np.zeros((64, 64, 6), bool)
            for k in range(6):
                extra[5 + 9 * k:12 + 9 * k, 5:15, k] = True
            mask = np.concatenate([mask, extra], axis=2)
            class_ids = np.concatenate([class_ids, np.ones(6, np.int32)])
        if case == "crowd":
            crowd = np.zeros((64, 64, 1), bool)
            crowd[40:60, 40:60] = True
            mask = np.concatenate([mask, crowd], axis=2)
            class_ids = np.append(class_ids, -1)
        return mask, class_ids.astype(np.int32)


SHAPE_NAMES = ("square", "circle", "triangle")


def test_bad_ground_truth_raises_naming_the_image(config):
    seq = training.DataSequence(DegenerateDataset(bad_class=True), config, shuffle=False, steps=3)
    with pytest.raises(ValueError, match=r"(?s)image id 0.*synthetic/normal\.png.*\[7\]"):
        seq[0]

    class Big(TinyConfig):
        IMAGE_MIN_DIM = 128
        IMAGE_MAX_DIM = 128
    mixed = Big()
    mixed.IMAGE_SHAPE = config.IMAGE_SHAPE  # images load at 128, the graph wants 64
    seq = training.DataSequence(shapes(2, seed=1), mixed, shuffle=False, steps=1)
    with pytest.raises(ValueError, match=r"Image 0 .*\(128, 128\).*IMAGE_SHAPE \(64, 64\)"):
        seq.load(0)


def test_unreadable_images_are_skipped_then_raised(config):
    class Broken(utils.Dataset):
        def __init__(self, good):
            super().__init__()
            for i, name in enumerate(SHAPE_NAMES):
                self.add_class("shapes", i + 1, name)
            for i in range(8):
                self.add_image("shapes", image_id=i, path=f"broken/{i}.png")
            self.prepare()
            self.good = good
            self.inner = shapes(8, seed=5)

        def load_image(self, image_id):
            if image_id not in self.good:
                raise OSError(f"cannot read broken/{image_id}.png")
            return self.inner.load_image(image_id)

        def load_mask(self, image_id):
            mask, _ = self.inner.load_mask(image_id)
            return mask, np.ones(mask.shape[-1], np.int32)

    with pytest.raises(ValueError, match="has 4 classes.*NUM_CLASSES is 5"):
        class Five(TinyConfig):
            NUM_CLASSES = 5
        training.DataSequence(Broken(good={2, 3}), Five(), steps=1)
    seq = training.DataSequence(Broken(good={2, 3}), config, shuffle=False, steps=1)
    (batch,) = seq[0]  # images 0 and 1 fail, 2 and 3 fill the batch
    assert list(batch["input_image_meta"][:, 0]) == [2, 3] and seq.stats["load_error"] == 2
    seq = training.DataSequence(Broken(good=set()), config, shuffle=False, steps=1)
    with pytest.raises(RuntimeError, match="6 images failed to load"):
        seq[0]


# ---------------------------------------------------------------------------
# train(), checkpoints, resuming
# ---------------------------------------------------------------------------

def _finite_named_losses(history, prefix=""):
    for n in ("loss",) + LOSS_NAMES:
        values = history.history[prefix + n]
        assert np.all(np.isfinite(values)), (prefix + n, values)


def test_train_checkpoints_and_resumes(model, config):
    train_ds, val_ds = shapes(8, seed=1), shapes(4, seed=2)
    history = training.train(model, train_ds, val_ds, learning_rate=0.01, epochs=1,
                             layers="heads", verbose=0, seed=0)
    assert history.epoch == [0] and model.epoch == 1
    _finite_named_losses(history)
    _finite_named_losses(history, "val_")
    # Heads preset: the backbone did not move.
    assert not model.keras_model.get_layer("res2a_branch2a").trainable

    first = os.path.join(model.log_dir, "mask_rcnn_tiny_0001.h5")
    assert os.path.basename(model.checkpoint_path) == "mask_rcnn_tiny_{epoch:04d}.h5"
    assert os.path.isfile(first)
    try:
        import tensorboard  # noqa: F401
        logs = ["train", "validation"]
    except ImportError:
        logs = ["history.csv"]
    assert sorted(os.listdir(model.log_dir)) == sorted(["mask_rcnn_tiny_0001.h5"] + logs)
    with h5py.File(first, "r") as f:  # Keras 2 layout, Matterport's names
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        assert names == [layer.name for layer in model.keras_model.layers]
        rpn = [n.decode() if isinstance(n, bytes) else n
               for n in f["rpn_model"].attrs["weight_names"]]
        assert rpn[0].startswith("rpn_conv_shared/kernel")
        assert f["conv1"][f["conv1"].attrs["weight_names"][0]].shape == (7, 7, 3, 64)
        saved_logits = np.array(f["mrcnn_class_logits"][
            f["mrcnn_class_logits"].attrs["weight_names"][0]])
    np.testing.assert_array_equal(
        saved_logits, model.keras_model.get_layer("mrcnn_class_logits").get_weights()[0])

    # Resume: find_last -> load_weights restores the epoch and the run directory.
    log_dir = model.log_dir
    last = model.find_last()
    assert last == first
    model.load_weights(last, by_name=True)
    assert model.epoch == 1 and model.log_dir == log_dir
    traced = model.keras_model.train_function
    momentums = model.keras_model.optimizer.momentums
    history = training.train(model, train_ds, None, learning_rate=0.005, epochs=2,
                             layers="heads", verbose=0, seed=0)
    assert history.epoch == [1] and model.epoch == 2
    _finite_named_losses(history)
    # Each train() starts a fresh SGD state (zero momentum), as Matterport's
    # compile() did, on the same optimizer and traced step (not rebuilt);
    # its step count is the global step, epoch 1 * STEPS_PER_EPOCH at the
    # start (where a learning-rate schedule must resume), 2 * at the end.
    assert model.keras_model.train_function is traced
    assert model.keras_model.optimizer.momentums is momentums
    assert int(model.keras_model.optimizer.iterations) == 2 * config.STEPS_PER_EPOCH
    np.testing.assert_allclose(float(model.keras_model.optimizer.learning_rate), 0.005)
    assert os.path.isfile(os.path.join(log_dir, "mask_rcnn_tiny_0002.h5"))
    assert model.find_last().endswith("mask_rcnn_tiny_0002.h5")
    # epochs is the final epoch: asking for 2 again trains nothing.
    history = training.train(model, train_ds, None, learning_rate=0.01, epochs=2,
                             layers="heads", verbose=0)
    assert history.epoch == [] and model.epoch == 2


def test_compile_again_resets_the_state_and_sets_the_step(model):
    """A second compile with the same trainable weights keeps the optimizer
    (and the traced step) but zeroes its momentum and puts its step count at
    initial_step; a schedule instead of a float makes a new optimizer."""
    km = model.keras_model
    if km.optimizer is None:
        training.set_trainable(km, "heads", verbose=0)
        training.compile_model(km, 0.01, 0.9, 5.0)
        km.optimizer.build(km.trainable_variables)
    optimizer = km.optimizer
    for m in optimizer.momentums:
        m.assign(keras.ops.ones(m.shape, m.dtype))
    training.compile_model(km, 0.02, 0.9, 5.0, initial_step=30)
    assert km.optimizer is optimizer and int(optimizer.iterations) == 30
    assert all(float(keras.ops.max(keras.ops.abs(m))) == 0.0 for m in optimizer.momentums)
    np.testing.assert_allclose(float(optimizer.learning_rate), 0.02)
    schedule = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=100)
    training.compile_model(km, schedule, 0.9, 5.0, initial_step=50)
    assert km.optimizer is not optimizer and int(km.optimizer.iterations) == 50
    np.testing.assert_allclose(float(km.optimizer.learning_rate), float(schedule(50)),
                               rtol=1e-6)


def test_degenerate_ground_truth_trains_with_finite_losses(model, config, caplog):
    """No instances, an empty mask, a one-pixel-wide box, more instances
    than MAX_GT_INSTANCES, a crowd box: a few steps, every loss finite."""
    km = model.keras_model
    if km.optimizer is None:  # run alone; otherwise reuse the traced train step
        training.set_trainable(km, "heads", verbose=0)
        training.compile_model(km, 0.01, 0.9, 5.0)
    ds = DegenerateDataset()
    seq = training.DataSequence(ds, config, shuffle=True, steps=5, seed=3)
    with caplog.at_level(logging.WARNING, logger="mrcnn"):
        history = km.fit(seq, epochs=1, verbose=0)
    _finite_named_losses(history)
    for w in km.weights:
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(w))), w.path
    # 5 batches of 2 from a 6-image stream: the image without instances was
    # met and skipped, with one warning naming it.
    assert seq.stats["no_instances"] >= 1
    assert any("synthetic/no_instances.png" in r.getMessage() for r in caplog.records)
    # The one-pixel-wide instance is kept (never a positive ROI, still an
    # RPN target); the crowd one too.
    item = seq.load(3)
    assert item[4].tolist() == [2] and item[5][0, 3] - item[5][0, 1] == 1
    assert (seq.load(5)[4] == -1).sum() == 1
    assert len(seq.load(4)[4]) == config.MAX_GT_INSTANCES


def test_checkpoint_write_is_atomic(model, tmp_path, monkeypatch):
    from mrcnn import weight_files
    cb = training.Checkpoint(str(tmp_path / "mask_rcnn_tiny_{epoch:04d}.h5"))
    cb.set_model(model.keras_model)
    cb.on_epoch_end(0)
    path = tmp_path / "mask_rcnn_tiny_0001.h5"
    before = path.read_bytes()

    def crash(f, keras_model):
        f.create_group("conv1")
        raise OSError("disk full")
    monkeypatch.setattr(weight_files, "_write_keras2", crash)
    with pytest.raises(OSError, match="disk full"):
        cb.on_epoch_end(0)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["mask_rcnn_tiny_0001.h5"]


@pytest.mark.parametrize("nesterov", [False, True])
def test_clipped_momentum_sgd_matches_keras_sgd_with_clipnorm(nesterov):
    """ClippedMomentumSGD (fused kernel, clip factor folded into the learning
    rate) gives Keras' SGD(momentum, clipnorm) weights step after step: one
    gradient above the clip norm (clipped), one below (untouched), one zero."""
    import tensorflow as tf
    rng = np.random.default_rng(0)
    init = [rng.normal(size=(3, 4)).astype("f4"), rng.normal(size=(5,)).astype("f4"),
            rng.normal(size=(2, 2)).astype("f4")]
    grads = [[rng.normal(size=w.shape).astype("f4") * s for w, s in zip(init, (10.0, 0.1, 0.0))]
             for _ in range(3)]
    assert np.linalg.norm(grads[0][0]) > 5.0 > np.linalg.norm(grads[0][1])

    def run(optimizer):
        variables = [keras.Variable(w) for w in init]
        for step in grads:
            optimizer.apply([tf.constant(g) for g in step], variables)
        return [v.numpy() for v in variables]

    ours = run(training.ClippedMomentumSGD(0.1, 0.9, clip_norm=5.0, nesterov=nesterov))
    ref = run(keras.optimizers.SGD(0.1, momentum=0.9, clipnorm=5.0, nesterov=nesterov))
    for a, b, w in zip(ours, ref, init):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert not np.allclose(ours[0], init[0])  # it did move
    np.testing.assert_array_equal(ours[2], init[2])  # zero gradient, zero momentum
    # Hand check of the first step of the clipped weight (no Nesterov):
    # w1 = w0 - lr * g * 5 / ||g||.
    if not nesterov:
        opt = training.ClippedMomentumSGD(0.1, 0.9, clip_norm=5.0)
        v = keras.Variable(init[0])
        opt.apply([tf.constant(grads[0][0])], [v])
        g = grads[0][0]
        np.testing.assert_allclose(v.numpy(), init[0] - 0.1 * g * 5.0 / np.linalg.norm(g),
                                   rtol=1e-5, atol=1e-6)


def test_clipped_momentum_sgd_config_round_trip():
    opt = training.ClippedMomentumSGD(0.02, 0.9, clip_norm=5.0)
    clone = keras.optimizers.deserialize(json.loads(json.dumps(keras.optimizers.serialize(opt))))
    assert isinstance(clone, training.ClippedMomentumSGD)
    assert clone.clip_norm == 5.0 and clone.momentum == 0.9 and clone.clipnorm is None
    with pytest.raises(ValueError, match="clip_norm"):
        training.ClippedMomentumSGD(0.02, 0.9, clipnorm=5.0)
