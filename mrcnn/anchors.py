"""Anchors: the boxes the RPN scores and refines, in one place.

Used by inference (``MaskRCNN.get_anchors``, ``detect()``), the training
graph (the ``Anchors`` layer) and the training data pipeline (RPN targets),
so all three see the same boxes.

* ``generate_anchors`` / ``generate_pyramid_anchors``: Matterport's
  functions (``mrcnn.utils`` re-exports them), pixel coordinates.
* ``compute_backbone_shapes``: the feature-map size of each pyramid level.
* ``pyramid_anchors``: both of the above for one molded image size, in
  pixels and normalized, cached per size.
"""
import dataclasses
import functools
import math
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from mrcnn.boxes import norm_boxes

__all__ = ["generate_anchors", "generate_pyramid_anchors", "compute_backbone_shapes",
           "AnchorSpec"]


def generate_anchors(scales, ratios, shape: Sequence[int], feature_stride: int,
                     anchor_stride: int) -> np.ndarray:
    """Anchors of one feature map, in pixels.

    scales: 1D array of anchor sizes in pixels. Example: [32, 64, 128]
    ratios: 1D array of anchor ratios of width/height. Example: [0.5, 1, 2]
    shape: [height, width] spatial shape of the feature map over which
            to generate anchors.
    feature_stride: Stride of the feature map relative to the image in pixels.
    anchor_stride: Stride of anchors on the feature map. For example, if the
        value is 2 then generate anchors for every other feature map pixel.

    Anchor centres are at (y * feature_stride, x * feature_stride) for cell
    (y, x) (not the cell centre); heights scale / sqrt(ratio), widths
    scale * sqrt(ratio); corners are centre -/+ size / 2, unclipped.

    Returns: [num_cells * len(scales) * len(ratios), (y1, x1, y2, x2)]
    float64 pixels, ordered by row y, column x, then (ratio, scale) with
    scales varying fastest.
    """
    # Get all combinations of scales and ratios
    scales, ratios = np.meshgrid(np.array(scales), np.array(ratios))
    scales = scales.flatten()
    ratios = ratios.flatten()

    # Enumerate heights and widths from scales and ratios
    heights = scales / np.sqrt(ratios)
    widths = scales * np.sqrt(ratios)

    # Enumerate shifts in feature space
    shifts_y = np.arange(0, shape[0], anchor_stride) * feature_stride
    shifts_x = np.arange(0, shape[1], anchor_stride) * feature_stride
    shifts_x, shifts_y = np.meshgrid(shifts_x, shifts_y)

    # [cells, 1, 2] centres against [1, anchors, 2] sizes
    centers = np.stack([shifts_y.ravel(), shifts_x.ravel()], axis=1)[:, None, :]
    sizes = np.stack([heights, widths], axis=1)[None, :, :]
    half = 0.5 * sizes
    # Convert to corner coordinates (y1, x1, y2, x2)
    boxes = np.concatenate([centers - half, centers + half], axis=2)
    return boxes.reshape(-1, 4)


def generate_pyramid_anchors(scales: Sequence[float], ratios: Sequence[float], feature_shapes,
                             feature_strides: Sequence[int], anchor_stride: int) -> np.ndarray:
    """Generate anchors at different levels of a feature pyramid. Each scale
    is associated with a level of the pyramid, but each ratio is used in
    all levels of the pyramid.

    scales: [levels] anchor size per level, e.g. config.RPN_ANCHOR_SCALES.
    ratios: width/height ratios, e.g. config.RPN_ANCHOR_RATIOS.
    feature_shapes: [levels, (height, width)] backbone feature map shapes.
    feature_strides: [levels] strides, e.g. config.BACKBONE_STRIDES.
    anchor_stride: config.RPN_ANCHOR_STRIDE.

    Returns:
    anchors: [N, (y1, x1, y2, x2)] float64 pixels. All generated anchors in
        one array. Sorted with the same order of the given scales. So,
        anchors of scale[0] come first, then anchors of scale[1], and so on.
    """
    if not (len(scales) == len(feature_shapes) == len(feature_strides)):
        raise ValueError(
            f"generate_pyramid_anchors: got {len(scales)} scales, {len(feature_shapes)} "
            f"feature shapes and {len(feature_strides)} strides; give one of each per "
            f"pyramid level (RPN_ANCHOR_SCALES and BACKBONE_STRIDES must have equal length).")
    anchors = [generate_anchors(scales[i], ratios, feature_shapes[i],
                                feature_strides[i], anchor_stride)
               for i in range(len(scales))]
    return np.concatenate(anchors, axis=0)


