"""Every custom Keras 3 layer of Mask R-CNN, one concept per module.

Thin layers over the pure functions in ``mrcnn.ops``: each takes plain
constructor values (never the Config), round-trips through ``get_config()``
and is registered as ``mrcnn>ClassName`` (tests/layers run the keras-style
layer test on every one).

==========================  ============================================
layer                       what it does
==========================  ============================================
ProposalLayer               RPN outputs -> proposals (NMS)
PyramidROIAlign             ROI pooling on the FPN level of each box
DetectionTargetLayer        training: sample ROIs, build the heads' targets
DetectionLayer              inference: refine, filter, NMS -> detections
BatchNorm                   Matterport's frozen-or-not batch normalization
FoldedConv2D                a conv applying its frozen BatchNorm itself
TimeDistributed             folds the ROI axis into the batch (Keras 2 way)
SparseGradConv2D            conv whose backward pass skips zero gradients
Anchors                     the training graph's anchors, a constant
NormBoxes, DetectionBoxes   pixel -> normalized boxes; detection boxes
ActiveClassIds              the image meta's active_class_ids
FirstRows                   ``x[:, :rows]`` (the mask head's positives)
LossOutput                  one of the five losses as a scalar output
==========================  ============================================
"""
from mrcnn.layers.anchors import Anchors
from mrcnn.layers.batch_norm import BatchNorm, FoldedConv2D
from mrcnn.layers.boxes import DetectionBoxes, NormBoxes
from mrcnn.layers.detection import DetectionLayer
from mrcnn.layers.detection_target import DetectionTargetLayer
from mrcnn.layers.loss_output import LossOutput
from mrcnn.layers.meta import ActiveClassIds
from mrcnn.layers.proposal import ProposalLayer
from mrcnn.layers.roi_align import PyramidROIAlign
from mrcnn.layers.rows import FirstRows
from mrcnn.layers.sparse_grad_conv import SparseGradConv2D
from mrcnn.layers.time_distributed import TimeDistributed

__all__ = ["DetectionLayer", "DetectionTargetLayer", "ProposalLayer", "PyramidROIAlign",
           "BatchNorm", "FoldedConv2D", "TimeDistributed", "SparseGradConv2D", "Anchors",
           "NormBoxes", "DetectionBoxes", "ActiveClassIds", "FirstRows", "LossOutput"]
