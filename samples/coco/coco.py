"""
Mask R-CNN
Train on MS COCO, or evaluate a model with the official COCO metrics.

Matterport's COCO sample with the same command line, on this package's
``mrcnn.datasets.coco`` (``CocoConfig``, ``CocoDataset``,
``build_coco_results``, ``evaluate_coco_results``). What is new:

* ``evaluate`` scores boxes ("bbox") and masks ("segm") by default
  (``--eval-type`` picks one), shows a progress bar, and writes the
  detections in COCO result format to a JSON file in the logs folder.
* ``--annotations``/``--images`` point at any COCO-format JSON and its image
  folder (your own data exported from CVAT, Label Studio ...), for training
  (``--val-annotations``/``--val-images`` for validation) and evaluation;
  NUM_CLASSES then follows the file's categories.
* Options for quick runs on a CPU: ``--tiny``, ``--epochs``, ``--steps``,
  ``--image-size``. Without them the configuration and the three-stage
  training schedule are Matterport's.
* Bad input (missing annotation file or image folder, a download that cannot
  be made offline, missing weights) ends the command with a one-line
  ``error:`` message naming the file, and exit code 2.

Usage: import the module (see the notebooks for examples), or run from
       the command line as such:

    # Train a new model starting from pre-trained COCO weights
    python3 coco.py train --dataset=/path/to/coco/ --model=coco

    # Train a new model starting from ImageNet weights. Also auto download COCO dataset
    python3 coco.py train --dataset=/path/to/coco/ --model=imagenet --download=True

    # Continue training a model that you had trained earlier
    python3 coco.py train --dataset=/path/to/coco/ --model=/path/to/weights.h5

    # Continue training the last model you trained
    python3 coco.py train --dataset=/path/to/coco/ --model=last

    # Run COCO evaluation on the last model you trained
    python3 coco.py evaluate --dataset=/path/to/coco/ --model=last

    # Evaluate on any COCO-format annotation file and its images
    python3 coco.py evaluate --annotations=my.json --images=my_images/ --model=last

Licensed under the MIT License (Matterport's original is MIT as well).
"""

import argparse
import datetime
import json
import os
import sys
import time

import numpy as np

# Root directory of the project: the checkout this file sits in
# (samples/coco/coco.py), or the working directory for a copied file.
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOT_DIR = _CHECKOUT if os.path.isdir(os.path.join(_CHECKOUT, "mrcnn")) else os.getcwd()

if ROOT_DIR not in sys.path:
    sys.path.append(ROOT_DIR)  # the checkout's mrcnn when it is not installed

# TensorFlow's C++ start-up notices drown the sample's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# mrcnn.model (and with it TensorFlow, several seconds) is imported when a
# model is built, so that bad arguments are reported at once.
from mrcnn import cli, extras  # noqa: E402
from mrcnn.cli import HEAD_LAYERS  # noqa: E402,F401
from mrcnn.datasets.coco import (DEFAULT_DATASET_YEAR, CocoConfig,  # noqa: E402,F401
                                 CocoDataset, build_coco_results, evaluate_coco_results)

__all__ = ["CocoConfig", "CocoInferenceConfig", "CocoDataset", "build_coco_results",
           "evaluate_coco", "make_config", "main", "COCO_MODEL_PATH", "DEFAULT_LOGS_DIR",
           "DEFAULT_DATASET_YEAR", "TINY_SETTINGS"]

# Path to trained weights file
COCO_MODEL_PATH = os.path.join(ROOT_DIR, "mask_rcnn_coco.h5")

# Directory to save logs and model checkpoints, if not provided
# through the command line argument --logs
DEFAULT_LOGS_DIR = os.path.join(ROOT_DIR, "logs")

# Images evaluated by default (Matterport's --limit default); 0 means all.
DEFAULT_LIMIT = 500

EVAL_TYPES = ("bbox", "segm")


class CocoInferenceConfig(CocoConfig):
    # Set batch size to 1 since we'll be running inference on
    # one image at a time. Batch size = GPU_COUNT * IMAGES_PER_GPU
    GPU_COUNT = 1
    IMAGES_PER_GPU = 1
    # Keep every detection: COCO AP ranks them by score, and low scores
    # only add recall.
    DETECTION_MIN_CONFIDENCE = 0


