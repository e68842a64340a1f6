"""Export to a self-contained SavedModel (mrcnn.export, mrcnn.ops.preprocess,
mrcnn.ops.postprocess): the in-graph steps against detect()'s NumPy steps,
and the export, loaded in a process that cannot import mrcnn, against
detect() with the same weights.

Agreement required (issue 12): same class ids, boxes within 1 px, scores
within 1e-4, mask IoU >= 0.99 per detection; observed: identical (0 px, 0.0,
IoU 1.0) for float32 and for bfloat16 in square mode (see
README.md for bfloat16 in pad64 mode).
"""
import json

import numpy as np
import pytest
import tensorflow as tf

from mrcnn import arguments, transform
from mrcnn import model as modellib
from mrcnn import resize as mrcnn_resize
from mrcnn import utils
from mrcnn.ops import postprocess, preprocess
from tests.export_helpers import (agreement, assert_agree, run_export_in_fresh_process,
                                  sample_images, smooth_image, tiny_config, tiny_model)

# ----------------------------------------------------------------------
# The in-graph steps against the NumPy ones (eager and in a tf.function)
# ----------------------------------------------------------------------

RESIZE_CASES = [  # (mode, min_dim, max_dim, min_scale)
    ("square", 800, 1024, 0),      # Matterport's default: upscale
    ("square", 100, 128, 0),       # max_dim caps the scale: downscale
    ("square", 64, 64, 0),
    ("pad64", 64, None, 0),
    ("pad64", None, None, 1.5),    # min_scale
    ("none", None, None, 0),
]


