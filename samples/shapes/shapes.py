"""
Mask R-CNN
Train on the synthetic Shapes data set (squares, circles, triangles), then
evaluate and look at the detections. Matterport's ``train_shapes.ipynb`` as a
command line, sized so that it runs on a CPU.

Usage: import the module, or run it from the command line:

    # The main job: train from scratch, evaluate, save pictures (~10 min, 2 cores)
    python3 samples/shapes/shapes.py demo

    # Train, resume, evaluate, detect, step by step
    python3 samples/shapes/shapes.py train --epochs=16
    python3 samples/shapes/shapes.py train --weights=last --epochs=18 --lr=0.004
    python3 samples/shapes/shapes.py evaluate --weights=last --images=100
    python3 samples/shapes/shapes.py detect --weights=last --images=4 --out=pictures

    # Matterport's notebook: its configuration (ResNet-101; for a GPU), the
    # COCO weights, the heads first, then all layers
    python3 samples/shapes/shapes.py train --config=matterport --weights=coco --layers=heads --epochs=1
    python3 samples/shapes/shapes.py train --config=matterport --weights=last --lr=0.0001 --epochs=2

Two configurations:

* ``cpu`` (``CpuShapesConfig``, the default): a small ResNet-like backbone
  (``small_backbone.py``, plugged in as Matterport's callable ``BACKBONE``),
  64-channel feature maps, smaller heads and fewer ROIs, 128x128 images,
  trainable batch norm and a larger, warmed-up then decaying learning rate,
  because there are no pretrained weights to start from. README.md beside
  this file explains each choice and what it costs.
* ``matterport`` (``ShapesConfig`` of ``mrcnn.datasets.shapes``, unchanged):
  ResNet-101, Matterport's heads; meant to start from the COCO weights
  (``--weights=coco``, class layers excluded) on a GPU.

Images are generated, never downloaded: the training images come from
``--seed`` and the validation / evaluation / detection images from
``--seed + 1``, so evaluation always uses images the model has not trained on.

Bad input (weights that cannot be found or do not fit the configuration, an
output folder that cannot be written) ends the command with a one-line
``error:`` message and exit code 2; ``--traceback`` shows the traceback.

Licensed under the MIT License (Matterport's original is MIT as well).
"""

import argparse
import math
import os
import re
import sys
import time

import numpy as np

# Root directory of the project: the checkout this file sits in
# (samples/shapes/shapes.py), or the working directory for a copied file.
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOT_DIR = _CHECKOUT if os.path.isdir(os.path.join(_CHECKOUT, "mrcnn")) else os.getcwd()

# Find the local version of the library when it is not installed
try:
    import mrcnn  # noqa: F401
except ImportError:
    sys.path.append(ROOT_DIR)

# TensorFlow's C++ start-up notices drown the sample's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Pictures are written to files; no display is needed.
os.environ.setdefault("MPLBACKEND", "Agg")

# mrcnn.model (and with it TensorFlow, several seconds) is imported when a
# model is built, so that bad arguments are reported at once.
from mrcnn.cli import run_command  # noqa: E402
from mrcnn.datasets.shapes import ShapesConfig, ShapesDataset  # noqa: E402

try:
    from samples.shapes.small_backbone import (compute_small_backbone_shapes,  # noqa: E402
                                               small_resnet_graph)
except ImportError:
    # Run as a script without the checkout on the path: the module beside
    # this file (the script's folder is sys.path[0]).
    from small_backbone import compute_small_backbone_shapes, small_resnet_graph  # noqa: E402

__all__ = ["ShapesConfig", "CpuShapesConfig", "CONFIGS", "make_config", "make_dataset",
           "seed_everything", "lr_factor", "lr_schedule", "set_batch_norm_momentum", "train",
           "evaluate", "detect", "save_comparison", "backbone_name", "demo", "main",
           "COCO_WEIGHTS_PATH", "HEAD_LAYERS", "DEFAULT_LOGS_DIR", "DEFAULT_OUT_DIR",
           "DEMO_EPOCHS"]