# --tiny: a configuration that trains and runs in minutes on a CPU:
# ResNet-50, 128x128 images, smaller anchors, fewer proposals and ROIs. The
# head sizes are the default ones, so the COCO weights still load by name.
TINY_SETTINGS = {
    "BACKBONE": "resnet50",
    "IMAGE_MIN_DIM": 128,
    "IMAGE_MAX_DIM": 128,
    "RPN_ANCHOR_SCALES": (8, 16, 32, 64, 128),
    "RPN_TRAIN_ANCHORS_PER_IMAGE": 64,
    "PRE_NMS_LIMIT": 1000,
    "POST_NMS_ROIS_TRAINING": 200,
    "POST_NMS_ROIS_INFERENCE": 100,
    "TRAIN_ROIS_PER_IMAGE": 32,
    "MAX_GT_INSTANCES": 20,
    "DETECTION_MAX_INSTANCES": 20,
    "STEPS_PER_EPOCH": 10,
    "VALIDATION_STEPS": 2,
}


def make_config(command="train", tiny=False, **overrides):
    """The configuration for a command.

    command: "train" (CocoConfig) or "evaluate" (CocoInferenceConfig: one
        image per batch, no confidence threshold).
    tiny: start from TINY_SETTINGS.
    overrides: Config fields to set (None values are ignored), e.g.
        ``NUM_CLASSES=1 + 3``.
    Returns: a Config instance (a subclass made on the fly when something is
        overridden, so the derived fields and validate() see the new values).
    """
    base = CocoConfig if command == "train" else CocoInferenceConfig
    settings = dict(TINY_SETTINGS) if tiny else {}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if not settings:
        return base()
    return type(base.__name__, (base,), settings)()


############################################################
#  COCO Evaluation
############################################################

def evaluate_coco(model, dataset, coco, eval_type=EVAL_TYPES, limit=0, image_ids=None,
                  results_path=None):
    """Runs official COCO evaluation.

    model: MaskRCNN in inference mode (anything with ``detect([image])``
        returning Matterport's dicts, and ``model_dir``).
    dataset: A Dataset object with valiadtion data (a prepared CocoDataset).
    coco: its pycocotools COCO object (load_coco(..., return_coco=True)).
    eval_type: "bbox" or "segm" for bounding box or segmentation
        evaluation, or a sequence of both (the default).
    limit: if not 0, it's the number of images to use for evaluation
    image_ids: dataset image ids to evaluate (default all, in order).
    results_path: JSON file for the detections in COCO result format;
        default ``<model.model_dir>/coco_results_<YYYYmmddTHHMMSS>.json``.
    Returns: {eval_type: stats [12] float64}, COCOeval's stats in
        mrcnn.datasets.coco.COCO_STATS_NAMES order (AP, AP50, AP75, ...;
        -1 where there is no ground truth to score). The standard tables
        are printed.
    """
    from tqdm import tqdm

    eval_types = (eval_type,) if isinstance(eval_type, str) else tuple(eval_type)
    # Pick COCO images from the dataset
    image_ids = list(dataset.image_ids if image_ids is None else image_ids)
    # Limit to a subset
    if limit:
        image_ids = image_ids[:limit]
    if not image_ids:
        raise ValueError("evaluate_coco: no images to evaluate (the data set is empty or "
                         "image_ids is empty).")
    # Get corresponding COCO image IDs.
    coco_image_ids = [dataset.image_info[i]["id"] for i in image_ids]

    t_prediction = 0
    t_start = time.time()

    results = []
    for i, image_id in enumerate(tqdm(image_ids, desc="Detecting", unit="image")):
        # Load image
        image = dataset.load_image(image_id)

        # Run detection
        t = time.time()
        r = model.detect([image], verbose=0)[0]
        t_prediction += (time.time() - t)

        # Convert results to COCO format
        # Cast masks to uint8 because COCO tools errors out on bool
        image_results = build_coco_results(dataset, coco_image_ids[i:i + 1],
                                           r["rois"], r["class_ids"],
                                           r["scores"],
                                           r["masks"].astype(np.uint8))
        results.extend(image_results)

    # Keep the detections: they can be scored again, or sent to the COCO
    # evaluation server, without running the model.
    if results_path is None:
        results_path = os.path.join(model.model_dir, "coco_results_{:%Y%m%dT%H%M%S}.json".format(
            datetime.datetime.now()))
    folder = os.path.dirname(os.path.abspath(results_path))
    os.makedirs(folder, exist_ok=True)
    with open(results_path, "w") as f:
        json.dump(results, f)
    print(f"Wrote {len(results)} detections on {len(image_ids)} images to {results_path}")

    # Evaluate
    stats = evaluate_coco_results(dataset, coco, results, eval_types=eval_types,
                                  image_ids=image_ids)

    print("Prediction time: {:.2f}s. Average {:.3f}s/image".format(
        t_prediction, t_prediction / len(image_ids)))
    print("Total time: {:.2f}s".format(time.time() - t_start))
    return stats


