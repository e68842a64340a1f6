"""Multi-level ROIAlign over a feature pyramid (Matterport's PyramidROIAlign).

Pure TensorFlow, no Keras, no Config; callable eagerly on NumPy arrays.

Each box is pooled from ONE pyramid level chosen by its size (Equation 1 of the
FPN paper, https://arxiv.org/abs/1612.03144), then sampled with
``tf.image.crop_and_resize``: one bilinear sample per output cell, the first and
last samples on the box edges, zero outside the feature map (GOLDEN.md §6.4).
The paper's Mask R-CNN averages 4 samples per bin; Matterport (and therefore
every weight file trained with it) uses the single sample, so we do too.
"""
import tensorflow as tf

__all__ = ["roi_level", "pyramid_roi_align"]

# FPN paper, Equation 1: a 224x224 ROI (ImageNet pre-training size) maps to P4.
CANONICAL_SIZE = 224.0
CANONICAL_LEVEL = 4
# Matterport pools from P2..P5 (P6 only feeds the RPN).
MIN_LEVEL = 2
MAX_LEVEL = 5


def roi_level(boxes, image_shape, min_level=MIN_LEVEL, max_level=MAX_LEVEL):
    """Assigns each box to a pyramid level.

    boxes: [..., (y1, x1, y2, x2)] normalized coordinates.
    image_shape: [(height, width, ...)] of the molded image in pixels (e.g.
        ``parse_image_meta_graph(meta)["image_shape"][0]``); int or float.
    min_level, max_level: the levels to clamp to (P2..P5 by default).

    Returns: [...] int32 levels in [min_level, max_level]:
    ``clip(4 + round(log2(sqrt(h * w) / (224 / sqrt(H * W)))), 2, 5)``.

    The arithmetic is Matterport's, in float32, so that boxes on a rounding
    boundary land on the same level: log2 is ``log(x) / log(2)`` and
    ``tf.round`` rounds half to even. A zero-area box (padding) gives
    log(0) = -inf, whose int32 cast is INT_MIN, so it is clamped to the lowest
    level (P2) rather than dropped.
    """
    boxes = tf.convert_to_tensor(boxes)
    if boxes.dtype != tf.float32:
        boxes = tf.cast(boxes, tf.float32)
    image_shape = tf.cast(tf.convert_to_tensor(image_shape), tf.float32)
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    image_area = image_shape[0] * image_shape[1]
    # Normalized h*w times the image area is the ROI area in pixels; dividing by
    # 224/sqrt(area) instead keeps Matterport's exact float32 rounding.
    x = tf.sqrt(h * w) / (CANONICAL_SIZE / tf.sqrt(image_area))
    level = tf.math.log(x) / tf.math.log(2.0)
    level = CANONICAL_LEVEL + tf.cast(tf.round(level), tf.int32)
    return tf.minimum(max_level, tf.maximum(min_level, level))


def pyramid_roi_align(boxes, feature_maps, image_shape, pool_shape):
    """Pools a fixed-size feature patch for every box from its pyramid level.

    boxes: [batch, num_boxes, (y1, x1, y2, x2)] normalized coordinates; may be
        zero padded (padding rows are pooled from P2 at the corner pixel, as in
        Matterport; the heads ignore them). Must be finite.
    feature_maps: list [P2, P3, P4, P5] of [batch, height_i, width_i, channels]
        tensors, finest first. ``feature_maps[i]`` is level ``2 + i``.
    image_shape: [(height, width, ...)] of the molded image in pixels, shared
        by the whole batch (Matterport uses the first image's meta).
    pool_shape: (pool_height, pool_width), e.g. (7, 7) or (14, 14).

    Returns: [batch, num_boxes, pool_height, pool_width, channels] with the
    dtype of the feature maps, rows in the order of ``boxes``. No gradient
    flows into ``boxes`` (as in Matterport).
    """
    boxes = tf.convert_to_tensor(boxes)
    if boxes.dtype != tf.float32:
        boxes = tf.cast(boxes, tf.float32)
    if boxes.shape.rank is not None and (boxes.shape.rank != 3 or boxes.shape[-1] not in (None, 4)):
        raise ValueError(
            f"boxes must be [batch, num_boxes, (y1, x1, y2, x2)], got shape {boxes.shape}."
        )
    feature_maps = [tf.convert_to_tensor(f) for f in feature_maps]
    out_dtype = feature_maps[0].dtype if feature_maps else tf.float32
    # crop_and_resize has no bfloat16 kernel: sample bfloat16 maps in float32
    # (exact: every bfloat16 value is a float32 value) and cast back at the end.
    feature_maps = [tf.cast(f, tf.float32) if f.dtype == tf.bfloat16 else f
                    for f in feature_maps]
    if not feature_maps:
        raise ValueError("feature_maps must hold at least one feature map ([P2, P3, P4, P5]).")
    pool_shape = tuple(int(s) for s in pool_shape)
    num_levels = len(feature_maps)
    boxes = tf.stop_gradient(boxes)

    levels = roi_level(boxes, image_shape, MIN_LEVEL, MIN_LEVEL + num_levels - 1)

    # Flatten (batch, box) so each level is one crop_and_resize call.
    batch = tf.shape(boxes)[0]
    num_boxes = tf.shape(boxes)[1]
    flat_boxes = tf.reshape(boxes, [-1, 4])
    flat_levels = tf.reshape(levels - MIN_LEVEL, [-1])
    flat_image_ix = tf.reshape(
        tf.broadcast_to(tf.range(batch)[:, None], [batch, num_boxes]), [-1]
    )
    flat_row_ix = tf.range(tf.shape(flat_boxes)[0])

    # Split the rows by level (order kept inside each level), pool each level,
    # then stitch the rows back to their input positions.
    level_boxes = tf.dynamic_partition(flat_boxes, flat_levels, num_levels)
    level_image_ix = tf.dynamic_partition(flat_image_ix, flat_levels, num_levels)
    level_rows = tf.dynamic_partition(flat_row_ix, flat_levels, num_levels)
    pooled = []
    for fmap, lboxes, limage_ix in zip(feature_maps, level_boxes, level_image_ix):
        crops = tf.image.crop_and_resize(
            fmap, lboxes, limage_ix, pool_shape, method="bilinear", extrapolation_value=0.0
        )
        pooled.append(crops)
    pooled = tf.dynamic_stitch(level_rows, pooled)  # [batch * num_boxes, ph, pw, C]

    channels = feature_maps[0].shape[-1]
    out_shape = tf.concat([[batch, num_boxes], tf.shape(pooled)[1:]], axis=0)
    pooled = tf.reshape(pooled, out_shape)
    pooled.set_shape(boxes.shape[:2].concatenate(pool_shape + (channels,)))
    if pooled.dtype != out_dtype:
        pooled = tf.cast(pooled, out_dtype)
    return pooled

