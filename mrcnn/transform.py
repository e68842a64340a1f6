"""Pre- and post-processing around the network: image checks, resize + mold,
unmold detections, paste masks (torchvision's ``transform.py``).

One module for the path an image takes outside the graph, used by
``MaskRCNN.detect()`` (and ``mold_inputs`` / ``unmold_detections``), by the
ground truth loader (``data.load_image_gt`` resizes with :func:`resize_for_model`)
and by the SavedModel export, which reproduces these steps in TensorFlow.

The path of one image, with the shapes (H, W the original size, h, w the
molded size, N detections):

1. :func:`check_image`: [H, W] or [H, W, C] of any numeric dtype with values
   in [0, 255] -> [H, W, channels]; bad input raises ValueError saying why.
2. :func:`resize_for_model`: ``resize.resize_image`` with the spec's mode and
   sizes -> [h, w, channels] (same dtype), window, scale, padding, crop.
3. :func:`mold_image`: float32 image minus the mean pixel (float64, as
   Matterport).
4. ``meta.compose_image_meta``: the image meta vector.
5. the network -> detections [N, (y1, x1, y2, x2, class_id, score)]
   normalized in the molded image, masks [N, S, S, NUM_CLASSES].
6. :func:`unmold_detections`: boxes back to original pixels, padding and
   zero-area rows dropped, each mask pasted into an [H, W] image mask
   (``masks.paste_masks``).

:class:`ImageSpec` holds the settings as plain values;
``mrcnn.arguments.image_spec(config)`` makes it from a Config.
"""
import dataclasses
from typing import List, Optional, Sequence, Tuple

import numpy as np

from mrcnn.boxes import denorm_boxes, norm_boxes
from mrcnn.masks import paste_masks
from mrcnn.meta import compose_image_meta
from mrcnn.resize import RESIZE_MODES, resize_image

__all__ = ["ImageSpec", "check_image", "resize_for_model", "mold_image", "unmold_image",
           "mold_one", "mold_inputs", "unmold_detections", "results_dicts",
           "first_padding_row", "SIZE_MULTIPLE"]

# The FPN halves the image 6 times: molded sides must be multiples of 64.
SIZE_MULTIPLE = 64


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """How images are resized and molded for the network, as plain values.

    mode: IMAGE_RESIZE_MODE ("none", "square", "pad64", "crop").
    min_dim, max_dim, min_scale: IMAGE_MIN_DIM, IMAGE_MAX_DIM, IMAGE_MIN_SCALE
        (see ``resize.resize_image``).
    mean_pixel: MEAN_PIXEL, one value per channel.
    channels: IMAGE_CHANNEL_COUNT.
    num_classes: NUM_CLASSES (the length of the meta's active_class_ids).
    """

    mode: str = "square"
    min_dim: Optional[int] = 800
    max_dim: Optional[int] = 1024
    min_scale: Optional[float] = 0
    mean_pixel: Tuple[float, ...] = (123.7, 116.8, 103.9)
    channels: int = 3
    num_classes: int = 1

    def __post_init__(self):
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"ImageSpec: unknown resize mode {self.mode!r}; use one of "
                             f"{', '.join(RESIZE_MODES)}.")
        if len(self.mean_pixel) != self.channels:
            raise ValueError(f"ImageSpec: {len(self.mean_pixel)} mean pixel values for "
                             f"{self.channels} channels.")