############################################################
#  Data sets of the command line
############################################################

def _str2bool(value):
    """--download, --download=True/False/1/0/yes/no (Matterport passed
    type=bool, which made "False" true)."""
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in ("1", "true", "yes", "y", "on"):
        return True
    if v in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def _load_custom(annotations, images, dataset_dir, return_coco=False):
    """A prepared CocoDataset of a COCO-format file (--annotations/--images)."""
    dataset = CocoDataset()
    image_dir = images or dataset_dir or os.path.dirname(os.path.abspath(annotations))
    coco = dataset.load_coco(dataset_dir or image_dir, None, year=None, return_coco=True,
                             annotation_file=annotations, image_dir=image_dir)
    dataset.prepare()
    if not dataset.image_ids.size:
        raise ValueError(f"{annotations}: no image has an annotation of its categories; "
                         "nothing to train or evaluate on.")
    return (dataset, coco) if return_coco else dataset


def load_training_data(args):
    """(dataset_train, dataset_val) for ``train``, prepared."""
    if args.annotations:
        dataset_train = _load_custom(args.annotations, args.images, args.dataset)
        val_annotations = args.val_annotations or args.annotations
        val_images = args.val_images or (args.images if not args.val_annotations else None)
        dataset_val = _load_custom(val_annotations, val_images, args.dataset)
        return dataset_train, dataset_val
    year = str(args.year)
    # Training dataset. Use the training set and 35K from the
    # validation set, as as in the Mask RCNN paper.
    dataset_train = CocoDataset()
    dataset_train.load_coco(args.dataset, "train", year=year, auto_download=args.download)
    if year == "2014":
        dataset_train.load_coco(args.dataset, "valminusminival", year=year,
                                auto_download=args.download)
    dataset_train.prepare()

    # Validation dataset
    dataset_val = CocoDataset()
    val_type = "val" if year == "2017" else "minival"
    dataset_val.load_coco(args.dataset, val_type, year=year, auto_download=args.download)
    dataset_val.prepare()
    return dataset_train, dataset_val


def load_evaluation_data(args):
    """(dataset_val, coco) for ``evaluate``, prepared."""
    if args.annotations:
        return _load_custom(args.annotations, args.images, args.dataset, return_coco=True)
    year = str(args.year)
    dataset_val = CocoDataset()
    val_type = "val" if year == "2017" else "minival"
    coco = dataset_val.load_coco(args.dataset, val_type, year=year, return_coco=True,
                                 auto_download=args.download)
    dataset_val.prepare()
    return dataset_val, coco


############################################################
#  Training
############################################################

