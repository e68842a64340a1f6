"""Drawing primitives shared by the displays of ``mrcnn.visualize``: colors,
mask blending, box outlines, mask contours, and the figure plumbing
(``ax=`` / ``save_path=``). ``random_colors``, ``apply_mask`` and
``draw_box`` are Matterport's names, re-exported by ``mrcnn.visualize``.
"""
import colorsys
import random
import warnings

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Polygon
from skimage.measure import find_contours

__all__ = ["random_colors", "apply_mask", "draw_box"]


def _new_axes(ax, figsize):
    """Returns (ax, owns_figure): a fresh figure's axes when ``ax`` is None."""
    if ax is not None:
        return ax, False
    _, ax = plt.subplots(1, figsize=figsize)
    return ax, True


def _finish(fig, owns_figure, save_path):
    """Saves and closes, or shows, a figure this module created.

    A figure drawn into a caller's ``ax`` is left alone: the caller decides
    when to show or save it.
    """
    if not owns_figure:
        return
    if save_path is not None:
        fig.savefig(save_path, format="png")
        plt.close(fig)
        return
    # On Agg (no display) plt.show() does nothing but warn; the figure stays
    # open so the caller can still save it with plt.savefig().
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-interactive.*")
        plt.show()


def _as_rgb(image):
    """[H, W], [H, W, 1], [H, W, 3] or [H, W, 4] image -> [H, W, 3] array."""
    image = np.asarray(image)
    if image.ndim == 2:
        return np.stack([image] * 3, axis=-1)
    if image.ndim == 3 and image.shape[-1] == 1:
        return np.concatenate([image] * 3, axis=-1)
    if image.ndim == 3 and image.shape[-1] == 4:
        return image[..., :3]
    if image.ndim == 3 and image.shape[-1] == 3:
        return image
    raise ValueError(
        "image must be [height, width] or [height, width, 1|3|4], got shape "
        "{}".format(image.shape))


def _draw_mask_outline(ax, mask, color):
    """Draws the contour of one [H, W] mask as polygons on ``ax``."""
    # Pad so that masks touching the image border still give closed polygons.
    padded_mask = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=np.uint8)
    padded_mask[1:-1, 1:-1] = mask
    for verts in find_contours(padded_mask, 0.5):
        # Undo the padding and flip (y, x) to matplotlib's (x, y).
        verts = np.fliplr(verts) - 1
        ax.add_patch(Polygon(verts, facecolor="none", edgecolor=color))


def random_colors(N, bright=True, seed=None):
    """Generates N visually distinct colors in random order.

    The colors are evenly spaced hues in HSV space, converted to RGB, then
    shuffled (Matterport's behaviour).

    N: number of colors.
    bright: full brightness (1.0) if True, else 0.7.
    seed: None to shuffle with Python's global ``random`` state (Matterport);
        an int, a ``random.Random`` or a ``numpy.random.Generator`` for a
        reproducible order.
    Returns: list of N (r, g, b) tuples of floats in [0, 1].
    """
    brightness = 1.0 if bright else 0.7
    hsv = [(i / N, 1, brightness) for i in range(N)]
    colors = [colorsys.hsv_to_rgb(*c) for c in hsv]
    if isinstance(seed, np.random.Generator):
        return [colors[i] for i in seed.permutation(N)]
    if seed is None:
        rng = random
    elif isinstance(seed, random.Random):
        rng = seed
    else:
        rng = random.Random(seed)
    rng.shuffle(colors)
    return colors


def apply_mask(image, mask, color, alpha=0.5):
    """Blends a color into the image where the mask is 1, in place.

    image: [height, width, 3] array, 0..255 values. Modified in place (an
        integer image keeps its dtype, so blended values are truncated).
    mask: [height, width] bool or 0/1 array; pixels equal to 1 are colored.
    color: (r, g, b[, a]) floats in [0, 1]; alpha channel ignored.
    alpha: weight of the color: new = image * (1 - alpha) + alpha * color * 255.
    Returns: the same ``image`` array.
    """
    on = np.asarray(mask) == 1
    for c in range(3):
        image[:, :, c] = np.where(
            on, image[:, :, c] * (1 - alpha) + alpha * color[c] * 255,
            image[:, :, c])
    return image


def draw_box(image, box, color):
    """Draws a 3-pixel wide box outline into an image array, in place.

    image: [height, width, 3] (or [height, width]) array.
    box: (y1, x1, y2, x2) int pixel coordinates; the outline is centered on
        these rows/columns (y1 - 1 .. y1 + 1, ...) and clipped to the image.
    color: 3 int values for RGB (or a scalar for a 2-D image).
    Returns: the same ``image`` array.
    """
    y1, x1, y2, x2 = (int(v) for v in box[:4])
    h, w = image.shape[:2]

    def rows(a, b):
        return slice(max(a, 0), max(min(b, h), 0))

    def cols(a, b):
        return slice(max(a, 0), max(min(b, w), 0))

    image[rows(y1 - 1, y1 + 2), cols(x1 - 1, x2 + 2)] = color
    image[rows(y2 - 1, y2 + 2), cols(x1 - 1, x2 + 2)] = color
    image[rows(y1 - 1, y2 + 2), cols(x1 - 1, x1 + 2)] = color
    image[rows(y1 - 1, y2 + 2), cols(x2 - 1, x2 + 2)] = color
    return image
