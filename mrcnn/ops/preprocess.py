"""detect()'s pre-processing in TensorFlow: resize, pad, mold, image meta, anchors.

Pure TensorFlow, no Keras, no Config (plain arguments); callable eagerly on
NumPy arrays and inside ``tf.function``. Used by ``mrcnn.export`` so that a
SavedModel takes a raw uint8 image and does everything ``MaskRCNN.detect``
does before the network, with no Python left on the serving side.

The point is bit-identity with the NumPy path, not just closeness:

* ``resize_image`` reproduces ``utils.resize_image``. The scale is computed in
  float64 exactly as there (Python ``round`` is half to even, so is
  ``tf.round``). The bilinear resize is ``utils._resize_bilinear``'s
  ``scipy.ndimage.zoom(order=1, mode="grid-constant", grid_mode=True)``
  (= skimage ``resize(order=1, mode="constant", anti_aliasing=False)``): the
  source coordinate of output pixel ``o`` is ``(o + 0.5) * in / out - 0.5``,
  weights ``1 - t`` and ``1 - (1 - t)``, zero outside the input, and each output
  value is scipy's sum ``((v00 * wy0) * wx0 + (v01 * wy0) * wx1) + ...`` in
  float64, in scipy's order; then skimage's clip to the input range (widened
  to 0 when zero padding reached the output) and the uint8 truncation.
  ``tf.image.resize`` is not used: it clamps at the edges instead of blending
  with zero, and rounds differently.
  (The evaluation order was established against ``_resize_bilinear`` on
  thousands of random and flat images; ``tests/test_export.py`` keeps checking
  it. A matrix-product formulation is equal only to ~1e-13, which flips the
  uint8 truncation of flat regions.)
* ``mold_image``: float64 ``image - MEAN_PIXEL``, then float32, as
  ``meta.mold_image`` followed by detect()'s ``astype(np.float32)``.
* ``compose_image_meta``: the layout of ``meta.compose_image_meta`` (image id
  0, active class ids 0, as detect() builds it).
* ``pyramid_anchors``: ``utils.generate_pyramid_anchors`` then
  ``utils.norm_boxes`` in float64, cast to float32: the same bits as
  ``MaskRCNN.get_anchors``. Feature map sizes are ``ceil(size / stride)``
  (``compute_backbone_shapes`` of the ResNet backbones).

Shape shorthand: H, W original image; h, w resized (before padding);
MH, MW molded (after padding); C channels; A anchors.
"""
import tensorflow as tf

__all__ = ["resize_scale", "resize_bilinear", "resize_image", "mold_image",
           "compose_image_meta", "pyramid_anchors", "RESIZE_MODES"]

# The modes ``resize_image`` reproduces; "crop" (a random crop) is training-only.
RESIZE_MODES = ("none", "square", "pad64")


def resize_scale(height, width, min_dim=None, max_dim=None, min_scale=None, mode="square"):
    """The scale and resized size of ``utils.resize_image``.

    height, width: int scalars (tensors or numbers), the image size.
    min_dim, max_dim, min_scale, mode: Python values, as in resize_image.

    Returns (scale float64 scalar, new_height int32, new_width int32);
    scale is exactly 1.0 and the size unchanged when nothing is resized.
    """
    h = tf.cast(height, tf.float64)
    w = tf.cast(width, tf.float64)
    one = tf.constant(1.0, tf.float64)
    scale = one
    if mode == "none":
        return scale, tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    if min_dim:
        # Scale up but not down
        scale = tf.maximum(one, tf.constant(float(min_dim), tf.float64) / tf.minimum(h, w))
    if min_scale:
        scale = tf.where(scale < min_scale, tf.constant(float(min_scale), tf.float64), scale)
    if max_dim and mode == "square":
        image_max = tf.maximum(h, w)
        scale = tf.where(tf.round(image_max * scale) > max_dim,
                         tf.constant(float(max_dim), tf.float64) / image_max, scale)
    new_h = tf.cast(tf.round(h * scale), tf.int32)
    new_w = tf.cast(tf.round(w * scale), tf.int32)
    return scale, new_h, new_w