def check_image(image, channels: int = 3, where: str = "image",
                resize_mode: Optional[str] = None) -> np.ndarray:
    """Turn one input image into [H, W, channels] with values in [0, 255], or
    raise a ValueError that says what was wrong and what to do.

    image: [H, W] or [H, W, C], any numeric dtype. Grayscale ([H, W] or one
        channel), gray + alpha and RGBA become RGB when ``channels`` is 3
        (alpha dropped). Float images must hold values in [0, 255].
    where: how the error names the image, e.g. "detect(): image 2".
    resize_mode: with "none" the sides must already be multiples of 64.

    Returns the image (the input array itself when nothing needed changing).
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"{where} has shape {image.shape}; expected [height, width] or "
                         f"[height, width, channels].")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"{where} has size {image.shape[:2]}; it needs at least 2x2 pixels.")
    c = image.shape[2]
    if c != channels:
        if channels == 3 and c == 1:      # grayscale -> RGB
            image = np.repeat(image, 3, axis=2)
        elif channels == 3 and c == 4:    # RGBA -> RGB (alpha dropped)
            image = image[..., :3]
        elif channels == 3 and c == 2:    # gray + alpha -> RGB
            image = np.repeat(image[..., :1], 3, axis=2)
        else:
            raise ValueError(
                f"{where} has {c} channels but config.IMAGE_CHANNEL_COUNT is {channels}; "
                f"convert the image (utils.read_image does) or change the config.")
    if image.dtype == bool:
        raise ValueError(f"{where} is boolean; pass pixel values in [0, 255].")
    if np.issubdtype(image.dtype, np.floating):
        if not np.all(np.isfinite(image)):
            raise ValueError(f"{where} contains NaN or infinite values.")
        lo, hi = float(image.min()), float(image.max())
        if lo < 0 or hi > 255:
            raise ValueError(
                f"{where} is {image.dtype} with values in [{lo:g}, {hi:g}]; expected "
                f"pixel values in [0, 255] (multiply images in [0, 1] by 255).")
    elif image.dtype != np.uint8:
        if image.min() < 0 or image.max() > 255:
            raise ValueError(
                f"{where} is {image.dtype} with values outside [0, 255]; scale it to "
                f"8 bits first (utils.read_image does this for 16-bit files).")
    if resize_mode == "none":
        h, w = image.shape[:2]
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
            raise ValueError(
                f"{where} is {h}x{w}, but IMAGE_RESIZE_MODE='none' feeds images "
                f"unchanged and the FPN needs sides divisible by {SIZE_MULTIPLE}; use "
                f"'pad64' or 'square', or resize the image.")
    return image


def resize_for_model(image: np.ndarray, spec: ImageSpec):
    """``resize.resize_image`` with the spec's settings.

    image: [H, W, C]. Returns (image [h, w, C] same dtype, window (y1, x1,
    y2, x2) pixels of the real image in it, scale, padding, crop).
    """
    return resize_image(image, min_dim=spec.min_dim, min_scale=spec.min_scale,
                        max_dim=spec.max_dim, mode=spec.mode)


def mold_image(images, config) -> np.ndarray:
    """Expects an RGB image (or array of images) and subtracts
    the mean pixel and converts it to float. Expects image
    colors in RGB order.

    images: [..., H, W, C] any numeric dtype; C = len(MEAN_PIXEL).
    config: a Config or an ImageSpec (anything with MEAN_PIXEL or mean_pixel).
    Returns float64 (float32 image minus the float64 MEAN_PIXEL), as Matterport.
    """
    return images.astype(np.float32) - _mean_pixel(config)


def unmold_image(normalized_images, config) -> np.ndarray:
    """Takes a image normalized with mold() and returns the original.

    Adds MEAN_PIXEL back and casts to uint8, which truncates (0.5 -> 0), as Matterport.
    """
    return (normalized_images + _mean_pixel(config)).astype(np.uint8)


def _mean_pixel(config):
    if isinstance(config, ImageSpec):
        return np.asarray(config.mean_pixel, dtype=np.float64)
    return config.MEAN_PIXEL


def mold_one(image, spec: ImageSpec, where: str = "image"):
    """Check, resize and mold one image for the network.

    image: [H, W] or [H, W, C] (see check_image).
    Returns (molded [h, w, C] float64, image_meta [IMAGE_META_SIZE] float64
    with image id 0 and no active classes, window [(y1, x1, y2, x2)] int).
    """
    image = check_image(image, spec.channels, where, spec.mode)
    resized, window, scale, _, _ = resize_for_model(image, spec)
    molded = mold_image(resized, spec)
    meta = compose_image_meta(0, image.shape, molded.shape, window, scale,
                              np.zeros([spec.num_classes], dtype=np.int32))
    return molded, meta, np.asarray(window)


def mold_inputs(images: Sequence, spec: ImageSpec, where: str = "mold_inputs()"):
    """Mold a list of images that mold to one size (always so in "square" mode).

    Returns molded_images [N, h, w, C] float64, image_metas [N, META] float64,
    windows [N, (y1, x1, y2, x2)]. Raises ValueError for images that mold to
    different sizes (detect() groups them by size itself).
    """
    molded = [mold_one(image, spec, f"{where}: image {i}") for i, image in enumerate(images)]
    shapes = {m[0].shape for m in molded}
    if len(shapes) > 1:
        raise ValueError(
            f"{where}: the images mold to different sizes {sorted(shapes)} "
            f"(IMAGE_RESIZE_MODE={spec.mode!r}); mold them in separate calls. "
            f"detect() does this for you.")
    return (np.stack([m[0] for m in molded]), np.stack([m[1] for m in molded]),
            np.stack([m[2] for m in molded]))


def first_padding_row(detections: np.ndarray) -> int:
    """Number of real rows of a zero-padded [N, 6] detections array: the
    index of the first row with class id 0, or N when every row is real."""
    zero_ix = np.where(detections[:, 4] == 0)[0]
    return int(zero_ix[0]) if zero_ix.shape[0] > 0 else int(detections.shape[0])


def unmold_detections(detections, mrcnn_mask, original_image_shape, image_shape, window):
    """Reformats the detections of one image from the format of the neural
    network output to a format suitable for use in the rest of the
    application.

    detections: [N, (y1, x1, y2, x2, class_id, score)] in normalized coordinates
    mrcnn_mask: [N, height, width, num_classes]
    original_image_shape: [H, W, C] Original image shape before resizing
    image_shape: [H, W, C] Shape of the image after resizing and padding
    window: [y1, x1, y2, x2] Pixel coordinates of box in the image where the real
            image is excluding the padding.

    Returns:
    boxes: [N, (y1, x1, y2, x2)] Bounding boxes in pixels
    class_ids: [N] Integer class IDs for each bounding box
    scores: [N] Float probability scores for the class_id
    masks: [height, width, num_instances] Instance masks
    """
    # Detections array is padded with zeros. Find the first class_id == 0.
    N = first_padding_row(detections)

    # Extract boxes, class_ids, scores, and class-specific masks
    boxes = detections[:N, :4]
    class_ids = detections[:N, 4].astype(np.int32)
    scores = detections[:N, 5]
    masks = mrcnn_mask[np.arange(N), :, :, class_ids]

    # Translate normalized coordinates in the resized image to pixel
    # coordinates in the original image before resizing
    window = norm_boxes(window, image_shape[:2])
    wy1, wx1, wy2, wx2 = window
    shift = np.array([wy1, wx1, wy1, wx1])
    wh = wy2 - wy1  # window height
    ww = wx2 - wx1  # window width
    scale = np.array([wh, ww, wh, ww])
    # Convert boxes to normalized coordinates on the window
    boxes = np.divide(boxes - shift, scale)
    # Convert boxes to pixel coordinates on the original image
    boxes = denorm_boxes(boxes, original_image_shape[:2])

    # Filter out detections with zero area. Happens in early training when
    # network weights are still random
    keep = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0
    if not keep.all():
        boxes, class_ids, scores, masks = boxes[keep], class_ids[keep], scores[keep], masks[keep]

    # Resize masks to original image size and set boundary threshold.
    full_masks = paste_masks(masks, boxes, original_image_shape[:2])
    return boxes, class_ids, scores, full_masks


def results_dicts(detections, mrcnn_mask, original_shapes, molded_shapes, windows) -> List[dict]:
    """``unmold_detections`` of each image of a batch, as detect()'s dicts.

    detections: [B, N, 6]; mrcnn_mask: [B, N, S, S, K]; original_shapes,
    molded_shapes, windows: one per image.
    Returns [B] dicts with rois, class_ids, scores, masks.
    """
    results = []
    for k in range(len(original_shapes)):
        rois, class_ids, scores, masks = unmold_detections(
            detections[k], mrcnn_mask[k], original_shapes[k], molded_shapes[k], windows[k])
        results.append({"rois": rois, "class_ids": class_ids, "scores": scores,
                        "masks": masks})
    return results
