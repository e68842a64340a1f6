"""Shared by tests/test_export.py and tests/test_predict_cli.py: a tiny
inference model with random weights that gives real detections, test
images, and the comparison of two sets of detections.

The model: the shapes sample's small backbone (callable BACKBONE), 32-channel
FPN, 128 px images, 20 detections, DETECTION_MIN_CONFIDENCE 0. Random weights
with the class logits scaled down (scores spread over 0.3-0.6 instead of a
saturated 1.0) and the background logit lowered (so ROIs are not all
background), and the mask logits scaled down (masks cover part of their box,
not all or nothing).
"""
import numpy as np

from mrcnn.config import Config
from mrcnn.graph.small_backbone import compute_small_backbone_shapes, small_resnet_graph

SEED = 2


class TinyConfig(Config):
    NAME = "tiny"
    GPU_COUNT = 1
    IMAGES_PER_GPU = 1
    NUM_CLASSES = 4
    BACKBONE = staticmethod(small_resnet_graph)
    COMPUTE_BACKBONE_SHAPE = staticmethod(compute_small_backbone_shapes)
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 96
    IMAGE_MAX_DIM = 128
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    TOP_DOWN_PYRAMID_SIZE = 32
    FPN_CLASSIF_FC_LAYERS_SIZE = 64
    PRE_NMS_LIMIT = 500
    POST_NMS_ROIS_INFERENCE = 100
    DETECTION_MAX_INSTANCES = 20
    DETECTION_MIN_CONFIDENCE = 0


def tiny_config(**overrides):
    return type("TinyConfig", (TinyConfig,), overrides)()


def tweak_weights(keras_model):
    """Random weights -> spread scores, mostly foreground, partial masks."""
    layer = keras_model.get_layer("mrcnn_class_logits")
    kernel = layer.get_weights()[0]
    layer.set_weights([kernel * 0.02, np.array([-1.0, 0.2, 0.2, 0.2], np.float32)])
    layer = keras_model.get_layer("mrcnn_mask")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 0.3, bias * 0])


def tiny_model(model_dir, **overrides):
    import keras

    from mrcnn import model as modellib

    keras.utils.set_random_seed(SEED)
    model = modellib.MaskRCNN("inference", tiny_config(**overrides), str(model_dir))
    tweak_weights(model.keras_model)
    return model


