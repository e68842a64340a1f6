"""detect()'s post-processing in TensorFlow: unmold detections, paste masks.

Pure TensorFlow, no Keras, no Config; callable eagerly on NumPy arrays and
inside ``tf.function``. The graph counterparts of
``MaskRCNN.unmold_detections`` and ``model.paste_masks`` for ``mrcnn.export``.

* ``unmold_detections`` does the same arithmetic in the same dtypes as the
  NumPy code: the window normalized in float64 and cast to float32, the box
  shift and scale in float32, ``denorm_boxes`` in float64 with round half to
  even (``np.around`` and ``tf.round`` agree), so boxes, class ids and scores
  are bit-identical.
* ``paste_masks`` resizes each [S, S] mask to its box with the same bilinear
  weights as ``masks._bilinear_matrix`` (pixel-centre aligned, zeros outside),
  two float64 matrix products, clipped to the mask's range, threshold >= 0.5.
  The products may sum in another order than NumPy's BLAS (last-bit
  differences), so a pixel whose value is within ~1e-15 of the threshold can
  flip; nothing else differs. One detection at a time (``tf.map_fn``): each
  works on its box, not on the whole image.

Shape shorthand: M padded detections (DETECTION_MAX_INSTANCES), N real
detections, S mask size (28), K classes, H, W original image, MH, MW molded.
"""
import tensorflow as tf

__all__ = ["unmold_detections", "bilinear_matrix", "paste_masks"]


def unmold_detections(detections, mrcnn_mask, original_size, molded_size, window):
    """The detections of one image in original-image pixels.

    detections: [M, (y1, x1, y2, x2, class_id, score)] float32, normalized,
        zero rows after the last detection (``mrcnn_detection``).
    mrcnn_mask: [M, S, S, K] float mask probabilities (``mrcnn_mask``).
    original_size: [2] ints (H, W) of the image before molding.
    molded_size: [2] ints (MH, MW), the network input size.
    window: [4] ints (y1, x1, y2, x2), pixels of the image in the molded one.

    Returns (boxes [N, 4] int32, class_ids [N] int32, scores [N] float32,
    masks [N, S, S] float32 of each detection's class), N = rows before the
    first class id 0, minus zero-area boxes (as unmold_detections).
    """
    detections = tf.cast(detections, tf.float32)
    mrcnn_mask = tf.cast(mrcnn_mask, tf.float32)
    is_pad = tf.equal(detections[:, 4], 0.0)
    m = tf.shape(detections)[0]
    n = tf.cast(tf.where(tf.reduce_any(is_pad),
                         tf.argmax(tf.cast(is_pad, tf.int32), output_type=tf.int32), m), tf.int32)
    boxes = detections[:n, :4]
    class_ids = tf.cast(detections[:n, 4], tf.int32)
    scores = detections[:n, 5]
    # [N, K, S, S] -> the class of each detection
    masks = tf.gather(tf.transpose(mrcnn_mask[:n], [0, 3, 1, 2]), class_ids, batch_dims=1)

    # norm_boxes(window, molded_size): float64, then float32
    mh = tf.cast(molded_size[0], tf.float64)
    mw = tf.cast(molded_size[1], tf.float64)
    win = (tf.cast(window, tf.float64) - tf.constant([0.0, 0.0, 1.0, 1.0], tf.float64)) \
        / tf.stack([mh - 1, mw - 1, mh - 1, mw - 1])
    win = tf.cast(win, tf.float32)
    wy1, wx1, wy2, wx2 = win[0], win[1], win[2], win[3]
    shift = tf.stack([wy1, wx1, wy1, wx1])
    wh, ww = wy2 - wy1, wx2 - wx1
    scale = tf.stack([wh, ww, wh, ww])
    boxes = (boxes - shift) / scale
    # denorm_boxes(boxes, original_size): float64, round half to even
    oh = tf.cast(original_size[0], tf.float64)
    ow = tf.cast(original_size[1], tf.float64)
    boxes = tf.cast(boxes, tf.float64) * tf.stack([oh - 1, ow - 1, oh - 1, ow - 1]) \
        + tf.constant([0.0, 0.0, 1.0, 1.0], tf.float64)
    boxes = tf.cast(tf.round(boxes), tf.int32)

    # Drop zero-area boxes
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = area > 0
    return (tf.boolean_mask(boxes, keep), tf.boolean_mask(class_ids, keep),
            tf.boolean_mask(scores, keep), tf.boolean_mask(masks, keep))


