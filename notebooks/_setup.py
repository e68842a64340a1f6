"""Shared set-up of the notebooks in this folder: run mode, paths, configs, weights.

Every notebook's first cell does ``import _setup as nb`` (the notebooks run
with this folder as their working directory). Nothing here re-implements
Mask R-CNN: it only picks sizes, finds or trains weights, and makes the
synthetic data sets.

Models: the package's CPU recipe (``mrcnn.recipes``: small ResNet-like
backbone, 64-channel FPN, warmed-up cosine learning rate, trained from random
weights), the one ``make demo`` trains:

* shapes: ``mrcnn.recipes.CpuShapesConfig``, 2000 images, 16 epochs of 100
  steps (about 7 minutes on 2 cores), the ``cpu_shapes`` checkpoint;
* balloons: ``samples.balloon.balloon.CpuBalloonConfig``, 400 synthetic
  images, 12 epochs of 100 steps (about 10 minutes), ``cpu_balloon``.

Run mode: the environment variable ``MRCNN_NOTEBOOK_MODE``

* ``full`` (default; what the committed outputs show): the models above,
  evaluated on 50 held-out images each.
* ``small`` (the test suite): 64 px images, a handful of training steps, just
  enough to run every cell top to bottom within the CI budget. The pictures
  are meaningless in this mode.

Paths (environment variables, all optional):

* ``MRCNN_NOTEBOOK_LOGS``: where models are trained to and looked for
  (Matterport's ``MODEL_DIR``); default ``<repo>/logs``, the folder ``make
  demo`` writes too, so a demo run's ``cpu_shapes`` model serves the
  notebooks. The test suite points it at a temporary folder, so the
  notebooks share one tiny model there and never pick up a developer's
  checkpoints.
* ``MRCNN_NOTEBOOK_DATA``: where the synthetic balloon data set is written;
  default ``<repo>/output/notebook_data``.
* ``MRCNN_NOTEBOOK_PYTHON``: set by ``run_notebooks.py``; the kernel checks it
  runs that interpreter (the project's venv), not some other Python.

Weights: ``shapes_inference_model()`` / ``balloon_inference_model()`` load
the newest checkpoint of the right name in the logs folder when it fits the
notebook's config exactly (same backbone, same classes: no file layer left
unused, no model layer left out), and otherwise train the model right there
(``train_shapes()`` / ``train_balloon()``), so every notebook runs on a fresh
machine; ``train_shapes.ipynb`` (the first notebook of ``make notebooks``)
trains the shapes model, the first balloon notebook that needs one the
balloon model, and the others reuse them. A user with real weights sets
``WEIGHTS_PATH`` in the notebook's marked cell instead.
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

# Sizes per mode (the full mode is the CPU recipe's run; see the docstring).
SETTINGS = {
    "small": dict(
        size=64, images_per_gpu=2, train_images=8, val_images=4, eval_images=2,
        epochs=1, steps=2, validation_steps=1,
        balloon_size=(64, 128), balloon_train=3, balloon_val=2, balloon_max_dim=128,
        balloon_epochs=1, balloon_steps=1,
    ),
    "full": dict(
        size=128, images_per_gpu=8, train_images=2000, val_images=50, eval_images=50,
        epochs=16, steps=100, validation_steps=2,
        balloon_size=(256, 320), balloon_train=400, balloon_val=50, balloon_max_dim=256,
        balloon_epochs=12, balloon_steps=100,
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
    """The notebooks' shapes config: the CPU recipe (``CpuShapesConfig``) at
    the run mode's size.

    inference: True gives one image per batch (what detect() and run_graph()
    are stepped through with).
    """
    from mrcnn.demo import make_config
    from mrcnn.recipes import CpuShapesConfig

    return make_config(
        CpuShapesConfig, inference=inference,
        IMAGE_MIN_DIM=S["size"], IMAGE_MAX_DIM=S["size"],
        IMAGES_PER_GPU=None if inference else S["images_per_gpu"],
        STEPS_PER_EPOCH=S["steps"], VALIDATION_STEPS=S["validation_steps"],
        # Small mode trains a few steps: keep every detection to have some.
        DETECTION_MIN_CONFIDENCE=0.0 if SMALL else None)


def shapes_datasets(seed=1):
    """(train, val) ShapesDatasets of the run mode's size, reproducible: the
    recipe's training images (seed 1, as ``make demo``) and held-out ones
    (seed 2)."""
    from mrcnn.demo import make_shapes
    config = shapes_config()
    return (make_shapes(S["train_images"], config, seed),
            make_shapes(S["val_images"], config, seed + 1))


def train_shapes(model=None, verbose=2):
    """Train the notebooks' shapes model from random weights: the CPU recipe
    (all layers, warm-up then cosine decay), S["epochs"] epochs of
    S["steps"] steps.

    model: a training-mode MaskRCNN (made here when None).
    Returns the path of the last checkpoint written.
    """
    from mrcnn import model as modellib
    from mrcnn.demo import seed_everything, train_recipe
    seed_everything(1)
    train, val = shapes_datasets()
    if model is None:
        model = modellib.MaskRCNN(mode="training", config=shapes_config(),
                                  model_dir=str(MODEL_DIR))
    start = time.time()
    train_recipe(model, train, val, epochs=S["epochs"], layers="all", seed=1, verbose=verbose)
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
        # E.g. a checkpoint of another backbone: its layers would be left
        # over and ours would keep random weights.
        print(f"{_short(path)} is for another model ({len(report.unused)} file layers "
              f"unused, {len(report.missing)} model layers missing).")
        return False
    return True


def _inference_model(config, weights_path, train_fn):
    from mrcnn import model as modellib
    model = modellib.MaskRCNN(mode="inference", config=config, model_dir=str(MODEL_DIR))
    if weights_path:
        # The user's choice: load it or fail loudly. Heads of another class
        # count are the user's business (exclude=...), see the notebook.
        model.load_weights(str(weights_path), by_name=True)
        print("Loaded", weights_path)
        return model, str(weights_path)
    name = config.NAME.lower()
    candidates = sorted(glob.glob(str(MODEL_DIR / f"{name}*" / f"mask_rcnn_{name}_*.h5")))
    if candidates and _load_fitting(model, candidates[-1]):
        print("Loaded", _short(candidates[-1]))
        return model, candidates[-1]
    print(f"No fitting {name} weights in {_short(MODEL_DIR)}: training the model now.")
    path = train_fn()
    model.load_weights(path, by_name=True)
    print("Loaded", _short(path))
    return model, path


def shapes_inference_model(weights_path=None):
    """(MaskRCNN in inference mode with shapes weights, weights path).

    weights_path: a file to load; None finds the newest fitting checkpoint
    in MODEL_DIR or trains one (``train_shapes``).
    """
    return _inference_model(shapes_config(inference=True), weights_path, train_shapes)


def evaluate(model, dataset, limit=None):
    """mAP@0.5 (mean over images of utils.compute_ap, as Matterport's
    notebooks) and COCO's AP of ``model`` on the first ``limit`` images of
    ``dataset`` (default S["eval_images"]); prints ``mAP@0.5: 0.xx``.
    Returns evaluation.evaluate_model's dict."""
    from mrcnn import evaluation
    ids = list(dataset.image_ids)[:limit or S["eval_images"]]
    scores = evaluation.evaluate_model(model, dataset, image_ids=ids, verbose=0)
    print(f"Evaluated on {len(ids)} held-out images in {scores['seconds']:.0f} s")
    print(f"mAP@0.5: {scores['mAP50']:.2f}")
    print(f"mAP@[.5:.95]: {scores['mAP']:.2f}")
    print(f"COCO AP (masks): {scores['coco']['segm'][0]:.2f}   "
          f"COCO AP (boxes): {scores['coco']['bbox'][0]:.2f}")
    return scores


