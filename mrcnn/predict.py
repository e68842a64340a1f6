"""``mrcnn predict`` and ``mrcnn export``: the command line of a trained model.

    mrcnn predict --weights mask_rcnn_coco.h5 --config coco --input photos/ --output out/
    mrcnn predict --weights logs/x/mask_rcnn_x_0010.h5 --config my_config.py \\
                  --input "images/*.jpg" --output out/
    mrcnn predict --weights W --config balloon --input clip.mp4 --output out/
    mrcnn export  --weights W --config coco --output export/mrcnn/1 [--precision bfloat16]

(``python -m mrcnn ...`` is the same.)

``--config`` is a preset name (``coco``, ``balloon``, ``shapes``: Matterport's
configurations of those weights), a Python file defining a ``Config``
subclass (``my_config.py`` or ``my_config.py:MyInferenceConfig`` when it
defines several), or an importable ``package.module:ClassName``. The batch is
set to one image (GPU_COUNT = IMAGES_PER_GPU = 1). Class names for the
pictures come from ``--class-names`` (a file with one name per line, the
background first, or a comma-separated list), else a ``CLASS_NAMES`` attribute
of the config, else the preset's, else ``class <id>``.

``predict`` reads every input (an image file, a folder of images, a glob
pattern, or a video: .mp4 .avi .mov .mkv .webm .m4v), runs ``detect()`` and
writes, per image, into ``--output``:

* ``<name>.json``: COCO result format (http://cocodataset.org/#format-results),
  a list of ``{"image_id", "category_id", "bbox": [x, y, width, height],
  "score", "segmentation": {"size": [h, w], "counts": RLE string}}``.
  ``image_id`` is the file name's number when it is one (COCO's
  ``000000397133.jpg`` -> 397133), else the input's position (0, 1, ...);
  ``category_id`` is the model's class id, for the ``coco`` preset the COCO
  category id of that class (so the files evaluate with pycocotools).
* ``<name>.png``: the image with the masks, boxes and labels drawn on it.

A video gives ``<name>_f<frame>.json`` per frame and ``<name>_detections.mp4``.
Inputs whose names collide (``a/x.jpg``, ``b/x.jpg``) get ``_2``, ``_3`` ...

Bad input gets one line on stderr naming the file, ``mrcnn predict: error:
...``: an unreadable or corrupt image is skipped and the others are still
processed (exit code 2 at the end); missing weights, a config that does not
fit the weights, or no input at all stop at once with exit code 2.
``--traceback`` shows the Python traceback instead.

Presets: ``coco`` (``datasets.coco.CocoConfig``), ``balloon`` (Matterport's
balloon sample settings), ``shapes`` (``datasets.shapes.ShapesConfig``) and
``cpu_shapes`` (the CPU recipe, ``recipes.CpuShapesConfig``: what ``make
demo`` trains).
"""
import argparse
import colorsys
import glob
import importlib
import importlib.util
import json
import os
import sys

import numpy as np

from mrcnn import extras, utils
from mrcnn import model as modellib
from mrcnn.cli import run_command
from mrcnn.config import INFERENCE_PRECISIONS, Config
from mrcnn.datasets.coco import CocoConfig
from mrcnn.datasets.shapes import SHAPE_NAMES, ShapesConfig
from mrcnn.recipes import CpuShapesConfig

