"""Model assembly: the ONE place where a Config becomes graph arguments.

Everything else in ``mrcnn.graph`` and ``mrcnn.layers`` takes plain values.
``layer_args(config)`` is the translation table (plain ints, floats, tuples:
JSON-ready, nothing holds the Config); the ``build_*`` functions put the
parts together in Matterport's order, so the models get Matterport's layer
names and weight order.

Pieces shared by inference and training (the training graph,
``build_training_model(config)``, is meant to be added here later and reuse
them):

* ``build_feature_graph``: backbone + FPN -> P2..P6
* ``build_rpn_graph``: shared RPN on every level, concatenated outputs named
  ``rpn_class_logits``, ``rpn_class``, ``rpn_bbox``
* ``fpn_classifier_graph`` / ``build_fpn_mask_graph`` (``heads.py``)

Shape shorthand: B batch (dynamic everywhere: nothing is reshaped to
BATCH_SIZE), H, W, C molded image, A_total all anchors of all levels,
R POST_NMS_ROIS_INFERENCE, M DETECTION_MAX_INSTANCES, K NUM_CLASSES,
S MASK_SHAPE (28).
"""

import keras

from mrcnn.graph.backbone import compute_backbone_shapes as _backbone_shapes
from mrcnn.graph.backbone import resnet_graph
from mrcnn.graph.fpn import fpn_graph
from mrcnn.graph.heads import build_fpn_mask_graph, fpn_classifier_graph
from mrcnn.graph.rpn import build_rpn_model

__all__ = ["layer_args", "compute_backbone_shapes", "check_image_shape",
           "build_feature_graph", "build_rpn_graph", "build_inference_model",
           "DetectionBoxes"]

# The FPN halves the image 6 times (P6 has stride 64); a size that is not a
# multiple of 64 gives fractions when the top-down path upsamples.
_SIZE_MULTIPLE = 2 ** 6


def layer_args(config):
    """Translate a Config into the plain arguments of each graph part.

    Returns a dict of dicts (JSON-ready except ``backbone["architecture"]``,
    which may be Matterport's callable BACKBONE):

    * ``backbone``: architecture, train_bn (resnet_graph)
    * ``fpn``: top_down_pyramid_size (fpn_graph)
    * ``rpn``: anchor_stride, anchors_per_location, depth (build_rpn_model)
    * ``proposal``: nms_threshold, pre_nms_limit, rpn_bbox_std_dev
      (ProposalLayer; proposal_count depends on the mode:
      ``proposal_count_inference`` / ``proposal_count_training``)
    * ``classifier``: pool_size, num_classes, train_bn, fc_layers_size
      (fpn_classifier_graph)
    * ``mask``: pool_size, num_classes, train_bn (build_fpn_mask_graph)
    * ``detection``: bbox_std_dev, detection_min_confidence,
      detection_max_instances, detection_nms_threshold (DetectionLayer)
    """
    train_bn = config.TRAIN_BN
    if train_bn is not None:
        train_bn = bool(train_bn)
    return {
        "backbone": {"architecture": config.BACKBONE, "train_bn": train_bn},
        "fpn": {"top_down_pyramid_size": int(config.TOP_DOWN_PYRAMID_SIZE)},
        "rpn": {"anchor_stride": int(config.RPN_ANCHOR_STRIDE),
                "anchors_per_location": len(config.RPN_ANCHOR_RATIOS),
                "depth": int(config.TOP_DOWN_PYRAMID_SIZE)},
        "proposal": {"nms_threshold": float(config.RPN_NMS_THRESHOLD),
                     "pre_nms_limit": int(config.PRE_NMS_LIMIT),
                     "rpn_bbox_std_dev": tuple(float(v) for v in config.RPN_BBOX_STD_DEV),
                     "proposal_count_inference": int(config.POST_NMS_ROIS_INFERENCE),
                     "proposal_count_training": int(config.POST_NMS_ROIS_TRAINING)},
        "classifier": {"pool_size": int(config.POOL_SIZE),
                       "num_classes": int(config.NUM_CLASSES),
                       "train_bn": train_bn,
                       "fc_layers_size": int(config.FPN_CLASSIF_FC_LAYERS_SIZE)},
        "mask": {"pool_size": int(config.MASK_POOL_SIZE),
                 "num_classes": int(config.NUM_CLASSES),
                 "train_bn": train_bn},
        "detection": {"bbox_std_dev": tuple(float(v) for v in config.BBOX_STD_DEV),
                      "detection_min_confidence": float(config.DETECTION_MIN_CONFIDENCE),
                      "detection_max_instances": int(config.DETECTION_MAX_INSTANCES),
                      "detection_nms_threshold": float(config.DETECTION_NMS_THRESHOLD)},
    }