def rpn_recall(model, dataset, image_ids, iou=0.5):
    """Fraction of the ground-truth boxes of ``image_ids`` that have a
    proposal (the ROI layer's output, after NMS) with box IoU >= ``iou``, in
    the molded image; prints ``RPN recall: 0.xx``."""
    from mrcnn import model as modellib
    from mrcnn import utils
    found = total = 0
    for image_id in image_ids:
        image, _, _, gt_boxes, _ = modellib.load_image_gt(dataset, model.config, image_id,
                                                          use_mini_mask=False)
        rois = model.run_graph([image], [("rois", "ROI")], verbose=0)["rois"][0]
        proposals = utils.denorm_boxes(rois[np.any(rois, axis=1)], image.shape[:2])
        if len(gt_boxes) and len(proposals):
            found += int(np.sum(utils.compute_overlaps(proposals, gt_boxes).max(axis=0) >= iou))
        total += len(gt_boxes)
    recall = found / max(total, 1)
    print(f"{found} of {total} ground-truth boxes of {len(image_ids)} images have a "
          f"proposal at IoU >= {iou}")
    print(f"RPN recall: {recall:.2f}")
    return recall


############################################################
#  Balloon (synthetic, in the real data set's VIA layout)
############################################################

def balloon_dataset_dir():
    """Folder with train/ and val/ VIA balloon subsets: the synthetic ones,
    written by ``mrcnn.datasets.make_balloon_dataset`` on first use (seed 0;
    val holds other images than train)."""
    from mrcnn.datasets import make_balloon_dataset
    root = DATA_DIR / f"balloon_{MODE}"
    if not (root / "val" / "via_region_data.json").exists():
        make_balloon_dataset(root, n_train=S["balloon_train"], n_val=S["balloon_val"],
                             size=S["balloon_size"], seed=0)
    return root


