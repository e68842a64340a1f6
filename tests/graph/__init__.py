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


def g1_config():
    """The G1 Config, its overrides read from tests/golden/g1_config.json.

    Checks that every other field the golden run displayed equals our default,
    so a drift in Config defaults shows up here instead of as odd numbers.
    """
    golden = json.loads((GOLDEN_DIR / "g1_config.json").read_text())
    attrs = {k: (tuple(golden[k]) if isinstance(golden[k], list) else golden[k])
             for k in G1_OVERRIDES}
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
def g1_model():
    """Our G1 inference model with the recipe weights, built once per process
    (both golden test modules use it)."""
    from mrcnn.graph.build import build_inference_model
    from tests.recipe import apply_recipe

    model = build_inference_model(g1_config())
    assert apply_recipe(model) == 384
    return model


def g1_inputs(golden, batch=1):
    """The golden model inputs [molded_image, image_meta, anchors], repeated
    ``batch`` times along the batch axis."""
    inputs = [golden["molded_image"], golden["image_meta"].astype(np.float32),
              golden["anchors"][np.newaxis]]
    return [np.repeat(x, batch, axis=0) for x in inputs]
