"""Model assembly: Matterport's parts put together into the Keras models.

The builders take the plain arguments of ``mrcnn.arguments.layer_args``
(ints, floats, tuples: nothing holds the Config) and put the parts together
in Matterport's order, so the models get Matterport's layer names and weight
order. ``build_inference_model(config)`` (and the training graph's
``build_training_model(config)``) are the thin ``config`` adapters.

Pieces shared by inference and training:

* ``build_feature_graph``: backbone + FPN -> P2..P6
* ``build_rpn_graph``: shared RPN on every level, concatenated outputs named
  ``rpn_class_logits``, ``rpn_class``, ``rpn_bbox``
* ``proposal_layer``: the ``ROI`` layer for inference or training
* ``fpn_classifier_graph`` / ``build_fpn_mask_graph`` (``heads.py``)

Shape shorthand: B batch (dynamic everywhere: nothing is reshaped to
BATCH_SIZE), H, W, C molded image, A_total all anchors of all levels,
R POST_NMS_ROIS_INFERENCE, M DETECTION_MAX_INSTANCES, K NUM_CLASSES,
S MASK_SHAPE (28).
"""
from typing import Any, Dict

import keras

from mrcnn.arguments import anchor_spec, layer_args
from mrcnn.graph.backbone import resnet_graph
from mrcnn.graph.fpn import fpn_graph
from mrcnn.graph.heads import build_fpn_mask_graph, fpn_classifier_graph
from mrcnn.graph.rpn import build_rpn_model
from mrcnn.layers import DetectionLayer, ProposalLayer
from mrcnn.layers.batch_norm import fold_batch_norms
from mrcnn.layers.boxes import DetectionBoxes
from mrcnn.transform import SIZE_MULTIPLE

__all__ = ["layer_args", "compute_backbone_shapes", "check_image_shape",
           "build_feature_graph", "build_rpn_graph", "proposal_layer", "inference_graph",
           "build_inference_model", "DetectionBoxes"]


def compute_backbone_shapes(config, image_shape):
    """Matterport's ``compute_backbone_shapes(config, image_shape)``.

    image_shape: (height, width[, channels]) of the molded image.
    Returns: [N, (height, width)] int array, the feature map size of each
    level of BACKBONE_STRIDES (COMPUTE_BACKBONE_SHAPE's answer for a
    callable BACKBONE).
    """
    return anchor_spec(config).backbone_shapes(image_shape)


def check_image_shape(config):
    """Raise ValueError unless IMAGE_SHAPE's height and width divide by 64."""
    h, w = (int(v) for v in config.IMAGE_SHAPE[:2])
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        raise ValueError(
            f"{type(config).__name__}.IMAGE_SHAPE is {h}x{w}: height and width must "
            f"be divisible by {SIZE_MULTIPLE} (the FPN halves the image 6 times), "
            f"e.g. 256, 320, 384, 448, 512, ... Change IMAGE_MAX_DIM (or "
            f"IMAGE_MIN_DIM in 'crop' mode).")


def build_feature_graph(input_image, backbone: Dict[str, Any], fpn: Dict[str, Any]):
    """Backbone and FPN.

    input_image: [B, H, W, C] float32 KerasTensor, the molded image.
    backbone: ``layer_args(config)["backbone"]`` (architecture: "resnet50",
        "resnet101" or Matterport's callable BACKBONE; train_bn).
    fpn: ``layer_args(config)["fpn"]`` (top_down_pyramid_size).
    Returns: (rpn_feature_maps [P2, P3, P4, P5, P6],
              mrcnn_feature_maps [P2, P3, P4, P5]),
    each [B, H/stride, W/stride, TOP_DOWN_PYRAMID_SIZE] float32. P6 feeds
    only the RPN (the 5th anchor scale).
    """
    if callable(backbone["architecture"]):
        # Matterport's contract for a custom backbone.
        _, C2, C3, C4, C5 = backbone["architecture"](
            input_image, stage5=True, train_bn=backbone["train_bn"])
    else:
        _, C2, C3, C4, C5 = resnet_graph(input_image, backbone["architecture"],
                                         stage5=True, train_bn=backbone["train_bn"])
    P2, P3, P4, P5, P6 = fpn_graph(C2, C3, C4, C5, **fpn)
    return [P2, P3, P4, P5, P6], [P2, P3, P4, P5]


