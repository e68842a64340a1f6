"""
Mask R-CNN
Train on the toy Balloon dataset and implement color splash effect.

Matterport's balloon sample with the same command line, classes and
functions, on this package's ``ViaDataset``, plus the CPU recipe
(``--cpu``: train from random weights in minutes, ``mrcnn.recipes``), an
``evaluate`` command (mAP@0.5 and COCO's AP on any VIA data set) and options
for single settings (``--epochs``, ``--steps``, ``--image-size``).

Usage: import the module (see the notebooks for examples), or run from
       the command line as such:

    # Everything on synthetic balloons, on a CPU (no download needed, ~15 min)
    python -m mrcnn.datasets.synthetic_balloon /tmp/balloon --n-train 400 --video
    python3 balloon.py train --dataset=/tmp/balloon --weights=none --cpu
    python3 balloon.py splash --weights=last --cpu --image=/tmp/balloon/val/balloon_val_0000.jpg
    python3 balloon.py splash --weights=last --cpu --video=/tmp/balloon/balloons.avi
    python -m mrcnn.datasets.synthetic_balloon /tmp/balloon_test --n-train 0 --n-val 50 --seed 7
    python3 balloon.py evaluate --dataset=/tmp/balloon_test --weights=last --cpu

    # Train a new model starting from pre-trained COCO weights
    python3 balloon.py train --dataset=/path/to/balloon/dataset --weights=coco

    # Resume training a model that you had trained earlier
    python3 balloon.py train --dataset=/path/to/balloon/dataset --weights=last

    # Train a new model starting from ImageNet weights
    python3 balloon.py train --dataset=/path/to/balloon/dataset --weights=imagenet

    # Apply color splash to an image
    python3 balloon.py splash --weights=/path/to/weights/file.h5 --image=<path to file>

    # Apply color splash to video using the last weights you trained
    python3 balloon.py splash --weights=last --video=<path to file>

    # mAP@0.5 and COCO AP (bbox, segm) of a model on the val subset
    python3 balloon.py evaluate --dataset=/path/to/balloon/dataset --weights=last

Bad input (a missing data set folder, an empty or broken annotation file, a
listed image that is missing or unreadable, weights that cannot be found or
downloaded) ends the command with a one-line ``error:`` message naming the
file, and exit code 2. ``--traceback`` shows the full Python traceback.

Licensed under the MIT License (Matterport's original is MIT as well).
"""

import argparse
import datetime
import os
import sys

import numpy as np

# Root directory of the project: the checkout this file sits in
# (samples/balloon/balloon.py), or the working directory for a copied file.
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOT_DIR = _CHECKOUT if os.path.isdir(os.path.join(_CHECKOUT, "mrcnn")) else os.getcwd()

if ROOT_DIR not in sys.path:
    sys.path.append(ROOT_DIR)  # the checkout's mrcnn when it is not installed

# TensorFlow's C++ start-up notices drown the sample's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# mrcnn.model (and with it TensorFlow, several seconds) is imported when a
# model is built, so that bad arguments are reported at once.
from mrcnn import cli, extras, utils  # noqa: E402
from mrcnn.cli import HEAD_LAYERS  # noqa: E402,F401
from mrcnn.config import Config  # noqa: E402
from mrcnn.datasets.via import ViaDataset  # noqa: E402
from mrcnn.recipes import CpuRecipe, learning_rate_schedule  # noqa: E402

__all__ = ["BalloonConfig", "BalloonInferenceConfig", "CpuBalloonConfig", "BalloonDataset",
           "make_config", "load_dataset", "train", "evaluate", "color_splash",
           "detect_and_color_splash", "main", "COCO_WEIGHTS_PATH", "DEFAULT_LOGS_DIR",
           "HEAD_LAYERS", "CPU_EPOCHS"]

# Path to trained weights file
COCO_WEIGHTS_PATH = os.path.join(ROOT_DIR, "mask_rcnn_coco.h5")

# Directory to save logs and model checkpoints, if not provided
# through the command line argument --logs
DEFAULT_LOGS_DIR = os.path.join(ROOT_DIR, "logs")

# Training schedule of Matterport's sample: 30 epochs of the heads.
DEFAULT_EPOCHS = 30

