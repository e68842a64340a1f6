"""Tests of mrcnn.graph: layer names, weight layout, golden numbers (set G1)."""
import functools
import json
import pathlib

import numpy as np

from mrcnn.config import Config

GOLDEN_DIR = pathlib.Path(__file__).parents[1] / "golden"

# The fields GOLDEN.md section 2 sets for G1; everything else is Matterport's default.
G1_OVERRIDES = ("NAME", "GPU_COUNT", "IMAGES_PER_GPU", "BACKBONE", "NUM_CLASSES",
                "IMAGE_RESIZE_MODE", "IMAGE_MIN_DIM", "IMAGE_MAX_DIM", "RPN_ANCHOR_SCALES",
                "POST_NMS_ROIS_INFERENCE", "DETECTION_MIN_CONFIDENCE",
                "DETECTION_MAX_INSTANCES")


# The float32 inference precisions the golden tests run in (Config.INFERENCE_PRECISION):
# "float32" folds the frozen BatchNorms into their convolutions, "float32_exact"
# computes them as Matterport does. Both must meet the same tolerances.
G1_PRECISIONS = ("float32", "float32_exact")


def g1_config(precision=None):
    """The G1 Config, its overrides read from tests/golden/g1_config.json
    (and INFERENCE_PRECISION ``precision`` when given; Matterport's run had
    none, so it is not in the file).

    Checks that every other field the golden run displayed equals our default,
    so a drift in Config defaults shows up here instead of as odd numbers.
    """
    golden = json.loads((GOLDEN_DIR / "g1_config.json").read_text())
    attrs = {k: (tuple(golden[k]) if isinstance(golden[k], list) else golden[k])
             for k in G1_OVERRIDES}
    if precision is not None:
        attrs["INFERENCE_PRECISION"] = precision
    config = type("G1Config", (Config,), attrs)()
    ours = config.to_dict()
    for key, value in golden.items():
        if key == "COMPUTE_BACKBONE_SHAPE" and value is None:
            assert config.COMPUTE_BACKBONE_SHAPE is None
            continue
        assert np.allclose(np.asarray(ours[key], dtype=float) if not isinstance(value, (str, dict, bool)) else 0,
                           np.asarray(value, dtype=float) if not isinstance(value, (str, dict, bool)) else 0) \
            if not isinstance(value, (str, dict, bool)) else ours[key] == value, \
            f"G1 config field {key}: golden {value!r}, ours {ours[key]!r}"
    return config


def g1_golden():
    """The G1 arrays (tests/golden/g1_model.npz), loaded into memory."""
    with np.load(GOLDEN_DIR / "g1_model.npz") as z:
        return {k: z[k] for k in z.files}


@functools.cache
def g1_model(precision="float32"):
    """Our G1 inference model in INFERENCE_PRECISION ``precision`` with the
    recipe weights, built once per process and precision (both golden test
    modules use it)."""
    from mrcnn.graph.build import build_inference_model
    from tests.recipe import apply_recipe

    model = build_inference_model(g1_config(precision))
    assert apply_recipe(model) == 384
    return model


def g1_inputs(golden, batch=1):
    """The golden model inputs [molded_image, image_meta, anchors], repeated
    ``batch`` times along the batch axis."""
    inputs = [golden["molded_image"], golden["image_meta"].astype(np.float32),
              golden["anchors"][np.newaxis]]
    return [np.repeat(x, batch, axis=0) for x in inputs]


# ---------------------------------------------------------------------------
# ROIs on the image's far edge (GOLDEN.md section 6.4)
# ---------------------------------------------------------------------------
#
# A proposal clipped to x2 (or y2) = 1.0 has its last ROIAlign sample column
# exactly on the feature map's last pixel; the last bit of x1, i.e. float
# round-off anywhere upstream (another CPU's convolution kernels), puts it
# 1 ulp inside or outside, and crop_and_resize then reads the pixel or 0.
# The classifier row of such an ROI jumps (0.36 in a probability here), and
# so may the detections made from it. Measured: 2 of the 86 far-edge rows of
# G1 on the AMD EPYC machines the golden data was checked on, 5 on an Intel
# Xeon (Sapphire Rapids); no other row ever. The tests allow at most
# FAR_EDGE_FLIP_FRACTION of the far-edge rows to jump, and only those.
FAR_EDGE_FLIP_FRACTION = 0.1


def far_edge_rows(rois):
    """[N] bool: the ROIs with a coordinate at the far edge (1.0)."""
    return np.any(rois == 1.0, axis=1)


