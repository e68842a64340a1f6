"""The CPU training recipe: Mask R-CNN trained from random weights in minutes.

Matterport's configuration is built to fine-tune a ResNet-101 from COCO or
ImageNet weights on a GPU. Without pretrained weights (none can be downloaded
here) and on two CPU cores, what limits the result is the number of training
steps that fit in the time, so every part is sized to small data sets of a few
object kinds, and the time saved goes to many more steps:

* a small ResNet-like backbone (``graph.small_backbone``: basic blocks of
  32..256 channels, ResNet's strides), plugged in through Matterport's callable
  ``BACKBONE`` / ``COMPUTE_BACKBONE_SHAPE`` contract;
* 64-channel feature maps (Matterport 256: at 256 the FPN's 3x3 convs and the
  RPN cost more than the whole small backbone);
* anchors at every second feature-map cell, fewer proposals and ROIs, a
  256-wide classifier and 14x14 masks;
* batch norm that learns (no pretrained statistics to keep), with a moving
  average that follows the last ~10 steps (``BATCH_NORM_MOMENTUM`` 0.9);
* SGD at a 40x higher rate than Matterport's fine-tuning rate, warmed up over
  ``LR_WARMUP_STEPS`` steps, then decayed to 0 along a cosine
  (:func:`learning_rate_schedule`, a Keras ``CosineDecay``).

Use it by putting :class:`CpuRecipe` first among a config's bases, then set
what belongs to the data (image size, anchor scales, classes)::

    class CpuBalloonConfig(CpuRecipe, BalloonConfig):
        NAME = "cpu_balloon"
        IMAGE_MAX_DIM = 320

    model = modellib.MaskRCNN("training", CpuBalloonConfig(), "logs")
    model.train(train_set, val_set, learning_rate_schedule(config, epochs=16),
                epochs=16, layers="all")

:class:`CpuShapesConfig` is the recipe on the synthetic shapes (``make
demo``, the notebooks); the balloon sample has its own (``--cpu``). README.md
gives the measured results and times.
"""
from mrcnn.config import Config
from mrcnn.datasets.shapes import ShapesConfig
from mrcnn.graph.small_backbone import compute_small_backbone_shapes, small_resnet_graph

__all__ = ["CpuRecipe", "CpuShapesConfig", "learning_rate_schedule", "warmup_steps"]


class CpuRecipe(Config):
    """The settings of the CPU recipe (module docstring); a mixin: list it
    first among the bases, before the data set's config."""

    # Matterport's custom-backbone contract: BACKBONE(input_image,
    # stage5=True, train_bn=TRAIN_BN) -> [C1, .., C5] (widths 32, 64, 128,
    # 256; ResNet's strides 4..32), and the feature-map sizes for the
    # anchors. staticmethod: a plain function in a class body would become a
    # method, called with the config as its first argument.
    BACKBONE = staticmethod(small_resnet_graph)
    COMPUTE_BACKBONE_SHAPE = staticmethod(compute_small_backbone_shapes)

    # Channels of the FPN levels P2..P6, the input of the RPN and of both
    # heads' ROI pooling: 64 (Matterport 256).
    TOP_DOWN_PYRAMID_SIZE = 64

    # The RPN on every second feature-map position (4x less RPN work); with
    # anchor scales sized to the objects each still has ~2 anchors at
    # IoU >= 0.7.
    RPN_ANCHOR_STRIDE = 2
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64

    # Proposals: a few objects per image need few of them.
    PRE_NMS_LIMIT = 1000
    POST_NMS_ROIS_TRAINING = 200
    POST_NMS_ROIS_INFERENCE = 100

    # 16 ROIs per image at 33% positives leave room for a handful of objects.
    TRAIN_ROIS_PER_IMAGE = 16

    # Smaller heads: a 256-wide classifier and 7x7 mask ROIs giving 14x14
    # masks (4x less mask-head work than 14x14 -> 28x28). The mask head's
    # four 3x3 convs keep Matterport's 256 channels (fixed in its
    # architecture); in training they run on the positive ROIs only.
    FPN_CLASSIF_FC_LAYERS_SIZE = 256
    MASK_POOL_SIZE = 7
    MASK_SHAPE = [14, 14]

    # No pretrained weights: batch norm must learn (batch statistics while
    # training, moving averages at inference), and follow the fast-changing
    # weights closely (see Config.BATCH_NORM_MOMENTUM).
    TRAIN_BN = None
    BATCH_NORM_MOMENTUM = 0.9

    # SGD with momentum 0.9, gradients clipped to GRADIENT_CLIP_NORM per
    # tensor, at the peak of learning_rate_schedule().
    LEARNING_RATE = 0.04
    # Steps of linear warm-up from 0 (random weights give large, erratic
    # gradients at first); at most a tenth of the run. Read by
    # learning_rate_schedule(); not a Matterport field.
    LR_WARMUP_STEPS = 100

    # Keep detections down to 0.3 confidence. AP ranks detections by score:
    # a low-scored correct detection raises it, a low-scored wrong one ranked
    # after the correct ones does not lower it.
    DETECTION_MIN_CONFIDENCE = 0.3

    # One box per object: a class-agnostic NMS after the per-class one drops
    # the lower-scoring of two detections of different classes with IoU >
    # 0.5 (a model trained in minutes sometimes sees one shape as two kinds;
    # Config.DETECTION_CROSS_CLASS_NMS_THRESHOLD).
    DETECTION_CROSS_CLASS_NMS_THRESHOLD = 0.5


