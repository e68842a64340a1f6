"""Shared set-up of the notebooks in this folder: run mode, paths, configs, weights.

Every notebook's first cell does ``import _setup as nb`` (the notebooks run
with this folder as their working directory). Nothing here re-implements
Mask R-CNN: it only picks sizes, finds or trains weights, and makes the
synthetic data sets.

Run mode: the environment variable ``MRCNN_NOTEBOOK_MODE``

* ``full`` (default; what the committed outputs show): 128 px shapes,
  256x320 balloons, a shapes model trained for a few minutes on the CPU.
* ``small`` (the test suite): 64 px images, a handful of training steps, just
  enough to run every cell top to bottom within the CI budget. The pictures
  are meaningless in this mode.

Paths (environment variables, all optional):

* ``MRCNN_NOTEBOOK_LOGS``: where models are trained to and looked for
  (Matterport's ``MODEL_DIR``); default ``<repo>/logs``. The test suite points
  it at a temporary folder, so the notebooks share one tiny model there and
  never pick up a developer's checkpoints.
* ``MRCNN_NOTEBOOK_DATA``: where the synthetic balloon data set is written;
  default ``<repo>/output/notebook_data``.
* ``MRCNN_NOTEBOOK_PYTHON``: set by ``run_notebooks.py``; the kernel checks it
  runs that interpreter (the project's venv), not some other Python.

Weights: ``shapes_inference_model()`` / ``balloon_inference_model()`` load
the newest checkpoint of the right name in the logs folder when it fits the
notebook's config exactly (same backbone, same classes: no file layer left
unused, no model layer left out), and otherwise train a small model right
there (``train_shapes()`` / ``train_balloon()``), so every notebook runs on a
fresh machine. A user with real weights sets ``WEIGHTS_PATH`` in the
notebook's marked cell instead.
"""
import glob
import os
import sys
import time
from pathlib import Path

import numpy as np

# Before TensorFlow is imported (through mrcnn.model): quiet C++ logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

ROOT_DIR = Path(__file__).resolve().parents[1]
if str(ROOT_DIR) not in sys.path:
    sys.path.insert(0, str(ROOT_DIR))  # the checkout's mrcnn, even if not installed

MODE = os.environ.get("MRCNN_NOTEBOOK_MODE", "full").strip().lower()
if MODE not in ("small", "full"):
    raise ValueError(f"MRCNN_NOTEBOOK_MODE must be 'small' or 'full', got {MODE!r}.")
SMALL = MODE == "small"

MODEL_DIR = Path(os.environ.get("MRCNN_NOTEBOOK_LOGS") or ROOT_DIR / "logs")
DATA_DIR = Path(os.environ.get("MRCNN_NOTEBOOK_DATA") or ROOT_DIR / "output" / "notebook_data")

_expected_python = os.environ.get("MRCNN_NOTEBOOK_PYTHON")
if _expected_python and os.path.realpath(sys.executable) != os.path.realpath(_expected_python):
    raise RuntimeError(
        f"The notebook kernel runs {sys.executable}, not {_expected_python}: the "
        f"'python3' kernelspec points at another interpreter. Run the notebooks with "
        f"run_notebooks.py from the project's venv.")

# Sizes per mode. Training steps are per Keras epoch; see train_shapes().
SETTINGS = {
    "small": dict(
        shapes_size=64, anchor_scales=(4, 8, 16, 32, 64),
        images_per_gpu=1, train_images=16, val_images=4, eval_images=2,
        heads_epochs=1, heads_steps=2, all_epochs=0, all_steps=1, validation_steps=1,
        post_nms_rois_training=200, post_nms_rois_inference=100,
        rpn_train_anchors=64, detection_min_confidence=0.0, train_bn=False,
        balloon_size=(64, 128), balloon_train=3, balloon_val=2,
        balloon_max_dim=128, balloon_steps=1, balloon_epochs=1,
        learning_rate=0.01,
    ),
    "full": dict(
        shapes_size=128, anchor_scales=(8, 16, 32, 64, 128),
        images_per_gpu=4, train_images=500, val_images=50, eval_images=20,
        heads_epochs=1, heads_steps=10, all_epochs=4, all_steps=45, validation_steps=2,
        post_nms_rois_training=500, post_nms_rois_inference=300,
        rpn_train_anchors=128, detection_min_confidence=0.5, train_bn=True,
        balloon_size=(256, 320), balloon_train=24, balloon_val=6,
        balloon_max_dim=256, balloon_steps=25, balloon_epochs=2,
        learning_rate=0.01,
    ),
}
S = SETTINGS[MODE]


def banner():
    """One line saying what this run uses (the first output of every notebook)."""
    import tensorflow as tf
    import keras
    print(f"mode={MODE}  TensorFlow {tf.__version__}  Keras {keras.__version__}  "
          f"logs={_short(MODEL_DIR)}")