# Directory to save logs and model checkpoints, if not provided
# through the command line argument --logs
DEFAULT_LOGS_DIR = os.path.join(os.getcwd(), "logs")
# Where the pictures go, if not provided through --out
DEFAULT_OUT_DIR = os.path.join(os.getcwd(), "shapes_output")
# Path to the COCO trained weights (--weights=coco), downloaded if missing
COCO_WEIGHTS_PATH = os.path.join(ROOT_DIR, "mask_rcnn_coco.h5")
# The layers whose shapes depend on NUM_CLASSES: left out when starting from
# the COCO weights (81 classes; shapes has 4).
HEAD_LAYERS = ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]

############################################################
#  Configurations
############################################################


class CpuShapesConfig(ShapesConfig):
    """ShapesConfig sized to train from scratch on a 2-core CPU in minutes.

    From random weights, what limits the result is the number of training
    steps that fit in the time, so every part is sized to the task: a small
    ResNet-like backbone (small_backbone.py) instead of ResNet-101, 64-channel
    feature maps instead of 256, few ROIs, small masks; and the time saved
    goes to many more steps, with a learning rate that warms up and then
    decays (lr_factor). See README.md for the measured effect of each setting.
    """
    # Its own name: checkpoints go to logs/cpu_shapes<date>/, which
    # find_last() of the Matterport configuration ("shapes") never picks.
    NAME = "cpu_shapes"

    # Matterport's custom-backbone contract: BACKBONE(input_image,
    # stage5=True, train_bn=TRAIN_BN) -> [C1, .., C5] (widths 32, 64, 128,
    # 256; ResNet's strides 4..32), and the feature-map sizes for the
    # anchors. staticmethod: a plain function in a class body would become a
    # method, called with the config as its first argument.
    BACKBONE = staticmethod(small_resnet_graph)
    COMPUTE_BACKBONE_SHAPE = staticmethod(compute_small_backbone_shapes)

    # Channels of the FPN levels P2..P6, the input of the RPN and of both
    # heads' ROI pooling: 64 (Matterport 256). At 256 the FPN's 3x3 convs
    # and the RPN on the 32x32 P2 cost more than the whole small backbone.
    TOP_DOWN_PYRAMID_SIZE = 64

    # Matterport's image size and batch; shapes are 40 to 64 pixels wide.
    IMAGES_PER_GPU = 8
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128

    # Anchors sized to the shapes (boxes of 41 to 75 pixels). Matterport's
    # scales (8, 16, 32, 64, 128) give no anchor an IoU >= 0.7 with any
    # shape at anchor stride 2 (0.15 per shape at stride 1), so the RPN only
    # learns from the single best anchor of each shape, with large box
    # deltas, and its proposals stay poor. With 48 and 64 on the two finest
    # levels each shape has ~1.8 anchors at IoU >= 0.7 (best IoU 0.79 on
    # average), even with an anchor stride of 2, which computes the RPN on
    # every second feature-map position (4x less RPN work).
    RPN_ANCHOR_SCALES = (48, 64, 96, 128, 192)
    RPN_ANCHOR_STRIDE = 2
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64

    # Proposals: at most 4 objects per image need few of them.
    PRE_NMS_LIMIT = 1000
    POST_NMS_ROIS_TRAINING = 200
    POST_NMS_ROIS_INFERENCE = 100

    # 16 ROIs per image at 33% positives leave room for the 1-4 shapes.
    TRAIN_ROIS_PER_IMAGE = 16
    MAX_GT_INSTANCES = 10
    DETECTION_MAX_INSTANCES = 10

    # Smaller heads: a 256-wide classifier and 7x7 mask ROIs giving 14x14
    # masks (4x less mask-head work than 14x14 -> 28x28; edges of 40-64 px
    # shapes are then still placed within about 2 pixels). The mask head's
    # four 3x3 convs keep Matterport's 256 channels (fixed in its
    # architecture); they run on the positive ROIs only (5 per image).
    FPN_CLASSIF_FC_LAYERS_SIZE = 256
    MASK_POOL_SIZE = 7
    MASK_SHAPE = [14, 14]

    # No pretrained weights: batch norm must learn (batch statistics while
    # training, moving averages at inference), and the learning rate can be
    # much higher than Matterport's fine-tuning rate: SGD with momentum 0.9,
    # gradients clipped to GRADIENT_CLIP_NORM per tensor.
    TRAIN_BN = None
    LEARNING_RATE = 0.04

    # Not Matterport fields (this sample reads them):
    # The demo's learning rate rises linearly from 0 over the first
    # LR_WARMUP_STEPS steps (random weights give large, erratic gradients at
    # first), then follows a cosine down to 0 at the last step (lr_factor).
    LR_WARMUP_STEPS = 100
    # Set on the BatchNorm layers of the training model: Keras' 0.99
    # averages the batch statistics over ~100 steps, too slowly for weights
    # that change this fast from scratch. The inference model then
    # normalizes with stale statistics; its RPN deltas blow up (exp
    # overflow) and no proposal survives. 0.9 follows the last ~10 steps.
    BATCH_NORM_MOMENTUM = 0.9

    # Keep detections down to 0.3 confidence. AP ranks detections by score:
    # a low-scored correct detection raises it, a low-scored wrong one ranked
    # after the correct ones does not lower it.
    DETECTION_MIN_CONFIDENCE = 0.3

    # One "epoch" is 100 steps of 8 images; the demo trains DEMO_EPOCHS of them.
    STEPS_PER_EPOCH = 100
    VALIDATION_STEPS = 2


