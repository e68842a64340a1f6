"""DetectionTargetLayer: Keras 3 contract (config round trip, specs, dynamic batch) and values."""
import numpy as np
import pytest

from mrcnn.config import Config
from mrcnn.layers.detection_target import DetectionTargetLayer
from tests.layers.layer_test import run_layer_test

STD = (0.1, 0.1, 0.2, 0.2)
G1 = (0.125, 0.125, 0.375, 0.375)
FAR = (0.0, 0.875, 0.0625, 1.0)
KWARGS = dict(train_rois_per_image=4, roi_positive_ratio=0.5, mask_shape=(5, 5),
              use_mini_mask=False, bbox_std_dev=STD)


def _inputs():
    """One positive (G1, IoU 1) and one negative: nothing is left to chance."""
    proposals = np.array([[G1, FAR, (0, 0, 0, 0)]], np.float32)
    class_ids = np.array([[3, 0]], np.int32)
    boxes = np.array([[G1, (0, 0, 0, 0)]], np.float32)
    masks = np.zeros((1, 17, 17, 2), bool)
    masks[0, :, 10:, 0] = True
    return [proposals, class_ids, boxes, masks]


def test_layer_contract_and_values():
    rois, class_ids, deltas, masks = run_layer_test(DetectionTargetLayer, KWARGS, _inputs())
    np.testing.assert_array_equal(rois[0], [G1, FAR, (0, 0, 0, 0), (0, 0, 0, 0)])
    np.testing.assert_array_equal(class_ids[0], [3, 0, 0, 0])
    np.testing.assert_array_equal(deltas, 0)
    # G1 spans columns 2..6 of the 17-pixel mask: all below 10 -> empty mask.
    np.testing.assert_array_equal(masks, 0)
    assert class_ids.dtype == np.int32 and masks.shape == (1, 4, 5, 5)


def test_matterport_config_call():
    class C(Config):
        NAME = "t"
        TRAIN_ROIS_PER_IMAGE = 32
        MASK_POOL_SIZE = 7
        MASK_SHAPE = [14, 14]

    layer = DetectionTargetLayer(C(), name="proposal_targets")
    cfg = layer.get_config()
    assert cfg["train_rois_per_image"] == 32 and cfg["mask_shape"] == [14, 14]
    assert cfg["roi_positive_ratio"] == 0.33 and cfg["use_mini_mask"] is True
    assert cfg["bbox_std_dev"] == [0.1, 0.1, 0.2, 0.2]
    assert not any(isinstance(v, Config) for v in vars(layer).values())
    # Explicit arguments win over the config's values.
    assert DetectionTargetLayer(16, config=C()).train_rois_per_image == 16


def test_missing_argument_is_named():
    with pytest.raises(ValueError, match="mask_shape"):
        DetectionTargetLayer(4, 0.5, None, False, STD)