def smooth_image(rng, h, w):
    """A smooth random RGB image (gives the RPN something other than noise)."""
    x = rng.integers(0, 256, (h, w, 3)).astype(np.int64)
    return (np.cumsum(np.cumsum(x, 0), 1) // 97 % 256).astype(np.uint8)


def sample_images(seed=0):
    """Three sizes and aspect ratios: 100x150 (landscape, upscaled), 77x53
    grayscale repeated to RGB by the caller (portrait, neither side a
    multiple of 64), 200x90 (tall, downscaled)."""
    rng = np.random.default_rng(seed)
    gray = smooth_image(rng, 77, 53)[..., :1]
    return [smooth_image(rng, 100, 150), np.repeat(gray, 3, axis=2), smooth_image(rng, 200, 90)]


def mask_iou(a, b):
    """[N] IoU of masks [H, W, N] pairwise by index (1.0 when both are empty)."""
    a, b = a.astype(bool), b.astype(bool)
    inter = (a & b).sum(axis=(0, 1))
    union = (a | b).sum(axis=(0, 1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def agreement(ref, got):
    """Per-image agreement numbers between two detect()-style results:
    n, same_classes, max_box_diff (px), max_score_diff, min_mask_iou."""
    n = len(ref["rois"])
    out = {"n": n, "n_got": len(got["rois"])}
    if len(got["rois"]) != n:
        return out
    out["same_classes"] = bool(np.array_equal(ref["class_ids"], got["class_ids"]))
    out["max_box_diff"] = int(np.abs(ref["rois"].astype(np.int64) - got["rois"]).max()) if n else 0
    out["max_score_diff"] = float(np.abs(ref["scores"] - got["scores"]).max()) if n else 0.0
    out["min_mask_iou"] = float(mask_iou(ref["masks"], got["masks"]).min()) if n else 1.0
    return out


def assert_agree(ref, got, box_px=1, score=1e-4, iou=0.99):
    a = agreement(ref, got)
    assert a["n"] > 0, "the reference has no detections: the comparison would be empty"
    assert a["n_got"] == a["n"], a
    assert a["same_classes"], a
    assert a["max_box_diff"] <= box_px, a
    assert a["max_score_diff"] <= score, a
    assert a["min_mask_iou"] >= iou, a
    assert got["masks"].shape == ref["masks"].shape
    return a


# Runs an export in a fresh interpreter that cannot import mrcnn (nor Keras, nor
# the samples): argv = saved_model_dir in.npz out.npz. in.npz holds img0..imgK
# (uint8 [H, W, 3]); out.npz gets, for each signature, <sig>_<output><k>.
RUNNER = r'''
import sys
for blocked in ("mrcnn", "samples", "tests", "keras", "tf_keras"):
    sys.modules[blocked] = None          # "import mrcnn" now raises ImportError
import numpy as np
import tensorflow as tf

path, data, out = sys.argv[1:4]
z = np.load(data)
images = [z[k] for k in sorted(z.files, key=lambda k: int(k[3:]))]
loaded = tf.saved_model.load(path)
sigs = loaded.signatures
res = {}
for k, image in enumerate(images):
    r = sigs["serving_default"](image=tf.constant(image))
    res.update({f"default_{name}{k}": v.numpy() for name, v in r.items()})
    r = sigs["serving_bytes"](image_bytes=tf.io.encode_png(image))
    res.update({f"bytes_{name}{k}": v.numpy() for name, v in r.items()})
height = max(i.shape[0] for i in images)
width = max(i.shape[1] for i in images)
batch = np.zeros((len(images), height, width, 3), np.uint8)
for k, image in enumerate(images):
    batch[k, :image.shape[0], :image.shape[1]] = image
sizes = np.array([i.shape[:2] for i in images], np.int32)
r = sigs["serving_batch"](images=tf.constant(batch), image_sizes=tf.constant(sizes))
for k, image in enumerate(images):
    n = int(r["num_detections"][k])
    h, w = image.shape[:2]
    res[f"batch_rois{k}"] = r["rois"][k, :n].numpy()
    res[f"batch_class_ids{k}"] = r["class_ids"][k, :n].numpy()
    res[f"batch_scores{k}"] = r["scores"][k, :n].numpy()
    res[f"batch_masks{k}"] = r["masks"][k, :h, :w, :n].numpy()
    # padding is zeros
    res[f"batch_padding_clean{k}"] = np.array(
        not r["rois"][k, n:].numpy().any() and not r["scores"][k, n:].numpy().any()
        and not r["masks"][k, h:].numpy().any() and not r["masks"][k, :, w:].numpy().any()
        and not r["masks"][k, ..., n:].numpy().any())
res["mrcnn_imported"] = np.array([k for k, v in sys.modules.items()
                                  if k.split(".")[0] in ("mrcnn", "keras") and v is not None],
                                 dtype=object).astype(str)
np.savez(out, **res)
'''


def run_export_in_fresh_process(saved_model, images, workdir):
    """Run RUNNER on ``images``; returns {signature: [result dict per image]}
    and the batch padding checks."""
    import os
    import subprocess
    import sys

    workdir = str(workdir)
    script = os.path.join(workdir, "run_export.py")
    with open(script, "w") as f:
        f.write(RUNNER)
    data = os.path.join(workdir, "images.npz")
    out = os.path.join(workdir, "results.npz")
    np.savez(data, **{f"img{k}": im for k, im in enumerate(images)})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, script, str(saved_model), data, out], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    z = np.load(out, allow_pickle=False)
    assert z["mrcnn_imported"].size == 0, z["mrcnn_imported"]
    results = {}
    for sig in ("default", "bytes", "batch"):
        results[sig] = [{key: z[f"{sig}_{key}{k}"] for key in ("rois", "class_ids", "scores", "masks")}
                        for k in range(len(images))]
    padding_clean = [bool(z[f"batch_padding_clean{k}"]) for k in range(len(images))]
    return results, padding_clean
