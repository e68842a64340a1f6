"""Export an inference model as a self-contained TensorFlow SavedModel.

    model = modellib.MaskRCNN("inference", config, model_dir)
    model.load_weights("mask_rcnn_coco.h5", by_name=True)
    model.export("export/mrcnn/1")          # or export_model(model, path)

    # serving side: TensorFlow only, no mrcnn
    loaded = tf.saved_model.load("export/mrcnn/1")
    out = loaded.signatures["serving_default"](image=tf.constant(rgb_uint8))
    out["rois"], out["class_ids"], out["scores"], out["masks"]

Everything ``MaskRCNN.detect`` does in Python happens inside the graph:
checking the image, resizing and padding (``utils.resize_image``), molding
(``MEAN_PIXEL``), the image meta, the anchors of the molded size, the network,
``unmold_detections`` and the mask pasting. The NumPy steps are reproduced
bit for bit (``mrcnn/ops/preprocess.py`` and ``mrcnn/ops/postprocess.py`` say
how), so the export gives ``detect()``'s detections; tests/test_export.py
checks it in a process that cannot import mrcnn.

Signatures (all outputs in original-image pixels; M = DETECTION_MAX_INSTANCES,
N <= M the detections found):

``serving_default``
    in:  ``image`` [H, W, 3] uint8, any size (RGB; grayscale must be repeated
         to 3 channels by the caller, RGBA cut to RGB, as detect() does)
    out: ``rois`` [N, 4] int32 (y1, x1, y2, x2; y2, x2 exclusive),
         ``class_ids`` [N] int32, ``scores`` [N] float32,
         ``masks`` [H, W, N] uint8 (0/1). No padding rows.
``serving_batch``
    in:  ``images`` [B, H, W, 3] uint8, images of different sizes padded at
         the bottom/right to a common H, W; ``image_sizes`` [B, 2] int32, the
         (height, width) of each image before padding
    out: ``num_detections`` [B] int32; ``rois`` [B, M, 4], ``class_ids``
         [B, M], ``scores`` [B, M], ``masks`` [B, H, W, M]: image b's
         detections are the first num_detections[b] rows / masks, the rest
         are zeros, and its masks cover its own [:height, :width].
``serving_bytes``
    in:  ``image_bytes`` scalar string, a JPEG/PNG/BMP/GIF file (decoded by
         TensorFlow to 3 channels; the first frame of a GIF)
    out: as serving_default.

In "square" mode all molded images have one size, so ``serving_batch`` runs
the network once on the whole batch; in "pad64"/"none" mode the molded size
depends on the image, and it runs the images one after the other, as it does
for a bfloat16 model (so that it gives serving_default's roundings; see
``per_image_network``).

bfloat16 and shapes: Grappler fuses a convolution with its bias add (one
bfloat16 rounding instead of two) only when the input shape is fully known.
detect() traces its network with the molded shape, so in "square" mode the
export (whose molded shape is static there too) gives detect()'s numbers
exactly. In "pad64"/"none" mode the molded size is only known at run time:
the export runs unfused, like detect() once its tf.function has relaxed to
unknown sizes (from the second molded size on), but unlike detect()'s first
call, which is within the bfloat16 tolerance of the README, not identical.

The anchors are a constant of the graph when the molded size is fixed
("square" mode: exactly ``MaskRCNN.get_anchors``), otherwise they are
computed in the graph for each molded size (``ops.preprocess.pyramid_anchors``,
checked here against ``compute_backbone_shapes`` at export time, so a callable
BACKBONE whose COMPUTE_BACKBONE_SHAPE is not ceil(size / stride) is refused in
pad64 mode instead of giving wrong anchors).

The export directory gets ``assets.extra/mrcnn.json`` (the config, the
signatures, the mrcnn version): TF Serving ignores ``assets.extra``.

The in-graph steps are ``mrcnn.ops.preprocess`` / ``mrcnn.ops.postprocess``,
the TensorFlow twins of ``mrcnn.transform`` (what ``detect()`` runs in NumPy),
checked against it bit for bit in tests/test_export.py; the settings come from
``mrcnn.arguments`` (``image_spec``, ``anchor_spec``).
"""
import json
import os

