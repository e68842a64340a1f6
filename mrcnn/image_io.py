"""Reading image files into uint8 arrays (``read_image``), whatever their format.

``Dataset.load_image`` and the samples call it; ``mrcnn.utils`` re-exports it.
"""
import os
from typing import Tuple

import numpy as np

__all__ = ["ImageReadError", "read_image", "read_image_size"]

# EXIF orientation values (tag 0x0112) that swap width and height.
_EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)


class ImageReadError(OSError):
    """An image file exists but cannot be decoded (corrupt, truncated, or a
    pixel format we cannot turn into the requested channels). The message
    names the file."""


# Pillow modes that already are 8 bits per channel and convert exactly to RGB.
_RGB_CONVERTIBLE = ("RGB", "YCbCr", "LAB", "HSV", "RGBX")


def _high_bit_to_uint8(array, mode):
    """Scales a single-channel integer (mode "I") or float (mode "F") image
    to uint8; the rules are listed in ``read_image``."""
    if mode == "F":
        a = np.asarray(array, dtype=np.float64)
        a = np.where(np.isfinite(a), a, 0.0)
        if a.size and a.min() >= 0.0 and a.max() <= 1.0:
            a = a * 255.0
        return np.rint(np.clip(a, 0.0, 255.0)).astype(np.uint8)
    a = np.asarray(array).astype(np.int64)
    if a.size == 0 or (a.min() >= 0 and a.max() <= 65535):
        return (a >> 8).astype(np.uint8)                      # 16-bit: top 8 bits
    return (np.clip(a, 0, 2 ** 31 - 1) >> 23).astype(np.uint8)  # 32-bit: top 8 of 31 bits


def _pil_to_array(img, channels, path):
    """Converts an opened (loaded, transposed) Pillow image to uint8
    [H, W, channels] following the rules of ``read_image``."""
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        gray = _high_bit_to_uint8(np.asarray(img), "F" if mode == "F" else "I")
        if gray.ndim != 2:
            raise ImageReadError(f"{path}: unsupported pixel layout {mode} {gray.shape}.")
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
        if channels == 1:
            return gray[:, :, None]
        if channels == 3:
            return rgb
        return np.concatenate([rgb, np.full_like(gray[:, :, None], 255)], axis=2)

    # Palette images: expand through RGBA so a transparency entry does not
    # trigger Pillow's warning; alpha is then dropped or kept below.
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
    elif mode == "1":
        img = img.convert("L")            # 0/1 bits -> 0/255
    elif mode == "LA" or mode == "La":
        img = img.convert("LA")
    elif mode == "RGBa":
        img = img.convert("RGBA")
    elif mode in _RGB_CONVERTIBLE or mode == "CMYK":
        # CMYK: Pillow's conversion R = round((255 - C) * (255 - K) / 255)
        img = img.convert("RGB")
    elif mode not in ("L", "RGBA"):
        img = img.convert("RGBA")
    mode = img.mode

    a = np.asarray(img)
    if mode == "L":
        gray, color, alpha = a, None, None
    elif mode == "LA":
        gray, color, alpha = a[..., 0], None, a[..., 1]
    elif mode == "RGB":
        gray, color, alpha = None, a, None
    else:  # RGBA
        gray, color, alpha = None, a[..., :3], a[..., 3]

    if channels == 1:
        if gray is None:
            # ITU-R 601-2 luma, Pillow's own "L" conversion
            gray = np.asarray(img.convert("RGB").convert("L"))
        return np.ascontiguousarray(gray)[:, :, None]
    if color is None:
        color = np.repeat(gray[:, :, None], 3, axis=2)
    if channels == 3:
        return np.ascontiguousarray(color)
    if alpha is None:
        alpha = np.full(color.shape[:2], 255, dtype=np.uint8)
    return np.concatenate([color, alpha[:, :, None]], axis=2)