def _images_for_resize(seed=1):
    """Random, flat (value -> truncation is the hard case), smooth and
    no-zero images of odd sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for k, (h, w) in enumerate([(37, 91), (100, 150), (77, 53), (200, 90), (2, 5), (128, 64)]):
        kind = k % 4
        if kind == 0:
            out.append(rng.integers(0, 256, (h, w, 3)).astype(np.uint8))
        elif kind == 1:
            out.append(np.full((h, w, 3), rng.integers(1, 256), np.uint8))
        elif kind == 2:
            out.append(smooth_image(rng, h, w))
        else:
            out.append(rng.integers(40, 200, (h, w, 3)).astype(np.uint8))
    return out


@pytest.mark.parametrize("mode, min_dim, max_dim, min_scale", RESIZE_CASES)
def test_resize_image_is_bit_identical_to_utils(mode, min_dim, max_dim, min_scale):
    graph_resize = tf.function(lambda im: preprocess.resize_image(im, min_dim, max_dim,
                                                                  min_scale, mode))
    for image in _images_for_resize():
        if mode == "none" and (image.shape[0] % 64 or image.shape[1] % 64):
            continue
        want, want_window, want_scale, _, _ = utils.resize_image(image, min_dim, max_dim,
                                                                 min_scale, mode)
        for got, window, scale in [preprocess.resize_image(image, min_dim, max_dim,
                                                           min_scale, mode),
                                   graph_resize(tf.constant(image))]:
            assert got.dtype == tf.uint8
            np.testing.assert_array_equal(got.numpy(), want, err_msg=f"{image.shape} {mode}")
            assert tuple(window.numpy()) == tuple(want_window)
            assert float(scale) == float(want_scale)


def test_resize_bilinear_matches_skimage_path_on_float_images():
    rng = np.random.default_rng(3)
    for (h, w), (oh, ow) in [((10, 7), (33, 21)), ((50, 40), (17, 23)), ((3, 3), (3, 3))]:
        image = rng.random((h, w, 3)) * 255
        np.testing.assert_array_equal(preprocess.resize_bilinear(image, oh, ow).numpy(),
                                      mrcnn_resize._resize_bilinear(image, (oh, ow)))


def test_resize_image_refuses_crop_mode():
    with pytest.raises(ValueError, match="crop"):
        preprocess.resize_image(np.zeros((8, 8, 3), np.uint8), 64, 64, 0, "crop")


@pytest.mark.parametrize("mode", ["square", "pad64"])
def test_mold_and_meta_are_detects(mode):
    config = tiny_config(IMAGE_RESIZE_MODE=mode, IMAGE_MIN_DIM=64 if mode == "pad64" else 96)
    spec = arguments.image_spec(config)   # what detect() molds with
    for image in sample_images():
        molded, meta, window = transform.mold_one(image, spec)
        u8, g_window, scale = preprocess.resize_image(
            image, config.IMAGE_MIN_DIM, config.IMAGE_MAX_DIM, config.IMAGE_MIN_SCALE, mode)
        g_molded = preprocess.mold_image(u8, config.MEAN_PIXEL)
        g_meta = preprocess.compose_image_meta(image.shape, tf.shape(g_molded), g_window,
                                               scale, config.NUM_CLASSES)
        np.testing.assert_array_equal(g_molded.numpy(), molded.astype(np.float32))
        np.testing.assert_array_equal(g_meta.numpy(), meta.astype(np.float32))
        np.testing.assert_array_equal(g_window.numpy(), window)


@pytest.mark.parametrize("size", [(128, 128), (64, 192), (320, 576), (1024, 1024)])
def test_anchors_are_get_anchors(size):
    config = tiny_config(BACKBONE="resnet50", COMPUTE_BACKBONE_SHAPE=None,
                         RPN_ANCHOR_SCALES=(32, 64, 128, 256, 512))
    want = arguments.anchor_spec(config).normalized_anchors(size)   # what get_anchors gives
    got = preprocess.pyramid_anchors(size[0], size[1], config.RPN_ANCHOR_SCALES,
                                     config.RPN_ANCHOR_RATIOS, config.BACKBONE_STRIDES,
                                     config.RPN_ANCHOR_STRIDE)
    assert got.dtype == tf.float32
    np.testing.assert_array_equal(got.numpy(), want)
    pixels = preprocess.pyramid_anchors(size[0], size[1], config.RPN_ANCHOR_SCALES, [0.5, 2],
                                        config.BACKBONE_STRIDES, 2, normalized=False)
    shapes = np.array([[-(-size[0] // s), -(-size[1] // s)] for s in config.BACKBONE_STRIDES])
    np.testing.assert_array_equal(pixels.numpy(), utils.generate_pyramid_anchors(
        config.RPN_ANCHOR_SCALES, [0.5, 2], shapes, config.BACKBONE_STRIDES, 2))


def test_unmold_and_paste_reproduce_golden_detect(golden_dir):
    """Golden network outputs (G1) in, golden detect() results out, exactly."""
    g1 = np.load(golden_dir / "g1_model.npz")
    meta = g1["image_meta"][0]
    boxes, class_ids, scores, masks = postprocess.unmold_detections(
        g1["mrcnn_detection"][0], g1["mrcnn_mask"][0], [512, 512], meta[4:6].astype(int),
        g1["window"][0])
    full = postprocess.paste_masks(masks, boxes, 512, 512)
    np.testing.assert_array_equal(boxes.numpy(), g1["detect_rois"])
    np.testing.assert_array_equal(class_ids.numpy(), g1["detect_class_ids"])
    np.testing.assert_array_equal(scores.numpy(), g1["detect_scores"])
    np.testing.assert_array_equal(full.numpy(), g1["detect_masks"].astype(bool))


def test_paste_masks_is_model_paste_masks_for_odd_boxes():
    """Boxes past the image, inverted and empty boxes, no detections."""
    rng = np.random.default_rng(0)
    masks = rng.random((40, 28, 28)).astype(np.float32)
    corner = rng.integers(-30, 120, (40, 2))
    boxes = np.concatenate([corner, corner + rng.integers(-3, 90, (40, 2))], axis=1)
    np.testing.assert_array_equal(postprocess.paste_masks(masks, boxes, 100, 90).numpy(),
                                  modellib.paste_masks(masks, boxes, (100, 90)))
    empty = postprocess.paste_masks(np.zeros((0, 28, 28), np.float32), np.zeros((0, 4)), 30, 40)
    assert empty.shape == (30, 40, 0)


def test_unmold_drops_padding_and_zero_area_as_detect():
    det = np.zeros((4, 6), np.float32)
    det[0] = [0.1, 0.1, 0.5, 0.5, 1, 0.9]
    det[1] = [0.3, 0.3, 0.3, 0.3, 2, 0.8]
    det[2] = [0.3, 0.3, 0.2, 0.5, 3, 0.7]   # y2 < y1: negative area, dropped
    mask = np.random.default_rng(1).random((4, 28, 28, 4)).astype(np.float32)
    want = modellib.MaskRCNN.__new__(modellib.MaskRCNN).unmold_detections(
        det, mask, (101, 101, 3), (101, 101, 3), np.array([0, 0, 101, 101]))
    got = postprocess.unmold_detections(det, mask, [101, 101], [101, 101], [0, 0, 101, 101])
    for w, g in zip(want[:3], got[:3]):
        np.testing.assert_array_equal(g.numpy(), w)
    np.testing.assert_array_equal(
        postprocess.paste_masks(got[3], got[0], 101, 101).numpy(), want[3])


# ----------------------------------------------------------------------
# The export against detect(), in a fresh process without mrcnn
# ----------------------------------------------------------------------

def _unknown_shape_detect(model):
    """Make detect() run its network through a tf.function traced for
    unknown image sizes (what it relaxes to after its first molded size)."""
    km = model.keras_model

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32),
                                  tf.TensorSpec([None, None], tf.float32),
                                  tf.TensorSpec([None, None, 4], tf.float32)])
    def predict(images, metas, anchors):
        outputs = km([images, metas, anchors], training=False)
        return outputs[0], outputs[3]
    model._predict_fn = {model.config.BATCH_SIZE: predict}   # one function per batch size


def _export_and_compare(tmp_path, tolerance=None, unknown_shape_detect=False, **overrides):
    tolerance = tolerance or {}
    model = tiny_model(tmp_path / "logs", **overrides)
    images = sample_images()
    if unknown_shape_detect:
        _unknown_shape_detect(model)
    want = model.detect(images)
    path = model.export(tmp_path / "export" / "1")
    results, padding_clean = run_export_in_fresh_process(path, images, tmp_path)
    numbers = {(sig, images[k].shape[:2]): agreement(w, g)
               for sig, got in results.items() for k, (w, g) in enumerate(zip(want, got))}
    print("\nagreement", overrides or "float32 square", json.dumps(
        {f"{s} {h}x{w}": a for (s, (h, w)), a in numbers.items()}))
    for sig, got in results.items():
        for w, g in zip(want, got):
            assert g["masks"].dtype == np.uint8
            assert_agree(w, g, **tolerance.get(sig, {}))
    assert all(padding_clean)
    return model, path, images, want


@pytest.fixture(scope="module")
def float32_export(tmp_path_factory):
    """(tmp dir, model, export path, images, detect() results), float32 square,
    compared with detect() through the three signatures."""
    tmp = tmp_path_factory.mktemp("float32_export")
    return (tmp,) + _export_and_compare(tmp)


def test_float32_export_gives_detects_detections(float32_export):
    """Three sizes (one grayscale repeated to RGB, one with no side a
    multiple of 64), each through serving_default, serving_bytes (PNG) and
    serving_batch (padded batch of the three), against detect()."""
    tmp, model, path, images, want = float32_export
    assert sum(len(r["rois"]) for r in want) >= 30
    assert len({int(c) for r in want for c in r["class_ids"]}) >= 2   # several classes
    filled = np.concatenate([r["masks"].sum(axis=(0, 1)) for r in want])
    assert (filled > 0).mean() > 0.5                                 # real masks
    info = json.loads((tmp / "export" / "1" / "assets.extra" / "mrcnn.json").read_text())
    assert info["serving"]["mode"] == "square" and info["precision"] == "float32"
    with pytest.raises(FileExistsError, match="already holds"):
        model.export(path)


def test_export_handles_tiny_images_and_rejects_one_pixel_ones(float32_export):
    """An image smaller than the smallest anchor molds and detects as in
    detect(); a 1-pixel-high image is refused with a message."""
    tmp, model, path, images, want = float32_export
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    tiny = np.full((8, 10, 3), 128, np.uint8)
    got = {k: v.numpy() for k, v in serve(image=tf.constant(tiny)).items()}
    assert_agree(model.detect([tiny])[0], got)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 2x2"):
        serve(image=tf.constant(np.zeros((1, 64, 3), np.uint8)))


# TFLite: convert with select TF ops, run in tf.lite.Interpreter, in a
# process without mrcnn. Prints a JSON line: the outcome and the results.
TFLITE_RUNNER = r'''
import json, sys
for blocked in ("mrcnn", "samples", "tests", "keras"):
    sys.modules[blocked] = None
import numpy as np
import tensorflow as tf

path, data, out = sys.argv[1:4]
report = {}
builtins = tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=["serving_default"])
try:
    builtins.convert()
    report["builtins_only"] = "converted"
except Exception as e:
    report["builtins_only"] = " ".join(str(e).split())[-600:]
converter = tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=["serving_default"])
converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                       tf.lite.OpsSet.SELECT_TF_OPS]
blob = converter.convert()
report["converted_bytes"] = len(blob)
z = np.load(data)
res = {}
try:
    runner = tf.lite.Interpreter(model_content=blob).get_signature_runner("serving_default")
    for k in range(len(z.files)):
        for name, v in runner(image=z[f"img{k}"]).items():
            res[f"{name}{k}"] = v
    report["interpreter"] = "ran"
except RuntimeError as e:
    report["interpreter"] = " ".join(str(e).split())
np.savez(out, **res)
print("REPORT " + json.dumps(report))
'''


def test_tflite_conversion_and_interpreter(float32_export):
    """The export converts to TFLite with select TF ops. If tf.lite.Interpreter
    runs it, the results are detect()'s; TensorFlow 2.21's pip interpreter
    has no Flex delegate, and then the failure must be the one
    README.md documents."""
    import os
    import pathlib
    import subprocess
    import sys

    tmp, model, path, images, want = float32_export
    script = tmp / "run_tflite.py"
    script.write_text(TFLITE_RUNNER)
    data = tmp / "images.npz"
    np.savez(data, **{f"img{k}": im for k, im in enumerate(images)})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, str(script), str(path), str(data),
                           str(tmp / "tflite.npz")], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.split("REPORT ", 1)[1])
    print("\ntflite", report)
    assert report["converted_bytes"] > 0
    # Without select TF ops the converter stops (the mask pasting loop and
    # ROIAlign's CropAndResize have no TFLite builtin).
    assert report["builtins_only"] != "converted"
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    if report["interpreter"] == "ran":
        z = np.load(tmp / "tflite.npz")
        for k, w in enumerate(want):
            assert_agree(w, {key: z[f"{key}{k}"] for key in ("rois", "class_ids", "scores",
                                                               "masks")})
    else:
        assert "Make sure you apply/link the Flex delegate before inference" in report["interpreter"]
        assert "Make sure you apply/link the Flex delegate before inference" in " ".join(
            readme.split())


def test_bfloat16_export_gives_bfloat16_detects_detections(tmp_path):
    """bfloat16, square mode: identical to detect() of the same bfloat16
    model, through all three signatures (serving_batch runs the images one by
    one in bfloat16, see mrcnn.export)."""
    model, _, _, _ = _export_and_compare(tmp_path, INFERENCE_PRECISION="bfloat16")
    assert model.keras_model.get_layer("fpn_c5p5").compute_dtype == "bfloat16"


@pytest.mark.slow
def test_bfloat16_pad64_export_gives_unknown_shape_detect(tmp_path):
    """bfloat16, pad64 mode: the molded size is known only at run time, so the
    export's convolutions run unfused from their bias add (Grappler fuses only
    fully known shapes); it gives exactly what detect() gives on its
    unknown-shape trace. (detect()'s first call for a size runs fused, which
    rounds differently: see README.md.)"""
    _export_and_compare(tmp_path, unknown_shape_detect=True, INFERENCE_PRECISION="bfloat16",
                        IMAGE_RESIZE_MODE="pad64", IMAGE_MIN_DIM=64)


def test_pad64_export_computes_anchors_per_size(tmp_path):
    """pad64: the molded size (and so the anchors) differs per image;
    serving_batch runs the images one by one."""
    _export_and_compare(tmp_path, IMAGE_RESIZE_MODE="pad64", IMAGE_MIN_DIM=64)


def test_export_refuses_what_it_cannot_reproduce(tmp_path):
    from mrcnn import export

    model = modellib.MaskRCNN.__new__(modellib.MaskRCNN)
    model.mode = "training"
    with pytest.raises(ValueError, match="inference"):
        export.export_model(model, tmp_path / "x")
    with pytest.raises(ValueError, match="crop"):
        export.serving_args(tiny_config(IMAGE_RESIZE_MODE="crop", IMAGE_MIN_DIM=64))

    def odd_shapes(image_shape):
        return np.array([[int(image_shape[0]) // s + 1, int(image_shape[1]) // s + 1]
                         for s in (4, 8, 16, 32, 64)])
    config = tiny_config(IMAGE_RESIZE_MODE="pad64", IMAGE_MIN_DIM=64,
                         COMPUTE_BACKBONE_SHAPE=staticmethod(odd_shapes))
    with pytest.raises(ValueError, match="COMPUTE_BACKBONE_SHAPE"):
        export._check_dynamic_anchors(config, export.serving_args(config))


def test_agreement_numbers_catch_a_difference():
    """The comparison itself: a 2 px box shift, a flipped class and a changed
    mask are reported."""
    rng = np.random.default_rng(0)
    ref = {"rois": np.array([[1, 2, 30, 40]]), "class_ids": np.array([1]),
           "scores": np.array([0.5], np.float32),
           "masks": rng.random((50, 50, 1)) > 0.5}
    other = {"rois": ref["rois"] + 2, "class_ids": np.array([2]),
             "scores": ref["scores"] + 1e-3, "masks": ~ref["masks"]}
    a = agreement(ref, other)
    assert a["max_box_diff"] == 2 and not a["same_classes"]
    assert a["max_score_diff"] > 1e-4 and a["min_mask_iou"] == 0.0
