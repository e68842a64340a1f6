"""The inference model has Matterport's weight layout: every weight's layer
group, name, shape and position, as in ``mask_rcnn_coco.h5``
(tests/golden/matterport_r101_coco_weights.tsv, 690 weights in 233 groups),
and Matterport's layer names in Matterport's layer order
(matterport_r101_coco_layer_names_attr.txt). Models are built only, never
run (ResNet-101 at full size takes a few seconds to build)."""
import re

import pytest

from mrcnn.config import Config
from mrcnn.graph.build import build_inference_model
from tests.graph import GOLDEN_DIR
from tests.recipe import weight_kinds, weight_layers

# Layers Keras names by itself; they carry no weights and are not matched by name.
AUTO_NAMED = re.compile(r"(activation|add|zero_padding2d|max_pooling2d|input_layer)(_\d+)?$")
# Matterport's unnamed Lambda that slices the detection boxes is our DetectionBoxes.
RENAMED = {"lambda_2": "mrcnn_detection_boxes"}
# ResNet-101's extra stage-4 blocks, absent from ResNet-50 (res4a..res4f).
R101_ONLY = re.compile(r"(res|bn)4[g-w]_")


def _golden_weights():
    rows = []
    for line in (GOLDEN_DIR / "matterport_r101_coco_weights.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        group, name, shape, dtype = line.split("\t")
        assert dtype == "float32"
        rows.append((group, name, tuple(int(s) for s in re.findall(r"\d+", shape))))
    return rows


def _our_weights(model):
    """(group, "<layer>/<kind>:0", shape) for every weight, in model order."""
    rows = []
    for group, name, class_name, layer in weight_layers(model):
        for kind, variable in zip(weight_kinds(layer, class_name), layer.weights):
            rows.append((group, f"{name}/{kind}:0", tuple(variable.shape)))
    return rows


def _config(backbone, num_classes):
    class LayoutConfig(Config):
        NAME = "layout"
        IMAGES_PER_GPU = 1
        BACKBONE = backbone
        NUM_CLASSES = num_classes
    return LayoutConfig()


def _with_num_classes(rows, n):
    """Matterport's 81-class head shapes, redone for n classes."""
    head_shapes = {"mrcnn_class_logits/kernel:0": (1024, n), "mrcnn_class_logits/bias:0": (n,),
                   "mrcnn_bbox_fc/kernel:0": (1024, 4 * n), "mrcnn_bbox_fc/bias:0": (4 * n,),
                   "mrcnn_mask/kernel:0": (1, 1, 256, n), "mrcnn_mask/bias:0": (n,)}
    return [(g, name, head_shapes.get(name, shape)) for g, name, shape in rows]


@pytest.fixture(scope="module")
def coco_r101():
    return build_inference_model(_config("resnet101", 81))


def test_r101_coco_weights_match_matterport_file(coco_r101):
    golden = _golden_weights()
    ours = _our_weights(coco_r101)
    assert len(golden) == 690 and len({g for g, _, _ in golden}) == 233
    assert len(ours) == len(golden)
    for i, (a, b) in enumerate(zip(ours, golden)):
        assert a == b, f"weight {i}: ours {a}, Matterport {b}"


def test_r101_layer_names_and_order(coco_r101):
    golden = [line.split()[0] for line in
              (GOLDEN_DIR / "matterport_r101_coco_layer_names_attr.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert len(golden) == 394
    assert len(coco_r101.layers) == len(golden)
    expected = [RENAMED.get(n, n) for n in golden if not AUTO_NAMED.fullmatch(n)]
    ours = [l.name for l in coco_r101.layers if not AUTO_NAMED.fullmatch(l.name)]
    assert ours == expected
    assert coco_r101.name == "mask_rcnn"
    assert [t.name for t in coco_r101.inputs] == ["input_image", "input_image_meta",
                                                  "input_anchors"]
    # The notebook's favourite block output exists.
    assert coco_r101.get_layer("res4w_out").output.shape[-1] == 1024


def test_r50_layout_with_other_num_classes():
    model = build_inference_model(_config("resnet50", 7))
    expected = _with_num_classes([r for r in _golden_weights() if not R101_ONLY.match(r[0])], 7)
    # 17 identity blocks fewer, each 3 convs (2 weights) + 3 BNs (4 weights);
    # 384 is also the G1 count (ResNet-50).
    assert len(expected) == 690 - 17 * (3 * 2 + 3 * 4) == 384
    assert _our_weights(model) == expected
    assert model.get_layer("res4f_out") is not None
    with pytest.raises(ValueError):
        model.get_layer("res4g_out")