import numpy as np
import tensorflow as tf

from mrcnn import __version__
from mrcnn.arguments import anchor_spec, image_spec, layer_args
from mrcnn.ops import postprocess as post
from mrcnn.ops import preprocess as pre

__all__ = ["export_model", "serving_args", "SIGNATURES"]

SIGNATURES = ("serving_default", "serving_batch", "serving_bytes")


def serving_args(config):
    """The plain values of ``config`` the exported pre/post-processing needs.

    Returns a JSON-ready dict: resize (mode, min_dim, max_dim, min_scale),
    mean_pixel, num_classes, max_instances, anchors (scales, ratios, strides,
    anchor_stride), channels, fixed_size (the molded side in square mode,
    else None).
    """
    image, anchors = image_spec(config), anchor_spec(config)
    mode = image.mode
    if mode not in pre.RESIZE_MODES:
        raise ValueError(
            f"export: IMAGE_RESIZE_MODE={mode!r} cannot be exported: 'crop' takes a random "
            f"crop (training only). Set IMAGE_RESIZE_MODE to 'square' or 'pad64' for inference.")
    if image.channels != 3:
        raise ValueError(
            f"export: IMAGE_CHANNEL_COUNT is {image.channels}; the exported "
            f"signatures take RGB uint8 images (3 channels).")
    return {
        "mode": mode,
        "min_dim": int(image.min_dim) if image.min_dim else None,
        "max_dim": int(image.max_dim) if image.max_dim else None,
        "min_scale": float(image.min_scale) if image.min_scale else None,
        "mean_pixel": [float(v) for v in image.mean_pixel],
        "num_classes": image.num_classes,
        "max_instances": layer_args(config)["detection"]["detection_max_instances"],
        "anchor_scales": list(anchors.scales),
        "anchor_ratios": list(anchors.ratios),
        "strides": list(anchors.strides),
        "anchor_stride": anchors.anchor_stride,
        "channels": 3,
        "fixed_size": int(image.max_dim) if mode == "square" else None,
    }