def _short(path):
    """Path relative to the repository when inside it (keeps outputs machine-neutral)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT_DIR))
    except ValueError:
        return str(path)


def get_ax(rows=1, cols=1, size=8):
    """A Matplotlib Axes array for the visualize functions: one place to
    control the size of every picture in a notebook."""
    import matplotlib.pyplot as plt
    _, ax = plt.subplots(rows, cols, figsize=(size * cols, size * rows))
    return ax


############################################################
#  Shapes
############################################################

def shapes_config(inference=False):
    """The notebooks' ShapesConfig: ResNet-50, sizes of the run mode.

    inference: True gives one image per batch (what detect() and run_graph()
    are stepped through with).
    """
    from mrcnn.datasets import ShapesConfig

    class NotebookShapesConfig(ShapesConfig):
        NAME = "shapes"
        BACKBONE = "resnet50"
        IMAGES_PER_GPU = 1 if inference else S["images_per_gpu"]
        IMAGE_MIN_DIM = S["shapes_size"]
        IMAGE_MAX_DIM = S["shapes_size"]
        RPN_ANCHOR_SCALES = S["anchor_scales"]
        RPN_TRAIN_ANCHORS_PER_IMAGE = S["rpn_train_anchors"]
        POST_NMS_ROIS_TRAINING = S["post_nms_rois_training"]
        POST_NMS_ROIS_INFERENCE = S["post_nms_rois_inference"]
        TRAIN_ROIS_PER_IMAGE = 32
        MAX_GT_INSTANCES = 10
        DETECTION_MAX_INSTANCES = 20
        # Matterport's 0.7 is for a fully trained model; ours trains for
        # minutes (full mode: 0.5) or a few steps (small mode: 0, keep all).
        DETECTION_MIN_CONFIDENCE = S["detection_min_confidence"]
        STEPS_PER_EPOCH = S["heads_steps"]
        VALIDATION_STEPS = S["validation_steps"]
        # No pre-trained backbone here (no downloads): a higher rate than
        # Matterport's 0.001 gets a from-scratch model somewhere in minutes.
        LEARNING_RATE = S["learning_rate"]
        # From scratch, frozen BatchNorm (Matterport's False, right for a
        # pre-trained backbone) learns far slower: full mode trains the
        # BN layers with the "all" stage (batches of 4 images).
        TRAIN_BN = S["train_bn"]

    return NotebookShapesConfig()


def shapes_datasets(seed=0):
    """(train, val) ShapesDatasets of the run mode's size, reproducible."""
    from mrcnn.datasets import ShapesDataset
    size = S["shapes_size"]
    train = ShapesDataset()
    train.load_shapes(S["train_images"], size, size, seed=seed)
    train.prepare()
    val = ShapesDataset()
    val.load_shapes(S["val_images"], size, size, seed=seed + 1)
    val.prepare()
    return train, val


def train_shapes(model=None, verbose=2):
    """Train the notebooks' shapes model from scratch (Matterport's two stages).

    1. heads: ``S["heads_epochs"]`` epochs of ``S["heads_steps"]`` steps.
    2. all layers: ``S["all_epochs"]`` more epochs of ``S["all_steps"]`` steps
       (skipped when 0).
    model: a training-mode MaskRCNN (made here when None).
    Returns the path of the last checkpoint written.
    """
    from mrcnn import model as modellib
    config = shapes_config()
    train, val = shapes_datasets()
    if model is None:
        model = modellib.MaskRCNN(mode="training", config=config, model_dir=str(MODEL_DIR))
    start = time.time()
    model.train(train, val, learning_rate=config.LEARNING_RATE,
                epochs=S["heads_epochs"], layers="heads", verbose=verbose, seed=0)
    if S["all_epochs"]:
        model.config.STEPS_PER_EPOCH = S["all_steps"]
        model.train(train, val, learning_rate=config.LEARNING_RATE,
                    epochs=S["heads_epochs"] + S["all_epochs"], layers="all",
                    verbose=verbose, seed=0)
    print(f"Trained in {time.time() - start:.0f} s")
    return model.checkpoint_path.format(epoch=model.epoch)


def _load_fitting(model, path):
    """Load ``path`` when it fits the model exactly; return False otherwise."""
    from mrcnn.weights import WeightFileError, WeightMismatchError
    try:
        report = model.load_weights(path, by_name=True)
    except (WeightFileError, WeightMismatchError, OSError, ValueError) as e:
        print(f"{_short(path)} does not fit this notebook's model ({type(e).__name__}).")
        return False
    if report.unused or report.missing:
        # E.g. a ResNet-101 checkpoint: its res4g..res4w layers would be left
        # over and res4f would carry the wrong features.
        print(f"{_short(path)} is for another model ({len(report.unused)} file layers "
              f"unused, {len(report.missing)} model layers missing).")
        return False
    return True