############################################################
#  Configurations
############################################################


class BalloonConfig(Config):
    """Configuration for training on the toy  dataset.
    Derives from the base Config class and overrides some values.
    """
    # Give the configuration a recognizable name
    NAME = "balloon"

    # We use a GPU with 12GB memory, which can fit two images.
    # Adjust down if you use a smaller GPU.
    IMAGES_PER_GPU = 2

    # Number of classes (including background)
    NUM_CLASSES = 1 + 1  # Background + balloon

    # Number of training steps per epoch
    STEPS_PER_EPOCH = 100

    # Skip detections with < 90% confidence
    DETECTION_MIN_CONFIDENCE = 0.9


class BalloonInferenceConfig(BalloonConfig):
    # Set batch size to 1 since we'll be running inference on
    # one image at a time. Batch size = GPU_COUNT * IMAGES_PER_GPU
    GPU_COUNT = 1
    IMAGES_PER_GPU = 1


class CpuBalloonConfig(CpuRecipe, BalloonConfig):
    """``--cpu``: the package's CPU recipe (``mrcnn.recipes``: small
    ResNet-like backbone, 64-channel FPN, warmed-up cosine learning rate,
    batch norm that learns) on balloon images, to train from random weights
    on a CPU. README.md beside this file gives its results and times."""
    # Its own name, so its checkpoints never mix with BalloonConfig's.
    NAME = "cpu_balloon"

    # Images scaled to 256 pixels on their long side (the synthetic 256x320
    # ones to 205x256), padded to 256x256; 4 per step.
    IMAGES_PER_GPU = 4
    IMAGE_MIN_DIM = 256
    IMAGE_MAX_DIM = 256

    # Anchors sized to balloons of about 30 to 110 pixels at this size.
    RPN_ANCHOR_SCALES = (32, 48, 80, 128, 192)

    # At most a few balloons per image.
    MAX_GT_INSTANCES = 10
    DETECTION_MAX_INSTANCES = 10

    STEPS_PER_EPOCH = 100
    VALIDATION_STEPS = 2


# The CPU recipe's run: CPU_EPOCHS epochs of STEPS_PER_EPOCH steps, all layers.
CPU_EPOCHS = 12


def make_config(command="train", cpu=False, tiny=None, **overrides):
    """The configuration for a command.

    command: "train" (one of the training configs) or "splash"/"evaluate"
        (the same with one image per batch).
    cpu: CpuBalloonConfig (the CPU recipe) instead of Matterport's
        BalloonConfig. ``tiny`` is the older name of ``cpu``.
    overrides: Config fields to set (None values are ignored), e.g.
        ``STEPS_PER_EPOCH=2``.
    Returns: a Config instance (a subclass made on the fly when something is
        overridden, so the derived fields and validate() see the new values).
    """
    cpu = bool(cpu or tiny)
    base = CpuBalloonConfig if cpu else BalloonConfig
    settings = {k: v for k, v in overrides.items() if v is not None}
    if command != "train":
        settings.update(GPU_COUNT=1, IMAGES_PER_GPU=1)
    if not settings:
        return base()
    return type(base.__name__, (base,), settings)()


############################################################
#  Dataset
############################################################

class BalloonDataset(ViaDataset):
    """Matterport's balloon data set: ``<dataset_dir>/train`` and
    ``<dataset_dir>/val``, each with the images and the VIA export
    ``via_region_data.json``; one class, "balloon"."""

    def load_balloon(self, dataset_dir, subset):
        """Load a subset of the Balloon dataset.
        dataset_dir: Root directory of the dataset.
        subset: Subset to load: train or val
        Returns: the number of images added (images without regions are
            skipped, as Matterport did).
        """
        # Train or validation dataset?
        if subset not in ("train", "val"):
            raise ValueError(f"load_balloon: subset must be 'train' or 'val', got {subset!r}")
        # Polygons (and the other VIA area shapes) become masks in load_mask().
        return self.load_via(dataset_dir, subset, class_names=("balloon",), source="balloon")