# --config choices
CONFIGS = {"cpu": CpuShapesConfig, "matterport": ShapesConfig}

# The demo's length: DEMO_EPOCHS epochs of STEPS_PER_EPOCH steps, all
# layers, learning rate warmed up then decayed over the whole run (lr_factor).
DEMO_EPOCHS = 16


def lr_factor(step, total_steps, warmup_steps):
    """The demo's learning rate at ``step`` (0-based), as a fraction of
    LEARNING_RATE: a linear warm-up to 1 over the first ``warmup_steps``
    steps, then a cosine from 1 down to 0 at step ``total_steps``.

    E.g. total 1000, warm-up 100: step 0 -> 0.01, 99 -> 1.0, 550 -> 0.5,
    1000 and later -> 0.0.
    """
    warmup_steps = max(0, min(int(warmup_steps), int(total_steps) - 1))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_config(name="cpu", inference=False, **overrides):
    """The configuration ``name`` ("cpu" or "matterport").

    inference: one image per batch (detection and evaluation).
    overrides: Config fields to set (None values are ignored), e.g.
        ``STEPS_PER_EPOCH=2``.
    Returns: a Config instance (a subclass made on the fly when something is
        overridden, so the derived fields and validate() see the new values).
    """
    if name not in CONFIGS:
        raise ValueError(f"Unknown configuration {name!r}; choose one of {sorted(CONFIGS)}.")
    settings = {k: v for k, v in overrides.items() if v is not None}
    if inference:
        settings.update(GPU_COUNT=1, IMAGES_PER_GPU=1)
    base = CONFIGS[name]
    if not settings:
        return base()
    return type(base.__name__, (base,), settings)()