def _inference_model(config, weights_path, train_fn, name):
    from mrcnn import model as modellib
    model = modellib.MaskRCNN(mode="inference", config=config, model_dir=str(MODEL_DIR))
    if weights_path:
        # The user's choice: load it or fail loudly. Heads of another class
        # count are the user's business (exclude=...), see the notebook.
        model.load_weights(str(weights_path), by_name=True)
        print("Loaded", weights_path)
        return model, str(weights_path)
    candidates = sorted(glob.glob(str(MODEL_DIR / f"{name}*" / f"mask_rcnn_{name}_*.h5")))
    if candidates and _load_fitting(model, candidates[-1]):
        print("Loaded", _short(candidates[-1]))
        return model, candidates[-1]
    print(f"No fitting {name} weights in {_short(MODEL_DIR)}: training a small model now.")
    path = train_fn()
    model.load_weights(path, by_name=True)
    print("Loaded", _short(path))
    return model, path


def shapes_inference_model(weights_path=None):
    """(MaskRCNN in inference mode with shapes weights, weights path).

    weights_path: a file to load; None finds the newest fitting checkpoint
    in MODEL_DIR or trains one (``train_shapes``).
    """
    return _inference_model(shapes_config(inference=True), weights_path, train_shapes, "shapes")


############################################################
#  Balloon (synthetic, in the real data set's VIA layout)
############################################################

def balloon_dataset_dir():
    """Folder with train/ and val/ VIA balloon subsets: the synthetic ones,
    written by ``mrcnn.datasets.make_balloon_dataset`` on first use."""
    from mrcnn.datasets import make_balloon_dataset
    root = DATA_DIR / f"balloon_{MODE}"
    if not (root / "val" / "via_region_data.json").exists():
        make_balloon_dataset(root, n_train=S["balloon_train"], n_val=S["balloon_val"],
                             size=S["balloon_size"], seed=0)
    return root


def balloon_config(inference=False):
    """Matterport's BalloonConfig with the run mode's sizes, ResNet-50."""
    from mrcnn.config import Config

    class NotebookBalloonConfig(Config):
        NAME = "balloon"
        BACKBONE = "resnet50"
        IMAGES_PER_GPU = 1 if inference else 2
        NUM_CLASSES = 1 + 1  # background + balloon
        IMAGE_MIN_DIM = min(S["balloon_size"])
        IMAGE_MAX_DIM = S["balloon_max_dim"]
        RPN_ANCHOR_SCALES = S["anchor_scales"]
        RPN_TRAIN_ANCHORS_PER_IMAGE = S["rpn_train_anchors"]
        POST_NMS_ROIS_TRAINING = S["post_nms_rois_training"]
        POST_NMS_ROIS_INFERENCE = S["post_nms_rois_inference"]
        TRAIN_ROIS_PER_IMAGE = 64
        MAX_GT_INSTANCES = 10
        DETECTION_MAX_INSTANCES = 20
        STEPS_PER_EPOCH = S["balloon_steps"]
        VALIDATION_STEPS = 1
        # Matterport's balloon skips detections below 90% confidence; our
        # model trains for minutes (0.7), or one step in small mode (0: keep all)
        DETECTION_MIN_CONFIDENCE = 0.7 if not SMALL else 0.0
        LEARNING_RATE = S["learning_rate"]
        # Batches of 2 images are too small to train BatchNorm on (Matterport's
        # reason for False); it also did better here than True.
        TRAIN_BN = False

    return NotebookBalloonConfig()


def balloon_datasets():
    """(train, val) ViaDatasets of the synthetic balloons."""
    from mrcnn.datasets import ViaDataset
    root = balloon_dataset_dir()
    out = []
    for subset in ("train", "val"):
        ds = ViaDataset()
        ds.load_via(str(root), subset)
        ds.prepare()
        out.append(ds)
    return tuple(out)


def train_balloon(verbose=2):
    """Train a balloon model on the synthetic set, from scratch: all layers
    (full mode), or only the heads for one step (small mode: the cheapest
    graph to trace)."""
    from mrcnn import model as modellib
    config = balloon_config()
    train, val = balloon_datasets()
    model = modellib.MaskRCNN(mode="training", config=config, model_dir=str(MODEL_DIR))
    start = time.time()
    # Small mode: no validation pass (it would cost one more graph trace).
    model.train(train, None if SMALL else val, learning_rate=config.LEARNING_RATE,
                epochs=S["balloon_epochs"], layers="heads" if SMALL else "all",
                verbose=verbose, seed=0)
    print(f"Trained in {time.time() - start:.0f} s")
    return model.checkpoint_path.format(epoch=model.epoch)


def balloon_inference_model(weights_path=None):
    """(MaskRCNN in inference mode with balloon weights, weights path)."""
    return _inference_model(balloon_config(inference=True), weights_path, train_balloon, "balloon")


def first_detection_count(detections):
    """Number of real rows of a [N, 6] zero-padded detections array (class id 0
    marks padding), also when all N rows are real."""
    zero = np.where(detections[:, 4] == 0)[0]
    return int(zero[0]) if zero.size else int(detections.shape[0])
