"""What the command lines share (the samples, ``python -m mrcnn.demo``):
common flags, the ``--weights`` choice, and turning bad input into one line on
stderr and an exit code instead of a traceback.

* :func:`add_weights_argument`, :func:`add_logs_argument`,
  :func:`add_traceback_argument`, :func:`add_recipe_arguments`: the flags.
* :func:`resolve_weights`: ``coco | imagenet | last | none | <path>`` -> a
  file (downloaded first for coco/imagenet when missing), checked before the
  model is built so a bad choice fails at once.
* :func:`load_weights`: load it, leaving out the class-specific layers
  (``config.HEAD_LAYERS``) when starting from the 81-class COCO file.
* :func:`run_command`: parse, check, run; OSError/ValueError become
  ``<prog>: error: <message>`` and exit code 2.

No TensorFlow is imported here, so argument errors are reported at once.
"""
import logging
import os
import sys
from typing import List, Optional

from mrcnn import checkpoints, download
from mrcnn.config import HEAD_LAYERS

__all__ = ["DEFAULT_LOGS_DIR", "HEAD_LAYERS", "WEIGHT_CHOICES", "add_weights_argument",
           "add_logs_argument", "add_traceback_argument", "add_recipe_arguments",
           "recipe_overrides", "check_positive", "resolve_weights", "load_weights",
           "run_command", "show_progress_logs"]

# Checkpoints and TensorBoard logs go here unless --logs says otherwise.
DEFAULT_LOGS_DIR = os.path.join(os.getcwd(), "logs")
# The named --weights choices; anything else is a path.
WEIGHT_CHOICES = ("coco", "imagenet", "last", "none")


def add_weights_argument(parser, flag: str = "--weights", default=None, required=False,
                         choices=WEIGHT_CHOICES, extra_help: str = ""):
    """``--weights`` (Matterport's coco sample calls it ``--model``)."""
    named = ", ".join(f"'{c}'" for c in choices)
    parser.add_argument(flag, dest="weights", default=default, required=required,
                        metavar="/path/to/weights.h5",
                        help=f"a weights .h5 file, or {named}: 'coco' is mask_rcnn_coco.h5 "
                             f"(downloaded if missing; the class layers are left out when "
                             f"the classes differ), 'imagenet' Keras' ResNet-50 weights, "
                             f"'last' the newest checkpoint of this config under --logs, "
                             f"'none' random weights" + extra_help)


def add_logs_argument(parser, default: str = DEFAULT_LOGS_DIR):
    parser.add_argument("--logs", default=default, metavar="/path/to/logs/",
                        help=f"logs and checkpoints folder (default {default})")


def add_traceback_argument(parser):
    parser.add_argument("--traceback", action="store_true",
                        help="show the Python traceback of an error")


def add_recipe_arguments(parser):
    """Single settings of a run: --steps, --lr, --batch-size, --image-size."""
    parser.add_argument("--steps", type=int, help="training steps per epoch (STEPS_PER_EPOCH)")
    parser.add_argument("--lr", type=float, help="learning rate (LEARNING_RATE; with the CPU "
                                                 "recipe the peak of its schedule)")
    parser.add_argument("--batch-size", type=int, metavar="IMAGES",
                        help="training images per step (IMAGES_PER_GPU)")
    parser.add_argument("--image-size", type=int, metavar="PIXELS",
                        help="IMAGE_MIN_DIM = IMAGE_MAX_DIM, a multiple of 64")


def recipe_overrides(args) -> dict:
    """The Config fields add_recipe_arguments' flags set (None: not given)."""
    size = getattr(args, "image_size", None)
    return dict(IMAGE_MIN_DIM=size, IMAGE_MAX_DIM=size, STEPS_PER_EPOCH=args.steps,
                LEARNING_RATE=args.lr, IMAGES_PER_GPU=args.batch_size)


def check_positive(parser, args, names):
    """parser.error unless every given numeric flag in ``names`` is > 0, and
    --image-size (if given) is a multiple of 64."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    size = getattr(args, "image_size", None)
    if size is not None and size % 64:
        parser.error(f"--image-size must be a multiple of 64 (64, 128, 192, ...), got {size}")


def resolve_weights(choice: str, config, logs: str, coco_path: str) -> Optional[str]:
    """The weights file ``--weights`` names, or None for "none".

    choice: "coco" (``coco_path``, downloaded there first if missing),
        "imagenet" (Keras' cache, downloaded if missing), "last" (the newest
        checkpoint of ``config.NAME`` under ``logs``), "none", or a path.
    Raises FileNotFoundError / OSError naming the file and what to do.
    """
    key = str(choice).lower()
    if key == "none":
        return None
    if key == "coco":
        if not os.path.exists(coco_path):
            download.download_trained_weights(coco_path)
        return coco_path
    if key == "imagenet":
        return download.get_imagenet_weights()
    if key == "last":
        return checkpoints.find_last(logs, config.NAME)
    if not os.path.isfile(choice):
        raise FileNotFoundError(f"Weights file not found: {choice}. Pass a .h5 file, or "
                                f"{', '.join(WEIGHT_CHOICES)}.")
    return choice


def load_weights(model, path: Optional[str], coco_path: Optional[str] = None) -> Optional[str]:
    """Load ``path`` into ``model`` by name (None: keep the random weights).

    The COCO file (``coco_path``) has 81 classes: when the model has another
    NUM_CLASSES its class-specific layers (HEAD_LAYERS) are left out, as in
    Matterport's samples. Returns ``path``.
    """
    if path is None:
        print("Weights: none (random initialisation)")
        return None
    print("Loading weights", path)
    exclude: List[str] = []
    if coco_path is not None and os.path.abspath(path) == os.path.abspath(coco_path) \
            and int(model.config.NUM_CLASSES) != 81:
        exclude = list(HEAD_LAYERS)
    model.load_weights(path, by_name=True, exclude=exclude or None)
    return path


def show_progress_logs():
    """Show the library's INFO messages (the start of training, the
    checkpoint path) on stderr, as a command line should."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("mrcnn")
    if not log.handlers:
        log.addHandler(handler)
    log.setLevel(logging.INFO)


def run_command(parser, argv, check_args, run):
    """Parse ``argv`` with ``parser``, check it, run it.

    check_args(parser, args): raises through ``parser.error`` on bad flags.
    run(args): the command. OSError and ValueError (missing or broken files,
        failed downloads, contradictory settings; their messages name the file
        and the fix) become ``<prog>: error: <message>`` and exit code 2,
        unless ``args.traceback`` asks for the traceback.

    Returns the exit code: 0 done, 2 bad input, 130 interrupted.
    """
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        run(args)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as e:
        if getattr(args, "traceback", False):
            raise
        message = " ".join(str(e).split())
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    return 0