def bilinear_matrix(out_size, in_size):
    """[out_size, in_size] float64 weights of ``masks._bilinear_matrix``:
    pixel-centre aligned bilinear resize with zeros outside the input."""
    src = (tf.cast(tf.range(out_size), tf.float64) + 0.5) * (
        tf.cast(in_size, tf.float64) / tf.cast(out_size, tf.float64)) - 0.5
    i0 = tf.floor(src)
    frac = src - i0
    i0 = tf.cast(i0, tf.int32)
    # one zero column on each side, dropped at the end
    m = tf.one_hot(i0 + 1, in_size + 2, dtype=tf.float64) * (1.0 - frac)[:, None] \
        + tf.one_hot(i0 + 2, in_size + 2, dtype=tf.float64) * frac[:, None]
    return m[:, 1:-1]


def _paste_one(mask, box, height, width, threshold):
    """[H, W] bool: one [S, S] mask resized to ``box`` and placed in the image."""
    y1, x1, y2, x2 = box[0], box[1], box[2], box[3]
    h, w = y2 - y1, x2 - x1

    def paste():
        m = tf.cast(mask, tf.float64)
        resized = tf.matmul(tf.matmul(bilinear_matrix(h, tf.shape(m)[0]), m),
                            bilinear_matrix(w, tf.shape(m)[1]), transpose_b=True)
        resized = tf.clip_by_value(resized, tf.reduce_min(m), tf.reduce_max(m))
        on = resized >= threshold
        # the part of the box inside the image
        cy1, cx1 = tf.maximum(y1, 0), tf.maximum(x1, 0)
        cy2, cx2 = tf.minimum(y2, height), tf.minimum(x2, width)
        ch, cw = tf.maximum(cy2 - cy1, 0), tf.maximum(cx2 - cx1, 0)
        on = on[cy1 - y1:cy1 - y1 + ch, cx1 - x1:cx1 - x1 + cw]
        top = tf.minimum(cy1, height)
        left = tf.minimum(cx1, width)
        return tf.pad(on, [[top, height - top - ch], [left, width - left - cw]])

    return tf.cond(tf.logical_and(h > 0, w > 0), paste,
                   lambda: tf.zeros(tf.stack([height, width]), tf.bool))


def paste_masks(masks, boxes, height, width, threshold=0.5):
    """``model.paste_masks`` in the graph.

    masks: [N, S, S] float mask probabilities, one per box.
    boxes: [N, (y1, x1, y2, x2)] int pixel boxes, y2/x2 exclusive; parts
        outside the image are cut off.
    height, width: int scalars, the image size.

    Returns: [H, W, N] bool.
    """
    masks = tf.convert_to_tensor(masks)
    boxes = tf.cast(boxes, tf.int32)
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    n = tf.shape(boxes)[0]
    # map_fn needs one element at least to know the shape of its result: run
    # a dummy one when there are no detections and drop it.
    dummy_mask = tf.zeros(tf.concat([[1], tf.shape(masks)[1:]], 0), masks.dtype)
    run_masks = tf.concat([masks, dummy_mask], 0)[:tf.maximum(n, 1)]
    run_boxes = tf.concat([boxes, tf.zeros([1, 4], tf.int32)], 0)[:tf.maximum(n, 1)]
    full = tf.map_fn(
        lambda mb: _paste_one(mb[0], mb[1], height, width, threshold),
        (run_masks, run_boxes),
        fn_output_signature=tf.TensorSpec([None, None], tf.bool))
    return tf.transpose(full[:n], [1, 2, 0])