def compute_backbone_shapes(config, image_shape):
    """Matterport's ``compute_backbone_shapes(config, image_shape)``.

    image_shape: (height, width[, channels]) of the molded image.
    Returns: [N, (height, width)] int array, the feature map size of each
    level of BACKBONE_STRIDES (COMPUTE_BACKBONE_SHAPE's answer for a
    callable BACKBONE).
    """
    compute = config.COMPUTE_BACKBONE_SHAPE if callable(config.BACKBONE) else None
    return _backbone_shapes(image_shape, config.BACKBONE_STRIDES, compute)


def check_image_shape(config):
    """Raise ValueError unless IMAGE_SHAPE's height and width divide by 64."""
    h, w = (int(v) for v in config.IMAGE_SHAPE[:2])
    if h % _SIZE_MULTIPLE or w % _SIZE_MULTIPLE:
        raise ValueError(
            f"{type(config).__name__}.IMAGE_SHAPE is {h}x{w}: height and width must "
            f"be divisible by {_SIZE_MULTIPLE} (the FPN halves the image 6 times), "
            f"e.g. 256, 320, 384, 448, 512, ... Change IMAGE_MAX_DIM (or "
            f"IMAGE_MIN_DIM in 'crop' mode).")


def build_feature_graph(input_image, config):
    """Backbone and FPN.

    input_image: [B, H, W, C] float32 KerasTensor, the molded image.
    Returns: (rpn_feature_maps [P2, P3, P4, P5, P6],
              mrcnn_feature_maps [P2, P3, P4, P5]),
    each [B, H/stride, W/stride, TOP_DOWN_PYRAMID_SIZE] float32. P6 feeds
    only the RPN (the 5th anchor scale).
    """
    args = layer_args(config)
    backbone = args["backbone"]
    if callable(backbone["architecture"]):
        # Matterport's contract for a custom backbone.
        _, C2, C3, C4, C5 = backbone["architecture"](
            input_image, stage5=True, train_bn=backbone["train_bn"])
    else:
        _, C2, C3, C4, C5 = resnet_graph(input_image, backbone["architecture"],
                                         stage5=True, train_bn=backbone["train_bn"])
    P2, P3, P4, P5, P6 = fpn_graph(C2, C3, C4, C5, **args["fpn"])
    return [P2, P3, P4, P5, P6], [P2, P3, P4, P5]


def build_rpn_graph(rpn_feature_maps, config):
    """Run the shared ``rpn_model`` on every level and concatenate.

    rpn_feature_maps: [P2, .., P6], each [B, h_i, w_i, D] float32.
    Returns: rpn_class_logits [B, A_total, 2], rpn_class [B, A_total, 2],
    rpn_bbox [B, A_total, (dy, dx, log(dh), log(dw))], float32, anchors in
    level order P2..P6, then row-major (y, x, anchor) within a level: the
    order of ``utils.generate_pyramid_anchors``. Layers named
    ``rpn_class_logits``, ``rpn_class``, ``rpn_bbox``.
    """
    rpn = build_rpn_model(**layer_args(config)["rpn"])
    # [[logits_P2, probs_P2, bbox_P2], [logits_P3, ...], ...]
    per_level = [rpn([p]) for p in rpn_feature_maps]
    names = ["rpn_class_logits", "rpn_class", "rpn_bbox"]
    return [keras.layers.Concatenate(axis=1, name=name, dtype="float32")(
                [level[i] for level in per_level])
            for i, name in enumerate(names)]