def load_dataset(dataset_dir, subset):
    """A prepared BalloonDataset of one subset, checked for use.

    Raises FileNotFoundError / ValueError / OSError naming the folder or
    file when the subset folder or its annotation file is missing or
    broken, an annotated image is missing or its header cannot be read, or
    no image has a region.
    """
    dataset = BalloonDataset()
    count = dataset.load_balloon(dataset_dir, subset)
    if count == 0:
        raise ValueError(
            f"No annotated images in {os.path.join(dataset_dir, subset, 'via_region_data.json')}"
            f": every image listed there has no region. Annotate the balloons in VIA and "
            f"export the annotations as json.")
    dataset.prepare()
    # Read each image's size from its header now (cheap), so that an
    # unreadable file stops the command here with its name rather than
    # being skipped in the middle of training.
    for image_id in dataset.image_ids:
        dataset.image_size(image_id)
    return dataset


############################################################
#  Training
############################################################

def train(model, dataset_dir, epochs=DEFAULT_EPOCHS, layers="heads", augmentation=None,
          schedule=False):
    """Train the model.

    model: MaskRCNN in training mode, weights loaded.
    dataset_dir: root of the balloon data set (train/ and val/ inside).
    epochs: the last epoch to train to (Matterport's meaning: training
        resumed from epoch 10 with epochs=30 runs 20 more).
    layers: "heads" (Matterport's choice for this sample), "3+", "4+",
        "5+", "all" or a layer-name regex.
    augmentation: optional albumentations.Compose.
    schedule: False: Matterport's constant LEARNING_RATE. True: the CPU
        recipe's warm-up and cosine decay over ``epochs`` epochs
        (``recipes.learning_rate_schedule``; a resumed run continues it).
    """
    # Training dataset.
    dataset_train = load_dataset(dataset_dir, "train")
    # Validation dataset
    dataset_val = load_dataset(dataset_dir, "val")

    # *** This training schedule is an example. Update to your needs ***
    # Since we're using a very small dataset, and starting from
    # COCO trained weights, we don't need to train too long. Also,
    # no need to train all layers, just the heads should do it.
    config = model.config
    learning_rate = config.LEARNING_RATE
    if schedule:
        learning_rate = learning_rate_schedule(config, epochs=epochs)
    print(f"Training network {layers} on {len(dataset_train.image_ids)} images, "
          f"validating on {len(dataset_val.image_ids)}: epochs {model.epoch + 1} to {epochs} "
          f"of {config.STEPS_PER_EPOCH} steps of {config.BATCH_SIZE} images"
          + (f", learning rate warmed up to {config.LEARNING_RATE:g} then cosine-decayed"
             if schedule else f", learning rate {config.LEARNING_RATE:g}"), flush=True)
    model.train(dataset_train, dataset_val,
                learning_rate=learning_rate,
                epochs=epochs,
                layers=layers,
                augmentation=augmentation)
    print("Checkpoints saved in", model.log_dir)


############################################################
#  Evaluation
############################################################

def evaluate(model, dataset_dir, subset="val", limit=0, verbose=1):
    """mAP@0.5, mAP@[.5:.95] and COCO's AP (bbox, segm) of the model on a
    subset of a balloon data set (any VIA data set in this layout).

    Prints the numbers; returns ``evaluation.evaluate_model``'s dict.
    limit: evaluate on the first ``limit`` images only (0: all).
    """
    from mrcnn import evaluation

    dataset = load_dataset(dataset_dir, subset)
    image_ids = list(dataset.image_ids)[:limit or None]
    scores = evaluation.evaluate_model(model, dataset, image_ids=image_ids, verbose=verbose)
    coco = scores["coco"]
    print(f"mAP@0.5: {scores['mAP50']:.2f}")
    print(f"mAP@[.5:.95]: {scores['mAP']:.2f}")
    print(f"COCO AP segm: {coco['segm'][0]:.3f}  AP50 {coco['segm'][1]:.3f}   "
          f"bbox: {coco['bbox'][0]:.3f}  AP50 {coco['bbox'][1]:.3f}   "
          f"({len(image_ids)} images of {os.path.join(dataset_dir, subset)}, "
          f"{scores['seconds']:.0f} s)")
    return scores


############################################################
#  Color splash
############################################################