class CpuShapesConfig(CpuRecipe, ShapesConfig):
    """The CPU recipe on the synthetic shapes (``make demo``, the notebooks):
    128x128 images of 1-4 squares, circles and triangles, 8 per batch."""
    # Its own name: checkpoints go to logs/cpu_shapes<date>/, which
    # find_last() of the Matterport configuration ("shapes") never picks.
    NAME = "cpu_shapes"

    IMAGES_PER_GPU = 8
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128

    # Anchors sized to the shapes (boxes of 41 to 75 pixels). Matterport's
    # scales (8, 16, 32, 64, 128) give no anchor an IoU >= 0.7 with any
    # shape at anchor stride 2 (0.15 per shape at stride 1), so the RPN only
    # learns from the single best anchor of each shape, with large box
    # deltas, and its proposals stay poor. With 48 and 64 on the two finest
    # levels each shape has ~1.8 anchors at IoU >= 0.7 (best IoU 0.79 on
    # average), even with an anchor stride of 2.
    RPN_ANCHOR_SCALES = (48, 64, 96, 128, 192)

    MAX_GT_INSTANCES = 10
    DETECTION_MAX_INSTANCES = 10

    # One "epoch" is 100 steps of 8 images; the demo trains 16 of them.
    STEPS_PER_EPOCH = 100
    VALIDATION_STEPS = 2


def warmup_steps(config, total_steps: int) -> int:
    """The recipe's warm-up length for a run of ``total_steps``:
    LR_WARMUP_STEPS (0 without the field), at most a tenth of the run."""
    return max(0, min(int(getattr(config, "LR_WARMUP_STEPS", 0)), int(total_steps) // 10))


def learning_rate_schedule(config, epochs: int = None, total_steps: int = None,
                           peak: float = None):
    """The recipe's learning rate: a linear warm-up from 0 to LEARNING_RATE
    over ``warmup_steps`` steps, then a cosine down to 0 at the last step.

    config: LEARNING_RATE, LR_WARMUP_STEPS, STEPS_PER_EPOCH.
    epochs: the run's last epoch (Matterport's meaning, counted from 0), or
    total_steps: its length in steps (``epochs * STEPS_PER_EPOCH``).
    peak: the rate after the warm-up, default LEARNING_RATE.
    Returns a ``keras.optimizers.schedules.CosineDecay`` of the global step,
    for ``train(learning_rate=...)``; e.g. LEARNING_RATE 0.04, 1600 steps,
    warm-up 100: step 0 -> 0, 50 -> 0.02, 100 -> 0.04, 850 -> 0.02, 1600 -> 0.
    """
    import keras  # imported here: this module is also read before TensorFlow is loaded

    if total_steps is None:
        if epochs is None:
            raise ValueError("learning_rate_schedule: give epochs or total_steps.")
        total_steps = int(epochs) * int(config.STEPS_PER_EPOCH)
    total_steps = int(total_steps)
    if total_steps < 1:
        raise ValueError(f"learning_rate_schedule: the run must have at least one step, "
                         f"got {total_steps}.")
    warmup = warmup_steps(config, total_steps)
    peak = float(config.LEARNING_RATE if peak is None else peak)
    if warmup == 0:
        # CosineDecay's warm-up starts at initial_learning_rate: without one
        # the cosine starts at the peak.
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps=total_steps)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=max(1, total_steps - warmup),
        warmup_target=peak, warmup_steps=warmup)