def lr_schedule(base_lr, total_steps, warmup_steps, steps_per_epoch):
    """Keras callback setting the learning rate before every training step
    to ``base_lr * lr_factor(step, total_steps, warmup_steps)``.

    The step counts from epoch 0 (``epoch * steps_per_epoch + batch``), so a
    run resumed at a later epoch continues the same curve. The rate of each
    epoch's last step is logged as ``learning_rate``.
    """
    import keras

    class WarmupCosine(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch, self.rate = 0, float(base_lr)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = int(epoch)

        def on_train_batch_begin(self, batch, logs=None):
            step = self.epoch * int(steps_per_epoch) + int(batch)
            self.rate = float(base_lr) * lr_factor(step, total_steps, warmup_steps)
            self.model.optimizer.learning_rate = self.rate

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["learning_rate"] = self.rate

    return WarmupCosine()


def seed_everything(seed):
    """Seed Python's ``random``, NumPy's global generator and TensorFlow
    (weight initialisation, the random sampling in the graph).

    Runs are then close, not bit-identical: multithreaded CPU kernels sum in
    varying order.
    """
    import keras

    keras.utils.set_random_seed(int(seed))


############################################################
#  Dataset
############################################################

def make_dataset(count, config, seed):
    """A prepared ShapesDataset of ``count`` images of the config's size.

    The same seed gives the same images (image i depends on (seed, i) only).
    """
    if count < 1:
        raise ValueError(f"The number of images must be at least 1, got {count}.")
    height, width = (int(v) for v in config.IMAGE_SHAPE[:2])
    dataset = ShapesDataset()
    dataset.load_shapes(int(count), height, width, seed=int(seed))
    dataset.prepare()
    return dataset


############################################################
#  Training
############################################################

def train(model, train_dataset, val_dataset, epochs, layers="all", learning_rate=None,
          schedule=False, seed=None, verbose=1):
    """Train ``model`` up to epoch ``epochs`` (Matterport's meaning: the
    number of the last epoch, so a resumed model trains the difference).

    learning_rate: default config.LEARNING_RATE.
    schedule: False: that rate throughout. True: warm-up and cosine decay
        (lr_factor) over ``epochs * STEPS_PER_EPOCH`` steps, with
        ``LR_WARMUP_STEPS`` steps of warm-up (at most a tenth of the steps).
    seed: order of the training images (None: random).
    Returns: Keras' History.
    """
    config = model.config
    lr = float(config.LEARNING_RATE if learning_rate is None else learning_rate)
    callbacks, how = None, f"learning rate {lr:g}"
    if schedule:
        steps = int(epochs) * int(config.STEPS_PER_EPOCH)
        warmup = min(int(getattr(config, "LR_WARMUP_STEPS", 0)), steps // 10)
        callbacks = [lr_schedule(lr, steps, warmup, config.STEPS_PER_EPOCH)]
        how = f"learning rate up to {lr:g} in {warmup} steps, then down to 0 (cosine)"
    print(f"Training {layers} layers from epoch {model.epoch + 1} to {epochs} "
          f"({config.STEPS_PER_EPOCH} steps of {config.BATCH_SIZE} images each), "
          f"{how}, on {len(train_dataset.image_ids)} images", flush=True)
    return model.train(train_dataset, val_dataset, learning_rate=lr, epochs=epochs,
                       layers=layers, custom_callbacks=callbacks, verbose=verbose, seed=seed)


############################################################
#  Evaluation and pictures
############################################################

def _ground_truth(dataset, config, image_id):
    """(image, class_ids, boxes, masks) of an image at the model's size."""
    from mrcnn import data

    image, _, class_ids, boxes, masks = data.load_image_gt(dataset, config, image_id,
                                                           use_mini_mask=False)
    return image, class_ids, boxes, masks


def evaluate(model, dataset, image_ids=None, batch_size=10, verbose=1):
    """mAP of the model's detections against the ground truth.

    model: MaskRCNN in inference mode.
    dataset: prepared ShapesDataset (images the model has not trained on).
    image_ids: default all images of the data set.
    Returns: dict with "mAP50" (mean over images of utils.compute_ap at mask
    IoU 0.5), "mAP" (mean of utils.compute_ap_range over IoU 0.5:0.95),
    "APs" ([images] AP@0.5 of each image), "image_ids", and "results" (the
    detect() dicts, in the same order).
    """
    from tqdm import tqdm

    from mrcnn import utils

    image_ids = list(dataset.image_ids if image_ids is None else image_ids)
    aps, aps_range, results = [], [], []
    with tqdm(total=len(image_ids), desc="Evaluating", unit="image",
              disable=not verbose) as progress:
        for start in range(0, len(image_ids), batch_size):
            ids = image_ids[start:start + batch_size]
            gts = [_ground_truth(dataset, model.config, i) for i in ids]
            detections = model.detect([g[0] for g in gts])
            for (_, class_ids, boxes, masks), r in zip(gts, detections):
                args = (boxes, class_ids, masks, r["rois"], r["class_ids"], r["scores"],
                        r["masks"])
                aps.append(utils.compute_ap(*args, iou_threshold=0.5)[0])
                aps_range.append(utils.compute_ap_range(*args, verbose=0))
            results += detections
            progress.update(len(ids))
    return {"mAP50": float(np.nanmean(aps)), "mAP": float(np.nanmean(aps_range)),
            "APs": np.asarray(aps), "image_ids": image_ids, "results": results}


def _class_colors(num_classes):
    """One fixed color per class, so that ground truth and detections of
    the same class look alike. [num_classes] (r, g, b) floats in [0, 1]."""
    from mrcnn import visualize

    return visualize.random_colors(max(num_classes - 1, 1), seed=0)


def save_comparison(image, gt, result, class_names, path, title=""):
    """Write a PNG: the ground truth (left) and the detections (right).

    image: [H, W, 3] uint8.
    gt: (class_ids [N], boxes [N, (y1, x1, y2, x2)], masks [H, W, N]).
    result: one dict of MaskRCNN.detect().
    class_names: the dataset's class names ("BG" first).
    """
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from mrcnn import visualize

    palette = _class_colors(len(class_names))

    def colors(ids):
        return [palette[(int(i) - 1) % len(palette)] for i in ids]

    class_ids, boxes, masks = gt
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 5.4))
    visualize.display_instances(image, boxes, masks, class_ids, class_names, ax=left,
                                title="Ground truth", colors=colors(class_ids))
    visualize.display_instances(image, result["rois"], result["masks"], result["class_ids"],
                                class_names, scores=result["scores"], ax=right,
                                title="Detections" if len(result["class_ids"]) else
                                "Detections: none", colors=colors(result["class_ids"]))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _save_pictures(dataset, config, image_ids, results, aps, out_dir, prefix):
    """save_comparison() of each image into out_dir; returns the paths."""
    import contextlib
    import io

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for image_id, result, ap in zip(image_ids, results, aps):
        image, class_ids, boxes, masks = _ground_truth(dataset, config, image_id)
        path = os.path.join(out_dir, f"{prefix}_{int(image_id):04d}.png")
        title = f"image {image_id}" + ("" if ap is None else f": AP@0.5 {ap:.2f}")
        # display_instances prints a notice for an image without detections;
        # the missing boxes in the picture say the same.
        with contextlib.redirect_stdout(io.StringIO()):
            save_comparison(image, (class_ids, boxes, masks), result, dataset.class_names,
                            path, title=title)
        paths.append(path)
    return paths