def color_splash(image, mask):
    """Apply color splash effect.
    image: RGB image [height, width, 3] uint8
    mask: instance segmentation mask [height, width, instance count] bool

    Returns result image [height, width, 3] uint8: the image's colours
    inside the union of the masks, its luminance (ITU-R 709 weights, as
    skimage.color.rgb2gray, truncated to uint8) in all three channels
    elsewhere.
    """
    import skimage.color

    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"color_splash: image must be [height, width, 3] RGB, "
                         f"got shape {image.shape}")
    if mask.ndim != 3 or mask.shape[:2] != image.shape[:2]:
        raise ValueError(f"color_splash: mask must be [height, width, instances] with the "
                         f"image's size {image.shape[:2]}, got shape {mask.shape}")
    # Make a grayscale copy of the image. The grayscale copy still
    # has 3 RGB channels, though.
    gray = skimage.color.gray2rgb(skimage.color.rgb2gray(image)) * 255
    # Copy color pixels from the original color image where mask is set
    if mask.shape[-1] > 0:
        # We're treating all instances as one, so collapse the mask into one layer
        mask = (np.sum(mask, -1, keepdims=True) >= 1)
        splash = np.where(mask, image, gray).astype(np.uint8)
    else:
        splash = gray.astype(np.uint8)
    return splash


def _output_path(out_dir, ext):
    """out_dir/splash_<YYYYmmddTHHMMSS>.<ext>, with -2, -3 ... appended
    rather than overwriting a splash made in the same second."""
    os.makedirs(out_dir, exist_ok=True)
    stem = "splash_{:%Y%m%dT%H%M%S}".format(datetime.datetime.now())
    path = os.path.join(out_dir, f"{stem}.{ext}")
    n = 2
    while os.path.exists(path):
        path = os.path.join(out_dir, f"{stem}-{n}.{ext}")
        n += 1
    return path


def _check_local(path, what):
    if "://" in str(path):
        raise ValueError(f"--{what} {path}: URLs are not read; download the file and pass "
                         "its path.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what.capitalize()} file not found: {path}")


def _check_video(path):
    """Raise when OpenCV cannot open the video file or read a frame of it."""
    cv2 = extras.require("cv2", "The video splash")

    _check_local(path, "video")
    vcapture = cv2.VideoCapture(path)
    try:
        if not vcapture.isOpened() or not vcapture.read()[0]:
            raise OSError(f"Cannot read video {path}: OpenCV cannot decode a frame of it "
                          "(is it a video?). Convert it to MP4 or AVI.")
    finally:
        vcapture.release()


def detect_and_color_splash(model, image_path=None, video_path=None, out_dir=".", verbose=1):
    """Detect balloons and write the color splash of an image or a video.

    model: MaskRCNN in inference mode.
    image_path: an image file (any format utils.read_image reads); the
        splash is written as a PNG of the same size.
    video_path: a video file OpenCV can read; the splash is written as an
        MJPG .avi with the same frame size, rate and number of frames.
    out_dir: folder for the output (created), the working directory by
        default as in Matterport.
    Returns: the path of the file written.
    """
    if bool(image_path) == bool(video_path):
        raise ValueError("detect_and_color_splash: give image_path or video_path (one of them)")

    # Image or video?
    if image_path:
        _check_local(image_path, "image")
        # Run model detection and generate the color splash effect
        print("Running on {}".format(image_path))
        # Read image (EXIF rotation, grayscale, alpha, 16 bits handled)
        image = utils.read_image(image_path)
        # Detect objects
        r = model.detect([image], verbose=verbose)[0]
        print(f"Found {len(r['class_ids'])} balloon(s)")
        # Color splash
        splash = color_splash(image, r['masks'])
        # Save output
        from PIL import Image
        file_name = _output_path(out_dir, "png")
        Image.fromarray(splash).save(file_name)
    else:
        file_name = _splash_video(model, video_path, out_dir, verbose)
    print("Saved to", file_name)
    return file_name


