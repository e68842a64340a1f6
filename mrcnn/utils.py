"""
Mask R-CNN
Common utility functions and classes (NumPy side of the model).

Matterport kept these in one file; here each concept has its own module and
this one re-exports Matterport's names, so ``from mrcnn import utils`` code
keeps working unchanged:

=====================  =====================================================
module                 names
=====================  =====================================================
``mrcnn.boxes``        extract_bboxes, compute_iou, compute_overlaps,
                       compute_overlaps_masks, non_max_suppression,
                       apply_box_deltas, box_refinement, norm_boxes,
                       denorm_boxes, BBOX_LOG_SCALE_CLIP
``mrcnn.resize``       resize, resize_image, resize_mask
``mrcnn.masks``        minimize_mask, expand_mask, unmold_mask
``mrcnn.anchors``      generate_anchors, generate_pyramid_anchors
``mrcnn.image_io``     read_image, ImageReadError
``mrcnn.dataset``      Dataset
``mrcnn.evaluation``   trim_zeros, compute_matches, compute_ap,
                       compute_ap_range, compute_recall
``mrcnn.download``     download_trained_weights, COCO_MODEL_URL,
                       WeightsDownloadError
``mrcnn.ops``          box_refinement_graph, batch_slice (TensorFlow)
=====================  =====================================================

Every function gives Matterport's numbers (commit 3deaec5): all 75
``mrcnn.utils`` cases of the U1 golden set (``tests/golden/u1_utils.*``) pass
exactly (values, dtypes and shapes), including Matterport's quirks, which the
docstrings list (see also ``GOLDEN.md`` section 6). The per-image training
helpers are vectorized (``bench/bench_utils.py``), each fast path
bit-identical to Matterport's formulation. Bad input (a box array whose last
axis is not 4, a 2-D mask ...) raises ``ValueError`` naming the function and
the expected shape.

The two TensorFlow helpers are imported on first use (a documented lazy
import, PEP 562 ``__getattr__``): importing ``mrcnn.utils`` does not import
TensorFlow, so the data pipeline and the samples' argument checks stay fast.

One deliberate deviation: ``compute_matches`` matches each ground-truth
instance at most once. Matterport's "already matched" test (``> 0``) missed
a match with the top-scoring prediction 0, which could then be counted as a
true positive twice (recall above 1). No golden case depends on it.

Licensed under the MIT License (Matterport's original is MIT as well).
"""
import importlib

from mrcnn.anchors import generate_anchors, generate_pyramid_anchors
from mrcnn.boxes import (BBOX_LOG_SCALE_CLIP, apply_box_deltas, box_refinement,
                         compute_iou, compute_overlaps, compute_overlaps_masks,
                         denorm_boxes, extract_bboxes, non_max_suppression, norm_boxes)
from mrcnn.dataset import Dataset
from mrcnn.download import COCO_MODEL_URL, WeightsDownloadError, download_trained_weights
from mrcnn.evaluation import (compute_ap, compute_ap_range, compute_matches, compute_recall,
                              trim_zeros)
from mrcnn.image_io import ImageReadError, read_image
from mrcnn.masks import expand_mask, minimize_mask, unmold_mask
from mrcnn.resize import resize, resize_image, resize_mask

__all__ = [
    "COCO_MODEL_URL", "ImageReadError", "WeightsDownloadError",
    # boxes
    "extract_bboxes", "compute_iou", "compute_overlaps", "compute_overlaps_masks",
    "non_max_suppression", "apply_box_deltas", "box_refinement", "box_refinement_graph",
    "norm_boxes", "denorm_boxes", "BBOX_LOG_SCALE_CLIP",
    # dataset and images
    "Dataset", "read_image", "resize", "resize_image", "resize_mask",
    "minimize_mask", "expand_mask", "unmold_mask",
    # anchors
    "generate_anchors", "generate_pyramid_anchors",
    # evaluation
    "trim_zeros", "compute_matches", "compute_ap", "compute_ap_range", "compute_recall",
    # misc
    "batch_slice", "download_trained_weights",
]

# Names that need TensorFlow, imported when first used: name -> module.
_LAZY = {
    "box_refinement_graph": "mrcnn.ops.boxes",
    "batch_slice": "mrcnn.ops.legacy",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mrcnn.utils' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
