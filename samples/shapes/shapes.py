"""
Mask R-CNN
Train on the synthetic Shapes data set (squares, circles, triangles), then
evaluate and look at the detections. Matterport's ``train_shapes.ipynb`` as a
command line, sized so that it runs on a CPU.

Usage: import the module, or run it from the command line:

    # The main job: train from scratch, evaluate, save pictures (~7 min, 2 cores)
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

* ``cpu`` (``mrcnn.recipes.CpuShapesConfig``, the default): the package's CPU
  recipe (small ResNet-like backbone, 64-channel FPN, smaller heads, fewer
  ROIs, batch norm that learns, a warmed-up then cosine-decayed learning
  rate) on 128x128 images, because there are no pretrained weights to start
  from. README.md beside this file explains each choice and what it costs.
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
import os
import sys
import time

# Root directory of the project: the checkout this file sits in
# (samples/shapes/shapes.py), or the working directory for a copied file.
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOT_DIR = _CHECKOUT if os.path.isdir(os.path.join(_CHECKOUT, "mrcnn")) else os.getcwd()
if ROOT_DIR not in sys.path:
    sys.path.append(ROOT_DIR)  # the checkout's mrcnn when it is not installed

# TensorFlow's C++ start-up notices drown the sample's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Pictures are written to files; no display is needed.
os.environ.setdefault("MPLBACKEND", "Agg")

from mrcnn import cli, evaluation  # noqa: E402
from mrcnn import model as modellib  # noqa: E402
from mrcnn.datasets.shapes import ShapesConfig  # noqa: E402
from mrcnn.demo import (DEMO_EPOCHS, backbone_name, demo, make_config,  # noqa: E402,F401
                        make_shapes, save_pictures, seed_everything, train_recipe)
from mrcnn.recipes import CpuShapesConfig  # noqa: E402

__all__ = ["ShapesConfig", "CpuShapesConfig", "CONFIGS", "config_for", "run", "main",
           "COCO_WEIGHTS_PATH", "DEFAULT_OUT_DIR"]

# Where the pictures go, if not provided through --out
DEFAULT_OUT_DIR = os.path.join(os.getcwd(), "shapes_output")
# Path to the COCO trained weights (--weights=coco), downloaded if missing
COCO_WEIGHTS_PATH = os.path.join(ROOT_DIR, "mask_rcnn_coco.h5")

# --config choices
CONFIGS = {"cpu": CpuShapesConfig, "matterport": ShapesConfig}


def config_for(name="cpu", inference=False, **overrides):
    """The configuration ``name`` ("cpu" or "matterport") with ``overrides``
    (Config fields; None values ignored), one image per batch for inference."""
    if name not in CONFIGS:
        raise ValueError(f"Unknown configuration {name!r}; choose one of {sorted(CONFIGS)}.")
    return make_config(CONFIGS[name], inference=inference, **overrides)


def run(args):
    """Carry out a parsed command line; returns the command's result."""
    overrides = cli.recipe_overrides(args)
    if args.command == "demo":
        return demo(logs=args.logs, out=args.out, epochs=args.epochs or DEMO_EPOCHS,
                    train_images=args.images or 2000, val_images=args.val_images,
                    pictures=args.pictures, seed=args.seed, base=CONFIGS[args.config],
                    overrides=overrides)

    start = time.time()
    if args.command == "train":
        config = config_for(args.config, **overrides)
        weights_path = cli.resolve_weights(args.weights, config, args.logs, COCO_WEIGHTS_PATH)
        seed_everything(args.seed)
        train_set = make_shapes(args.images or 2000, config, args.seed)
        val_set = make_shapes(args.val_images, config, args.seed + 1)
        model = modellib.MaskRCNN(mode="training", config=config, model_dir=args.logs)
        cli.load_weights(model, weights_path, COCO_WEIGHTS_PATH)
        # From random weights, the recipe's warm-up and decay; from weights
        # (resuming, fine-tuning), Matterport's constant rate.
        train_recipe(model, train_set, val_set, epochs=args.epochs or model.epoch + 1,
                     layers=args.layers, schedule=weights_path is None, seed=args.seed)
        checkpoint = model.find_last()
        print(f"Checkpoint: {checkpoint} ({time.time() - start:.0f} s)")
        return {"checkpoint": checkpoint}

    config = config_for(args.config, inference=True, **overrides)
    weights_path = cli.resolve_weights(args.weights, config, args.logs, COCO_WEIGHTS_PATH)
    model = modellib.MaskRCNN(mode="inference", config=config, model_dir=args.logs)
    cli.load_weights(model, weights_path, COCO_WEIGHTS_PATH)
    if args.command == "evaluate":
        dataset = make_shapes(args.images or args.val_images, config, args.seed + 1)
        scores = evaluation.evaluate_model(model, dataset)
        print(f"mAP@0.5 = {scores['mAP50']:.3f}   mAP@[.5:.95] = {scores['mAP']:.3f}   "
              f"COCO mask AP = {scores['coco']['segm'][0]:.3f}   "
              f"({len(scores['image_ids'])} images of seed {args.seed + 1}, "
              f"weights {weights_path})")
        if args.pictures:
            n = min(args.pictures, len(scores["image_ids"]))
            paths = save_pictures(dataset, scores["image_ids"][:n], scores["results"][:n],
                                  scores["APs"][:n], args.out, "eval")
            print(f"Pictures: {', '.join(paths)}")
        return {k: scores[k] for k in ("mAP50", "mAP", "coco")}
    # detect
    dataset = make_shapes(args.images or 4, config, args.seed + 1)
    results = model.detect([dataset.load_image(i) for i in dataset.image_ids])
    for image_id, r in zip(dataset.image_ids, results):
        names = [dataset.class_names[int(c)] for c in r["class_ids"]]
        found = ", ".join(f"{n} {s:.2f}" for n, s in zip(names, r["scores"])) or "nothing"
        print(f"image {image_id}: {found}")
    paths = save_pictures(dataset, dataset.image_ids, results, [None] * len(results),
                          args.out, "detect")
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
                        help="cpu: the CPU recipe, trains from scratch (default); "
                             "matterport: Matterport's ShapesConfig (ResNet-101, GPU)")
    cli.add_weights_argument(parser, extra_help=". Default: none for train, last for "
                                                "evaluate and detect")
    cli.add_logs_argument(parser)
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
    cli.add_recipe_arguments(parser)
    cli.add_traceback_argument(parser)
    return parser


def _check_args(parser, args):
    if args.weights is None:
        args.weights = "none" if args.command in ("train", "demo") else "last"
    if args.command == "demo" and args.weights.lower() != "none":
        parser.error("demo always trains from scratch; use train --weights=... to "
                     "continue from weights")
    cli.check_positive(parser, args, ("epochs", "images", "val_images", "steps",
                                      "image_size", "lr", "batch_size"))
    if args.pictures < 0:
        parser.error(f"--pictures must be 0 or more, got {args.pictures}")


def main(argv=None):
    """Command line entry point. Returns the exit code: 0 done, 2 bad
    input (a one-line message on stderr), 130 interrupted."""
    cli.show_progress_logs()
    return cli.run_command(build_parser(), argv, _check_args, run)


if __name__ == '__main__':
    sys.exit(main())
