"""
Mask R-CNN
Base Configurations class.

Same fields, defaults and meanings as Matterport's ``mrcnn/config.py``: a user
subclasses ``Config`` and overrides only what differs for their data set::

    class BalloonConfig(Config):
        NAME = "balloon"
        IMAGES_PER_GPU = 2
        NUM_CLASSES = 1 + 1  # background + balloon

What this version adds:

* ``validate()`` (run by ``__init__``) raises ``ValueError`` naming the field
  and the fix for settings that contradict each other, instead of letting the
  model fail later with a shape error deep inside TensorFlow.
* ``to_dict()`` returns every setting as plain Python values (JSON-ready).
* ``BACKBONE`` may be a callable, as in Matterport; then
  ``COMPUTE_BACKBONE_SHAPE`` must be set too.
* The derived fields ``BATCH_SIZE``, ``IMAGE_SHAPE`` and ``IMAGE_META_SIZE``
  are properties computed from the current values (``DERIVED_FIELDS``), so
  ``config.IMAGES_PER_GPU = 1`` on an instance updates ``BATCH_SIZE``
  (Matterport computed them once in ``__init__`` and left them stale).
  Assigning a derived field on an instance pins it (an explicit override;
  ``del`` unpins it); setting one in a class body to another value than the
  computed one is a ValueError naming the fields to set instead.
* ``NAME``: None (the base class) is allowed for a Config, but creating a
  ``MaskRCNN`` with it raises ValueError naming the field (it names the run
  folder and the checkpoints); a NAME with a path separator is refused.

Licensed under the MIT License (Matterport's original is MIT as well).
"""

import math

import numpy as np

from mrcnn.meta import image_meta_size
from mrcnn.resize import RESIZE_MODES

# Backbone names the model builder knows (mrcnn/graph/backbone.py).
BACKBONES = ("resnet50", "resnet101")
# Resize modes utils.resize_image knows.
IMAGE_RESIZE_MODES = RESIZE_MODES
# Numeric precisions of the inference network.
INFERENCE_PRECISIONS = ("float32", "float32_exact", "bfloat16")
# Numeric precisions of training (Keras dtype policies; mrcnn/precision.py).
TRAIN_PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# The five losses, in Matterport's order; LOSS_WEIGHTS must name exactly these.
LOSS_NAMES = ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss",
              "mrcnn_bbox_loss", "mrcnn_mask_loss")
# The layers whose weight shapes follow NUM_CLASSES. Matterport's balloon and
# shapes samples exclude exactly these when starting from the 81-class COCO
# file (mrcnn_bbox is a weightless Reshape; listing it is harmless and familiar).
HEAD_LAYERS = ("mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask")
# Fields computed from the others (Config properties), and what they follow.
DERIVED_FIELDS = {"BATCH_SIZE": "IMAGES_PER_GPU * GPU_COUNT",
                  "IMAGE_SHAPE": "IMAGE_MAX_DIM (IMAGE_MIN_DIM in 'crop' mode) and "
                                 "IMAGE_CHANNEL_COUNT",
                  "IMAGE_META_SIZE": "NUM_CLASSES"}


# Base Configuration Class
# Don't use this class directly. Instead, sub-class it and override
# the configurations you need to change.

