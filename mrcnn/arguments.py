"""The one place where a ``Config`` becomes plain arguments.

Everything else takes plain values (ints, floats, tuples, small frozen
dataclasses): the graph builders and layers (``layer_args``), the anchors
(``anchor_spec``), image pre/post-processing (``image_spec``), the ground
truth loader (``ground_truth_spec``), the RPN targets (``rpn_target_spec``)
and the training data pipeline (``pipeline_spec``). The functions with
Matterport's ``config`` arguments (``load_image_gt(dataset, config, ...)``,
``build_rpn_targets(..., config)``, ``MaskRCNN(config=...)``) call these and
pass the result on, as TensorFlow Model Garden's factories and detectron2's
``from_config`` do.

Nothing here imports TensorFlow.
"""
import dataclasses
from typing import Any, Dict, Optional, Tuple

from mrcnn.anchors import AnchorSpec
from mrcnn.transform import ImageSpec

__all__ = ["image_spec", "anchor_spec", "layer_args", "max_positive_rois",
           "GroundTruthSpec", "ground_truth_spec", "RpnTargetSpec", "rpn_target_spec",
           "DetectionTargetSpec", "detection_target_spec", "PipelineSpec", "pipeline_spec",
           "ImageSpec", "AnchorSpec"]


def _floats(values) -> Tuple[float, ...]:
    return tuple(float(v) for v in values)


def _ints(values) -> Tuple[int, ...]:
    return tuple(int(v) for v in values)


def _optional_int(value) -> Optional[int]:
    return None if value is None else int(value)


def _optional_float(value) -> Optional[float]:
    return None if value is None else float(value)


############################################################
#  Images and anchors
############################################################

def image_spec(config) -> ImageSpec:
    """IMAGE_RESIZE_MODE, IMAGE_MIN_DIM, IMAGE_MAX_DIM, IMAGE_MIN_SCALE,
    MEAN_PIXEL, IMAGE_CHANNEL_COUNT, NUM_CLASSES -> ImageSpec."""
    return ImageSpec(mode=str(config.IMAGE_RESIZE_MODE),
                     min_dim=_optional_int(config.IMAGE_MIN_DIM),
                     max_dim=_optional_int(config.IMAGE_MAX_DIM),
                     min_scale=config.IMAGE_MIN_SCALE,
                     mean_pixel=_floats(config.MEAN_PIXEL),
                     channels=int(config.IMAGE_CHANNEL_COUNT),
                     num_classes=int(config.NUM_CLASSES))


def anchor_spec(config) -> AnchorSpec:
    """RPN_ANCHOR_SCALES, RPN_ANCHOR_RATIOS, BACKBONE_STRIDES,
    RPN_ANCHOR_STRIDE (and COMPUTE_BACKBONE_SHAPE for a callable BACKBONE)
    -> AnchorSpec."""
    compute = config.COMPUTE_BACKBONE_SHAPE if callable(config.BACKBONE) else None
    return AnchorSpec(scales=_floats(config.RPN_ANCHOR_SCALES),
                      ratios=_floats(config.RPN_ANCHOR_RATIOS),
                      strides=_ints(config.BACKBONE_STRIDES),
                      anchor_stride=int(config.RPN_ANCHOR_STRIDE),
                      compute_backbone_shape=compute)


############################################################
#  The graph
############################################################

def max_positive_rois(config) -> int:
    """P: the most positive ROIs per image DetectionTargetLayer keeps
    (``int(TRAIN_ROIS_PER_IMAGE * ROI_POSITIVE_RATIO)`` in Python floats, as
    ``ops.targets.detection_targets``), at least 1."""
    return max(1, int(int(config.TRAIN_ROIS_PER_IMAGE) * float(config.ROI_POSITIVE_RATIO)))