__all__ = ["PRESETS", "COCO_CLASS_NAMES", "COCO_CATEGORY_IDS", "load_config", "load_model",
           "collect_inputs", "coco_results", "draw_detections", "build_parser", "main"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pnm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

# Matterport's COCO class order (mask_rcnn_coco.h5): CocoDataset adds the
# categories sorted by COCO id, so class i is COCO_CATEGORY_IDS[i - 1].
COCO_CLASS_NAMES = [
    'BG', 'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck',
    'boat', 'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird',
    'cat', 'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe',
    'backpack', 'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard',
    'sports ball', 'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl',
    'banana', 'apple', 'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza',
    'donut', 'cake', 'chair', 'couch', 'potted plant', 'bed', 'dining table', 'toilet',
    'tv', 'laptop', 'mouse', 'remote', 'keyboard', 'cell phone', 'microwave', 'oven',
    'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear',
    'hair drier', 'toothbrush']
COCO_CATEGORY_IDS = ([0] + list(range(1, 12)) + list(range(13, 26)) + [27, 28]
                     + list(range(31, 45)) + list(range(46, 66)) + [67, 70]
                     + list(range(72, 83)) + list(range(84, 91)))


def _balloon_config():
    class BalloonConfig(Config):
        """samples/balloon's configuration (mask_rcnn_balloon.h5)."""
        NAME = "balloon"
        NUM_CLASSES = 1 + 1
        DETECTION_MIN_CONFIDENCE = 0.9
    return BalloonConfig


def _shape_names():
    return ["BG"] + list(SHAPE_NAMES)


# name -> (config class factory, class names factory, category id table)
PRESETS = {
    "coco": (lambda: CocoConfig, lambda: COCO_CLASS_NAMES, COCO_CATEGORY_IDS),
    "balloon": (_balloon_config, lambda: ["BG", "balloon"], None),
    "shapes": (lambda: ShapesConfig, _shape_names, None),
    "cpu_shapes": (lambda: CpuShapesConfig, _shape_names, None),
}


############################################################
#  Configuration and model
############################################################

def _config_class_from_module(module, class_name, where):
    if class_name:
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, Config)):
            raise ValueError(f"{where} has no Config subclass named {class_name!r}.")
        return cls
    found = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, Config) and v is not Config]
    # the file's own classes; else the ones it imports (from x import MyConfig)
    own = [v for v in found if v.__module__ == module.__name__] or found
    # a subclass of another one found (e.g. XInferenceConfig(XConfig)) is the one to use
    leaves = [c for c in own if not any(o is not c and issubclass(o, c) for o in own)]
    if len(leaves) == 1:
        return leaves[0]
    names = sorted(c.__name__ for c in (leaves or own))
    if not names:
        raise ValueError(f"{where} defines no Config subclass; define one "
                         f"(class MyConfig(Config): NAME = ...; NUM_CLASSES = ...).")
    raise ValueError(f"{where} defines several configs ({', '.join(names)}); pick one "
                     f"with {where}:{names[0]}.")


def load_config(spec, class_names=None):
    """The inference Config for ``--config`` (see the module docstring).

    Returns (config instance with a batch of 1, class names list or None,
    category id table or None). Raises ValueError/OSError naming the spec.
    """
    spec = str(spec)
    categories = None
    names = None
    if spec.lower() in PRESETS:
        factory, names_factory, categories = PRESETS[spec.lower()]
        base = factory()
        names = names_factory()
    else:
        path, _, class_name = spec.partition(":") if not os.path.exists(spec) else (spec, "", "")
        if path.endswith(".py") or os.path.exists(path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"config file not found: {path}")
            mod_name = "_mrcnn_user_config_" + os.path.splitext(os.path.basename(path))[0]
            module_spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[mod_name] = module
            try:
                module_spec.loader.exec_module(module)
            except Exception as e:
                raise ValueError(f"config file {path} failed to run: "
                                 f"{type(e).__name__}: {e}") from e
            base = _config_class_from_module(module, class_name, path)
        elif class_name:
            try:
                module = importlib.import_module(path)
            except ImportError as e:
                raise ValueError(f"--config {spec}: cannot import {path} ({e}).") from e
            base = _config_class_from_module(module, class_name, path)
        else:
            raise ValueError(
                f"--config {spec!r} is neither a preset ({', '.join(sorted(PRESETS))}), "
                f"nor a .py file, nor a package.module:ClassName.")
        names = getattr(base, "CLASS_NAMES", None)
    config_class = type(base.__name__, (base,), {"GPU_COUNT": 1, "IMAGES_PER_GPU": 1})
    try:
        config = config_class()
    except ValueError as e:
        raise ValueError(f"--config {spec}: {e}") from e
    if class_names:
        names = _read_class_names(class_names)
    if names is not None:
        names = list(names)
        if len(names) != config.NUM_CLASSES:
            raise ValueError(f"{len(names)} class names for NUM_CLASSES={config.NUM_CLASSES} "
                             f"of --config {spec} (the background counts as the first name).")
    return config, names, categories


