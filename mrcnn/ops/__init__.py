"""Pure TensorFlow functions of Mask R-CNN: no Keras, no Config.

Every function documents its tensor shapes and coordinate convention and can be
called eagerly on NumPy arrays, so notebooks can step through the pipeline.
"""
from mrcnn.ops.boxes import (
    apply_box_deltas_graph,
    box_refinement_graph,
    clip_boxes_graph,
    denorm_boxes_graph,
    norm_boxes_graph,
    overlaps_graph,
)
from mrcnn.ops.detection import refine_detections
from mrcnn.ops.image_meta import parse_image_meta_graph
from mrcnn.ops.proposals import generate_proposals
from mrcnn.ops.roi_align import pyramid_roi_align, roi_level
from mrcnn.ops.targets import detection_targets

__all__ = [
    "apply_box_deltas_graph",
    "box_refinement_graph",
    "clip_boxes_graph",
    "denorm_boxes_graph",
    "norm_boxes_graph",
    "overlaps_graph",
    "parse_image_meta_graph",
    "generate_proposals",
    "refine_detections",
    "pyramid_roi_align",
    "roi_level",
    "detection_targets",
]
