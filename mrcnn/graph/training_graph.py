"""The Mask R-CNN training graph (``MaskRCNN(mode="training")``).

Same backbone, FPN, RPN and heads as inference (``mrcnn.graph.build``), plus
what training needs: the ground-truth inputs, the anchors as a constant, the
``DetectionTargetLayer`` that samples ROIs and builds the heads' targets, and
the five loss outputs. The returned model is a
:class:`mrcnn.training.MaskRCNNTrainingModel`, a ``keras.Model`` subclass built
functionally whose ``train_step`` adds up the loss outputs (Keras 3 refuses
``add_loss`` on symbolic tensors, which is how Matterport did it).

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

import keras
import numpy as np
import tensorflow as tf

from mrcnn.graph.build import (build_feature_graph, build_rpn_graph, check_image_shape,
                               compute_backbone_shapes, layer_args)
from mrcnn.graph.heads import build_fpn_mask_graph, fpn_classifier_graph

__all__ = ["build_training_model", "anchors_layer", "anchor_count", "max_positive_rois",
           "Anchors", "FirstRows", "NormBoxes", "ActiveClassIds", "LossOutput",
           "LOSS_NAMES", "OUTPUT_NAMES"]

# The five losses in Matterport's order (also the names of their layers).
LOSS_NAMES = ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss",
              "mrcnn_bbox_loss", "mrcnn_mask_loss")
# Names of the model outputs, in order (model.output_names gives layer names).
OUTPUT_NAMES = ("rpn_class_logits", "rpn_class", "rpn_bbox", "mrcnn_class_logits",
                "mrcnn_class", "mrcnn_bbox", "mrcnn_mask", "ROI", "output_rois") + LOSS_NAMES


@keras.saving.register_keras_serializable(package="mrcnn")
class Anchors(keras.layers.Layer):
    """The anchor pyramid as a constant, repeated for every image of the batch.

    Matterport made the anchors a ``tf.Variable`` inside a Lambda with
    BATCH_SIZE baked in. Here they are computed once in NumPy from plain
    values (``utils.generate_pyramid_anchors`` then ``utils.norm_boxes``) and
    broadcast to the batch size of the input at call time.

    Args:
        image_shape: (height, width) of the molded image, pixels.
        scales: anchor side per pyramid level, pixels (RPN_ANCHOR_SCALES).
        ratios: width/height ratios (RPN_ANCHOR_RATIOS).
        backbone_shapes: [(height, width)] feature map size per level.
        strides: feature map stride per level (BACKBONE_STRIDES).
        anchor_stride: anchors at every ``anchor_stride``-th cell (RPN_ANCHOR_STRIDE).

    Input: any tensor whose first axis is the batch (the image).
    Output: [B, A, (y1, x1, y2, x2)] float32, normalized coordinates, in the
    order of ``generate_pyramid_anchors`` (level, row, column, ratio).
    """

    def __init__(self, image_shape, scales, ratios, backbone_shapes, strides,
                 anchor_stride, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.image_shape = tuple(int(v) for v in image_shape[:2])
        self.scales = tuple(float(v) for v in scales)
        self.ratios = tuple(float(v) for v in ratios)
        self.backbone_shapes = tuple(tuple(int(v) for v in s) for s in backbone_shapes)
        self.strides = tuple(int(v) for v in strides)
        self.anchor_stride = int(anchor_stride)
        self._anchors = self.anchor_array()
        self.built = True

    def pixel_array(self):
        """[A, (y1, x1, y2, x2)] float64 NumPy array, pixels (for build_rpn_targets)."""
        from mrcnn import utils
        return utils.generate_pyramid_anchors(
            self.scales, self.ratios, np.array(self.backbone_shapes), self.strides,
            self.anchor_stride)

    def anchor_array(self):
        """[A, (y1, x1, y2, x2)] float32 NumPy array, normalized."""
        from mrcnn import utils
        return utils.norm_boxes(self.pixel_array(), self.image_shape).astype(np.float32)

    def call(self, inputs):
        anchors = tf.constant(self._anchors)
        batch = tf.shape(inputs)[0]
        # [A, 4] -> [B, A, 4]
        return tf.broadcast_to(anchors[None], tf.stack([batch, anchors.shape[0], 4]))

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs.shape[0], len(self._anchors), 4), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update({"image_shape": list(self.image_shape), "scales": list(self.scales),
                       "ratios": list(self.ratios),
                       "backbone_shapes": [list(s) for s in self.backbone_shapes],
                       "strides": list(self.strides), "anchor_stride": self.anchor_stride})
        return config


@keras.saving.register_keras_serializable(package="mrcnn")
class NormBoxes(keras.layers.Layer):
    """Pixel boxes -> normalized boxes, keeping all-zero padding rows zero.

    Matterport's ``norm_boxes_graph(x, K.shape(input_image)[1:3])`` turns a
    zero padding row into (0, 0, -1/(H-1), -1/(W-1)), which no longer looks
    like padding; here padding rows stay (0, 0, 0, 0).

    Inputs: ``[boxes, image]``
        boxes: [B, N, (y1, x1, y2, x2)] pixels (any numeric dtype), zero-padded.
        image: [B, H, W, C], only its height and width are read.
    Output: [B, N, (y1, x1, y2, x2)] float32, normalized.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.built = True

    def call(self, inputs):
        from mrcnn.ops.boxes import norm_boxes_graph
        boxes, image = inputs
        boxes = tf.cast(boxes, tf.float32)
        normalized = norm_boxes_graph(boxes, tf.shape(image)[1:3])
        is_box = tf.reduce_any(tf.not_equal(boxes, 0.0), axis=-1, keepdims=True)
        return tf.where(is_box, normalized, tf.zeros_like(normalized))

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs[0].shape, dtype="float32")