def train(model, dataset_train, dataset_val, epochs=None, layers="heads", augmentation=None):
    """Matterport's three-stage COCO schedule, or one stage for quick runs.

    epochs: None for Matterport's schedule (heads to epoch 40, ResNet stage
        4 and up to 120, all layers at a tenth of the learning rate to 160);
        a number trains ``layers`` up to that epoch.
    augmentation: default: right/left flip 50% of the time.
    """
    if augmentation is None:
        # Image Augmentation
        # Right/Left flip 50% of the time
        albumentations = extras.require("albumentations", "The COCO sample's augmentation")
        augmentation = albumentations.Compose([albumentations.HorizontalFlip(p=0.5)])
    lr = model.config.LEARNING_RATE
    if epochs is not None:
        stages = [(f"Training network {layers}", lr, epochs, layers)]
    else:
        # *** This training schedule is an example. Update to your needs ***
        stages = [("Training network heads", lr, 40, "heads"),
                  # Finetune layers from ResNet stage 4 and up
                  ("Fine tune Resnet stage 4 and up", lr, 120, "4+"),
                  # Fine tune all layers
                  ("Fine tune all layers", lr / 10, 160, "all")]
    for title, learning_rate, stage_epochs, stage_layers in stages:
        print(title)
        model.train(dataset_train, dataset_val,
                    learning_rate=learning_rate,
                    epochs=stage_epochs,
                    layers=stage_layers,
                    augmentation=augmentation)
    print("Checkpoints saved in", model.log_dir)


############################################################
#  Command line
############################################################

def _load_weights(model, choice):
    """Load the weights --model names; returns their path, or None for 'none'.
    With another number of classes than COCO's 81 (--annotations), the COCO
    file's class-specific layers are left out."""
    path = cli.resolve_weights(choice, model.config, model.model_dir, COCO_MODEL_PATH)
    return cli.load_weights(model, path, COCO_MODEL_PATH)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="coco.py", description='Train Mask R-CNN on MS COCO, or evaluate it.')
    parser.add_argument("command", metavar="<command>", choices=("train", "evaluate"),
                        help="'train' or 'evaluate' on MS COCO")
    parser.add_argument('--dataset', required=False, metavar="/path/to/coco/",
                        help='Directory of the MS-COCO dataset (required unless '
                             '--annotations is given)')
    parser.add_argument('--year', required=False, default=DEFAULT_DATASET_YEAR,
                        metavar="<year>",
                        help='Year of the MS-COCO dataset (2014 or 2017) (default=2014)')
    cli.add_weights_argument(parser, flag="--model", required=True)
    cli.add_logs_argument(parser, default=DEFAULT_LOGS_DIR)
    parser.add_argument('--limit', required=False, default=DEFAULT_LIMIT, type=int,
                        metavar="<image count>",
                        help=f'Images to use for evaluation, 0 for all '
                             f'(default={DEFAULT_LIMIT})')
    parser.add_argument('--download', required=False, default=False, nargs="?", const=True,
                        type=_str2bool, metavar="<True|False>",
                        help='Automatically download and unzip MS-COCO files (default=False)')
    parser.add_argument('--eval-type', choices=("bbox", "segm", "both"), default="both",
                        help="what evaluate scores (default both)")
    own = parser.add_argument_group("any COCO-format data")
    own.add_argument('--annotations', metavar="file.json",
                     help="COCO-format annotation file to train or evaluate on instead of "
                          "the official layout under --dataset")
    own.add_argument('--images', metavar="/path/to/images/",
                     help="folder of the --annotations images (default: --dataset, else "
                          "the annotation file's folder)")
    own.add_argument('--val-annotations', metavar="file.json",
                     help="validation annotation file for train (default: --annotations)")
    own.add_argument('--val-images', metavar="/path/to/images/",
                     help="folder of the --val-annotations images")
    quick = parser.add_argument_group("quick runs (defaults are Matterport's)")
    quick.add_argument('--tiny', action="store_true",
                       help="small configuration for a CPU: ResNet-50, 128x128 images, "
                            "few ROIs, 10 steps per epoch (use the same flag for evaluate)")
    quick.add_argument('--epochs', type=int,
                       help="train --layers up to this epoch only, instead of Matterport's "
                            "three stages (heads 40, 4+ 120, all 160)")
    quick.add_argument('--layers', default="heads",
                       help="layers trained with --epochs: heads, 3+, 4+, 5+, all or a "
                            "regex (default heads)")
    quick.add_argument('--steps', type=int, help="training steps per epoch "
                                                  "(STEPS_PER_EPOCH, default 1000)")
    quick.add_argument('--val-steps', type=int, help="validation steps per epoch "
                                                      "(VALIDATION_STEPS, default 50)")
    quick.add_argument('--image-size', type=int, metavar="PIXELS",
                       help="IMAGE_MIN_DIM = IMAGE_MAX_DIM (a multiple of 64; default 800/1024)")
    quick.add_argument('--backbone', choices=("resnet50", "resnet101"),
                       help="backbone (default resnet101; --tiny: resnet50)")
    cli.add_traceback_argument(parser)
    return parser


