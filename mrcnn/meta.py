"""Image meta data: the vector that travels with each molded image (NumPy side).

The model receives, next to each molded image, a flat float vector of meta data
so the graph knows where the real image sits inside the padded input and which
classes its data set has. The layout is Matterport's, so checkpoints and code
written for it keep working. It is defined here once (``META_FIELDS``); the
TensorFlow reader ``mrcnn.ops.image_meta.parse_image_meta_graph`` and
``Config.IMAGE_META_SIZE`` use these constants:

    index   0       image_id
            1:4     original_image_shape (H, W, C) before resizing
            4:7     image_shape (H, W, C) after resizing and padding (the molded size)
            7:11    window (y1, x1, y2, x2) in pixels of the molded image: where the
                    real image is; y2, x2 exclusive
            11      scale factor applied to the original image
            12:     active_class_ids [NUM_CLASSES]: 1 for classes of the image's
                    data set (used by the classifier loss when training on
                    several data sets with different classes)

``IMAGE_META_SIZE = 1 + 3 + 3 + 4 + 1 + NUM_CLASSES`` (``image_meta_size``).

Molding (mean subtraction) and the rest of the image pre/post-processing are in
``mrcnn.transform``.
"""
import numpy as np

__all__ = ["META_FIELDS", "IMAGE_META_FIXED_SIZE", "image_meta_size", "meta_field_slices",
           "compose_image_meta", "parse_image_meta"]

# (field, start, stop) of each meta field; active_class_ids runs to the end.
META_FIELDS = (
    ("image_id", 0, 1),
    ("original_image_shape", 1, 4),
    ("image_shape", 4, 7),
    ("window", 7, 11),
    ("scale", 11, 12),
    ("active_class_ids", 12, None),
)
# Number of meta values before the active_class_ids.
IMAGE_META_FIXED_SIZE = 12


def image_meta_size(num_classes: int) -> int:
    """Length of the meta vector of a model with ``num_classes`` classes
    (background included): ``Config.IMAGE_META_SIZE``."""
    return IMAGE_META_FIXED_SIZE + int(num_classes)


def meta_field_slices():
    """{field: index or slice} into a meta vector, from META_FIELDS: an int
    for the one-value fields (image_id, scale), a slice for the others."""
    return {name: (start if stop == start + 1 else slice(start, stop))
            for name, start, stop in META_FIELDS}


def compose_image_meta(image_id, original_image_shape, image_shape,
                       window, scale, active_class_ids):
    """Takes attributes of an image and puts them in one 1D array.

    image_id: An int ID of the image. Useful for debugging.
    original_image_shape: [H, W, C] before resizing or padding.
    image_shape: [H, W, C] after resizing and padding
    window: (y1, x1, y2, x2) in pixels. The area of the image where the real
            image is (excluding the padding)
    scale: The scaling factor applied to the original image (float32)
    active_class_ids: List of class_ids available in the dataset from which
        the image came. Useful if training on images from multiple datasets
        where not all classes are present in all datasets.

    Returns: [IMAGE_META_SIZE] float64.
    """
    meta = np.array(
        [image_id] +                  # size=1
        list(original_image_shape) +  # size=3
        list(image_shape) +           # size=3
        list(window) +                # size=4 (y1, x1, y2, x2) in image coordinates
        [scale] +                     # size=1
        list(active_class_ids),       # size=num_classes
        dtype=np.float64,             # also when every value is an int (scale 1)
    )
    return meta


def parse_image_meta(meta):
    """Parses an array that contains image attributes to its components.
    See compose_image_meta() for more details.

    meta: [batch, meta length] where meta length depends on NUM_CLASSES

    Returns a dict of the parsed values: image_id [batch] int32,
    original_image_shape [batch, 3] int32, image_shape [batch, 3] int32,
    window [batch, (y1, x1, y2, x2)] int32, scale [batch] float32,
    active_class_ids [batch, NUM_CLASSES] int32.
    """
    meta = np.asarray(meta)
    if meta.ndim != 2 or meta.shape[1] < IMAGE_META_FIXED_SIZE + 1:
        raise ValueError(
            f"parse_image_meta: expected [batch, IMAGE_META_SIZE >= 13], got shape {meta.shape}; "
            f"pass a batch of vectors built by compose_image_meta().")
    fields = meta_field_slices()
    types = {"scale": np.float32}
    return {name: meta[:, fields[name]].astype(types.get(name, np.int32))
            for name, _, _ in META_FIELDS}