def detect(model, dataset, out_dir, image_ids=None, verbose=1):
    """Detect shapes in generated images and save a picture of each
    (ground truth left, detections right). Returns the PNG paths."""
    image_ids = list(dataset.image_ids if image_ids is None else image_ids)
    images = [_ground_truth(dataset, model.config, i)[0] for i in image_ids]
    results = model.detect(images)
    for image_id, r in zip(image_ids, results):
        names = [dataset.class_names[int(c)] for c in r["class_ids"]]
        found = ", ".join(f"{n} {s:.2f}" for n, s in zip(names, r["scores"])) or "nothing"
        if verbose:
            print(f"image {image_id}: {found}")
    return _save_pictures(dataset, model.config, image_ids, results, [None] * len(results),
                          out_dir, "detect")


############################################################
#  Weights
############################################################

def find_last(config, model_dir):
    """The newest checkpoint of ``config`` under ``model_dir``.

    Only folders named exactly <NAME><YYYYMMDDTHHMM> count, so the
    "shapes" and "cpu_shapes" runs never mix (MaskRCNN.find_last() matches
    by prefix). Raises FileNotFoundError saying what to do when there is none.
    """
    name = config.NAME.lower()
    pattern = re.compile(re.escape(name) + r"\d{8}T\d{4}$")
    runs = []
    if os.path.isdir(model_dir):
        runs = sorted(d for d in os.listdir(model_dir) if pattern.match(d))
    for run_dir in reversed(runs):
        folder = os.path.join(model_dir, run_dir)
        checkpoints = sorted(f for f in os.listdir(folder)
                             if f.startswith(f"mask_rcnn_{name}_") and f.endswith(".h5"))
        if checkpoints:
            return os.path.join(folder, checkpoints[-1])
    raise FileNotFoundError(
        f"No {name} checkpoint under {model_dir}: train first (the train or demo "
        f"command), or pass --weights=<path to a .h5 file> (and --logs if you trained "
        f"with another logs folder).")