def _check_dynamic_anchors(config, args):
    """Raise ValueError unless ceil(size / stride) is the config's feature
    map size (what the in-graph anchors assume) for a range of molded sizes."""
    spec = anchor_spec(config)
    sizes = [64, 128, 192, 256, 320, 448, 512, 640, 704, 1024, 1088, 1344, 2048]
    for h in sizes:
        for w in (64, 320, 1024, h):
            want = np.array([[-(-h // s), -(-w // s)] for s in args["strides"]])
            got = np.asarray(spec.backbone_shapes((h, w, 3)))
            if got.shape != want.shape or not np.array_equal(got, want):
                raise ValueError(
                    f"export: in '{args['mode']}' mode the anchors are computed in the graph "
                    f"with feature maps of ceil(size / stride), but the config's "
                    f"COMPUTE_BACKBONE_SHAPE gives {got.tolist()} for a {h}x{w} image "
                    f"(expected {want.tolist()}). Use IMAGE_RESIZE_MODE='square' (fixed "
                    f"anchors) or a backbone with ResNet's feature map sizes.")


def _build_module(model, batch=True, image_bytes=True):
    """A tf.Module with the serving functions and the model's variables."""
    config = model.config
    keras_model = model.keras_model
    args = serving_args(config)
    mode, fixed = args["mode"], args["fixed_size"]
    max_instances = args["max_instances"]
    # bfloat16: Grappler fuses each convolution with its bias (one bfloat16
    # rounding instead of two) only when the input shape is fully known, as
    # in detect()'s calls in square mode. A batch of unknown size would run
    # unfused and give other bfloat16 roundings than detect() and
    # serving_default, so serving_batch runs the images one by one there.
    per_image_network = config.INFERENCE_PRECISION == "bfloat16"
    if fixed is None:
        _check_dynamic_anchors(config, args)
        fixed_anchors = None
    else:
        # exactly detect()'s anchors (whatever the backbone)
        fixed_anchors = np.asarray(model.get_anchors(np.array([fixed, fixed, 3])), np.float32)

    def check_image(image):
        shape = tf.shape(image)
        checks = [tf.debugging.assert_greater_equal(
            tf.reduce_min(shape[:2]), 2,
            message="mrcnn export: the image needs at least 2x2 pixels")]
        if mode == "none":
            checks.append(tf.debugging.assert_equal(
                tf.reduce_max(shape[:2] % 64), 0,
                message="mrcnn export: IMAGE_RESIZE_MODE='none' needs image sides divisible by 64"))
        with tf.control_dependencies(checks):
            return tf.identity(image)

    def anchors_for(molded_shape):
        if fixed_anchors is not None:
            return tf.constant(fixed_anchors)
        return pre.pyramid_anchors(molded_shape[0], molded_shape[1], args["anchor_scales"],
                                   args["anchor_ratios"], args["strides"], args["anchor_stride"])

    def mold(image):
        """[H, W, 3] uint8 -> molded [MH, MW, 3] float32, meta, window."""
        image = check_image(image)
        molded, window, scale = pre.resize_image(image, args["min_dim"], args["max_dim"],
                                                 args["min_scale"], mode)
        molded = pre.mold_image(molded, args["mean_pixel"])
        meta = pre.compose_image_meta(tf.shape(image), tf.shape(molded), window, scale,
                                      args["num_classes"])
        return molded, meta, window

    def network(molded, metas, anchors):
        """[B, MH, MW, 3], [B, META], [A, 4] -> detections [B, M, 6], masks [B, M, S, S, K]."""
        batch_shape = tf.concat([tf.shape(molded)[:1], tf.shape(anchors)], 0)
        anchors = tf.broadcast_to(anchors[None], batch_shape)
        outputs = keras_model([molded, metas, anchors], training=False)
        return tf.cast(outputs[0], tf.float32), tf.cast(outputs[3], tf.float32)

    def unmold(detections, masks, image_size, molded_size, window):
        boxes, class_ids, scores, small = post.unmold_detections(
            detections, masks, image_size, molded_size, window)
        full = post.paste_masks(small, boxes, image_size[0], image_size[1])
        return {"rois": boxes, "class_ids": class_ids, "scores": scores,
                "masks": tf.cast(full, tf.uint8)}

    def detect_one(image):
        molded, meta, window = mold(image)
        detections, masks = network(molded[None], meta[None], anchors_for(tf.shape(molded)))
        return unmold(detections[0], masks[0], tf.shape(image)[:2], tf.shape(molded)[:2], window)

    def padded(result, height, width):
        """One image's result padded to M rows and [height, width, M] masks."""
        n = tf.shape(result["rois"])[0]
        pad = max_instances - n
        masks = result["masks"]
        return {
            "num_detections": n,
            "rois": tf.pad(result["rois"], [[0, pad], [0, 0]]),
            "class_ids": tf.pad(result["class_ids"], [[0, pad]]),
            "scores": tf.pad(result["scores"], [[0, pad]]),
            "masks": tf.pad(masks, [[0, height - tf.shape(masks)[0]],
                                    [0, width - tf.shape(masks)[1]], [0, pad]]),
        }

    batch_spec = {"num_detections": tf.TensorSpec([], tf.int32),
                  "rois": tf.TensorSpec([max_instances, 4], tf.int32),
                  "class_ids": tf.TensorSpec([max_instances], tf.int32),
                  "scores": tf.TensorSpec([max_instances], tf.float32),
                  "masks": tf.TensorSpec([None, None, max_instances], tf.uint8)}

    def detect_batch(images, image_sizes):
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        image_sizes = tf.cast(image_sizes, tf.int32)
        checks = [tf.debugging.assert_less_equal(
            image_sizes, tf.stack([height, width])[None],
            message="mrcnn export: image_sizes larger than the padded images")]
        with tf.control_dependencies(checks):
            images = tf.identity(images)

        def crop(args_):
            image, size = args_
            return image[:size[0], :size[1]]

        if fixed is None or per_image_network:
            # molded sizes differ per image (pad64, none), or bfloat16 (see
            # below): one network run per image
            return tf.map_fn(lambda a: padded(detect_one(crop(a)), height, width),
                             (images, image_sizes), fn_output_signature=batch_spec)
        meta_size = int(config.IMAGE_META_SIZE)
        molded, metas, windows = tf.map_fn(
            lambda a: mold(crop(a)), (images, image_sizes),
            fn_output_signature=(tf.TensorSpec([fixed, fixed, 3], tf.float32),
                                 tf.TensorSpec([meta_size], tf.float32),
                                 tf.TensorSpec([4], tf.int32)))
        detections, masks = network(molded, metas, anchors_for(None))
        return tf.map_fn(
            lambda a: padded(unmold(a[0], a[1], a[2], tf.constant([fixed, fixed]), a[3]),
                             height, width),
            (detections, masks, image_sizes, windows), fn_output_signature=batch_spec)

    root = tf.Module()
    # Track the variables, not the Keras objects (what keras.export does):
    # the SavedModel then loads with TensorFlow alone.
    root.model_variables = list(keras_model.variables)
    root.serving_default = tf.function(
        lambda image: detect_one(image),
        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")])
    signatures = {"serving_default": root.serving_default}
    if batch:
        root.serving_batch = tf.function(
            lambda images, image_sizes: detect_batch(images, image_sizes),
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images"),
                             tf.TensorSpec([None, 2], tf.int32, name="image_sizes")])
        signatures["serving_batch"] = root.serving_batch
    if image_bytes:
        def decode_and_detect(data):
            image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
            return detect_one(tf.ensure_shape(image, [None, None, 3]))
        root.serving_bytes = tf.function(
            decode_and_detect, input_signature=[tf.TensorSpec([], tf.string, name="image_bytes")])
        signatures["serving_bytes"] = root.serving_bytes
    return root, signatures, args


def export_model(model, path, batch=True, image_bytes=True, overwrite=False):
    """Write ``model`` (a MaskRCNN in inference mode) as a SavedModel at ``path``.

    batch: also write the ``serving_batch`` signature.
    image_bytes: also write the ``serving_bytes`` signature (encoded files).
    overwrite: replace an existing SavedModel at ``path``.

    Works for every INFERENCE_PRECISION (a bfloat16 model exports its
    bfloat16 graph and weights; "float32" and "bfloat16" export the folded
    BatchNorms, "float32_exact" the unfolded ones, as detect() runs them). Returns ``path``.
    Raises ValueError for a training-mode model or a config that cannot be
    exported (crop mode, not 3 channels), FileExistsError for an existing
    export without ``overwrite``.
    """
    if getattr(model, "mode", None) != "inference":
        raise ValueError("export: build the model with mode='inference' (a training model "
                         "has other inputs); load the trained weights into it, then export.")
    path = os.fspath(path)
    if os.path.exists(os.path.join(path, "saved_model.pb")) and not overwrite:
        raise FileExistsError(f"export: '{path}' already holds a SavedModel; choose another "
                              f"folder (TF Serving wants <model>/<version>/) or overwrite=True "
                              f"(--overwrite).")
    root, signatures, args = _build_module(model, batch=batch, image_bytes=image_bytes)
    tf.saved_model.save(root, path, signatures=signatures)
    info = {
        "mrcnn_version": __version__,
        "precision": model.config.INFERENCE_PRECISION,
        "signatures": sorted(signatures),
        "serving": args,
        "class_names": list(getattr(model.config, "CLASS_NAMES", []) or []),
        "config": model.config.to_dict(),
    }
    os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
    with open(os.path.join(path, "assets.extra", "mrcnn.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1, default=str)
    return path
