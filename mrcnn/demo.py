"""``python -m mrcnn.demo`` (``make demo``): Mask R-CNN trained from scratch on
synthetic shapes, evaluated, with pictures.

The CPU recipe (``mrcnn.recipes.CpuShapesConfig``: small ResNet-like backbone,
64-channel FPN, warmed-up cosine learning rate) trains on 2000 generated
images, then the model is evaluated on 50 images of another seed (mAP@0.5,
mAP@[.5:.95] and COCO's AP), and pictures of ground truth next to detections
are written. About 7 minutes on 2 CPU cores, nothing downloaded.

    python -m mrcnn.demo                        # the full demo
    python -m mrcnn.demo --out pictures --seed 3
    python -m mrcnn.demo --epochs 1 --steps 5   # a quick look at the pipeline

The functions (``make_shapes``, ``train_recipe``, ``save_pictures``, ``demo``)
are what ``samples/shapes/shapes.py`` and the notebooks use too.
"""
import argparse
import contextlib
import io
import os
import sys
import time
from typing import Dict, Optional, Sequence

import keras

from mrcnn import cli, evaluation, visualize
from mrcnn import model as modellib
from mrcnn.datasets.shapes import ShapesDataset
from mrcnn.recipes import CpuShapesConfig, learning_rate_schedule, warmup_steps

__all__ = ["DEMO_EPOCHS", "make_config", "make_shapes", "seed_everything", "train_recipe",
           "save_pictures", "backbone_name", "demo", "main"]

# The demo's length: DEMO_EPOCHS epochs of STEPS_PER_EPOCH steps, all layers.
DEMO_EPOCHS = 16


def make_config(base=CpuShapesConfig, inference=False, **overrides):
    """An instance of ``base`` with ``overrides`` (Config fields; None values
    are ignored), one image per batch when ``inference``. A subclass is made
    on the fly when something is overridden, so the derived fields and
    validate() see the new values."""
    settings = {k: v for k, v in overrides.items() if v is not None}
    if inference:
        settings.update(GPU_COUNT=1, IMAGES_PER_GPU=1)
    if not settings:
        return base()
    return type(base.__name__, (base,), settings)()


def make_shapes(count: int, config, seed: int) -> ShapesDataset:
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


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and TensorFlow
    (weight initialisation, the random sampling in the graph).

    Runs are then close, not bit-identical: multithreaded CPU kernels sum in
    varying order.
    """
    keras.utils.set_random_seed(int(seed))


def backbone_name(config) -> str:
    """"resnet50", "resnet101", or the name of a BACKBONE callable."""
    backbone = config.BACKBONE
    if callable(backbone):
        return getattr(backbone, "__name__", type(backbone).__name__)
    return str(backbone)


def train_recipe(model, train_dataset, val_dataset, epochs: int, layers: str = "all",
                 learning_rate: Optional[float] = None, schedule: bool = True,
                 seed: Optional[int] = None, verbose: int = 1):
    """Train ``model`` up to epoch ``epochs`` (Matterport's meaning: the
    number of the last epoch, so a resumed model trains the difference).

    learning_rate: the peak rate, default config.LEARNING_RATE.
    schedule: True: the recipe's warm-up and cosine decay
        (``recipes.learning_rate_schedule``) over ``epochs * STEPS_PER_EPOCH``
        steps; a resumed model continues the curve where it stopped. False:
        that rate throughout (Matterport).
    seed: order of the training images (None: random).
    Returns: Keras' History.
    """
    config = model.config
    lr = float(config.LEARNING_RATE if learning_rate is None else learning_rate)
    rate, how = lr, f"learning rate {lr:g}"
    if schedule:
        steps = int(epochs) * int(config.STEPS_PER_EPOCH)
        warmup = warmup_steps(config, steps)
        rate = learning_rate_schedule(config, total_steps=steps, peak=lr)
        how = f"learning rate up to {lr:g} in {warmup} steps, then down to 0 (cosine)"
    print(f"Training {layers} layers from epoch {model.epoch + 1} to {epochs} "
          f"({config.STEPS_PER_EPOCH} steps of {config.BATCH_SIZE} images each), "
          f"{how}, on {len(train_dataset.image_ids)} images", flush=True)
    return model.train(train_dataset, val_dataset, learning_rate=rate, epochs=epochs,
                       layers=layers, verbose=verbose, seed=seed)


def save_pictures(dataset, image_ids, results, aps, out_dir, prefix) -> list:
    """One PNG per image in ``out_dir``: ground truth left, detections right
    (``visualize.display_comparison``). Returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for image_id, result, ap in zip(image_ids, results, aps):
        image, class_ids, boxes, masks = evaluation.ground_truth(dataset, image_id)
        path = os.path.join(out_dir, f"{prefix}_{int(image_id):04d}.png")
        title = f"image {image_id}" + ("" if ap is None else f": AP@0.5 {ap:.2f}")
        # display_instances prints a notice for an image without detections;
        # the missing boxes in the picture say the same.
        with contextlib.redirect_stdout(io.StringIO()):
            visualize.display_comparison(image, (class_ids, boxes, masks), result,
                                         dataset.class_names, title=title, save_path=path)
        paths.append(path)
    return paths


