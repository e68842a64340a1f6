"""The Mask R-CNN training graph (``MaskRCNN(mode="training")``).

Same backbone, FPN, RPN and heads as inference (``mrcnn.graph.build``), plus
what training needs: the ground-truth inputs, the anchors as a constant, the
``DetectionTargetLayer`` that samples ROIs and builds the heads' targets, and
the five loss outputs. The returned model is a
:class:`mrcnn.graph.training_model.MaskRCNNTrainingModel`, a ``keras.Model`` subclass built
functionally (``mrcnn.graph.training_model``) whose ``train_step`` adds up
the loss outputs (Keras 3 refuses ``add_loss`` on symbolic tensors, which is
how Matterport did it). ``training_graph(layer_args(config))`` builds it
from plain arguments; ``build_training_model(config)`` is the adapter.

Shape shorthand: B batch (dynamic: nothing is reshaped to BATCH_SIZE),
H, W, C = IMAGE_SHAPE, A all anchors of all levels, G MAX_GT_INSTANCES,
R POST_NMS_ROIS_TRAINING, T TRAIN_ROIS_PER_IMAGE, K NUM_CLASSES,
S MASK_SHAPE (28, 28), mh, mw MINI_MASK_SHAPE (or H, W without mini-masks).

Inputs (Matterport's names and order):

* input_image: [B, H, W, C] float32, molded images (mold_image). Unlike
  Matterport the height and width are static (IMAGE_SHAPE): the anchors and
  ``input_rpn_match`` are fixed to that size, so a different size could only
  fail later, deep in the graph.
* input_image_meta: [B, IMAGE_META_SIZE] float32 (compose_image_meta)
* input_rpn_match: [B, A, 1] int32, 1 positive anchor, -1 negative, 0 neutral
* input_rpn_bbox: [B, RPN_TRAIN_ANCHORS_PER_IMAGE, (dy, dx, log(dh), log(dw))]
  float32, deltas of the positive anchors (divided by RPN_BBOX_STD_DEV),
  zero-padded
* input_gt_class_ids: [B, G] int32, zero-padded (negative: crowd)
* input_gt_boxes: [B, G, (y1, x1, y2, x2)] float32 pixels, zero-padded;
  normalized inside the graph (padding rows stay all-zero)
* input_gt_masks: [B, mh, mw, G] bool
* input_roi: [B, R, (y1, x1, y2, x2)] pixels, only when USE_RPN_ROIS is False

Outputs (Matterport's order): rpn_class_logits, rpn_class, rpn_bbox,
mrcnn_class_logits, mrcnn_class, mrcnn_bbox, mrcnn_mask, rpn_rois (layer
``ROI``), output_rois, then the five scalar losses rpn_class_loss,
rpn_bbox_loss, mrcnn_class_loss, mrcnn_bbox_loss, mrcnn_mask_loss.

One deliberate difference: the mask head runs on the first
P = int(T * ROI_POSITIVE_RATIO) sampled ROIs only (the only rows that can be
positive, and the only ones the mask loss reads), so ``mrcnn_mask`` is
[B, P, S, S, K] where Matterport's was [B, T, S, S, K]. Same weights, same
loss value, about a third of the mask head's cost with the default ratio.
"""

from typing import Any, Dict

import keras

from mrcnn.arguments import layer_args, max_positive_rois
from mrcnn.config import LOSS_NAMES
from mrcnn.graph.build import (build_feature_graph, build_rpn_graph, check_image_shape,
                               proposal_layer)
from mrcnn.graph.heads import build_fpn_mask_graph, fpn_classifier_graph
from mrcnn.graph.training_model import MaskRCNNTrainingModel
from mrcnn.layers.anchors import Anchors
from mrcnn.layers.boxes import NormBoxes
from mrcnn.layers.detection_target import DetectionTargetLayer
from mrcnn.layers.loss_output import LossOutput
from mrcnn.layers.meta import ActiveClassIds
from mrcnn.layers.rows import FirstRows

