"""PyramidROIAlign: Matterport's multi-level ROIAlign as a Keras 3 layer."""
import keras

from mrcnn.ops.image_meta import parse_image_meta_graph
from mrcnn.ops.roi_align import pyramid_roi_align

__all__ = ["PyramidROIAlign"]


@keras.saving.register_keras_serializable(package="mrcnn")
class PyramidROIAlign(keras.layers.Layer):
    """ROI pooling on the level of the feature pyramid that matches each box's size.

    Each box is assigned to P2..P5 by the FPN rule (a 224x224-pixel box goes to
    P4) and sampled with ``tf.image.crop_and_resize``: one bilinear sample per
    output cell, box edges included, zeros outside the map. See
    :func:`mrcnn.ops.roi_align.pyramid_roi_align`. Weightless; no gradient
    flows into the boxes. Bit-identical to Matterport's layer.

    Args:
        pool_shape: (pool_height, pool_width) of the output, e.g. (7, 7) for
            the classifier head, (14, 14) for the mask head.

    Inputs: ``[boxes, image_meta, P2, P3, P4, P5]``
        boxes: [batch, num_boxes, (y1, x1, y2, x2)] float32, normalized
            coordinates, possibly zero padded.
        image_meta: [batch, IMAGE_META_SIZE] (see ``compose_image_meta``). Only
            the molded image shape of the first image is read: all images in a
            batch have the same size.
        P2..P5: [batch, height_i, width_i, channels] feature maps, finest first.

    Output: [batch, num_boxes, pool_height, pool_width, channels] in the
    feature maps' dtype, rows in box order.
    """

    def __init__(self, pool_shape, **kwargs):
        # Boxes must stay float32 for the level rule and the sampling positions
        # to be exact, so inputs are never auto-cast to a float16 policy.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        pool_shape = tuple(int(s) for s in pool_shape)
        if len(pool_shape) != 2 or min(pool_shape) < 1:
            raise ValueError(
                f"pool_shape must be (pool_height, pool_width) with positive sizes, got {pool_shape}."
            )
        self.pool_shape = pool_shape
        self.built = True

    def call(self, inputs):
        boxes, image_meta, *feature_maps = inputs
        image_shape = parse_image_meta_graph(image_meta)["image_shape"][0]
        return pyramid_roi_align(boxes, feature_maps, image_shape, self.pool_shape)

    def compute_output_spec(self, inputs):
        boxes, _, *feature_maps = inputs
        shape = tuple(boxes.shape[:2]) + self.pool_shape + (feature_maps[0].shape[-1],)
        return keras.KerasTensor(shape, dtype=feature_maps[0].dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"pool_shape": list(self.pool_shape)})
        return config
