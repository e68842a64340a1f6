"""Anchors: the anchor pyramid of the training graph, a constant repeated for
every image of the batch."""
import keras
import numpy as np
import tensorflow as tf

from mrcnn.anchors import generate_pyramid_anchors
from mrcnn.boxes import norm_boxes

__all__ = ["Anchors"]


@keras.saving.register_keras_serializable(package="mrcnn")
class Anchors(keras.layers.Layer):
    """The anchor pyramid as a constant, repeated for every image of the batch.

    Matterport made the anchors a ``tf.Variable`` inside a Lambda with
    BATCH_SIZE baked in. Here they are computed once in NumPy from plain
    values (``anchors.generate_pyramid_anchors`` then ``boxes.norm_boxes``) and
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
        return generate_pyramid_anchors(
            self.scales, self.ratios, np.array(self.backbone_shapes), self.strides,
            self.anchor_stride)

    def anchor_array(self):
        """[A, (y1, x1, y2, x2)] float32 NumPy array, normalized."""
        return norm_boxes(self.pixel_array(), self.image_shape).astype(np.float32)

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