class Config(object):
    """Base configuration class. For custom configurations, create a
    sub-class that inherits from this one and override properties
    that need to be changed.
    """
    # Name the configurations. For example, 'COCO', 'Experiment 3', ...etc.
    # Useful if your code needs to do things differently depending on which
    # experiment is running. Also names the log folder and the checkpoints.
    NAME = None  # Override in sub-classes

    # NUMBER OF GPUs to use. When using only a CPU, this needs to be set to 1.
    # Training with GPU_COUNT > 1 and no tf.distribute strategy given trains
    # data-parallel with MirroredStrategy over that many visible GPUs (an
    # error if fewer are visible); the global batch is IMAGES_PER_GPU *
    # GPU_COUNT. See mrcnn/distribute.py.
    GPU_COUNT = 1

    # Number of images to train with on each GPU. A 12GB GPU can typically
    # handle 2 images of 1024x1024px.
    # Adjust based on your GPU memory and image sizes. Use the highest
    # number that your GPU can handle for best performance.
    IMAGES_PER_GPU = 2

    # Number of training steps per epoch
    # This doesn't need to match the size of the training set. Tensorboard
    # updates are saved at the end of each epoch, so setting this to a
    # smaller number means getting more frequent TensorBoard updates.
    # Validation stats are also calculated at each epoch end and they
    # might take a while, so don't set this too small to avoid spending
    # a lot of time on validation stats.
    STEPS_PER_EPOCH = 1000

    # Number of validation steps to run at the end of every training epoch.
    # A bigger number improves accuracy of validation stats, but slows
    # down the training.
    VALIDATION_STEPS = 50

    # Backbone network architecture
    # Supported values are: resnet50, resnet101.
    # You can also provide a callable that should have the signature
    # of model.resnet_graph. If you do so, you need to supply a callable
    # to COMPUTE_BACKBONE_SHAPE as well
    BACKBONE = "resnet101"

    # Only useful if you supply a callable to BACKBONE. Should compute
    # the shape of each layer of the FPN Pyramid.
    # See model.compute_backbone_shapes
    COMPUTE_BACKBONE_SHAPE = None

    # The strides of each layer of the FPN Pyramid. These values
    # are based on a Resnet101 backbone.
    BACKBONE_STRIDES = [4, 8, 16, 32, 64]

    # Size of the fully-connected layers in the classification graph
    FPN_CLASSIF_FC_LAYERS_SIZE = 1024

    # Size of the top-down layers used to build the feature pyramid
    TOP_DOWN_PYRAMID_SIZE = 256

    # Number of classification classes (including background)
    NUM_CLASSES = 1  # Override in sub-classes

    # Length of square anchor side in pixels
    RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)

    # Ratios of anchors at each cell (width/height)
    # A value of 1 represents a square anchor, and 0.5 is a wide anchor
    RPN_ANCHOR_RATIOS = [0.5, 1, 2]

    # Anchor stride
    # If 1 then anchors are created for each cell in the backbone feature map.
    # If 2, then anchors are created for every other cell, and so on.
    RPN_ANCHOR_STRIDE = 1

    # Non-max suppression threshold to filter RPN proposals.
    # You can increase this during training to generate more propsals.
    RPN_NMS_THRESHOLD = 0.7

    # How many anchors per image to use for RPN training
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256

    # ROIs kept after tf.nn.top_k and before non-maximum suppression
    PRE_NMS_LIMIT = 6000

    # ROIs kept after non-maximum suppression (training and inference)
    POST_NMS_ROIS_TRAINING = 2000
    POST_NMS_ROIS_INFERENCE = 1000

    # If enabled, resizes instance masks to a smaller size to reduce
    # memory load. Recommended when using high-resolution images.
    USE_MINI_MASK = True
    MINI_MASK_SHAPE = (56, 56)  # (height, width) of the mini-mask

    # Input image resizing
    # Generally, use the "square" resizing mode for training and predicting
    # and it should work well in most cases. In this mode, images are scaled
    # up such that the small side is = IMAGE_MIN_DIM, but ensuring that the
    # scaling doesn't make the long side > IMAGE_MAX_DIM. Then the image is
    # padded with zeros to make it a square so multiple images can be put
    # in one batch.
    # Available resizing modes:
    # none:   No resizing or padding. Return the image unchanged.
    # square: Resize and pad with zeros to get a square image
    #         of size [max_dim, max_dim].
    # pad64:  Pads width and height with zeros to make them multiples of 64.
    #         If IMAGE_MIN_DIM or IMAGE_MIN_SCALE are not None, then it scales
    #         up before padding. IMAGE_MAX_DIM is ignored in this mode.
    #         The multiple of 64 is needed to ensure smooth scaling of feature
    #         maps up and down the 6 levels of the FPN pyramid (2**6=64).
    # crop:   Picks random crops from the image. First, scales the image based
    #         on IMAGE_MIN_DIM and IMAGE_MIN_SCALE, then picks a random crop of
    #         size IMAGE_MIN_DIM x IMAGE_MIN_DIM. Can be used in training only.
    #         IMAGE_MAX_DIM is not used in this mode.
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 800
    IMAGE_MAX_DIM = 1024
    # Minimum scaling ratio. Checked after MIN_IMAGE_DIM and can force further
    # up scaling. For example, if set to 2 then images are scaled up to double
    # the width and height, or more, even if MIN_IMAGE_DIM doesn't require it.
    # However, in 'square' mode, it can be overruled by IMAGE_MAX_DIM.
    IMAGE_MIN_SCALE = 0
    # Number of color channels per image. RGB = 3, grayscale = 1, RGB-D = 4
    # Changing this requires other changes in the code. See the WIKI for more
    # details: https://github.com/matterport/Mask_RCNN/wiki
    IMAGE_CHANNEL_COUNT = 3

    # Image mean (RGB)
    MEAN_PIXEL = np.array([123.7, 116.8, 103.9])

    # Number of ROIs per image to feed to classifier/mask heads
    # The Mask RCNN paper uses 512 but often the RPN doesn't generate
    # enough positive proposals to fill this and keep a positive:negative
    # ratio of 1:3. You can increase the number of proposals by adjusting
    # the RPN NMS threshold.
    TRAIN_ROIS_PER_IMAGE = 200

    # Percent of positive ROIs used to train classifier/mask heads
    ROI_POSITIVE_RATIO = 0.33

    # Pooled ROIs
    POOL_SIZE = 7
    MASK_POOL_SIZE = 14

    # Shape of output mask
    # To change this you also need to change the neural network mask branch
    MASK_SHAPE = [28, 28]

    # Maximum number of ground truth instances to use in one image
    MAX_GT_INSTANCES = 100

    # Bounding box refinement standard deviation for RPN and final detections.
    RPN_BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])
    BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])

    # Max number of final detections
    DETECTION_MAX_INSTANCES = 100

    # Minimum probability value to accept a detected instance
    # ROIs below this threshold are skipped
    DETECTION_MIN_CONFIDENCE = 0.7

    # Non-maximum suppression threshold for detection
    DETECTION_NMS_THRESHOLD = 0.3

    # Not in Matterport: None keeps Matterport's NMS within each class only;
    # a float adds a class-agnostic NMS at that IoU after it, so an object
    # seen as two classes (a "square" and a "circle" on one shape) keeps only
    # its best-scoring detection.
    DETECTION_CROSS_CLASS_NMS_THRESHOLD = None

    # Learning rate and momentum
    # The Mask RCNN paper uses lr=0.02, but on TensorFlow it causes
    # weights to explode. Likely due to differences in optimizer
    # implementation.
    LEARNING_RATE = 0.001
    LEARNING_MOMENTUM = 0.9

    # Weight decay regularization
    WEIGHT_DECAY = 0.0001

    # Loss weights for more precise optimization.
    # Can be used for R-CNN training setup.
    LOSS_WEIGHTS = {
        "rpn_class_loss": 1.,
        "rpn_bbox_loss": 1.,
        "mrcnn_class_loss": 1.,
        "mrcnn_bbox_loss": 1.,
        "mrcnn_mask_loss": 1.
    }

    # Use RPN ROIs or externally generated ROIs for training
    # Keep this True for most situations. Set to False if you want to train
    # the head branches on ROI generated by code rather than the ROIs from
    # the RPN. For example, to debug the classifier head without having to
    # train the RPN.
    USE_RPN_ROIS = True

    # Train or freeze batch normalization layers
    #     None: Train BN layers. This is the normal mode
    #     False: Freeze BN layers. Good when using a small batch size
    #     True: (don't use). Set layer in training mode even when predicting
    TRAIN_BN = False  # Defaulting to False since batch size is often small

    # Momentum of the BatchNorm moving averages while training (not in
    # Matterport, which kept Keras' 0.99). Only matters when batch norm
    # learns (TRAIN_BN None/True): 0.99 averages the batch statistics over
    # ~100 steps, too slowly for weights trained from scratch at a high
    # learning rate (the inference model then normalizes with stale
    # statistics); 0.9 follows the last ~10 steps.
    BATCH_NORM_MOMENTUM = 0.99

    # Gradient norm clipping
    GRADIENT_CLIP_NORM = 5.0

    # Numeric precision of the inference network (not in Matterport).
    #     "float32": float32, with every frozen BatchNorm folded into the
    #         convolution before it (kernel and bias scaled, one op instead
    #         of two): the same function as Matterport's, faster; the
    #         numbers differ by float32 round-off (see README: the measured
    #         differences and the golden tests' tolerances).
    #     "float32_exact": float32, BatchNorm as its own op, as Matterport
    #         computes it: the numbers of Matterport's model, to the
    #         tolerances of the golden tests.
    #     "bfloat16": backbone, FPN, RPN and head convolutions compute in
    #         bfloat16 (weights stay float32, so every weight file loads);
    #         proposals, ROI boxes, detection refinement and the mask/class
    #         outputs stay float32; BatchNorms folded as in "float32".
    #         Faster on CPUs with AVX-512 BF16 / AMX and on recent GPUs;
    #         detections move slightly (see README).
    INFERENCE_PRECISION = "float32"

    # Numeric precision of training (not in Matterport; mrcnn/precision.py).
    #     "float32": exact, as Matterport.
    #     "mixed_float16": float16 compute, float32 weights, dynamic loss
    #         scaling; for GPUs (slow on CPUs).
    #     "mixed_bfloat16": bfloat16 compute, float32 weights; for TPUs and
    #         CPUs with AVX-512 BF16 / AMX.
    # Output layers, losses, proposals and ROI targets stay float32, and
    # checkpoints are float32 in every precision.
    TRAIN_PRECISION = "float32"

    # With several replicas (tf.distribute), BatchNorm layers that use batch
    # statistics (TRAIN_BN True or None) compute them over the global batch
    # (synchronized across replicas), so a step equals the single-device
    # step. False: each replica normalizes with its own slice's statistics.
    SYNC_BATCH_NORM = True

    def __init__(self):
        """Check the settings (``validate()``). The derived fields
        (``BATCH_SIZE``, ``IMAGE_SHAPE``, ``IMAGE_META_SIZE``) are properties
        computed from the current values (see ``DERIVED_FIELDS``)."""
        self.validate()

    # ------------------------------------------------------------------
    # Derived fields
    # ------------------------------------------------------------------
    # Matterport set these once in __init__, so changing IMAGES_PER_GPU (or
    # IMAGE_MAX_DIM, NUM_CLASSES) on an instance left them stale. Here they
    # are computed on every read. Assigning one on an instance pins it
    # (an explicit override, e.g. ``config.BATCH_SIZE = 1``, honoured as
    # Matterport honoured it); ``del config.BATCH_SIZE`` unpins it. Setting
    # one in a class body is refused by validate() unless it equals the
    # computed value (Matterport silently overwrote it).

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in DERIVED_FIELDS:
            value = cls.__dict__.get(name)
            if name in cls.__dict__ and not isinstance(value, property):
                # Keep the property; remember the class value for validate().
                delattr(cls, name)
                cls._class_derived = {**getattr(cls, "_class_derived", {}), name: value}

    def _derived(self, name, compute):
        pinned = self.__dict__.get("_pinned_derived", {})
        return pinned[name] if name in pinned else compute()

    def _pin(self, name, value):
        self.__dict__.setdefault("_pinned_derived", {})[name] = value

    def _unpin(self, name):
        self.__dict__.get("_pinned_derived", {}).pop(name, None)

    def _batch_size(self):
        return self.IMAGES_PER_GPU * self.GPU_COUNT

    def _image_shape(self):
        side = self.IMAGE_MIN_DIM if self.IMAGE_RESIZE_MODE == "crop" else self.IMAGE_MAX_DIM
        return np.array([side, side, self.IMAGE_CHANNEL_COUNT])

    def _image_meta_size(self):
        # See compose_image_meta() for details
        return image_meta_size(self.NUM_CLASSES)

    # Effective batch size: IMAGES_PER_GPU * GPU_COUNT
    BATCH_SIZE = property(lambda self: self._derived("BATCH_SIZE", self._batch_size),
                          lambda self, v: self._pin("BATCH_SIZE", v),
                          lambda self: self._unpin("BATCH_SIZE"),
                          "IMAGES_PER_GPU * GPU_COUNT (derived).")
    # Input image size: [IMAGE_MAX_DIM, IMAGE_MAX_DIM, IMAGE_CHANNEL_COUNT]
    # ([IMAGE_MIN_DIM, ...] in "crop" mode)
    IMAGE_SHAPE = property(lambda self: self._derived("IMAGE_SHAPE", self._image_shape),
                           lambda self, v: self._pin("IMAGE_SHAPE", np.asarray(v)),
                           lambda self: self._unpin("IMAGE_SHAPE"),
                           "[side, side, IMAGE_CHANNEL_COUNT] (derived).")
    # Image meta data length: 12 + NUM_CLASSES
    IMAGE_META_SIZE = property(
        lambda self: self._derived("IMAGE_META_SIZE", self._image_meta_size),
        lambda self, v: self._pin("IMAGE_META_SIZE", v),
        lambda self: self._unpin("IMAGE_META_SIZE"),
        "1 + 3 + 3 + 4 + 1 + NUM_CLASSES (derived).")

    # ------------------------------------------------------------------
    # Inspection
    # ------------------------------------------------------------------

    def _settings(self):
        """(name, value) of every UPPER_CASE setting, sorted by name."""
        # Settings are the UPPER_CASE attributes; methods are lower case, so a
        # callable BACKBONE still shows (Matterport's display() hid it).
        names = sorted(a for a in dir(self) if a.isupper() and not a.startswith("_"))
        return [(a, getattr(self, a)) for a in names]

    def to_dict(self) -> dict:
        """Every UPPER_CASE setting as plain Python values (lists, not arrays).

        A callable BACKBONE or COMPUTE_BACKBONE_SHAPE is given by its
        qualified name, so the result always goes through ``json.dumps``.
        """
        return {a: _plain(v) for a, v in self._settings()}

    def display(self) -> None:
        """Display Configuration values."""
        print("\nConfigurations:")
        for a, v in self._settings():
            print("{:30} {}".format(a, v))
        print("\n")

    # ------------------------------------------------------------------
    # Validation
    # ------------------------------------------------------------------

    def validate(self) -> None:
        """Raise ValueError naming the field and the fix for settings that
        contradict each other. Called by ``__init__``; call it again after
        changing fields on an instance.
        """
        cls = type(self).__name__

        def fail(field, msg):
            raise ValueError(f"{cls}.{field}: {msg}")

        # NAME names the run folder and the checkpoints; None is checked
        # where it is needed (MaskRCNN creation, checkpoints.log_dir_for).
        name = self.NAME
        if name is not None and (not isinstance(name, str) or not name.strip()
                                 or any(c in name for c in "/\\\0")):
            fail("NAME", f"must be a non-empty string without path separators (it names "
                 f"the run folder <model_dir>/<name><YYYYMMDDTHHMM>), got {name!r}.")
        computed = {"BATCH_SIZE": self._batch_size, "IMAGE_SHAPE": self._image_shape,
                    "IMAGE_META_SIZE": self._image_meta_size}
        for field, value in getattr(type(self), "_class_derived", {}).items():
            expected = computed[field]()
            if not np.array_equal(np.asarray(value), np.asarray(expected)):
                fail(field, f"is derived from {DERIVED_FIELDS[field]} (which give "
                     f"{_plain(expected)}); it cannot be set in the class body "
                     f"(got {_plain(value)}). Set the fields it follows instead.")

        def positive_int(field):
            v = getattr(self, field)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                fail(field, f"must be a positive integer, got {v!r}.")

        for field in ("GPU_COUNT", "IMAGES_PER_GPU", "STEPS_PER_EPOCH",
                      "VALIDATION_STEPS", "FPN_CLASSIF_FC_LAYERS_SIZE",
                      "TOP_DOWN_PYRAMID_SIZE", "RPN_ANCHOR_STRIDE",
                      "RPN_TRAIN_ANCHORS_PER_IMAGE", "PRE_NMS_LIMIT",
                      "POST_NMS_ROIS_TRAINING", "POST_NMS_ROIS_INFERENCE",
                      "TRAIN_ROIS_PER_IMAGE", "POOL_SIZE", "MASK_POOL_SIZE",
                      "MAX_GT_INSTANCES", "DETECTION_MAX_INSTANCES",
                      "IMAGE_CHANNEL_COUNT"):
            positive_int(field)

        if not isinstance(self.NUM_CLASSES, (int, np.integer)) or self.NUM_CLASSES < 1:
            fail("NUM_CLASSES", f"must be an integer >= 1 (background counts as "
                 f"one class), got {self.NUM_CLASSES!r}.")
        # NUM_CLASSES < 2 can build an inference model (nothing to detect), but
        # training needs at least one object class: checked by
        # validate_for_training().

        # Backbone
        if callable(self.BACKBONE):
            if self.COMPUTE_BACKBONE_SHAPE is None:
                fail("COMPUTE_BACKBONE_SHAPE", "BACKBONE is a callable, so "
                     "COMPUTE_BACKBONE_SHAPE must be a callable too: "
                     "f(image_shape) -> [[height, width] per pyramid level].")
        elif self.BACKBONE not in BACKBONES:
            fail("BACKBONE", f"unknown backbone {self.BACKBONE!r}; use one of "
                 f"{', '.join(BACKBONES)} or a callable like model.resnet_graph.")
        if self.COMPUTE_BACKBONE_SHAPE is not None and not callable(self.COMPUTE_BACKBONE_SHAPE):
            fail("COMPUTE_BACKBONE_SHAPE", "must be None or a callable "
                 "f(image_shape) -> [[height, width] per pyramid level].")

        # Anchors: one scale per pyramid level.
        if len(self.BACKBONE_STRIDES) != 5:
            fail("BACKBONE_STRIDES", f"needs 5 strides (P2..P6), got {list(self.BACKBONE_STRIDES)}.")
        if len(self.RPN_ANCHOR_SCALES) != len(self.BACKBONE_STRIDES):
            fail("RPN_ANCHOR_SCALES", f"needs one scale per pyramid level "
                 f"({len(self.BACKBONE_STRIDES)}, as BACKBONE_STRIDES), got "
                 f"{len(self.RPN_ANCHOR_SCALES)}: {tuple(self.RPN_ANCHOR_SCALES)}.")
        if any(s <= 0 for s in self.RPN_ANCHOR_SCALES):
            fail("RPN_ANCHOR_SCALES", "scales must be positive pixel sizes.")
        if len(self.RPN_ANCHOR_RATIOS) < 1 or any(r <= 0 for r in self.RPN_ANCHOR_RATIOS):
            fail("RPN_ANCHOR_RATIOS", f"needs one or more positive width/height "
                 f"ratios, got {list(self.RPN_ANCHOR_RATIOS)}.")

        # Thresholds and ratios in [0, 1]
        if self.DETECTION_CROSS_CLASS_NMS_THRESHOLD is not None and not (
                0.0 <= float(self.DETECTION_CROSS_CLASS_NMS_THRESHOLD) <= 1.0):
            fail("DETECTION_CROSS_CLASS_NMS_THRESHOLD", f"must be None or between 0 and 1, got "
                 f"{self.DETECTION_CROSS_CLASS_NMS_THRESHOLD!r}.")
        for field in ("RPN_NMS_THRESHOLD", "DETECTION_MIN_CONFIDENCE",
                      "DETECTION_NMS_THRESHOLD", "ROI_POSITIVE_RATIO"):
            v = getattr(self, field)
            if not (0.0 <= float(v) <= 1.0):
                fail(field, f"must be between 0 and 1, got {v!r}.")

        # Image sizes
        mode = self.IMAGE_RESIZE_MODE
        if mode not in IMAGE_RESIZE_MODES:
            fail("IMAGE_RESIZE_MODE", f"unknown mode {mode!r}; use one of "
                 f"{', '.join(IMAGE_RESIZE_MODES)}.")
        if mode == "square":
            if not self.IMAGE_MAX_DIM or self.IMAGE_MAX_DIM % 64:
                fail("IMAGE_MAX_DIM", f"must be divisible by 64 in 'square' mode "
                     f"(the FPN halves the image 6 times), got {self.IMAGE_MAX_DIM}; "
                     f"try {_round_up(self.IMAGE_MAX_DIM or 64, 64)}.")
            if self.IMAGE_MIN_DIM and self.IMAGE_MIN_DIM > self.IMAGE_MAX_DIM:
                fail("IMAGE_MIN_DIM", f"({self.IMAGE_MIN_DIM}) is larger than "
                     f"IMAGE_MAX_DIM ({self.IMAGE_MAX_DIM}); lower IMAGE_MIN_DIM "
                     f"or raise IMAGE_MAX_DIM.")
        if mode == "crop":
            if not self.IMAGE_MIN_DIM or self.IMAGE_MIN_DIM % 64:
                fail("IMAGE_MIN_DIM", f"must be divisible by 64 in 'crop' mode "
                     f"(it is the crop size), got {self.IMAGE_MIN_DIM}; try "
                     f"{_round_up(self.IMAGE_MIN_DIM or 64, 64)}.")
        if self.IMAGE_MIN_SCALE is not None and self.IMAGE_MIN_SCALE < 0:
            fail("IMAGE_MIN_SCALE", f"must be >= 0, got {self.IMAGE_MIN_SCALE}.")

        # Channels and mean pixel
        mean = np.asarray(self.MEAN_PIXEL).reshape(-1)
        if mean.size != self.IMAGE_CHANNEL_COUNT:
            fail("MEAN_PIXEL", f"has {mean.size} values but IMAGE_CHANNEL_COUNT is "
                 f"{self.IMAGE_CHANNEL_COUNT}; give one mean per channel.")

        # Box deltas
        for field in ("RPN_BBOX_STD_DEV", "BBOX_STD_DEV"):
            v = np.asarray(getattr(self, field), dtype=float).reshape(-1)
            if v.size != 4 or np.any(v <= 0):
                fail(field, f"needs 4 positive values (dy, dx, dh, dw), got {v.tolist()}.")

        # Masks
        if len(self.MINI_MASK_SHAPE) != 2 or min(self.MINI_MASK_SHAPE) < 1:
            fail("MINI_MASK_SHAPE", f"needs (height, width), got {self.MINI_MASK_SHAPE}.")
        expected_mask = [2 * self.MASK_POOL_SIZE, 2 * self.MASK_POOL_SIZE]
        if list(self.MASK_SHAPE) != expected_mask:
            fail("MASK_SHAPE", f"the mask head upsamples MASK_POOL_SIZE "
                 f"({self.MASK_POOL_SIZE}) once by 2, so MASK_SHAPE must be "
                 f"{expected_mask}, got {list(self.MASK_SHAPE)}.")

        # Training sampling
        if self.RPN_TRAIN_ANCHORS_PER_IMAGE < 2:
            fail("RPN_TRAIN_ANCHORS_PER_IMAGE", "must be at least 2.")

        # Losses
        if set(self.LOSS_WEIGHTS) != set(LOSS_NAMES):
            missing = sorted(set(LOSS_NAMES) - set(self.LOSS_WEIGHTS))
            extra = sorted(set(self.LOSS_WEIGHTS) - set(LOSS_NAMES))
            fail("LOSS_WEIGHTS", f"must name exactly the five losses {LOSS_NAMES}; "
                 f"missing {missing}, unknown {extra}.")
        for k, v in self.LOSS_WEIGHTS.items():
            if not math.isfinite(float(v)) or float(v) < 0:
                fail("LOSS_WEIGHTS", f"weight of {k} must be a finite number >= 0, got {v!r}.")

        for field in ("LEARNING_RATE", "LEARNING_MOMENTUM", "WEIGHT_DECAY"):
            v = float(getattr(self, field))
            if not math.isfinite(v) or v < 0:
                fail(field, f"must be a finite number >= 0, got {v!r}.")
        if self.GRADIENT_CLIP_NORM is not None and float(self.GRADIENT_CLIP_NORM) <= 0:
            fail("GRADIENT_CLIP_NORM", "must be positive (or None for no clipping).")
        if self.INFERENCE_PRECISION not in INFERENCE_PRECISIONS:
            fail("INFERENCE_PRECISION", f"unknown precision {self.INFERENCE_PRECISION!r}; "
                 f"use one of {', '.join(INFERENCE_PRECISIONS)}.")
        if self.TRAIN_PRECISION not in TRAIN_PRECISIONS:
            fail("TRAIN_PRECISION", f"unknown precision {self.TRAIN_PRECISION!r}; "
                 f"use one of {', '.join(TRAIN_PRECISIONS)}.")
        if self.SYNC_BATCH_NORM not in (True, False):
            fail("SYNC_BATCH_NORM", f"must be True or False, got {self.SYNC_BATCH_NORM!r}.")
        if not 0.0 <= float(self.BATCH_NORM_MOMENTUM) < 1.0:
            fail("BATCH_NORM_MOMENTUM", f"must be in [0, 1), got {self.BATCH_NORM_MOMENTUM!r}.")
        if self.TRAIN_BN not in (None, True, False):
            fail("TRAIN_BN", f"must be None, True or False, got {self.TRAIN_BN!r}.")

    def validate_for_training(self) -> None:
        """Extra checks for mode="training" (called by the model builder)."""
        cls = type(self).__name__
        if self.NUM_CLASSES < 2:
            raise ValueError(
                f"{cls}.NUM_CLASSES is {self.NUM_CLASSES}: training needs the "
                f"background plus at least one object class, e.g. NUM_CLASSES = 1 + 1.")
        positives = int(self.TRAIN_ROIS_PER_IMAGE * self.ROI_POSITIVE_RATIO)
        if positives < 1:
            raise ValueError(
                f"{cls}.TRAIN_ROIS_PER_IMAGE * ROI_POSITIVE_RATIO = "
                f"{self.TRAIN_ROIS_PER_IMAGE} * {self.ROI_POSITIVE_RATIO} gives no "
                f"positive ROI per image; raise one of them.")


def _round_up(x, m):
    return int(math.ceil(x / m) * m)


def _plain(v):
    """A setting as a JSON-ready Python value."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if callable(v):
        return f"{getattr(v, '__module__', '?')}.{getattr(v, '__qualname__', repr(v))}"
    return v