def layer_args(config) -> Dict[str, Dict[str, Any]]:
    """Translate a Config into the plain arguments of each graph part.

    Returns a dict of dicts (JSON-ready except ``backbone["architecture"]``,
    which may be Matterport's callable BACKBONE):

    * ``image``: shape (H, W, C) of the training input (IMAGE_SHAPE),
      channels, meta_size (IMAGE_META_SIZE)
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
      detection_max_instances, detection_nms_threshold,
      detection_cross_class_nms_threshold (DetectionLayer)
    * ``anchors``: the Anchors layer of the training graph (image_shape,
      scales, ratios, backbone_shapes, strides, anchor_stride)
    * ``targets``: DetectionTargetLayer (train_rois_per_image,
      roi_positive_ratio, mask_shape, use_mini_mask, bbox_std_dev)
    * ``inference``: precision (INFERENCE_PRECISION), fold_batch_norm
      (fold frozen BatchNorms into their convolutions: every precision but
      "float32_exact")
    * ``training``: the rest of the training graph: max_gt_instances,
      gt_masks_shape, rpn_train_anchors, use_rpn_rois, max_positive_rois,
      loss_weights, weight_decay, batch_norm_momentum
    """
    train_bn = config.TRAIN_BN
    if train_bn is not None:
        train_bn = bool(train_bn)
    image_shape = _ints(config.IMAGE_SHAPE)
    anchors = anchor_spec(config)
    use_mini_mask = bool(config.USE_MINI_MASK)
    return {
        "image": {"shape": image_shape, "channels": int(config.IMAGE_CHANNEL_COUNT),
                  "meta_size": int(config.IMAGE_META_SIZE)},
        "backbone": {"architecture": config.BACKBONE, "train_bn": train_bn},
        "fpn": {"top_down_pyramid_size": int(config.TOP_DOWN_PYRAMID_SIZE)},
        "rpn": {"anchor_stride": int(config.RPN_ANCHOR_STRIDE),
                "anchors_per_location": len(config.RPN_ANCHOR_RATIOS),
                "depth": int(config.TOP_DOWN_PYRAMID_SIZE)},
        "proposal": {"nms_threshold": float(config.RPN_NMS_THRESHOLD),
                     "pre_nms_limit": int(config.PRE_NMS_LIMIT),
                     "rpn_bbox_std_dev": _floats(config.RPN_BBOX_STD_DEV),
                     "proposal_count_inference": int(config.POST_NMS_ROIS_INFERENCE),
                     "proposal_count_training": int(config.POST_NMS_ROIS_TRAINING)},
        "classifier": {"pool_size": int(config.POOL_SIZE),
                       "num_classes": int(config.NUM_CLASSES),
                       "train_bn": train_bn,
                       "fc_layers_size": int(config.FPN_CLASSIF_FC_LAYERS_SIZE)},
        "mask": {"pool_size": int(config.MASK_POOL_SIZE),
                 "num_classes": int(config.NUM_CLASSES),
                 "train_bn": train_bn},
        "detection": {"bbox_std_dev": _floats(config.BBOX_STD_DEV),
                      "detection_min_confidence": float(config.DETECTION_MIN_CONFIDENCE),
                      "detection_max_instances": int(config.DETECTION_MAX_INSTANCES),
                      "detection_nms_threshold": float(config.DETECTION_NMS_THRESHOLD),
                      "detection_cross_class_nms_threshold": _optional_float(
                          getattr(config, "DETECTION_CROSS_CLASS_NMS_THRESHOLD", None))},
        "anchors": {"image_shape": image_shape[:2], "scales": anchors.scales,
                    "ratios": anchors.ratios,
                    "backbone_shapes": tuple(tuple(int(v) for v in s)
                                             for s in anchors.backbone_shapes(image_shape)),
                    "strides": anchors.strides, "anchor_stride": anchors.anchor_stride},
        "targets": {"train_rois_per_image": int(config.TRAIN_ROIS_PER_IMAGE),
                    "roi_positive_ratio": float(config.ROI_POSITIVE_RATIO),
                    "mask_shape": _ints(config.MASK_SHAPE),
                    "use_mini_mask": use_mini_mask,
                    "bbox_std_dev": _floats(config.BBOX_STD_DEV)},
        "inference": {"precision": str(config.INFERENCE_PRECISION),
                      "fold_batch_norm": config.INFERENCE_PRECISION != "float32_exact"},
        "training": {"max_gt_instances": int(config.MAX_GT_INSTANCES),
                     "gt_masks_shape": (_ints(config.MINI_MASK_SHAPE) if use_mini_mask
                                        else image_shape[:2]),
                     "rpn_train_anchors": int(config.RPN_TRAIN_ANCHORS_PER_IMAGE),
                     "use_rpn_rois": bool(config.USE_RPN_ROIS),
                     "max_positive_rois": max_positive_rois(config),
                     "loss_weights": {k: float(v) for k, v in dict(config.LOSS_WEIGHTS).items()},
                     "weight_decay": float(config.WEIGHT_DECAY),
                     "batch_norm_momentum": float(getattr(config, "BATCH_NORM_MOMENTUM", 0.99))},
    }


############################################################
#  Training data
############################################################