@keras.saving.register_keras_serializable(package="mrcnn")
class ActiveClassIds(keras.layers.Layer):
    """The ``active_class_ids`` field of the image meta.

    Input: [B, 12 + K] image meta. Output: [B, K] float32, 1 where the
    image's dataset has that class.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.built = True

    def call(self, meta):
        from mrcnn.ops.image_meta import parse_image_meta_graph
        return tf.cast(parse_image_meta_graph(meta)["active_class_ids"], tf.float32)

    def compute_output_spec(self, meta):
        from mrcnn.ops.image_meta import IMAGE_META_FIXED_SIZE
        k = None if meta.shape[-1] is None else meta.shape[-1] - IMAGE_META_FIXED_SIZE
        return keras.KerasTensor((meta.shape[0], k), dtype="float32")


@keras.saving.register_keras_serializable(package="mrcnn")
class FirstRows(keras.layers.Layer):
    """The first ``rows`` entries of axis 1: ``x[:, :rows]``.

    Args:
        rows: how many rows to keep.

    Input: [B, N, ...] any dtype. Output: [B, min(rows, N), ...], same dtype.
    """

    def __init__(self, rows, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.rows = int(rows)
        if self.rows < 1:
            raise ValueError(f"FirstRows: rows must be >= 1, got {rows}.")
        self.built = True

    def call(self, x):
        return x[:, :self.rows]

    def compute_output_spec(self, x):
        n = x.shape[1]
        rows = self.rows if n is None else min(self.rows, n)
        return keras.KerasTensor((x.shape[0], rows) + tuple(x.shape[2:]), dtype=x.dtype)

    def get_config(self):
        config = super().get_config()
        config["rows"] = self.rows
        return config


@keras.saving.register_keras_serializable(package="mrcnn")
class LossOutput(keras.layers.Layer):
    """One of the five Mask R-CNN losses as a graph output (a scalar).

    Args:
        loss: which loss, one of LOSS_NAMES; the layer is named after it.

    Inputs, as Matterport's loss Lambdas (see ``mrcnn.losses``):
        rpn_class_loss: [input_rpn_match, rpn_class_logits]
        rpn_bbox_loss: [input_rpn_bbox, input_rpn_match, rpn_bbox]
        mrcnn_class_loss: [target_class_ids, mrcnn_class_logits, active_class_ids]
        mrcnn_bbox_loss: [target_bbox, target_class_ids, mrcnn_bbox]
        mrcnn_mask_loss: [target_mask, target_class_ids, mrcnn_mask]
    Output: [] float32, the loss averaged over the batch (0 when nothing
    contributes, never NaN).
    """

    def __init__(self, loss, **kwargs):
        if loss not in LOSS_NAMES:
            raise ValueError(f"LossOutput: unknown loss {loss!r}; use one of {LOSS_NAMES}.")
        kwargs.setdefault("name", loss)
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.loss = loss
        self.built = True

    def call(self, inputs):
        from mrcnn import losses
        fn = getattr(losses, self.loss + "_graph")
        loss = fn(*inputs)
        return tf.reshape(tf.cast(loss, tf.float32), [])

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config["loss"] = self.loss
        return config


def _gt_masks_shape(config):
    """(height, width) of input_gt_masks: MINI_MASK_SHAPE or IMAGE_SHAPE."""
    if config.USE_MINI_MASK:
        return tuple(int(v) for v in config.MINI_MASK_SHAPE)
    return tuple(int(v) for v in config.IMAGE_SHAPE[:2])


def max_positive_rois(config):
    """P: the most positive ROIs per image DetectionTargetLayer keeps
    (``int(TRAIN_ROIS_PER_IMAGE * ROI_POSITIVE_RATIO)`` in Python floats, as
    ``ops.targets.detection_targets``)."""
    return max(1, int(int(config.TRAIN_ROIS_PER_IMAGE) * float(config.ROI_POSITIVE_RATIO)))


def anchor_count(config):
    """A: number of anchors of the training graph (the length of input_rpn_match)."""
    return len(anchors_layer(config)._anchors)


def anchors_layer(config, name="anchors"):
    """The Anchors layer of ``config`` (IMAGE_SHAPE, RPN_ANCHOR_*, BACKBONE_STRIDES)."""
    image_shape = tuple(int(v) for v in config.IMAGE_SHAPE[:2])
    return Anchors(image_shape=image_shape,
                   scales=config.RPN_ANCHOR_SCALES,
                   ratios=config.RPN_ANCHOR_RATIOS,
                   backbone_shapes=compute_backbone_shapes(config, config.IMAGE_SHAPE).tolist(),
                   strides=config.BACKBONE_STRIDES,
                   anchor_stride=config.RPN_ANCHOR_STRIDE,
                   name=name)


def build_training_model(config):
    """Build Matterport's training model from ``config``.

    Returns: a :class:`mrcnn.training.MaskRCNNTrainingModel` named
    "mask_rcnn" (inputs and outputs in the module docstring). Compile it
    with :func:`mrcnn.training.compile_model`.
    """
    from mrcnn.layers import ProposalLayer
    from mrcnn.layers.detection_target import DetectionTargetLayer
    from mrcnn.training import MaskRCNNTrainingModel

    check_image_shape(config)
    args = layer_args(config)
    h, w, c = (int(v) for v in config.IMAGE_SHAPE)
    G = int(config.MAX_GT_INSTANCES)
    anchor_layer = anchors_layer(config)
    num_anchors = len(anchor_layer._anchors)

    # Inputs
    input_image = keras.Input(shape=[h, w, c], name="input_image")
    input_image_meta = keras.Input(shape=[int(config.IMAGE_META_SIZE)], name="input_image_meta")
    # RPN ground truth
    input_rpn_match = keras.Input(shape=[num_anchors, 1], name="input_rpn_match", dtype="int32")
    input_rpn_bbox = keras.Input(shape=[int(config.RPN_TRAIN_ANCHORS_PER_IMAGE), 4],
                                 name="input_rpn_bbox", dtype="float32")
    # Detection ground truth: class ids, boxes in pixels, masks (zero-padded to G)
    input_gt_class_ids = keras.Input(shape=[G], name="input_gt_class_ids", dtype="int32")
    input_gt_boxes = keras.Input(shape=[G, 4], name="input_gt_boxes", dtype="float32")
    input_gt_masks = keras.Input(shape=list(_gt_masks_shape(config)) + [G],
                                 name="input_gt_masks", dtype="bool")
    gt_boxes = NormBoxes(name="norm_gt_boxes")([input_gt_boxes, input_image])

    rpn_feature_maps, mrcnn_feature_maps = build_feature_graph(input_image, config)
    rpn_class_logits, rpn_class, rpn_bbox = build_rpn_graph(rpn_feature_maps, config)

    # [B, A, 4] normalized, a constant
    anchors = anchor_layer(input_image)

    # Proposals: [B, R, (y1, x1, y2, x2)] normalized, zero-padded
    proposal = args["proposal"]
    rpn_rois = ProposalLayer(
        proposal_count=proposal["proposal_count_training"],
        nms_threshold=proposal["nms_threshold"],
        pre_nms_limit=proposal["pre_nms_limit"],
        rpn_bbox_std_dev=proposal["rpn_bbox_std_dev"],
        name="ROI")([rpn_class, rpn_bbox, anchors])

    # Class ids the dataset of each image has: [B, K]
    active_class_ids = ActiveClassIds(name="active_class_ids")(input_image_meta)

    inputs = [input_image, input_image_meta, input_rpn_match, input_rpn_bbox,
              input_gt_class_ids, input_gt_boxes, input_gt_masks]
    if config.USE_RPN_ROIS:
        target_rois = rpn_rois
    else:
        # Train the heads on ROIs given as an input instead of the RPN's.
        input_rois = keras.Input(shape=[int(config.POST_NMS_ROIS_TRAINING), 4],
                                 name="input_roi", dtype="int32")
        inputs.append(input_rois)
        target_rois = NormBoxes(name="norm_input_roi")([input_rois, input_image])

    # Sample T ROIs per image and their targets; rows: positives, negatives, padding.
    rois, target_class_ids, target_bbox, target_mask = DetectionTargetLayer(
        train_rois_per_image=int(config.TRAIN_ROIS_PER_IMAGE),
        roi_positive_ratio=float(config.ROI_POSITIVE_RATIO),
        mask_shape=tuple(int(v) for v in config.MASK_SHAPE),
        use_mini_mask=bool(config.USE_MINI_MASK),
        bbox_std_dev=tuple(float(v) for v in config.BBOX_STD_DEV),
        name="proposal_targets")([target_rois, input_gt_class_ids, gt_boxes, input_gt_masks])

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
    mask_rows = FirstRows(max_positive_rois(config), name="positive_rois")
    mrcnn_mask = build_fpn_mask_graph(mask_rows(rois), mrcnn_feature_maps, input_image_meta,
                                      **args["mask"])
    mask_targets = FirstRows(max_positive_rois(config), name="positive_mask_targets")(
        target_mask)
    mask_class_ids = FirstRows(max_positive_rois(config), name="positive_class_ids")(
        target_class_ids)

    output_rois = keras.layers.Identity(name="output_rois")(rois)

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
    return MaskRCNNTrainingModel(inputs, outputs, name="mask_rcnn",
                                 loss_weights=dict(config.LOSS_WEIGHTS),
                                 weight_decay=float(config.WEIGHT_DECAY))
