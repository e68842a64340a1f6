"""Image meta data and image molding (NumPy side).

The model receives, next to each molded image, a flat float vector of meta data
so the graph knows where the real image sits inside the padded input and which
classes its data set has. The layout is Matterport's, so checkpoints and code
written for it keep working:

    index   0       image_id
            1:4     original_image_shape (H, W, C) before resizing
            4:7     image_shape (H, W, C) after resizing and padding (the molded size)
            7:11    window (y1, x1, y2, x2) in pixels of the molded image: where the
                    real image is; y2, x2 exclusive
            11      scale factor applied to the original image
            12:     active_class_ids [NUM_CLASSES]: 1 for classes of the image's
                    data set (used by the classifier loss when training on
                    several data sets with different classes)

``IMAGE_META_SIZE = 1 + 3 + 3 + 4 + 1 + NUM_CLASSES``.

The TensorFlow counterpart ``parse_image_meta_graph`` is in
``mrcnn/ops/image_meta.py``.
"""
import numpy as np

__all__ = ["compose_image_meta", "parse_image_meta", "mold_image", "unmold_image"]


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
    if meta.ndim != 2 or meta.shape[1] < 13:
        raise ValueError(
            f"parse_image_meta: expected [batch, IMAGE_META_SIZE >= 13], got shape {meta.shape}; "
            f"pass a batch of vectors built by compose_image_meta().")
    image_id = meta[:, 0]
    original_image_shape = meta[:, 1:4]
    image_shape = meta[:, 4:7]
    window = meta[:, 7:11]  # (y1, x1, y2, x2) window of image in in pixels
    scale = meta[:, 11]
    active_class_ids = meta[:, 12:]
    return {
        "image_id": image_id.astype(np.int32),
        "original_image_shape": original_image_shape.astype(np.int32),
        "image_shape": image_shape.astype(np.int32),
        "window": window.astype(np.int32),
        "scale": scale.astype(np.float32),
        "active_class_ids": active_class_ids.astype(np.int32),
    }


def mold_image(images, config):
    """Expects an RGB image (or array of images) and subtracts
    the mean pixel and converts it to float. Expects image
    colors in RGB order.

    images: [..., H, W, C] any numeric dtype; C = len(config.MEAN_PIXEL).
    Returns float64 (float32 image minus the float64 MEAN_PIXEL), as Matterport.
    """
    return images.astype(np.float32) - config.MEAN_PIXEL


def unmold_image(normalized_images, config):
    """Takes a image normalized with mold() and returns the original.

    Adds MEAN_PIXEL back and casts to uint8, which truncates (0.5 -> 0), as Matterport.
    """
    return (normalized_images + config.MEAN_PIXEL).astype(np.uint8)