def _stage(text, start):
    print(f"\n== {text} ({time.time() - start:.0f} s since start)", flush=True)


def demo(logs: str = cli.DEFAULT_LOGS_DIR, out: str = "shapes_output",
         epochs: int = DEMO_EPOCHS, train_images: int = 2000, val_images: int = 50,
         pictures: int = 4, seed: int = 1, base=CpuShapesConfig,
         overrides: Optional[Dict] = None, verbose: int = 1) -> Dict:
    """The main job: train from scratch, evaluate, save pictures.

    Trains all layers for ``epochs`` epochs (the recipe's warm-up and cosine
    decay) on ``train_images`` images of seed ``seed``, computes mAP@0.5,
    mAP@[.5:.95] and COCO's AP on ``val_images`` held-out images (seed + 1),
    saves a ground truth / detections picture of the first ``pictures`` of
    them. overrides: Config fields to change (make_config), e.g. for a quick
    run. Returns a dict: mAP50, mAP, coco, checkpoint, pictures, seconds.
    """
    start = time.time()
    seed_everything(seed)
    overrides = dict(overrides or {})
    config = make_config(base, **overrides)
    inference_config = make_config(base, inference=True, **overrides)

    _stage(f"Generating {train_images} training images (seed {seed}) and {val_images} "
           f"validation images (seed {seed + 1})", start)
    train_set = make_shapes(train_images, config, seed)
    val_set = make_shapes(val_images, config, seed + 1)

    _stage(f"Building Mask R-CNN ({backbone_name(config)}, {config.IMAGE_SHAPE[0]}x"
           f"{config.IMAGE_SHAPE[1]} images) with random weights", start)
    model = modellib.MaskRCNN(mode="training", config=config, model_dir=logs)

    _stage(f"Training all layers for {epochs} epochs", start)
    train_recipe(model, train_set, val_set, epochs=epochs, layers="all", seed=seed,
                 verbose=verbose)
    checkpoint = model.find_last()

    _stage(f"Evaluating {checkpoint} on {val_images} validation images", start)
    inference = modellib.MaskRCNN(mode="inference", config=inference_config, model_dir=logs)
    inference.load_weights(checkpoint, by_name=True)
    scores = evaluation.evaluate_model(inference, val_set, verbose=verbose)

    _stage(f"Saving pictures of {pictures} validation images", start)
    n = min(pictures, len(scores["image_ids"]))
    paths = save_pictures(val_set, scores["image_ids"][:n], scores["results"][:n],
                          scores["APs"][:n], out, "demo")
    seconds = time.time() - start
    coco = scores["coco"]
    print(f"\nmAP@0.5 = {scores['mAP50']:.3f}   mAP@[.5:.95] = {scores['mAP']:.3f}   "
          f"COCO mask AP = {coco['segm'][0]:.3f}, box AP = {coco['bbox'][0]:.3f}   "
          f"({val_images} validation images)")
    print(f"Checkpoint: {checkpoint}")
    print(f"Pictures (ground truth left, detections right): {out}")
    for path in paths:
        print(f"  {path}")
    print(f"Done in {seconds / 60:.1f} min.")
    return {"mAP50": scores["mAP50"], "mAP": scores["mAP"], "coco": coco,
            "checkpoint": checkpoint, "pictures": paths, "seconds": seconds}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mrcnn.demo",
        description="Train Mask R-CNN from scratch on generated shapes (the CPU recipe), "
                    "evaluate it and save pictures of its detections.")
    cli.add_logs_argument(parser)
    parser.add_argument("--out", default="shapes_output", metavar="DIR",
                        help="folder for the PNG pictures (default ./shapes_output)")
    parser.add_argument("--epochs", type=int, default=DEMO_EPOCHS,
                        help=f"epochs to train (default {DEMO_EPOCHS})")
    parser.add_argument("--images", type=int, default=2000, help="training images (2000)")
    parser.add_argument("--val-images", type=int, default=50, help="validation images (50)")
    parser.add_argument("--pictures", type=int, default=4, help="pictures to save (4)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the training images and weights; validation images "
                             "use seed + 1 (default 1)")
    cli.add_recipe_arguments(parser)
    cli.add_traceback_argument(parser)
    return parser


def _check_args(parser, args):
    cli.check_positive(parser, args, ("epochs", "images", "val_images", "steps", "lr",
                                      "batch_size", "image_size"))
    if args.pictures < 0:
        parser.error(f"--pictures must be 0 or more, got {args.pictures}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; returns the exit code (0 done, 2 bad input, 130 interrupted)."""
    def run(args):
        demo(logs=args.logs, out=args.out, epochs=args.epochs, train_images=args.images,
             val_images=args.val_images, pictures=args.pictures, seed=args.seed,
             overrides=cli.recipe_overrides(args))
    return cli.run_command(build_parser(), argv, _check_args, run)


if __name__ == "__main__":
    sys.exit(main())