def _read_class_names(value):
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    return [v.strip() for v in value.split(",")]


def load_model(config, weights, precision=None):
    """An inference MaskRCNN with ``weights`` loaded; every weight-carrying
    layer must get its weights from the file (a file of another network or
    class count is a ValueError naming the file, not a half-random model)."""

    weights = os.fspath(weights)
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"weights file not found: {weights}")
    if precision:
        config = type(type(config).__name__, (type(config),),
                      {"INFERENCE_PRECISION": precision})()
    model = modellib.MaskRCNN("inference", config, model_dir=os.path.join(os.getcwd(), "logs"))
    try:
        report = model.load_weights(weights, by_name=True)
    except ValueError as e:
        # load_weights lists every misfit and a load_weights(exclude=...) hint:
        # here one line with the count and the first misfit says enough.
        message = " ".join(str(e).split())
        misfits = message.split(" layer '")[1:]
        if misfits:
            first = ("layer '" + misfits[0]).split(" If these layers")[0].rstrip()
            message = f"{len(misfits)} weights differ in shape, first {first}"
        raise ValueError(f"weights {weights} do not fit config {config.NAME!r}: {message}; "
                         f"use the config the weights were trained with (NUM_CLASSES, "
                         f"BACKBONE, TOP_DOWN_PYRAMID_SIZE, ...).") from e
    if report is not None and report.missing:
        missing = list(report.missing)
        raise ValueError(
            f"weights {weights} do not fit config {config.NAME!r}: the file has no weights "
            f"for {len(missing)} layers of the model ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); use the config the weights were "
            f"trained with (BACKBONE, NUM_CLASSES, ...).")
    return model


############################################################
#  Inputs
############################################################

def collect_inputs(spec):
    """[(kind "image" | "video", path)] for an image, a folder, a glob or a video.
    A folder gives its image and video files (not recursive), sorted."""
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        paths = sorted(os.path.join(spec, f) for f in os.listdir(spec)
                       if f.lower().endswith(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS))
        if not paths:
            raise FileNotFoundError(f"no image or video files in folder {spec}")
    elif any(c in spec for c in "*?["):
        paths = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        if not paths:
            raise FileNotFoundError(f"no files match {spec}")
    elif os.path.isfile(spec):
        paths = [spec]
    else:
        raise FileNotFoundError(f"input not found: {spec}")
    return [("video" if p.lower().endswith(VIDEO_EXTENSIONS) else "image", p) for p in paths]


def _video_frames(path):
    """(frame index, RGB uint8 frame) of a video, and its frame rate."""
    cv2 = extras.require("cv2", "Reading videos")

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise OSError(f"cannot open video {path} (not a video, or a codec OpenCV lacks)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

    def frames():
        i = 0
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                yield i, frame[..., ::-1].copy()
                i += 1
        finally:
            cap.release()
    return frames(), fps, count


############################################################
#  Outputs
############################################################

def coco_results(image_id, result, category_ids=None):
    """detect()'s result for one image as COCO results (a JSON-ready list)."""
    from pycocotools import mask as mask_utils

    out = []
    rois, masks = result["rois"], result["masks"]
    for i in range(len(rois)):
        y1, x1, y2, x2 = (float(v) for v in rois[i])
        rle = mask_utils.encode(np.asfortranarray(masks[:, :, i].astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        class_id = int(result["class_ids"][i])
        out.append({
            "image_id": image_id,
            "category_id": int(category_ids[class_id]) if category_ids else class_id,
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(result["scores"][i]),
            "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]},
        })
    return out


def _colors(n):
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(n, 1), 1.0, 1.0))
            for i in range(n)]