def balloon_config(inference=False):
    """The balloon sample's CPU recipe (``CpuBalloonConfig``) at the run
    mode's size."""
    from samples.balloon.balloon import make_config

    size = S["balloon_max_dim"]
    return make_config("evaluate" if inference else "train", cpu=True,
                       IMAGE_MIN_DIM=min(min(S["balloon_size"]), size), IMAGE_MAX_DIM=size,
                       STEPS_PER_EPOCH=S["balloon_steps"], VALIDATION_STEPS=1,
                       IMAGES_PER_GPU=2 if SMALL and not inference else None,
                       DETECTION_MIN_CONFIDENCE=0.0 if SMALL else None)


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
    """Train the balloon model on the synthetic set from random weights: the
    CPU recipe, all layers (small mode: one step, no validation pass)."""
    from mrcnn import model as modellib
    from mrcnn.demo import seed_everything, train_recipe
    seed_everything(1)
    train, val = balloon_datasets()
    model = modellib.MaskRCNN(mode="training", config=balloon_config(),
                              model_dir=str(MODEL_DIR))
    start = time.time()
    train_recipe(model, train, None if SMALL else val, epochs=S["balloon_epochs"],
                 layers="all", seed=1, verbose=verbose)
    print(f"Trained in {time.time() - start:.0f} s")
    return model.checkpoint_path.format(epoch=model.epoch)


def balloon_inference_model(weights_path=None):
    """(MaskRCNN in inference mode with balloon weights, weights path)."""
    return _inference_model(balloon_config(inference=True), weights_path, train_balloon)


def backbone_layer(model):
    """A stage-4 output layer of the model's backbone, for the activation
    pictures: res4f_out (ResNet-50), res4w_out (ResNet-101), res4a_out (the
    CPU recipe's small backbone)."""
    names = {layer.name for layer in model.keras_model.layers}
    for name in ("res4w_out", "res4f_out", "res4a_out"):
        if name in names:
            return name
    raise ValueError("no stage-4 output layer (res4*_out) in the model")


def first_detection_count(detections):
    """Number of real rows of a [N, 6] zero-padded detections array (class id 0
    marks padding), also when all N rows are real."""
    zero = np.where(detections[:, 4] == 0)[0]
    return int(zero[0]) if zero.size else int(detections.shape[0])