@keras.saving.register_keras_serializable(package="mrcnn")
class DetectionBoxes(keras.layers.Layer):
    """The boxes of DetectionLayer's output (Matterport's ``x[..., :4]``).

    Input: [B, M, (y1, x1, y2, x2, class_id, score)] float32.
    Output: [B, M, (y1, x1, y2, x2)] float32, normalized, zero rows kept
    (they stay padding for the mask head).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.built = True

    def call(self, detections):
        return detections[..., :4]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (4,)


def build_inference_model(config):
    """Matterport's inference model (``MaskRCNN(mode="inference")``).

    Inputs:
        input_image: [B, None, None, C] float32, molded images (mold_image)
        input_image_meta: [B, IMAGE_META_SIZE] float32 (compose_image_meta)
        input_anchors: [B, A_total, (y1, x1, y2, x2)] float32, normalized
    Outputs, in Matterport's order:
        detections: [B, M, (y1, x1, y2, x2, class_id, score)] normalized,
            zero-padded (layer ``mrcnn_detection``)
        mrcnn_class: [B, R, K] classifier probabilities, rows follow rpn_rois
        mrcnn_bbox: [B, R, K, 4] class deltas, before BBOX_STD_DEV
        mrcnn_mask: [B, M, S, S, K] mask probabilities, rows follow detections
        rpn_rois: [B, R, (y1, x1, y2, x2)] normalized proposals (layer ``ROI``)
        rpn_class: [B, A_total, 2] RPN probabilities
        rpn_bbox: [B, A_total, 4] RPN deltas, before RPN_BBOX_STD_DEV
    Returns a ``keras.Model`` named "mask_rcnn".
    """
    from mrcnn.layers import DetectionLayer, ProposalLayer

    check_image_shape(config)
    args = layer_args(config)

    input_image = keras.Input(shape=[None, None, int(config.IMAGE_SHAPE[2])],
                              name="input_image")
    input_image_meta = keras.Input(shape=[int(config.IMAGE_META_SIZE)],
                                   name="input_image_meta")
    # Anchors in normalized coordinates
    input_anchors = keras.Input(shape=[None, 4], name="input_anchors")

    rpn_feature_maps, mrcnn_feature_maps = build_feature_graph(input_image, config)
    _, rpn_class, rpn_bbox = build_rpn_graph(rpn_feature_maps, config)

    # Proposals: [B, R, (y1, x1, y2, x2)] normalized, zero-padded.
    proposal = args["proposal"]
    rpn_rois = ProposalLayer(
        proposal_count=proposal["proposal_count_inference"],
        nms_threshold=proposal["nms_threshold"],
        pre_nms_limit=proposal["pre_nms_limit"],
        rpn_bbox_std_dev=proposal["rpn_bbox_std_dev"],
        name="ROI")([rpn_class, rpn_bbox, input_anchors])

    mrcnn_class_logits, mrcnn_class, mrcnn_bbox = fpn_classifier_graph(
        rpn_rois, mrcnn_feature_maps, input_image_meta, **args["classifier"])

    # [B, M, (y1, x1, y2, x2, class_id, score)] normalized, zero-padded.
    detections = DetectionLayer(**args["detection"], name="mrcnn_detection")(
        [rpn_rois, mrcnn_class, mrcnn_bbox, input_image_meta])

    # Masks for the detections, as Matterport: the mask head pools the
    # refined detection boxes, not the proposals.
    detection_boxes = DetectionBoxes(name="mrcnn_detection_boxes")(detections)
    mrcnn_mask = build_fpn_mask_graph(detection_boxes, mrcnn_feature_maps,
                                      input_image_meta, **args["mask"])

    return keras.Model([input_image, input_image_meta, input_anchors],
                       [detections, mrcnn_class, mrcnn_bbox, mrcnn_mask,
                        rpn_rois, rpn_class, rpn_bbox],
                       name="mask_rcnn")