def read_image(path, channels: int = 3) -> np.ndarray:
    """Reads an image file into a uint8 array [height, width, channels].

    path: path of any image Pillow can read (JPEG, PNG, TIFF, BMP, GIF,
        WebP, PNM ...).
    channels: 3 (default) gives RGB; 1 grayscale [H, W, 1]; 4 RGBA (alpha
        255 when the file has none). Other counts (e.g. a 5-band TIFF), and
        files Pillow cannot identify, are read with ``skimage.io.imread``
        (tifffile, imageio); then the file must have exactly that many
        channels (or be gray, for 1/3/4).

    Conversion rules (the same for every file, so a data set mixing formats
    gives consistent arrays):
    * EXIF orientation is applied (``PIL.ImageOps.exif_transpose``): the
      array is upright as a photo viewer shows it.
    * Multi-frame files (GIF, TIFF stacks, APNG): the first frame.
    * Grayscale (``L``, bilevel ``1`` as 0/255) is repeated into R, G, B.
    * An alpha channel (``LA``, ``RGBA``, ``PA``) is dropped for 3 channels
      (colours kept as stored, not blended with a background), as Matterport.
    * Palette (``P``) images are expanded through the palette; their
      transparency becomes alpha.
    * CMYK is converted by Pillow: R = round((255 - C) * (255 - K) / 255),
      likewise G from M and B from Y (not by dropping K).
    * More than 8 bits per sample: the top 8 bits are kept. 16-bit:
      v >> 8 = floor(v / 256), so 0 -> 0, 65535 -> 255 and 8-bit data stored
      as 16 bits (257 * k) -> k. This is what Pillow does itself when it
      decodes 16-bit colour PNG/TIFF files, and what
      ``skimage.util.img_as_ubyte`` does, so gray and colour files agree.
      32-bit integer images (Pillow mode "I", signed) whose values all fit
      in 0..65535 are 16-bit data (16-bit PGM files, some TIFFs) and get the
      same rule; otherwise negatives clip to 0 and v >> 23 (the top 8 of the
      31 value bits).
    * Float images (float TIFF): if every value is in [0, 1], round(v * 255);
      otherwise the values are taken as 0..255, clipped and rounded. NaN and
      infinities become 0.
    * For 1 channel, colour images use Pillow's ITU-R 601-2 luma
      L = round(0.299 R + 0.587 G + 0.114 B).

    Raises FileNotFoundError if the file does not exist and ImageReadError
    (an OSError) naming the file if it is not an image, is truncated or
    corrupt, or cannot give the requested channels.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = os.fspath(path)
    channels = int(channels)
    if channels < 1:
        raise ValueError(f"read_image: channels must be >= 1, got {channels}.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"Image file not found: {path}")
    if channels not in (1, 3, 4):
        return _read_n_channels(path, channels)
    try:
        with Image.open(path) as img:
            img.seek(0)        # multi-frame: first frame
            img.load()         # decode now so truncation is reported here
            img = ImageOps.exif_transpose(img)
            return _pil_to_array(img, channels, path)
    except UnidentifiedImageError as e:
        # Not a format Pillow knows (e.g. a 2- or 5-band TIFF): try skimage.io.
        return _read_n_channels(path, channels, cause=e)
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # Pillow reports truncated data as OSError("image file is truncated")
        # and some corrupt headers as SyntaxError / ValueError.
        raise ImageReadError(
            f"Cannot decode image {path}: {e}. The file is probably truncated or "
            f"corrupt; re-download or re-export it, or remove it from the data set.") from e


def _read_n_channels(path, channels, cause=None):
    """Reads a file Pillow cannot (e.g. a 5-band or 2-band TIFF) with
    ``skimage.io.imread``. Gray gives 1/3/4 channels as ``read_image`` does;
    otherwise the file must have exactly ``channels`` channels. uint16 data
    keeps its top 8 bits, as in ``read_image``."""
    import skimage.io
    try:
        image = np.asarray(skimage.io.imread(path))
    except Exception as e:  # any decoder failure
        detail = f"{cause}; skimage.io: {e}" if cause is not None else str(e)
        raise ImageReadError(
            f"Cannot decode image {path}: {detail}. The file is probably truncated, "
            f"corrupt or not an image; re-export it or remove it from the data set.") from e
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ImageReadError(f"{path}: {image.dtype} data with shape {image.shape} is not "
                             f"converted automatically; override Dataset.load_image.")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim == 3 and image.shape[-1] == 1 and channels in (3, 4):
        image = np.repeat(image, 3, axis=2)
        if channels == 4:
            image = np.concatenate([image, np.full_like(image[..., :1], 255)], axis=2)
    if image.ndim != 3 or image.shape[-1] != channels:
        raise ImageReadError(
            f"{path} has shape {image.shape} but {channels} channels were requested "
            f"(Dataset.image_channel_count / config.IMAGE_CHANNEL_COUNT). Override "
            f"Dataset.load_image to build {channels}-channel images from it.")
    return image


def read_image_size(path) -> Tuple[int, int]:
    """(height, width) of an image as displayed, read from its file header.

    Only the header is read (PIL opens lazily). An EXIF orientation that
    rotates by 90 degrees swaps the two, because VIA (in the browser) and the
    image reader show the image upright.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height = im.size
            try:
                orientation = im.getexif().get(_EXIF_ORIENTATION_TAG)
            except Exception:  # a broken EXIF block must not stop training
                orientation = None
    except FileNotFoundError:
        raise FileNotFoundError(f"Image file not found: {path}") from None
    except OSError as e:
        raise OSError(f"Cannot read the size of image {path}: {e}. "
                      "Check that it is a readable image file.") from e
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return height, width