@dataclasses.dataclass(frozen=True)
class GroundTruthSpec:
    """How ``data.load_ground_truth`` prepares an image and its instances.

    image: resizing (ImageSpec).
    use_mini_mask: return masks cut to each box and resized to
        ``mini_mask_shape`` (USE_MINI_MASK, MINI_MASK_SHAPE).
    max_instances: keep at most this many instances (MAX_GT_INSTANCES), or None.
    """

    image: ImageSpec
    use_mini_mask: bool = True
    mini_mask_shape: Tuple[int, int] = (56, 56)
    max_instances: Optional[int] = 100


def ground_truth_spec(config, use_mini_mask: Optional[bool] = None) -> GroundTruthSpec:
    """The GroundTruthSpec of ``config``; ``use_mini_mask`` None means
    USE_MINI_MASK."""
    if use_mini_mask is None:
        use_mini_mask = config.USE_MINI_MASK
    max_instances = getattr(config, "MAX_GT_INSTANCES", None)
    return GroundTruthSpec(image=image_spec(config), use_mini_mask=bool(use_mini_mask),
                           mini_mask_shape=_ints(config.MINI_MASK_SHAPE),
                           max_instances=_optional_int(max_instances))


@dataclasses.dataclass(frozen=True)
class RpnTargetSpec:
    """The RPN targets of ``targets.rpn_targets``.

    anchors_per_image: anchors sampled per image (RPN_TRAIN_ANCHORS_PER_IMAGE).
    bbox_std_dev: the deltas are divided by it (RPN_BBOX_STD_DEV).
    """

    anchors_per_image: int = 256
    bbox_std_dev: Tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)


def rpn_target_spec(config) -> RpnTargetSpec:
    return RpnTargetSpec(anchors_per_image=int(config.RPN_TRAIN_ANCHORS_PER_IMAGE),
                         bbox_std_dev=_floats(config.RPN_BBOX_STD_DEV))


@dataclasses.dataclass(frozen=True)
class DetectionTargetSpec:
    """The heads' targets in NumPy (``targets.build_detection_targets``).

    train_rois: ROIs per image (TRAIN_ROIS_PER_IMAGE); positive_ratio
    (ROI_POSITIVE_RATIO); num_classes; bbox_std_dev (BBOX_STD_DEV);
    mask_shape (MASK_SHAPE); use_mini_mask (USE_MINI_MASK); image_shape
    (IMAGE_SHAPE, where mini-masks are expanded).
    """

    train_rois: int
    positive_ratio: float
    num_classes: int
    bbox_std_dev: Tuple[float, ...]
    mask_shape: Tuple[int, int]
    use_mini_mask: bool
    image_shape: Tuple[int, ...]


def detection_target_spec(config) -> DetectionTargetSpec:
    return DetectionTargetSpec(train_rois=int(config.TRAIN_ROIS_PER_IMAGE),
                               positive_ratio=float(config.ROI_POSITIVE_RATIO),
                               num_classes=int(config.NUM_CLASSES),
                               bbox_std_dev=_floats(config.BBOX_STD_DEV),
                               mask_shape=_ints(config.MASK_SHAPE),
                               use_mini_mask=bool(config.USE_MINI_MASK),
                               image_shape=_ints(config.IMAGE_SHAPE))


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """What the training data pipeline (``pipeline.DataSequence``) needs.

    ground_truth, rpn_targets, anchors: see their specs.
    image_shape: (H, W, C) every training image must have (IMAGE_SHAPE).
    image_meta_size: IMAGE_META_SIZE.
    num_classes: NUM_CLASSES (the dataset must have as many).
    batch_size: BATCH_SIZE; steps: STEPS_PER_EPOCH.
    random_rois: 0, or POST_NMS_ROIS_TRAINING random ROIs per image given to
        the graph as ``input_roi`` (USE_RPN_ROIS False).
    """

    ground_truth: GroundTruthSpec
    rpn_targets: RpnTargetSpec
    anchors: AnchorSpec
    image_shape: Tuple[int, int, int]
    image_meta_size: int
    num_classes: int
    batch_size: int
    steps: int
    random_rois: int = 0


def pipeline_spec(config) -> PipelineSpec:
    return PipelineSpec(
        ground_truth=ground_truth_spec(config),
        rpn_targets=rpn_target_spec(config),
        anchors=anchor_spec(config),
        image_shape=_ints(config.IMAGE_SHAPE),
        image_meta_size=int(config.IMAGE_META_SIZE),
        num_classes=int(config.NUM_CLASSES),
        batch_size=int(config.BATCH_SIZE),
        steps=int(config.STEPS_PER_EPOCH),
        random_rois=0 if config.USE_RPN_ROIS else int(config.POST_NMS_ROIS_TRAINING))