def _axis_weights(in_size, out_size):
    """Indices and weights of scipy's grid-mode order-1 zoom along one axis.

    Returns (i0 [out] int32: index of the lower neighbour in the input padded
    by one zero pixel on each side, so i0 + 1 is the upper one; w0, w1 [out]
    float64 weights of the two).
    """
    zoom = tf.cast(in_size, tf.float64) / tf.cast(out_size, tf.float64)
    cc = (tf.cast(tf.range(out_size), tf.float64) + 0.5) * zoom - 0.5
    start = tf.floor(cc)
    t = cc - start
    w0 = 1.0 - t
    w1 = 1.0 - w0      # scipy: the last weight is 1 minus the others
    return tf.cast(start, tf.int32) + 1, w0, w1


def resize_bilinear(image, out_height, out_width):
    """``utils._resize_bilinear(image, (out_height, out_width))`` bit for bit.

    image: [H, W, C] (any real dtype; computed in float64).
    Returns: [out_height, out_width, C] float64, clipped like skimage.
    """
    image = tf.cast(tf.convert_to_tensor(image), tf.float64)
    shape = tf.shape(image)
    iy, wy0, wy1 = _axis_weights(shape[0], out_height)
    ix, wx0, wx1 = _axis_weights(shape[1], out_width)
    padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]])
    # scipy's loop: t = 0; t += (v * wy) * wx for (y0,x0), (y0,x1), (y1,x0), (y1,x1).
    # Written so that Grappler cannot reassociate the products (its
    # arithmetic optimizer turns (v * wy) * wx with broadcast operands into
    # v * (wy * wx), which changes the last bit and so the uint8 truncation):
    # each row weight multiplies before the column gather, each column weight
    # after it, and the four terms have the same shape.
    rows0 = tf.gather(padded, iy, axis=0) * wy0[:, None, None]       # [oh, W + 2, C]
    rows1 = tf.gather(padded, iy + 1, axis=0) * wy1[:, None, None]
    wx0 = wx0[None, :, None]
    wx1 = wx1[None, :, None]
    out = tf.gather(rows0, ix, axis=1) * wx0
    out = out + tf.gather(rows0, ix + 1, axis=1) * wx1
    out = out + tf.gather(rows1, ix, axis=1) * wx0
    out = out + tf.gather(rows1, ix + 1, axis=1) * wx1
    # skimage's _clip_warp_output(mode="constant", cval=0)
    lo, hi = tf.reduce_min(image), tf.reduce_max(image)
    out_lo, out_hi = tf.reduce_min(out), tf.reduce_max(out)
    zero = tf.constant(0.0, tf.float64)
    widen = tf.logical_and(tf.logical_not(tf.logical_and(lo <= 0, hi >= 0)),
                           tf.logical_and(out_lo <= 0, out_hi >= 0))
    lo = tf.where(widen, tf.minimum(lo, zero), lo)
    hi = tf.where(widen, tf.maximum(hi, zero), hi)
    return tf.clip_by_value(out, lo, hi)


def _pad_to_multiple(size, multiple):
    """(before, after) int32 padding of ``utils._pad_to_multiple``."""
    rest = size % multiple
    total = tf.where(rest > 0, multiple - rest, 0)
    return total // 2, total - total // 2