def draw_detections(image, result, class_names=None, alpha=0.45):
    """The image (RGB uint8) with masks tinted, boxes and 'name score' labels."""
    from PIL import Image, ImageDraw

    out = image.astype(np.float32).copy()
    n = len(result["rois"])
    colors = _colors(n)
    for i in range(n):
        m = result["masks"][:, :, i].astype(bool)
        out[m] = out[m] * (1 - alpha) + np.array(colors[i], np.float32) * alpha
    pic = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pic)
    for i in range(n):
        y1, x1, y2, x2 = (int(v) for v in result["rois"][i])
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=colors[i])
        c = int(result["class_ids"][i])
        name = class_names[c] if class_names and c < len(class_names) else f"class {c}"
        draw.text((x1 + 2, max(y1 - 11, 0)), f"{name} {float(result['scores'][i]):.2f}",
                  fill=colors[i])
    return np.asarray(pic)


def _image_id(path, index):
    stem = os.path.splitext(os.path.basename(path))[0]
    return int(stem) if stem.isdigit() else index


class _Names:
    """Unique output stems for input paths."""

    def __init__(self):
        self.used = {}

    def __call__(self, path):
        stem = os.path.splitext(os.path.basename(path))[0]
        k = self.used.get(stem, 0) + 1
        self.used[stem] = k
        return stem if k == 1 else f"{stem}_{k}"


############################################################
#  Commands
############################################################

def _error(prog, message):
    from tqdm import tqdm
    tqdm.write(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)


def run_predict(args, prog="mrcnn predict"):
    """The predict command (see the module docstring). Raises OSError/ValueError
    for what stops it; per-image failures are reported and counted."""
    from PIL import Image
    from tqdm import tqdm


    inputs = collect_inputs(args.input)
    config, names, categories = load_config(args.config, args.class_names)
    if args.min_confidence is not None:
        config = type(type(config).__name__, (type(config),),
                      {"DETECTION_MIN_CONFIDENCE": float(args.min_confidence)})()
    model = load_model(config, args.weights, args.precision)
    os.makedirs(args.output, exist_ok=True)
    unique = _Names()
    failed = []
    done = 0

    def write(stem, image_id, image, result):
        """The JSON file and, unless --no-pictures, the picture (returned)."""
        with open(os.path.join(args.output, stem + ".json"), "w", encoding="utf-8") as f:
            json.dump(coco_results(image_id, result, categories), f)
        if args.no_pictures:
            return None
        picture = draw_detections(image, result, names)
        Image.fromarray(picture).save(os.path.join(args.output, stem + ".png"))
        return picture

    bar = tqdm(total=len(inputs), unit="image", disable=args.quiet, file=sys.stderr)
    for index, (kind, path) in enumerate(inputs):
        try:
            stem = unique(path)
            if kind == "image":
                image = utils.read_image(path)
                result = model.detect([image])[0]
                write(stem, _image_id(path, index), image, result)
            else:
                _predict_video(model, path, stem, write, bar, args)
            done += 1
        except (OSError, ValueError) as e:
            if args.traceback:
                raise
            message = str(e)
            if path not in message:
                message = f"{path}: {message}"
            _error(prog, message)
            failed.append(path)
        bar.update(1)
    bar.close()
    if failed:
        raise ValueError(f"{len(failed)} of {len(inputs)} inputs could not be processed "
                         f"(listed above); the results of the other {done} are in "
                         f"{args.output}")


