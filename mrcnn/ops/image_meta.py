"""Reading Matterport's image meta vector in TensorFlow.

The meta vector (``compose_image_meta``; the layout is defined once in
``mrcnn.meta.META_FIELDS``) is, per image::

    [image_id,                          # 1 value
     original_image_shape (H, W, C),    # 3 values, before resizing
     image_shape (H, W, C),             # 3 values, the molded (network input) image
     window (y1, x1, y2, x2),           # 4 values, pixels of the real image inside
                                        #   the molded one (padding excluded)
     scale,                             # 1 value, resize factor
     active_class_ids]                  # NUM_CLASSES values, 1 where the dataset
                                        #   of the image has that class

so its length is ``1 + 3 + 3 + 4 + 1 + NUM_CLASSES`` (``Config.IMAGE_META_SIZE``).
"""
import tensorflow as tf

from mrcnn.meta import IMAGE_META_FIXED_SIZE, META_FIELDS, meta_field_slices

__all__ = ["IMAGE_META_FIXED_SIZE", "parse_image_meta_graph"]


def parse_image_meta_graph(meta):
    """Splits a batch of image meta vectors into its fields.

    meta: [batch, 12 + NUM_CLASSES] (any float dtype; NumPy is fine).

    Returns a dict of tensors with the dtype of ``meta``:
        image_id: [batch]
        original_image_shape: [batch, (H, W, C)] before resizing
        image_shape: [batch, (H, W, C)] of the molded image
        window: [batch, (y1, x1, y2, x2)] in pixels of the molded image
        scale: [batch]
        active_class_ids: [batch, NUM_CLASSES]
    """
    meta = tf.convert_to_tensor(meta)
    if meta.shape.rank is not None and meta.shape.rank != 2:
        raise ValueError(
            f"image_meta must be [batch, {IMAGE_META_FIXED_SIZE} + NUM_CLASSES], got shape "
            f"{meta.shape}. Add the batch axis (meta[None]) for a single image."
        )
    if meta.shape[-1] is not None and meta.shape[-1] < IMAGE_META_FIXED_SIZE:
        raise ValueError(
            f"image_meta has {meta.shape[-1]} values per image, expected "
            f"{IMAGE_META_FIXED_SIZE} + NUM_CLASSES (see compose_image_meta)."
        )
    fields = meta_field_slices()
    return {name: meta[:, fields[name]] for name, _, _ in META_FIELDS}
