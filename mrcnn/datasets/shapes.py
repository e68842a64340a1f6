"""
Mask R-CNN
The synthetic Shapes dataset: squares, circles and triangles on a plain
background, generated on the fly (no files).

Same classes, geometry and API as Matterport's ``samples/shapes``
(``ShapesConfig``, ``ShapesDataset.load_shapes``). What differs:

* ``load_shapes(count, height, width, seed=None)`` is reproducible: image ``i``
  draws its specification from its own ``numpy.random.Generator`` seeded with
  ``(seed, i)``, never from the global ``random`` module, so the same seed
  gives the same images and masks, and image ``i`` does not depend on
  ``count``. With ``seed=None`` a fresh seed is drawn and kept in
  ``dataset.seed`` so a run can be repeated.
* Drawing uses ``skimage.draw`` with clipping to the image (Matterport used
  OpenCV, which clipped as well); the geometry is the same.
* Images smaller than Matterport's 80 px lower limit work: the border buffer
  shrinks with the image.
* A shape completely hidden by shapes drawn after it gets no mask (Matterport
  returned an all-zero mask, which its data generator then dropped).

Licensed under the MIT License (Matterport's original is MIT as well).
"""

import math

import numpy as np
import skimage.draw

from mrcnn import utils
from mrcnn.config import Config

__all__ = ["ShapesConfig", "ShapesDataset", "SHAPE_NAMES"]

# Class names in source-id order: "square" is shapes.1, "circle" shapes.2, ...
SHAPE_NAMES = ("square", "circle", "triangle")

# Matterport keeps shape centres 20 px away from the image border and draws
# sizes (half the side of the bounding square) from [20, height // 4].
_BORDER_BUFFER = 20
# Boxes of shapes in one image may overlap at most this much (IoU), so that
# shapes rarely hide each other completely (Matterport's NMS threshold).
_MAX_SHAPE_IOU = 0.3
# Matterport draws 1 to 4 shapes per image before removing overlapping ones.
_MAX_SHAPES = 4


class ShapesConfig(Config):
    """Configuration for training on the toy shapes dataset.
    Derives from the base Config class and overrides values specific
    to the toy shapes dataset.
    """
    # Give the configuration a recognizable name
    NAME = "shapes"

    # Train on 1 GPU and 8 images per GPU. We can put multiple images on each
    # GPU because the images are small. Batch size is 8 (GPUs * images/GPU).
    GPU_COUNT = 1
    IMAGES_PER_GPU = 8

    # Number of classes (including background)
    NUM_CLASSES = 1 + 3  # background + 3 shapes

    # Use small images for faster training. Set the limits of the small side
    # the large side, and that determines the image shape.
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128

    # Use smaller anchors because our image and objects are small
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)  # anchor side in pixels

    # Reduce training ROIs per image because the images are small and have
    # few objects. Aim to allow ROI sampling to pick 33% positive ROIs.
    TRAIN_ROIS_PER_IMAGE = 32

    # Use a small epoch since the data is simple
    STEPS_PER_EPOCH = 100

    # use small validation steps since the epoch is small
    VALIDATION_STEPS = 5