def _predict_video(model, path, stem, write, bar, args):
    """Every frame of a video: a JSON (and picture) per frame, and the frames
    with their detections as ``<stem>_detections.mp4``."""
    cv2 = extras.require("cv2", "Predicting on videos")

    frames, fps, count = _video_frames(path)
    writer = None
    n = 0
    try:
        for i, frame in frames:
            result = model.detect([frame])[0]
            picture = write(f"{stem}_f{i:06d}", i, frame, result)
            n += 1
            bar.set_postfix_str(f"{os.path.basename(path)} frame {i + 1}/{count or '?'}")
            if picture is None:
                continue
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(os.path.join(args.output, f"{stem}_detections.mp4"),
                                         cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            writer.write(np.ascontiguousarray(picture[..., ::-1]))
    finally:
        if writer is not None:
            writer.release()
    if n == 0:
        raise OSError(f"video {path} has no readable frames")


def run_export(args, prog="mrcnn export"):
    """The export command: build, load the weights, write the SavedModel
    (and a .tflite file with --tflite)."""
    config, names, _ = load_config(args.config, args.class_names)
    if names is not None:
        config.CLASS_NAMES = list(names)
    model = load_model(config, args.weights, args.precision)
    model.export(args.output, batch=not args.no_batch, overwrite=args.overwrite)
    print(f"{prog}: wrote SavedModel {args.output} (signatures serving_default"
          f"{'' if args.no_batch else ', serving_batch'}, serving_bytes)")
    if args.tflite:
        import tensorflow as tf
        converter = tf.lite.TFLiteConverter.from_saved_model(
            args.output, signature_keys=["serving_default"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                               tf.lite.OpsSet.SELECT_TF_OPS]
        with open(args.tflite, "wb") as f:
            f.write(converter.convert())
        print(f"{prog}: wrote {args.tflite} (needs the TensorFlow Lite Flex delegate: "
              f"select TF ops; see the README)")


def _common(p):
    p.add_argument("--weights", required=True, metavar="W.h5", help="weight file (.h5)")
    p.add_argument("--config", required=True, metavar="NAME_OR_PY",
                   help=f"preset ({', '.join(sorted(PRESETS))}), a .py file with a Config "
                        f"subclass (file.py or file.py:ClassName), or package.module:ClassName")
    p.add_argument("--class-names", metavar="FILE_OR_LIST",
                   help="class names, background first: a file (one per line) or a,b,c")
    p.add_argument("--precision", choices=INFERENCE_PRECISIONS,
                   help="INFERENCE_PRECISION (default: the config's)")
    p.add_argument("--traceback", action="store_true", help="show tracebacks of errors")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mrcnn", description="Mask R-CNN: predict with trained weights, or export them "
                                  "as a SavedModel for TF Serving.")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    p = sub.add_parser("predict", help="detect objects in images or videos, write COCO JSON "
                                       "and pictures",
                       description="Detect objects in images or videos: one COCO-format JSON "
                                   "(RLE masks) and one picture per image in --output.")
    _common(p)
    p.add_argument("--input", required=True, metavar="PATH",
                   help="an image, a folder, a glob pattern (quote it) or a video")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the results")
    p.add_argument("--min-confidence", type=float, metavar="P",
                   help="DETECTION_MIN_CONFIDENCE (default: the config's)")
    p.add_argument("--no-pictures", action="store_true", help="write the JSON files only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    e = sub.add_parser("export", help="write a self-contained SavedModel (and TFLite)")
    _common(e)
    e.add_argument("--output", required=True, metavar="DIR",
                   help="SavedModel folder (TF Serving: <models>/<name>/<version>)")
    e.add_argument("--no-batch", action="store_true", help="leave out serving_batch")
    e.add_argument("--overwrite", action="store_true", help="replace an existing export")
    e.add_argument("--tflite", metavar="FILE.tflite", help="also convert to TensorFlow Lite")
    parser.commands = {"predict": p, "export": e}
    return parser


def main(argv=None):
    """``mrcnn <command> ...``. Returns the exit code (0 done, 2 bad input,
    130 interrupted)."""

    # TensorFlow's C++ info and warning lines would bury the progress bar
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv or argv[0] not in parser.commands:
        parser.parse_args(argv)   # usage or --help; exits
    command = parser.commands[argv[0]]
    run = run_predict if argv[0] == "predict" else run_export
    return run_command(command, argv[1:], lambda p, a: None, run)