def resize_image(image, min_dim=None, max_dim=None, min_scale=None, mode="square"):
    """``utils.resize_image`` for a uint8 image, modes none / square / pad64.

    image: [H, W, C] uint8 (tensor or array).
    Returns:
        image: [MH, MW, C] uint8, resized (bilinear, truncated) and zero-padded
        window: [4] int32 (y1, x1, y2, x2) of the image inside the padding
        scale: float64 scalar
    In "square" mode MH = MW = max_dim and the static shape says so.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize_image: mode {mode!r} cannot be reproduced in the graph; "
                         f"use one of {', '.join(RESIZE_MODES)} ('crop' picks a random "
                         f"crop and is for training only).")
    if mode == "square" and not max_dim:
        raise ValueError("resize_image: mode 'square' needs max_dim (IMAGE_MAX_DIM).")
    if mode == "pad64" and min_dim and min_dim % 64 != 0:
        raise ValueError(f"resize_image: mode 'pad64' needs min_dim (IMAGE_MIN_DIM) to be a "
                         f"multiple of 64, got {min_dim}.")
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise ValueError(f"resize_image: expected a uint8 image, got {image.dtype.name}.")
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    if mode == "none":
        return image, tf.stack([0, 0, h, w]), tf.constant(1.0, tf.float64)

    scale, new_h, new_w = resize_scale(h, w, min_dim, max_dim, min_scale, mode)
    image = tf.cond(
        tf.equal(scale, 1.0),
        lambda: image,
        # floor = truncation: the resized values are clipped to [0, 255]
        lambda: tf.cast(tf.floor(resize_bilinear(image, new_h, new_w)), tf.uint8))
    h, w = new_h, new_w
    if mode == "square":
        top = (max_dim - h) // 2
        left = (max_dim - w) // 2
        bottom, right = max_dim - h - top, max_dim - w - left
    else:  # pad64
        top, bottom = _pad_to_multiple(h, 64)
        left, right = _pad_to_multiple(w, 64)
    image = tf.pad(image, [[top, bottom], [left, right], [0, 0]])
    if mode == "square":
        image = tf.ensure_shape(image, [max_dim, max_dim, image.shape[-1]])
    window = tf.stack([top, left, h + top, w + left])
    return image, window, scale


def mold_image(image, mean_pixel):
    """``meta.mold_image`` + ``astype(float32)``: [..., C] -> float32 image - mean.

    mean_pixel: C floats (Config.MEAN_PIXEL); subtracted in float64.
    """
    image = tf.cast(tf.convert_to_tensor(image), tf.float64)
    mean = tf.constant([float(v) for v in mean_pixel], tf.float64)
    return tf.cast(image - mean, tf.float32)


def compose_image_meta(original_shape, image_shape, window, scale, num_classes, image_id=0):
    """``meta.compose_image_meta`` as detect() fills it, float32.

    original_shape, image_shape: [3] ints (H, W, C) before and after molding.
    window: [4] ints; scale: float scalar; num_classes: Python int (the
    active class ids are all 0, as in detect()).
    Returns: [12 + num_classes] float32.
    """
    parts = [tf.fill([1], tf.cast(image_id, tf.float64)),
             tf.cast(original_shape, tf.float64),
             tf.cast(image_shape, tf.float64),
             tf.cast(window, tf.float64),
             tf.reshape(tf.cast(scale, tf.float64), [1]),
             tf.zeros([int(num_classes)], tf.float64)]
    return tf.cast(tf.concat(parts, axis=0), tf.float32)


def pyramid_anchors(height, width, scales, ratios, strides, anchor_stride, normalized=True):
    """``MaskRCNN.get_anchors`` for a molded size, in the graph.

    height, width: int scalars, the molded image size.
    scales: anchor size per level (RPN_ANCHOR_SCALES); ratios: width/height
    ratios (RPN_ANCHOR_RATIOS); strides: BACKBONE_STRIDES; anchor_stride:
    RPN_ANCHOR_STRIDE. Feature maps are ceil(size / stride) per level.

    Returns: [A, (y1, x1, y2, x2)] float32 normalized anchors (float64 pixel
    anchors if ``normalized`` is False), in generate_pyramid_anchors' order.
    """
    import numpy as np

    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    per_level = []
    for scale, stride in zip(scales, strides):
        # np.meshgrid(scales, ratios) for one scale: one row per ratio
        s = np.array([scale], dtype=np.float64)
        r = np.asarray(ratios, dtype=np.float64)
        s_grid, r_grid = np.meshgrid(s, r)
        s_grid, r_grid = s_grid.ravel(), r_grid.ravel()
        # the sizes in float64 in the graph (as NumPy computes them)
        s_t, r_t = tf.constant(s_grid, tf.float64), tf.constant(r_grid, tf.float64)
        heights = s_t / tf.sqrt(r_t)
        widths = s_t * tf.sqrt(r_t)
        fh = (height + stride - 1) // stride
        fw = (width + stride - 1) // stride
        shifts_y = tf.cast(tf.range(0, fh, anchor_stride) * stride, tf.float64)
        shifts_x = tf.cast(tf.range(0, fw, anchor_stride) * stride, tf.float64)
        sx, sy = tf.meshgrid(shifts_x, shifts_y)
        centers = tf.stack([tf.reshape(sy, [-1]), tf.reshape(sx, [-1])], axis=1)[:, None, :]
        half = 0.5 * tf.stack([heights, widths], axis=1)[None, :, :]
        boxes = tf.concat([centers - half, centers + half], axis=2)
        per_level.append(tf.reshape(boxes, [-1, 4]))
    anchors = tf.concat(per_level, axis=0)
    if not normalized:
        return anchors
    h = tf.cast(height, tf.float64)
    w = tf.cast(width, tf.float64)
    scale = tf.stack([h - 1, w - 1, h - 1, w - 1])
    shift = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float64)
    return tf.cast((anchors - shift) / scale, tf.float32)