def flipped_rows(ours, golden, atol):
    """Indices of the rows of two [N, ...] arrays that differ by more than atol."""
    diff = np.abs(ours - golden).reshape(len(golden), -1).max(axis=1)
    return np.nonzero(diff > atol)[0]


def detection_sources(rois, probs, deltas, window, detections,
                      bbox_std_dev=(0.1, 0.1, 0.2, 0.2)):
    """The ROI row each real detection was refined from.

    rois [N, 4], probs [N, K], deltas [N, K, 4] (before BBOX_STD_DEV), window
    [4] normalized, detections [D, 6] zero-padded; returns [real D] ints.
    """
    from mrcnn.ops.boxes import apply_box_deltas_graph, clip_boxes_graph
    class_ids = probs.argmax(axis=1)
    chosen = deltas[np.arange(len(rois)), class_ids] * np.asarray(bbox_std_dev, np.float32)
    refined = clip_boxes_graph(apply_box_deltas_graph(rois, chosen),
                               np.asarray(window, np.float32)).numpy()
    sources = []
    for row in detections:
        if row[4] == 0:
            break
        cost = np.abs(refined - row[:4]).max(axis=1) + (class_ids != row[4])
        sources.append(int(np.argmin(cost)))
    return np.array(sources, dtype=int)


def match_detection_sets(golden, ours, golden_sources, our_sources, flipped, atol):
    """Golden and our detections as sets, with the far-edge flips allowed.

    golden, ours: [D, >=6] rows (y1, x1, y2, x2, class_id, score, ...),
        zero-padded; *_sources: the ROI row of each real detection.
    flipped: ROI rows whose classifier outputs jumped.
    A golden detection must be found (same class, box within atol) unless it
    comes from a flipped row, or scores below every one of ours (pushed past
    DETECTION_MAX_INSTANCES by a detection from a flipped row); a detection
    of ours must be golden's unless it comes from a flipped row.
    Returns [matched golden rows] -> our rows (an int array, -1 = unmatched).
    """
    flipped = set(int(r) for r in flipped)
    n_golden, n_ours = len(golden_sources), len(our_sources)
    index, used = [], set()
    for row in golden[:n_golden]:
        hits = [j for j in range(n_ours) if j not in used and ours[j, 4] == row[4]
                and np.abs(ours[j, :4] - row[:4]).max() < atol]
        index.append(hits[0] if hits else -1)
        if hits:
            used.add(hits[0])
    index = np.array(index, dtype=int)
    lowest = ours[:n_ours, 5].min() if n_ours else np.inf
    for g in np.nonzero(index < 0)[0]:
        assert golden_sources[g] in flipped or golden[g, 5] < lowest, (
            f"golden detection {g} {golden[g]} is missing and neither comes from a "
            f"far-edge ROI that flipped nor fell below our lowest score {lowest}")
    for j in sorted(set(range(n_ours)) - used):
        assert our_sources[j] in flipped, (
            f"our detection {j} {ours[j]} is not golden and does not come from a "
            f"far-edge ROI that flipped")
    return index


def _window(golden):
    """The golden image's window, normalized: [(y1, x1, y2, x2)]."""
    meta = golden["image_meta"][0]
    h, w = meta[4], meta[5]
    y1, x1, y2, x2 = meta[7:11]
    return np.array([y1 / (h - 1), x1 / (w - 1), (y2 - 1) / (h - 1), (x2 - 1) / (w - 1)],
                    np.float32)


def flipped_far_edge_rows(outputs, golden):
    """The far-edge ROI rows whose classifier outputs jumped."""
    rows = np.union1d(
        flipped_rows(outputs["mrcnn_class"][0], golden["mrcnn_class"][0], 1e-4),
        flipped_rows(outputs["mrcnn_bbox"][0], golden["mrcnn_bbox"][0], 1e-3))
    return rows


def match_detections(outputs, golden, atol=1e-4):
    """G1's golden mrcnn_detection rows -> rows of ours (-1: allowed to be
    missing, see match_detection_sets), from the model outputs of
    test_inference_g1.OUTPUT_KEYS (batch of one)."""
    rois, window = golden["ROI"][0], _window(golden)
    golden_sources = detection_sources(rois, golden["mrcnn_class"][0],
                                       golden["mrcnn_bbox"][0], window,
                                       golden["mrcnn_detection"][0])
    our_sources = detection_sources(outputs["ROI"][0], outputs["mrcnn_class"][0],
                                    outputs["mrcnn_bbox"][0], window,
                                    outputs["mrcnn_detection"][0])
    return match_detection_sets(golden["mrcnn_detection"][0], outputs["mrcnn_detection"][0],
                                golden_sources, our_sources, flipped_far_edge_rows(outputs, golden), atol)