def _check_args(parser, args):
    if not args.dataset and not args.annotations:
        parser.error("Argument --dataset (or --annotations) is required")
    if args.annotations and args.download:
        parser.error("--download fetches the official MS-COCO files; it does not go "
                     "with --annotations")
    if (args.val_annotations or args.val_images) and args.command != "train":
        parser.error("--val-annotations/--val-images are for train")
    if (args.val_annotations or args.val_images) and not args.annotations:
        parser.error("--val-annotations/--val-images need --annotations")
    if args.images and not args.annotations:
        parser.error("--images needs --annotations")
    if str(args.year) not in ("2014", "2017") and not args.annotations:
        parser.error(f"--year must be 2014 or 2017, got {args.year}")
    if args.limit < 0:
        parser.error(f"--limit must be 0 (all) or positive, got {args.limit}")
    cli.check_positive(parser, args, ("epochs", "steps", "val_steps", "image_size"))


def run(args):
    """Carry out a parsed command line."""
    print("Command: ", args.command)
    print("Model: ", args.weights)
    print("Dataset: ", args.dataset)
    print("Year: ", args.year)
    print("Logs: ", args.logs)
    print("Auto Download: ", args.download)
    if args.annotations:
        print("Annotations: ", args.annotations)
        print("Images: ", args.images)

    # The data and the weights file first: their errors come before the
    # model is built (which takes a while).
    if args.command == "train":
        dataset_train, dataset_val = load_training_data(args)
        num_classes = dataset_train.num_classes
        if args.annotations and dataset_val.class_names != dataset_train.class_names:
            raise ValueError(f"{args.val_annotations} has the categories "
                             f"{dataset_val.class_names[1:]}, {args.annotations} has "
                             f"{dataset_train.class_names[1:]}; they must be the same.")
    else:
        dataset_val, coco = load_evaluation_data(args)
        num_classes = dataset_val.num_classes
    # Configurations. The official data set has CocoConfig's 81 classes;
    # another file has its own categories.
    size = args.image_size
    config = make_config(args.command, tiny=args.tiny, BACKBONE=args.backbone,
                         NUM_CLASSES=num_classes if args.annotations else None,
                         IMAGE_MIN_DIM=size, IMAGE_MAX_DIM=size,
                         STEPS_PER_EPOCH=args.steps, VALIDATION_STEPS=args.val_steps)
    weights_path = cli.resolve_weights(args.weights, config, args.logs, COCO_MODEL_PATH)
    config.display()

    # Create model
    from mrcnn import model as modellib
    mode = "training" if args.command == "train" else "inference"
    model = modellib.MaskRCNN(mode=mode, config=config, model_dir=args.logs)
    cli.load_weights(model, weights_path, COCO_MODEL_PATH)

    # Train or evaluate
    if args.command == "train":
        train(model, dataset_train, dataset_val, epochs=args.epochs, layers=args.layers)
    else:
        eval_types = EVAL_TYPES if args.eval_type == "both" else (args.eval_type,)
        count = len(dataset_val.image_ids) if not args.limit else min(
            args.limit, len(dataset_val.image_ids))
        print("Running COCO evaluation on {} images.".format(count))
        evaluate_coco(model, dataset_val, coco, eval_types, limit=args.limit)


def main(argv=None):
    """Command line entry point. Returns the exit code: 0 done, 2 bad
    input (a one-line message on stderr), 130 interrupted."""
    cli.show_progress_logs()
    return cli.run_command(build_parser(), argv, _check_args, run)


if __name__ == '__main__':
    sys.exit(main())
