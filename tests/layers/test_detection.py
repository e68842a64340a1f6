"""DetectionLayer: Keras contract, Matterport-compatible constructor, golden detections."""
import numpy as np
import pytest

from mrcnn.config import Config
from mrcnn.layers import DetectionLayer
from tests.layers.layer_test import run_layer_test

G1_KWARGS = {"detection_min_confidence": 0.0, "detection_max_instances": 50}


@pytest.fixture(scope="module")
def g1(golden_dir):
    return np.load(golden_dir / "g1_model.npz")


def _detlayer_inputs(g1):
    return [g1["detlayer_rois"], g1["detlayer_probs"], g1["detlayer_deltas"], g1["detlayer_image_meta"].astype(np.float32)]


def test_layer_contract_and_golden_model_detections(g1):
    inputs = [g1["ROI"], g1["mrcnn_class"], g1["mrcnn_bbox"], g1["image_meta"].astype(np.float32)]
    (out,) = run_layer_test(DetectionLayer, dict(G1_KWARGS, name="mrcnn_detection"), inputs)
    assert out.shape == (1, 50, 6) and out.dtype == np.float32
    np.testing.assert_allclose(out, g1["mrcnn_detection"], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "key, kwargs",
    [
        ("A", {}),
        ("B", {"detection_min_confidence": 0.7, "detection_max_instances": 5}),
        ("C", {"detection_nms_threshold": 0.6, "detection_max_instances": 8}),
    ],
)
def test_golden_detlayer_cases(g1, key, kwargs):
    # Padded image: window (32, 0, 224, 256) in a 256x256 molded image.
    layer = DetectionLayer(**dict(G1_KWARGS, **kwargs))
    np.testing.assert_allclose(layer(_detlayer_inputs(g1)).numpy(), g1[f"detlayer_out_{key}"], rtol=0, atol=1e-6)


def test_matterport_constructor_reads_config_and_does_not_keep_it(g1):
    class DetConfig(Config):
        NAME = "golden"
        NUM_CLASSES = 5
        DETECTION_MIN_CONFIDENCE = 0.7
        DETECTION_MAX_INSTANCES = 5

    for layer in (DetectionLayer(config=DetConfig(), name="mrcnn_detection"),
                  DetectionLayer(DetConfig(), name="mrcnn_detection")):  # Matterport passes it positionally
        assert not any(isinstance(v, Config) for v in vars(layer).values())
        cfg = layer.get_config()
        assert "config" not in cfg
        assert cfg["detection_max_instances"] == 5 and cfg["detection_min_confidence"] == 0.7
        assert cfg["detection_nms_threshold"] == 0.3 and cfg["bbox_std_dev"] == [0.1, 0.1, 0.2, 0.2]
        assert cfg["detection_cross_class_nms_threshold"] is None
        np.testing.assert_allclose(layer(_detlayer_inputs(g1)).numpy(), g1["detlayer_out_B"], rtol=0, atol=1e-6)


def test_constructor_validation():
    with pytest.raises(ValueError, match="bbox_std_dev"):
        DetectionLayer(bbox_std_dev=(0.1,))
    with pytest.raises(ValueError, match="detection_max_instances"):
        DetectionLayer(detection_max_instances=0)


def test_cross_class_nms_threshold_from_config_and_round_trip():
    from mrcnn.arguments import layer_args
    from mrcnn.recipes import CpuShapesConfig

    args = layer_args(CpuShapesConfig())["detection"]
    assert args["detection_cross_class_nms_threshold"] == 0.5
    layer = DetectionLayer(**args, name="mrcnn_detection")
    clone = DetectionLayer.from_config(layer.get_config())
    assert clone.detection_cross_class_nms_threshold == 0.5

    class Plain(Config):
        NAME = "plain"

    assert layer_args(Plain())["detection"]["detection_cross_class_nms_threshold"] is None

    class Bad(Config):
        NAME = "bad"
        DETECTION_CROSS_CLASS_NMS_THRESHOLD = 1.5

    with pytest.raises(ValueError, match="DETECTION_CROSS_CLASS_NMS_THRESHOLD"):
        Bad()