def compute_backbone_shapes(image_shape: Sequence[int], backbone_strides: Sequence[int],
                            compute_backbone_shape: Optional[Callable] = None) -> np.ndarray:
    """Height and width of the feature map of each pyramid level.

    image_shape: (height, width[, channels]) of the molded image, pixels.
    backbone_strides: stride of each level, e.g. [4, 8, 16, 32, 64] for P2..P6.
    compute_backbone_shape: optional callable ``f(image_shape) -> [N, 2]``
        (Matterport's ``COMPUTE_BACKBONE_SHAPE`` for a callable BACKBONE);
        when given, its result is returned as an int array.

    Returns: [N, (height, width)] int array, ``ceil(image / stride)`` per level.
    """
    if compute_backbone_shape is not None:
        return np.asarray(compute_backbone_shape(image_shape))
    return np.array(
        [[int(math.ceil(image_shape[0] / stride)),
          int(math.ceil(image_shape[1] / stride))]
         for stride in backbone_strides])


@dataclasses.dataclass(frozen=True)
class AnchorSpec:
    """Everything that decides the anchors of an image, as plain values.

    ``mrcnn.arguments.anchor_spec(config)`` makes one from a Config
    (RPN_ANCHOR_SCALES, RPN_ANCHOR_RATIOS, BACKBONE_STRIDES, RPN_ANCHOR_STRIDE,
    COMPUTE_BACKBONE_SHAPE for a callable BACKBONE).

    scales: anchor side per pyramid level, pixels.
    ratios: width/height ratios, used on every level.
    strides: feature-map stride per level.
    anchor_stride: anchors at every ``anchor_stride``-th feature-map cell.
    compute_backbone_shape: None (``ceil(size / stride)``) or Matterport's
        ``COMPUTE_BACKBONE_SHAPE`` callable.

    The anchors of a molded size are computed once and cached (they are the
    same for every image of that size); the arrays returned are read-only.
    """

    scales: Tuple[float, ...]
    ratios: Tuple[float, ...]
    strides: Tuple[int, ...]
    anchor_stride: int = 1
    compute_backbone_shape: Optional[Callable] = None

    def __post_init__(self):
        if len(self.scales) != len(self.strides):
            raise ValueError(
                f"AnchorSpec: {len(self.scales)} scales for {len(self.strides)} pyramid "
                f"levels; RPN_ANCHOR_SCALES needs one scale per BACKBONE_STRIDES entry.")
        if int(self.anchor_stride) < 1:
            raise ValueError(f"AnchorSpec: anchor_stride must be >= 1, got {self.anchor_stride}.")

    def backbone_shapes(self, image_shape: Sequence[int]) -> np.ndarray:
        """[levels, (height, width)] int feature-map sizes for a molded size."""
        return compute_backbone_shapes(image_shape, self.strides, self.compute_backbone_shape)

    def pixel_anchors(self, image_shape: Sequence[int]) -> np.ndarray:
        """[A, (y1, x1, y2, x2)] float64 pixel anchors of a molded image of
        ``image_shape`` (height, width[, channels]), in the order of
        ``generate_pyramid_anchors`` (level, row, column, ratio). Cached."""
        return _anchors(self, int(image_shape[0]), int(image_shape[1]))[0]

    def normalized_anchors(self, image_shape: Sequence[int]) -> np.ndarray:
        """[A, (y1, x1, y2, x2)] float32 anchors normalized with the molded
        size (``norm_boxes``): what the network's ``input_anchors`` take. Cached."""
        return _anchors(self, int(image_shape[0]), int(image_shape[1]))[1]


@functools.lru_cache(maxsize=32)
def _anchors(spec: AnchorSpec, height: int, width: int):
    pixels = generate_pyramid_anchors(spec.scales, spec.ratios,
                                      spec.backbone_shapes((height, width)),
                                      spec.strides, spec.anchor_stride)
    normalized = norm_boxes(pixels, (height, width)).astype(np.float32)
    pixels.setflags(write=False)
    normalized.setflags(write=False)
    return pixels, normalized