def _weights_path(choice, config, logs):
    """The file --weights names ('last': find_last; 'coco': COCO_WEIGHTS_PATH,
    downloaded first if missing), or None for 'none'. Checked before the
    model is built, so a bad choice fails at once."""
    key = choice.lower()
    if key == "none":
        return None
    if key == "coco":
        if not os.path.exists(COCO_WEIGHTS_PATH):
            from mrcnn import utils
            utils.download_trained_weights(COCO_WEIGHTS_PATH)
        return COCO_WEIGHTS_PATH
    path = find_last(config, logs) if key == "last" else choice
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weights file not found: {path}. Pass a .h5 file, or "
                                f"last, coco, none.")
    return path


def _load_weights(model, path):
    """Load the weights file ``path`` (None: keep the random initialisation)."""
    if path is None:
        print("Weights: none (random initialisation)")
        return
    print("Loading weights", path)
    if path == COCO_WEIGHTS_PATH:
        # COCO's class-specific layers do not fit 4 classes.
        model.load_weights(path, by_name=True, exclude=HEAD_LAYERS)
    else:
        model.load_weights(path, by_name=True)


############################################################
#  Commands
############################################################

def set_batch_norm_momentum(keras_model, momentum):
    """Set the moving-average momentum of every BatchNormalization layer
    (TimeDistributed ones and nested models included); call it before
    training. Returns the number of layers changed."""
    import keras

    changed = 0
    for layer in keras_model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            changed += 1
    return changed


def _build(mode, config, logs):
    from mrcnn import model as modellib

    model = modellib.MaskRCNN(mode=mode, config=config, model_dir=logs)
    momentum = getattr(config, "BATCH_NORM_MOMENTUM", None)
    if mode == "training" and momentum is not None:
        set_batch_norm_momentum(model.keras_model, momentum)
    return model


def backbone_name(config):
    """"resnet50", "resnet101", or the name of a BACKBONE callable."""
    backbone = config.BACKBONE
    if callable(backbone):
        return getattr(backbone, "__name__", type(backbone).__name__)
    return str(backbone)


def _stage(text, start):
    print(f"\n== {text} ({time.time() - start:.0f} s since start)", flush=True)