def _splash_video(model, video_path, out_dir, verbose):
    """Splash every frame of a video into an MJPG .avi; returns its path."""
    cv2 = extras.require("cv2", "The video splash")
    from tqdm import tqdm

    _check_video(video_path)
    # Video capture
    vcapture = cv2.VideoCapture(video_path)
    file_name = None
    vwriter = None
    count = 0
    try:
        width = int(vcapture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(vcapture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = vcapture.get(cv2.CAP_PROP_FPS)
        if not fps or not np.isfinite(fps) or fps <= 0:
            fps = 30.0  # streams and some containers do not say
        total = int(vcapture.get(cv2.CAP_PROP_FRAME_COUNT))
        print("Running on {} ({}x{}, {:g} fps, {} frames)".format(
            video_path, width, height, fps, total if total > 0 else "unknown"))

        # Define codec and create video writer. MJPG is OpenCV's own
        # encoder, so it works in every build, headless ones included.
        file_name = _output_path(out_dir, "avi")
        vwriter = cv2.VideoWriter(file_name, cv2.VideoWriter_fourcc(*'MJPG'), fps,
                                  (width, height))
        if not vwriter.isOpened():
            raise OSError(f"Cannot write the video {file_name} (MJPG codec): check that "
                          "the folder is writable.")
        with tqdm(total=total if total > 0 else None, unit="frame",
                  disable=not verbose) as progress:
            while True:
                # Read next image
                success, image = vcapture.read()
                if not success:
                    break
                # OpenCV returns images as BGR, convert to RGB
                image = np.ascontiguousarray(image[..., ::-1])
                # Detect objects
                r = model.detect([image], verbose=0)[0]
                # Color splash
                splash = color_splash(image, r['masks'])
                # RGB -> BGR to save image to video
                vwriter.write(np.ascontiguousarray(splash[..., ::-1]))
                count += 1
                progress.update(1)
    finally:
        vcapture.release()
        if vwriter is not None:
            vwriter.release()
    if count == 0:
        if file_name and os.path.exists(file_name):
            os.remove(file_name)
        raise OSError(f"No frame could be read from the video {video_path}.")
    print(f"Wrote {count} frames")
    return file_name


############################################################
#  Command line
############################################################

def _load_weights(model, choice):
    """Load the weights --weights names into model; returns their path, or
    None for 'none' (random initialisation). The COCO file's class layers
    are left out (81 classes; balloon has 2)."""
    path = cli.resolve_weights(choice, model.config, model.model_dir, COCO_WEIGHTS_PATH)
    return cli.load_weights(model, path, COCO_WEIGHTS_PATH)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="balloon.py",
        description="Train Mask R-CNN to detect balloons, color-splash an image or a "
                    "video with a trained model, or evaluate it.")
    parser.add_argument("command", metavar="<command>", choices=("train", "splash", "evaluate"),
                        help="'train', 'splash' or 'evaluate'")
    parser.add_argument('--dataset', required=False, metavar="/path/to/balloon/dataset/",
                        help='Directory of the Balloon dataset (with train/ and val/)')
    cli.add_weights_argument(parser, required=True)
    cli.add_logs_argument(parser, default=DEFAULT_LOGS_DIR)
    parser.add_argument('--image', required=False, metavar="path to image",
                        help='Image to apply the color splash effect on')
    parser.add_argument('--video', required=False, metavar="path to video",
                        help='Video to apply the color splash effect on')
    parser.add_argument('--out', required=False, default=".", metavar="/path/to/output/",
                        help='Folder for the splash image or video (default: the working '
                             'directory)')
    parser.add_argument('--subset', default="val",
                        help="evaluate: the subset folder to evaluate on (default val)")
    parser.add_argument('--limit', type=int, default=0,
                        help="evaluate: only the first N images (default 0: all)")
    quick = parser.add_argument_group("CPU runs and single settings (defaults are Matterport's)")
    quick.add_argument('--cpu', '--tiny', action="store_true", dest="cpu",
                       help="the CPU recipe (CpuBalloonConfig): trains from random weights "
                            "in minutes; from none, all layers with a warmed-up cosine "
                            f"learning rate for {CPU_EPOCHS} epochs. Give it to splash and "
                            "evaluate too, so the model has the shape of the one trained "
                            "(--tiny is its older name)")
    quick.add_argument('--epochs', type=int,
                       help=f"last epoch to train to (default {DEFAULT_EPOCHS}; "
                            f"--cpu: {CPU_EPOCHS})")
    quick.add_argument('--layers',
                       help="layers to train: heads, 3+, 4+, 5+, all or a regex "
                            "(default heads; --cpu from random weights: all)")
    quick.add_argument('--steps', type=int, help="training steps per epoch "
                                                  "(STEPS_PER_EPOCH, default 100)")
    quick.add_argument('--val-steps', type=int, help="validation steps per epoch "
                                                      "(VALIDATION_STEPS, default 50)")
    quick.add_argument('--image-size', type=int, metavar="PIXELS",
                       help="IMAGE_MIN_DIM = IMAGE_MAX_DIM (a multiple of 64; default "
                            "800/1024, --cpu 256)")
    quick.add_argument('--backbone', choices=("resnet50", "resnet101"),
                       help="backbone (default resnet101)")
    cli.add_traceback_argument(parser)
    return parser


def _check_args(parser, args):
    # Validate arguments
    if args.command in ("train", "evaluate"):
        if not args.dataset:
            parser.error(f"Argument --dataset is required for {args.command}")
    elif args.command == "splash":
        if not (args.image or args.video):
            parser.error("Provide --image or --video to apply color splash")
        if args.image and args.video:
            parser.error("Provide --image or --video, not both")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    if args.limit < 0:
        parser.error(f"--limit must be 0 or more, got {args.limit}")
    cli.check_positive(parser, args, ("steps", "val_steps", "image_size"))


def _check_dataset(dataset_dir, subsets):
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"Dataset folder not found: {dataset_dir}. Expected a "
                                "folder with train/ and val/ sub-folders, each holding "
                                "images and via_region_data.json.")
    for subset in subsets:
        load_dataset(dataset_dir, subset)