__all__ = ["training_graph", "build_training_model", "anchors_layer", "anchor_count",
           "max_positive_rois", "set_batch_norm_momentum", "Anchors", "FirstRows", "NormBoxes", "ActiveClassIds",
           "LossOutput", "LOSS_NAMES", "OUTPUT_NAMES"]

# Names of the model outputs, in order (model.output_names gives layer names).
OUTPUT_NAMES = ("rpn_class_logits", "rpn_class", "rpn_bbox", "mrcnn_class_logits",
                "mrcnn_class", "mrcnn_bbox", "mrcnn_mask", "ROI", "output_rois") + LOSS_NAMES


def anchor_count(config) -> int:
    """A: number of anchors of the training graph (the length of input_rpn_match)."""
    return len(anchors_layer(config)._anchors)


def anchors_layer(config, name: str = "anchors") -> Anchors:
    """The Anchors layer of ``config`` (IMAGE_SHAPE, RPN_ANCHOR_*, BACKBONE_STRIDES)."""
    return Anchors(**layer_args(config)["anchors"], name=name)


def training_graph(args: Dict[str, Dict[str, Any]]) -> MaskRCNNTrainingModel:
    """Matterport's training model from plain arguments.

    args: ``layer_args(config)``.
    Returns: a :class:`MaskRCNNTrainingModel` named "mask_rcnn" (inputs and
    outputs in the module docstring). Compile it with
    :func:`mrcnn.training.compile_model`.
    """
    training = args["training"]
    h, w, c = args["image"]["shape"]
    G = training["max_gt_instances"]
    P = training["max_positive_rois"]
    anchor_layer = Anchors(**args["anchors"], name="anchors")
    num_anchors = len(anchor_layer._anchors)

    # Inputs
    input_image = keras.Input(shape=[h, w, c], name="input_image")
    input_image_meta = keras.Input(shape=[args["image"]["meta_size"]], name="input_image_meta")
    # RPN ground truth
    input_rpn_match = keras.Input(shape=[num_anchors, 1], name="input_rpn_match", dtype="int32")
    input_rpn_bbox = keras.Input(shape=[training["rpn_train_anchors"], 4],
                                 name="input_rpn_bbox", dtype="float32")
    # Detection ground truth: class ids, boxes in pixels, masks (zero-padded to G)
    input_gt_class_ids = keras.Input(shape=[G], name="input_gt_class_ids", dtype="int32")
    input_gt_boxes = keras.Input(shape=[G, 4], name="input_gt_boxes", dtype="float32")
    input_gt_masks = keras.Input(shape=list(training["gt_masks_shape"]) + [G],
                                 name="input_gt_masks", dtype="bool")
    gt_boxes = NormBoxes(name="norm_gt_boxes")([input_gt_boxes, input_image])

    rpn_feature_maps, mrcnn_feature_maps = build_feature_graph(input_image, args["backbone"],
                                                               args["fpn"])
    rpn_class_logits, rpn_class, rpn_bbox = build_rpn_graph(rpn_feature_maps, args["rpn"])

    # [B, A, 4] normalized, a constant
    anchors = anchor_layer(input_image)

    # Proposals: [B, R, (y1, x1, y2, x2)] normalized, zero-padded
    rpn_rois = proposal_layer(args["proposal"], "training")([rpn_class, rpn_bbox, anchors])

    # Class ids the dataset of each image has: [B, K]
    active_class_ids = ActiveClassIds(name="active_class_ids")(input_image_meta)

    inputs = [input_image, input_image_meta, input_rpn_match, input_rpn_bbox,
              input_gt_class_ids, input_gt_boxes, input_gt_masks]
    if training["use_rpn_rois"]:
        target_rois = rpn_rois
    else:
        # Train the heads on ROIs given as an input instead of the RPN's.
        input_rois = keras.Input(shape=[args["proposal"]["proposal_count_training"], 4],
                                 name="input_roi", dtype="int32")
        inputs.append(input_rois)
        target_rois = NormBoxes(name="norm_input_roi")([input_rois, input_image])

    # Sample T ROIs per image and their targets; rows: positives, negatives, padding.
    rois, target_class_ids, target_bbox, target_mask = DetectionTargetLayer(
        **args["targets"], name="proposal_targets")(
            [target_rois, input_gt_class_ids, gt_boxes, input_gt_masks])

    # Heads, on the sampled ROIs
    mrcnn_class_logits, mrcnn_class, mrcnn_bbox = fpn_classifier_graph(
        rois, mrcnn_feature_maps, input_image_meta, **args["classifier"])
    # The mask head only runs on the rows that can be positive. The targets
    # list positives first, at most int(T * ROI_POSITIVE_RATIO) of them, and
    # the mask loss reads positive rows only, so the other rows were wasted
    # work: with Matterport's ratio 0.33 the mask head (four 3x3 convs of 256
    # channels at 14x14, the costliest part of a training step) does a third
    # of the work, and the loss is unchanged. mrcnn_mask is therefore
    # [B, P, S, S, K] with P = int(T * ROI_POSITIVE_RATIO), not [B, T, ...].
    mask_rows = FirstRows(P, name="positive_rois")
    mrcnn_mask = build_fpn_mask_graph(mask_rows(rois), mrcnn_feature_maps, input_image_meta,
                                      **args["mask"])
    mask_targets = FirstRows(P, name="positive_mask_targets")(target_mask)
    mask_class_ids = FirstRows(P, name="positive_class_ids")(target_class_ids)

    # float32 under a mixed TRAIN_PRECISION too (an Identity takes the
    # global dtype policy and would cast the ROIs to float16/bfloat16)
    output_rois = keras.layers.Identity(name="output_rois", dtype="float32")(rois)

    # Losses, each a scalar output named after the loss
    loss_inputs = {
        "rpn_class_loss": [input_rpn_match, rpn_class_logits],
        "rpn_bbox_loss": [input_rpn_bbox, input_rpn_match, rpn_bbox],
        "mrcnn_class_loss": [target_class_ids, mrcnn_class_logits, active_class_ids],
        "mrcnn_bbox_loss": [target_bbox, target_class_ids, mrcnn_bbox],
        "mrcnn_mask_loss": [mask_targets, mask_class_ids, mrcnn_mask],
    }
    loss_outputs = [LossOutput(name)(loss_inputs[name]) for name in LOSS_NAMES]

    outputs = [rpn_class_logits, rpn_class, rpn_bbox,
               mrcnn_class_logits, mrcnn_class, mrcnn_bbox, mrcnn_mask,
               rpn_rois, output_rois] + loss_outputs
    model = MaskRCNNTrainingModel(inputs, outputs, name="mask_rcnn",
                                  loss_weights=training["loss_weights"],
                                  weight_decay=training["weight_decay"])
    set_batch_norm_momentum(model, training["batch_norm_momentum"])
    return model


def set_batch_norm_momentum(keras_model: keras.Model, momentum: float) -> int:
    """Set the moving-average momentum of every BatchNormalization layer
    (TimeDistributed ones and nested models included; BATCH_NORM_MOMENTUM).
    Returns the number of layers set."""
    count = 0
    for layer in walk_layers(keras_model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            count += 1
    return count


def build_training_model(config) -> MaskRCNNTrainingModel:
    """``training_graph(layer_args(config))``, after checking IMAGE_SHAPE."""
    check_image_shape(config)
    return training_graph(layer_args(config))


def walk_layers(keras_model: keras.Model):
    """Every layer of a model: its layers, the layers of nested models and
    the layer each TimeDistributed wraps (public Keras API only)."""
    for layer in keras_model.layers:
        yield layer
        if isinstance(layer, keras.layers.TimeDistributed):
            yield layer.layer
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer)