def demo(logs=DEFAULT_LOGS_DIR, out=DEFAULT_OUT_DIR, epochs=DEMO_EPOCHS, train_images=2000,
         val_images=50, pictures=4, seed=1, config_name="cpu", overrides=None, verbose=1):
    """The main job: train from scratch, evaluate, save pictures.

    Trains all layers for ``epochs`` epochs (warm-up and cosine decay of the
    learning rate, lr_factor) on
    ``train_images`` images of seed ``seed``, computes mAP@0.5 and
    mAP@[.5:.95] on ``val_images`` held-out images (seed + 1), saves a
    ground truth / detections picture of the first ``pictures`` of them.
    overrides: Config fields to change (make_config), e.g. for a quick run.
    Returns a dict: mAP50, mAP, checkpoint, pictures, seconds.
    """
    start = time.time()
    seed_everything(seed)
    overrides = dict(overrides or {})
    config = make_config(config_name, **overrides)
    inference_config = make_config(config_name, inference=True, **overrides)

    _stage(f"Generating {train_images} training images (seed {seed}) and {val_images} "
           f"validation images (seed {seed + 1})", start)
    train_set = make_dataset(train_images, config, seed)
    val_set = make_dataset(val_images, config, seed + 1)

    _stage(f"Building Mask R-CNN ({backbone_name(config)}, {config.IMAGE_SHAPE[0]}x"
           f"{config.IMAGE_SHAPE[1]} images) with random weights", start)
    model = _build("training", config, logs)

    _stage(f"Training all layers for {epochs} epochs", start)
    train(model, train_set, val_set, epochs=epochs, layers="all",
          schedule=True, seed=seed, verbose=verbose)
    checkpoint = find_last(config, logs)

    _stage(f"Evaluating {checkpoint} on {val_images} validation images", start)
    inference = _build("inference", inference_config, logs)
    inference.load_weights(checkpoint, by_name=True)
    scores = evaluate(inference, val_set, verbose=verbose)

    _stage(f"Saving pictures of {pictures} validation images", start)
    n = min(pictures, len(scores["image_ids"]))
    paths = _save_pictures(val_set, inference_config, scores["image_ids"][:n],
                           scores["results"][:n], scores["APs"][:n], out, "demo")
    seconds = time.time() - start
    print(f"\nmAP@0.5 = {scores['mAP50']:.3f}   mAP@[.5:.95] = {scores['mAP']:.3f}   "
          f"({val_images} validation images)")
    print(f"Checkpoint: {checkpoint}")
    print(f"Pictures (ground truth left, detections right): {out}")
    for path in paths:
        print(f"  {path}")
    print(f"Done in {seconds / 60:.1f} min.")
    return {"mAP50": scores["mAP50"], "mAP": scores["mAP"], "checkpoint": checkpoint,
            "pictures": paths, "seconds": seconds}


