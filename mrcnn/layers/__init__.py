"""Keras 3 layers of Mask R-CNN: thin wrappers over the pure functions in mrcnn.ops.

Each layer takes plain constructor values (never the Config), round-trips
through ``get_config()`` and is registered as ``mrcnn>ClassName``.
"""
from mrcnn.layers.detection import DetectionLayer
from mrcnn.layers.detection_target import DetectionTargetLayer
from mrcnn.layers.proposal import ProposalLayer
from mrcnn.layers.roi_align import PyramidROIAlign

__all__ = ["DetectionLayer", "DetectionTargetLayer", "ProposalLayer", "PyramidROIAlign"]
