"""Argument checks shared by the NumPy modules (boxes, masks, resize, evaluation).

Private: each public function names itself in the messages these raise.
"""
import numpy as np


class _EmptyInputError(ValueError, AssertionError):
    """Empty input where Matterport used ``assert``: a ``ValueError`` with a
    message, that old code catching ``AssertionError`` still catches."""


def _as_boxes(boxes, name, func):
    """Returns ``boxes`` as an ndarray [N, 4], or raises ValueError naming
    ``func`` and ``name`` (e.g. when boxes are passed as [4, N])."""
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"{func}: {name} must have shape [N, (y1, x1, y2, x2)], got shape "
            f"{boxes.shape}. For a single box use box[None]; boxes stored as "
            f"[4, N] need a transpose.")
    return boxes


def _as_masks(masks, name, func):
    """Returns ``masks`` as an ndarray [H, W, N], or raises ValueError."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(
            f"{func}: {name} must have shape [height, width, num_instances], got "
            f"shape {masks.shape}. For one mask use mask[..., None].")
    return masks