def run(args):
    """Carry out a parsed command line."""
    print("Weights: ", args.weights)
    print("Dataset: ", args.dataset)
    print("Logs: ", args.logs)

    # Check the inputs before building the model (which takes a while).
    if args.command == "train":
        # Loaded now for their errors; train() loads them again (cheap).
        _check_dataset(args.dataset, ("train", "val"))
    elif args.command == "evaluate":
        _check_dataset(args.dataset, (args.subset,))
    elif args.image:
        _check_local(args.image, "image")
        utils.read_image(args.image)  # a broken file fails here, with its name
    else:
        _check_video(args.video)

    # Configurations
    size = args.image_size
    config = make_config(args.command, cpu=args.cpu, BACKBONE=args.backbone,
                         IMAGE_MIN_DIM=size, IMAGE_MAX_DIM=size,
                         STEPS_PER_EPOCH=args.steps, VALIDATION_STEPS=args.val_steps)
    # The weights file, found (or downloaded) before the model is built.
    weights_path = cli.resolve_weights(args.weights, config, args.logs, COCO_WEIGHTS_PATH)
    config.display()

    # Create model
    from mrcnn import model as modellib
    mode = "training" if args.command == "train" else "inference"
    model = modellib.MaskRCNN(mode=mode, config=config, model_dir=args.logs)
    cli.load_weights(model, weights_path, COCO_WEIGHTS_PATH)

    # Train or evaluate
    if args.command == "train":
        # The CPU recipe from random weights (or resuming such a run with
        # --weights=last): all layers, warm-up and cosine decay, continued
        # where a resumed run stopped; otherwise (fine-tuning from COCO or
        # ImageNet weights) Matterport's heads at a constant rate.
        recipe = args.cpu and (weights_path is None or args.weights.lower() == "last")
        epochs = args.epochs or (CPU_EPOCHS if args.cpu else DEFAULT_EPOCHS)
        layers = args.layers or ("all" if recipe else "heads")
        train(model, args.dataset, epochs=epochs, layers=layers, schedule=recipe)
    elif args.command == "evaluate":
        evaluate(model, args.dataset, subset=args.subset, limit=args.limit)
    else:
        detect_and_color_splash(model, image_path=args.image, video_path=args.video,
                                out_dir=args.out)


def main(argv=None):
    """Command line entry point. Returns the exit code: 0 done, 2 bad
    input (a one-line message on stderr), 130 interrupted."""
    cli.show_progress_logs()
    return cli.run_command(build_parser(), argv, _check_args, run)


if __name__ == '__main__':
    sys.exit(main())