def build_rpn_graph(rpn_feature_maps, rpn: Dict[str, Any]):
    """Run the shared ``rpn_model`` on every level and concatenate.

    rpn_feature_maps: [P2, .., P6], each [B, h_i, w_i, D] float32.
    rpn: ``layer_args(config)["rpn"]`` (anchor_stride, anchors_per_location, depth).
    Returns: rpn_class_logits [B, A_total, 2], rpn_class [B, A_total, 2],
    rpn_bbox [B, A_total, (dy, dx, log(dh), log(dw))], float32, anchors in
    level order P2..P6, then row-major (y, x, anchor) within a level: the
    order of ``utils.generate_pyramid_anchors``. Layers named
    ``rpn_class_logits``, ``rpn_class``, ``rpn_bbox``.
    """
    rpn_model = build_rpn_model(**rpn)
    # [[logits_P2, probs_P2, bbox_P2], [logits_P3, ...], ...]
    per_level = [rpn_model([p]) for p in rpn_feature_maps]
    names = ["rpn_class_logits", "rpn_class", "rpn_bbox"]
    return [keras.layers.Concatenate(axis=1, name=name, dtype="float32")(
                [level[i] for level in per_level])
            for i, name in enumerate(names)]


def proposal_layer(proposal: Dict[str, Any], mode: str) -> ProposalLayer:
    """The ``ROI`` layer: ProposalLayer with POST_NMS_ROIS_INFERENCE (mode
    "inference") or POST_NMS_ROIS_TRAINING ("training") proposals.

    proposal: ``layer_args(config)["proposal"]``.
    """
    if mode not in ("inference", "training"):
        raise ValueError(f"proposal_layer: mode must be 'inference' or 'training', got {mode!r}.")
    return ProposalLayer(proposal_count=proposal[f"proposal_count_{mode}"],
                         nms_threshold=proposal["nms_threshold"],
                         pre_nms_limit=proposal["pre_nms_limit"],
                         rpn_bbox_std_dev=proposal["rpn_bbox_std_dev"],
                         name="ROI")


def inference_graph(args: Dict[str, Dict[str, Any]]) -> keras.Model:
    """Matterport's inference model (``MaskRCNN(mode="inference")``).

    args: ``layer_args(config)``.

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
    Returns a ``keras.Model`` named "mask_rcnn". Its frozen BatchNorms are
    folded into their convolutions (``layers.fold_batch_norms``) unless
    ``args["inference"]["fold_batch_norm"]`` is False (INFERENCE_PRECISION
    "float32_exact"); args without an "inference" entry fold.
    """
    input_image = keras.Input(shape=[None, None, args["image"]["channels"]],
                              name="input_image")
    input_image_meta = keras.Input(shape=[args["image"]["meta_size"]],
                                   name="input_image_meta")
    # Anchors in normalized coordinates
    input_anchors = keras.Input(shape=[None, 4], name="input_anchors")

    rpn_feature_maps, mrcnn_feature_maps = build_feature_graph(input_image, args["backbone"],
                                                               args["fpn"])
    _, rpn_class, rpn_bbox = build_rpn_graph(rpn_feature_maps, args["rpn"])

    # Proposals: [B, R, (y1, x1, y2, x2)] normalized, zero-padded.
    rpn_rois = proposal_layer(args["proposal"], "inference")([rpn_class, rpn_bbox,
                                                              input_anchors])

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

    model = keras.Model([input_image, input_image_meta, input_anchors],
                        [detections, mrcnn_class, mrcnn_bbox, mrcnn_mask,
                         rpn_rois, rpn_class, rpn_bbox],
                        name="mask_rcnn")
    fold_batch_norms(model, args.get("inference", {}).get("fold_batch_norm", True))
    return model


def build_inference_model(config) -> keras.Model:
    """``inference_graph(layer_args(config))``, after checking IMAGE_SHAPE."""
    check_image_shape(config)
    return inference_graph(layer_args(config))