class ShapesDataset(utils.Dataset):
    """Generates the shapes synthetic dataset. The dataset consists of simple
    shapes (triangles, squares, circles) placed randomly on a blank surface.
    The images are generated on the fly. No file access required.

    Each image's ``image_info`` holds its specification:
    ``bg_color`` (r, g, b) ints and ``shapes``, a list of
    ``(shape_name, (r, g, b), (x, y, s))`` drawn in order (later shapes on
    top); ``(x, y)`` is the centre in pixels and ``s`` half the side of the
    shape's bounding square.
    """

    def load_shapes(self, count, height, width, seed=None):
        """Generate the requested number of synthetic images.

        count: number of images to generate.
        height, width: the size of the generated images, in pixels (>= 16).
        seed: int or None. Image i is generated from
            ``numpy.random.default_rng([seed, i])``; None picks a random seed,
            stored in ``self.seed``.
        """
        if count < 0:
            raise ValueError(f"load_shapes: count must be >= 0, got {count}")
        if height < 16 or width < 16:
            raise ValueError(
                f"load_shapes: images must be at least 16x16 pixels to hold a "
                f"shape, got height={height}, width={width}")
        if seed is None:
            # 63 random bits: plenty, and still a plain int to print and reuse.
            seed = int(np.random.SeedSequence().entropy % (2 ** 63))
        self.seed = seed

        # Add classes
        for class_id, name in enumerate(SHAPE_NAMES, start=1):
            self.add_class("shapes", class_id, name)

        # Add images. The specifications (colours, shape sizes and positions)
        # are more compact than the images; load_image() draws them.
        for i in range(count):
            rng = np.random.default_rng([seed, i])
            bg_color, shapes = self.random_image(height, width, rng)
            self.add_image("shapes", image_id=i, path=None,
                           width=width, height=height,
                           bg_color=bg_color, shapes=shapes)

    def load_image(self, image_id):
        """Draw the image from its specification.

        Returns: image [height, width, 3] uint8, RGB.
        """
        info = self.image_info[image_id]
        image = np.empty([info["height"], info["width"], 3], dtype=np.uint8)
        image[:] = np.asarray(info["bg_color"], dtype=np.uint8)
        for shape, color, dims in info["shapes"]:
            rr, cc = self.shape_pixels(shape, dims, image.shape[:2])
            image[rr, cc] = color
        return image

    def load_mask(self, image_id):
        """Instance masks of the shapes of an image, occlusions removed.

        Returns:
        masks: [height, width, instances] bool, one mask per visible shape;
            a pixel belongs to the last shape drawn over it.
        class_ids: [instances] int32, dataset class ids (needs prepare()).
        """
        info = self.image_info[image_id]
        shapes = info["shapes"]
        height, width = info["height"], info["width"]
        mask = np.zeros([height, width, len(shapes)], dtype=bool)
        for i, (shape, _, dims) in enumerate(shapes):
            rr, cc = self.shape_pixels(shape, dims, (height, width))
            mask[rr, cc, i] = True
        # Handle occlusions: walking from the top shape down, each mask loses
        # the pixels covered by any shape drawn after it.
        if len(shapes):
            visible = ~mask[:, :, -1]
            for i in range(len(shapes) - 2, -1, -1):
                mask[:, :, i] &= visible
                visible &= ~mask[:, :, i]
        keep = mask.any(axis=(0, 1))
        class_ids = np.array([self._class_id(s[0]) for s in shapes], dtype=np.int32)
        return mask[:, :, keep], class_ids[keep]

    def image_reference(self, image_id):
        """Return the shapes data of the image."""
        info = self.image_info[image_id]
        if info["source"] == "shapes":
            return info["shapes"]
        return super().image_reference(image_id)

    def _class_id(self, shape):
        """Dataset class id of a shape name (source id mapped by prepare())."""
        source_id = "shapes.{}".format(SHAPE_NAMES.index(shape) + 1)
        source_map = getattr(self, "class_from_source_map", None)
        if not source_map or source_id not in source_map:
            raise RuntimeError(
                "ShapesDataset.load_mask: call dataset.prepare() after "
                "load_shapes() and before loading masks")
        return source_map[source_id]

    @staticmethod
    def shape_pixels(shape, dims, image_shape):
        """Pixels covered by a shape, clipped to the image.

        shape: "square", "circle" or "triangle".
        dims: (x, y, s): centre and half-size in pixels.
        image_shape: (height, width).
        Returns: (rows, cols) int arrays, as skimage.draw returns them.
        """
        x, y, s = dims
        if shape == "square":
            # Inclusive corners, as cv2.rectangle(..., thickness=-1) fills.
            return skimage.draw.rectangle((y - s, x - s), end=(y + s, x + s),
                                          shape=image_shape)
        if shape == "circle":
            # Pixels within distance s of the centre, boundary included
            # (disk() keeps distance < radius; squared distances are ints).
            return skimage.draw.disk((y, x), math.sqrt(s * s + 0.5), shape=image_shape)
        if shape == "triangle":
            # Equilateral-ish: apex above the centre, base s below it.
            half_base = s / math.sin(math.radians(60))
            rows = np.array([y - s, y + s, y + s])
            cols = np.array([x, x - half_base, x + half_base])
            return skimage.draw.polygon(rows, cols, shape=image_shape)
        raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPE_NAMES}")

    @staticmethod
    def random_shape(height, width, rng):
        """Random specification of one shape inside height x width.

        Returns (shape name, (r, g, b) colour, (x, y, s)) with plain ints.
        """
        shape = SHAPE_NAMES[int(rng.integers(len(SHAPE_NAMES)))]
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        # Keep the centre away from the border; small images get a smaller
        # buffer so that there is room left.
        buffer = min(_BORDER_BUFFER, height // 4, width // 4)
        y = int(rng.integers(buffer, height - buffer))
        x = int(rng.integers(buffer, width - buffer))
        s = int(rng.integers(buffer, max(buffer, height // 4) + 1))
        return shape, color, (x, y, s)

    @classmethod
    def random_image(cls, height, width, rng):
        """Random specification of an image with 1 to 4 shapes.

        Returns (bg_color (r, g, b), shapes), shapes as random_shape() gives
        them, in drawing order.
        """
        bg_color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        count = int(rng.integers(1, _MAX_SHAPES + 1))
        shapes = [cls.random_shape(height, width, rng) for _ in range(count)]
        # Drop shapes whose boxes overlap a later shape's too much. Matterport
        # ran NMS with score = index, so later shapes win; same here.
        boxes = np.array([[y - s, x - s, y + s, x + s] for _, _, (x, y, s) in shapes],
                         dtype=np.float64)
        keep = _suppress_overlaps(boxes, _MAX_SHAPE_IOU)
        return bg_color, [shapes[i] for i in sorted(keep)]


def _suppress_overlaps(boxes, threshold):
    """Greedy NMS where later boxes have priority.

    boxes: [N, (y1, x1, y2, x2)] float.
    Returns the indices kept, highest priority first.
    """
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = list(range(len(boxes) - 1, -1, -1))
    kept = []
    while order:
        i, order = order[0], order[1:]
        kept.append(i)
        rest = np.array(order, dtype=int)
        if not len(rest):
            break
        y1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        x1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        y2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        x2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(y2 - y1, 0) * np.maximum(x2 - x1, 0)
        iou = inter / (area[i] + area[rest] - inter)
        order = [j for j, o in zip(rest.tolist(), iou) if o <= threshold]
    return kept