def run(args):
    """Carry out a parsed command line; returns the command's result."""
    size = args.image_size
    overrides = dict(IMAGE_MIN_DIM=size, IMAGE_MAX_DIM=size, STEPS_PER_EPOCH=args.steps,
                     LEARNING_RATE=args.lr, IMAGES_PER_GPU=args.batch_size)
    if args.command == "demo":
        return demo(logs=args.logs, out=args.out, epochs=args.epochs or DEMO_EPOCHS,
                    train_images=args.images or 2000, val_images=args.val_images,
                    pictures=args.pictures, seed=args.seed, config_name=args.config,
                    overrides=overrides)

    start = time.time()
    seed_everything(args.seed)
    if args.command == "train":
        config = make_config(args.config, **overrides)
        weights_path = _weights_path(args.weights, config, args.logs)
        train_set = make_dataset(args.images or 2000, config, args.seed)
        val_set = make_dataset(args.val_images, config, args.seed + 1)
        model = _build("training", config, args.logs)
        _load_weights(model, weights_path)
        # From random weights, the demo's warm-up and decay; from weights
        # (resuming, fine-tuning), Matterport's constant rate.
        train(model, train_set, val_set, epochs=args.epochs or model.epoch + 1,
              layers=args.layers, schedule=weights_path is None, seed=args.seed)
        checkpoint = find_last(config, args.logs)
        print(f"Checkpoint: {checkpoint} ({time.time() - start:.0f} s)")
        return {"checkpoint": checkpoint}

    config = make_config(args.config, inference=True, **overrides)
    weights_path = _weights_path(args.weights, config, args.logs)
    model = _build("inference", config, args.logs)
    _load_weights(model, weights_path)
    if args.command == "evaluate":
        dataset = make_dataset(args.images or args.val_images, config, args.seed + 1)
        scores = evaluate(model, dataset)
        print(f"mAP@0.5 = {scores['mAP50']:.3f}   mAP@[.5:.95] = {scores['mAP']:.3f}   "
              f"({len(scores['image_ids'])} images of seed {args.seed + 1}, "
              f"weights {weights_path})")
        if args.pictures:
            n = min(args.pictures, len(scores["image_ids"]))
            paths = _save_pictures(dataset, config, scores["image_ids"][:n],
                                   scores["results"][:n], scores["APs"][:n], args.out, "eval")
            print(f"Pictures: {', '.join(paths)}")
        return {k: scores[k] for k in ("mAP50", "mAP")}
    # detect
    dataset = make_dataset(args.images or 4, config, args.seed + 1)
    paths = detect(model, dataset, args.out)
    print(f"Pictures (ground truth left, detections right): {', '.join(paths)}")
    return {"pictures": paths}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="shapes.py",
        description="Train Mask R-CNN on generated shapes, evaluate it, and save "
                    "pictures of its detections. 'demo' does it all from scratch.")
    parser.add_argument("command", metavar="<command>",
                        choices=("train", "evaluate", "detect", "demo"),
                        help="'demo' (train from scratch, evaluate, pictures), 'train', "
                             "'evaluate' or 'detect'")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cpu",
                        help="cpu: sized to train from scratch on a CPU (default); "
                             "matterport: Matterport's ShapesConfig (ResNet-101, GPU)")
    parser.add_argument("--weights", default=None, metavar="/path/to/weights.h5",
                        help="a weights .h5 file, 'last' (the newest checkpoint of this "
                             "config under --logs), 'coco' (mask_rcnn_coco.h5 in the "
                             "repository, downloaded if missing; the class layers are left "
                             "out) or 'none' (random). Default: none for train, last for "
                             "evaluate and detect")
    parser.add_argument("--logs", default=DEFAULT_LOGS_DIR, metavar="/path/to/logs/",
                        help="logs and checkpoints folder (default ./logs)")
    parser.add_argument("--out", default=DEFAULT_OUT_DIR, metavar="/path/to/pictures/",
                        help="folder for the PNG pictures (default ./shapes_output)")
    parser.add_argument("--epochs", type=int,
                        help=f"train: the last epoch to train to (default: one more "
                             f"epoch); demo: epochs to train (default {DEMO_EPOCHS})")
    parser.add_argument("--layers", default="all",
                        help="train: layers to train: all, heads, 3+, 4+, 5+ or a regex "
                             "(default all: there are no pretrained weights)")
    parser.add_argument("--images", "--count", type=int, dest="images",
                        help="train/demo: training images (default 2000); evaluate: "
                             "validation images (default --val-images); detect: images "
                             "to generate (default 4)")
    parser.add_argument("--val-images", type=int, default=50,
                        help="validation images (default 50)")
    parser.add_argument("--pictures", type=int, default=4,
                        help="demo/evaluate: pictures of this many validation images "
                             "(default 4; evaluate: 0 for none)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the training images and of the weights; the "
                             "validation, evaluation and detection images use seed + 1 "
                             "(default 1)")
    parser.add_argument("--steps", type=int, help="training steps per epoch "
                                                   "(STEPS_PER_EPOCH; default 100)")
    parser.add_argument("--lr", type=float, help="learning rate (LEARNING_RATE; cpu "
                                                  "default 0.04)")
    parser.add_argument("--batch-size", type=int, metavar="IMAGES",
                        help="training images per step (IMAGES_PER_GPU; default 8)")
    parser.add_argument("--image-size", type=int, metavar="PIXELS",
                        help="IMAGE_MIN_DIM = IMAGE_MAX_DIM, a multiple of 64 (default 128)")
    parser.add_argument("--traceback", action="store_true",
                        help="show the Python traceback of an error")
    return parser


def _check_args(parser, args):
    if args.weights is None:
        args.weights = "none" if args.command in ("train", "demo") else "last"
    if args.command == "demo" and args.weights.lower() != "none":
        parser.error("demo always trains from scratch; use train --weights=... to "
                     "continue from weights")
    for name in ("epochs", "images", "val_images", "steps", "image_size", "lr",
                 "batch_size"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.pictures < 0:
        parser.error(f"--pictures must be 0 or more, got {args.pictures}")
    if args.image_size is not None and args.image_size % 64:
        parser.error(f"--image-size must be a multiple of 64 (64, 128, 192, ...), got "
                     f"{args.image_size}")


def main(argv=None):
    """Command line entry point. Returns the exit code: 0 done, 2 bad
    input (a one-line message on stderr), 130 interrupted."""
    return run_command(build_parser(), argv, _check_args, run)


if __name__ == '__main__':
    sys.exit(main())
