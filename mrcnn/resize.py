"""Resizing images and masks as Matterport did (``resize_image``, ``resize_mask``).

Same numbers as Matterport's skimage/scipy calls, computed faster: see each
function. ``mrcnn.transform`` uses them to mold images for the network, the
data pipeline to resize ground truth; ``mrcnn.utils`` re-exports them.
"""
import random
import warnings
from typing import Optional, Sequence

import numpy as np
import scipy.ndimage

from mrcnn._checks import _as_masks

__all__ = ["resize", "resize_image", "resize_mask", "RESIZE_MODES"]

# The modes of resize_image (Config.IMAGE_RESIZE_MODE).
RESIZE_MODES = ("none", "square", "pad64", "crop")


def resize(image: np.ndarray, output_shape: Sequence[int], order: int = 1, mode: str = 'constant',
           cval: float = 0, clip: bool = True, preserve_range: bool = False,
           anti_aliasing: bool = False, anti_aliasing_sigma=None) -> np.ndarray:
    """A wrapper for Scikit-Image resize() with Matterport's defaults
    (bilinear, zero padding outside, no anti-aliasing).

    image: [H, W] or [H, W, C] array. Bool input with order > 0 is converted
        to float64 0/1 first (old scikit-image did this; new versions refuse).
    output_shape: (height, width).

    Returns: float64 for integer/bool input (float32 stays float32); values
    in the input's range unless preserve_range=False rescales integers to
    [0, 1] (skimage's img_as_float).
    """
    import skimage.transform  # imported here: only this wrapper needs scikit-image

    image = np.asarray(image)
    if image.dtype == bool and order > 0:
        image = image.astype(np.float64)
    return skimage.transform.resize(
        image, output_shape,
        order=order, mode=mode, cval=cval, clip=clip,
        preserve_range=preserve_range, anti_aliasing=anti_aliasing,
        anti_aliasing_sigma=anti_aliasing_sigma)


def _resize_bilinear(image, output_shape):
    """``resize(image, output_shape)`` for a float32/float64 array [H, W] or
    [H, W, C], bit-identical, about twice as fast: the same
    ``scipy.ndimage.zoom`` (pixel-centre grid, zeros outside) run per channel
    instead of on the 3-D array (along the channel axis skimage's zoom
    factor is 1, whose interpolation weights are exactly 1 and 0), without
    skimage's per-call overhead, then skimage's clipping to the input range
    (widened to 0 when zero padding reached the output)."""
    factors = np.divide(image.shape[:2], tuple(output_shape)[:2])
    zoom = [1 / f for f in factors]
    kwargs = dict(order=1, mode="grid-constant", cval=0, grid_mode=True)
    if image.ndim == 2:
        out = scipy.ndimage.zoom(image, zoom, **kwargs)
    else:
        # the output size zoom itself derives from the factors
        size = tuple(int(round(n * z)) for n, z in zip(image.shape[:2], zoom))
        out = np.empty(size + image.shape[2:], dtype=image.dtype)
        for c in range(image.shape[2]):
            scipy.ndimage.zoom(image[:, :, c], zoom, output=out[:, :, c], **kwargs)
    # skimage's _clip_warp_output(mode="constant", cval=0)
    lo, hi = image.min(), image.max()
    if np.isnan(lo):
        lo, hi = np.nanmin(image), np.nanmax(image)
        out_lo, out_hi = np.nanmin(out), np.nanmax(out)
    else:
        out_lo, out_hi = out.min(), out.max()
    if not lo <= 0 <= hi and out_lo <= 0 <= out_hi:
        zero = image.dtype.type(0)
        lo, hi = min(lo, zero), max(hi, zero)
    np.clip(out, np.asarray(lo), np.asarray(hi), out=out)
    return out


def resize_image(image: np.ndarray, min_dim: Optional[int] = None, max_dim: Optional[int] = None,
                 min_scale: Optional[float] = None, mode: str = "square"):
    """Resizes an image keeping the aspect ratio unchanged.

    image: [H, W, C] array (uint8 usually; the dtype is kept).
    min_dim: if provided, resizes the image such that it's smaller
        dimension == min_dim
    max_dim: if provided, ensures that the image longest side doesn't
        exceed this value.
    min_scale: if provided, ensure that the image is scaled up by at least
        this percent even if min_dim doesn't require it.
    mode: Resizing mode.
        none: No resizing. Return the image unchanged.
        square: Resize and pad with zeros to get a square image
            of size [max_dim, max_dim].
        pad64: Pads width and height with zeros to make them multiples of 64.
               If min_dim or min_scale are provided, it scales the image up
               before padding. max_dim is ignored in this mode.
               The multiple of 64 is needed to ensure smooth scaling of feature
               maps up and down the 6 levels of the FPN pyramid (2**6=64).
        crop: Picks random crops from the image. First, scales the image based
              on min_dim and min_scale, then picks a random crop of
              size min_dim x min_dim. Can be used in training only.
              max_dim is not used in this mode. The crop position comes from
              Python's ``random.randint`` (y first, then x), as Matterport.

    Scale: ``max(1, min_dim / min(h, w))``, at least ``min_scale``; in
    square mode reduced to ``max_dim / max(h, w)`` if ``round(max(h, w) *
    scale) > max_dim``. The new size is ``(round(h * scale), round(w *
    scale))`` (Python round, half to even); resizing is skimage bilinear with
    pixel-centre alignment and zeros outside (``resize``), then
    ``astype(dtype)``: uint8 values are truncated, not rounded.

    Returns:
    image: the resized image
    window: (y1, x1, y2, x2). If max_dim is provided, padding might
        be inserted in the returned image. If so, this window is the
        coordinates of the image part of the full image (excluding
        the padding). The x2, y2 pixels are not included.
    scale: The scale factor used to resize the image (int 1 if unscaled)
    padding: Padding added to the image [(top, bottom), (left, right), (0, 0)]
    crop: (y, x, height, width) of the crop in crop mode, else None
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"resize_image: image must be [H, W, C] (or [H, W]), got "
                         f"shape {image.shape}.")
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize_image: mode {mode!r} not supported; use 'none', "
                         f"'square', 'pad64' or 'crop'.")
    # Keep track of image dtype and return results in the same dtype
    image_dtype = image.dtype
    # Default window (y1, x1, y2, x2) and default scale == 1.
    h, w = image.shape[:2]
    window = (0, 0, h, w)
    scale = 1
    padding = [(0, 0), (0, 0), (0, 0)]
    crop = None

    if mode == "none":
        return image, window, scale, padding, crop
    if mode == "square" and not max_dim:
        raise ValueError("resize_image: mode 'square' needs max_dim (IMAGE_MAX_DIM).")
    if mode == "crop" and not min_dim:
        raise ValueError("resize_image: mode 'crop' needs min_dim (IMAGE_MIN_DIM), the crop size.")
    if mode == "pad64" and min_dim and min_dim % 64 != 0:
        raise ValueError(f"resize_image: mode 'pad64' needs min_dim (IMAGE_MIN_DIM) to be a "
                         f"multiple of 64, got {min_dim}.")
    if h == 0 or w == 0:
        raise ValueError(f"resize_image: image has no pixels (shape {image.shape}).")

    # Scale?
    if min_dim:
        # Scale up but not down
        scale = max(1, min_dim / min(h, w))
    if min_scale and scale < min_scale:
        scale = min_scale

    # Does it exceed max dim?
    if max_dim and mode == "square":
        image_max = max(h, w)
        if round(image_max * scale) > max_dim:
            scale = max_dim / image_max

    # Resize image using bilinear interpolation
    if scale != 1:
        new_shape = (round(h * scale), round(w * scale))
        if image.dtype.kind in "ui" or image.dtype in (np.float32, np.float64):
            # what resize(preserve_range=True) does, faster (same bits):
            # integers become float64, float32/64 stay as they are
            image = _resize_bilinear(image.astype(np.float64) if image.dtype.kind in "ui"
                                     else image, new_shape)
        else:
            image = resize(image, new_shape, preserve_range=True)
    # Back to the input dtype (truncation for integers) before padding:
    # same values, less memory to pad.
    image = image.astype(image_dtype, copy=False)

    # Need padding or cropping?
    h, w = image.shape[:2]
    if mode == "square":
        top_pad = (max_dim - h) // 2
        bottom_pad = max_dim - h - top_pad
        left_pad = (max_dim - w) // 2
        right_pad = max_dim - w - left_pad
        padding = [(top_pad, bottom_pad), (left_pad, right_pad), (0, 0)]
        image = np.pad(image, padding[:image.ndim], mode='constant', constant_values=0)
        window = (top_pad, left_pad, h + top_pad, w + left_pad)
    elif mode == "pad64":
        # Both sides must be divisible by 64
        top_pad, bottom_pad = _pad_to_multiple(h, 64)
        left_pad, right_pad = _pad_to_multiple(w, 64)
        padding = [(top_pad, bottom_pad), (left_pad, right_pad), (0, 0)]
        image = np.pad(image, padding[:image.ndim], mode='constant', constant_values=0)
        window = (top_pad, left_pad, h + top_pad, w + left_pad)
    elif mode == "crop":
        # Pick a random crop
        y = random.randint(0, (h - min_dim))
        x = random.randint(0, (w - min_dim))
        crop = (y, x, min_dim, min_dim)
        image = image[y:y + min_dim, x:x + min_dim]
        window = (0, 0, min_dim, min_dim)
    return image, window, scale, padding, crop


def _pad_to_multiple(size, multiple):
    """(before, after) zero padding that makes ``size`` a multiple of
    ``multiple``, split as evenly as possible with the extra pixel after."""
    if size % multiple == 0:
        return 0, 0
    total = size - (size % multiple) + multiple - size
    return total // 2, total - total // 2


def _zoom_nearest_index(size, scale):
    """Source index of each output pixel of ``scipy.ndimage.zoom(order=0)``
    along one axis of length ``size``, or -1 where zoom samples outside the
    input (it then gives cval 0). Obtained from scipy itself by zooming
    1..size, so it is exact: order 0 is separable, every axis maps its own
    coordinates."""
    with warnings.catch_warnings():
        # scipy warns that the output shape is computed with round()
        warnings.simplefilter("ignore")
        z = scipy.ndimage.zoom(np.arange(1, size + 1, dtype=np.float64), scale, order=0)
    return np.rint(z).astype(np.intp) - 1


def resize_mask(mask: np.ndarray, scale: float, padding, crop=None) -> np.ndarray:
    """Resizes a mask using the given scale and padding.

    Typically, you get the scale and padding from resize_image() to
    ensure both, the image and the mask, are resized consistently.

    mask: [height, width, num_instances] bool (any dtype is kept).
    scale: mask scaling factor
    padding: Padding to add to the mask in the form
            [(top, bottom), (left, right), (0, 0)]
    crop: (y, x, h, w) from resize_image's crop mode, or None.

    Nearest neighbour exactly as ``scipy.ndimage.zoom(mask, [scale, scale,
    1], order=0)`` (Matterport's call): output size ``round(size * scale)``,
    corner-aligned grid (unlike the image's pixel-centre bilinear resize).
    Computed as two index gathers (the per-axis index maps come from scipy),
    which is ~10x faster than zooming the whole [H, W, N] array.

    Returns: the resized mask, same dtype.
    """
    mask = _as_masks(mask, "mask", "resize_mask")
    iy = _zoom_nearest_index(mask.shape[0], scale)
    ix = _zoom_nearest_index(mask.shape[1], scale)
    if crop is not None:
        y, x, h, w = crop
        iy, ix = iy[y:y + h], ix[x:x + w]
    out = mask.take(np.maximum(iy, 0), axis=0).take(np.maximum(ix, 0), axis=1)
    # samples scipy takes from outside the mask are cval 0
    out[iy < 0] = 0
    out[:, ix < 0] = 0
    if crop is None:
        out = np.pad(out, padding, mode='constant', constant_values=0)
    return out


def _resize_mask_scipy(mask, scale, padding, crop=None):
    """Matterport's resize_mask (one scipy zoom of the whole array); kept as
    the reference the fast version is tested against."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask = scipy.ndimage.zoom(mask, zoom=[scale, scale, 1], order=0)
    if crop is not None:
        y, x, h, w = crop
        return mask[y:y + h, x:x + w]
    return np.pad(mask, padding, mode='constant', constant_values=0)
