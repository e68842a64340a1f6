"""PyramidROIAlign layer: Keras contract and Matterport's golden values."""
import numpy as np
import pytest

from mrcnn.layers import PyramidROIAlign
from tests.layers.layer_test import run_layer_test


@pytest.fixture(scope="module")
def g1(golden_dir):
    return np.load(golden_dir / "g1_model.npz")


def _inputs(g1, boxes_key="roialign_boxes8", rows=None):
    boxes = g1[boxes_key] if rows is None else g1[boxes_key][:, :rows]
    meta = g1["image_meta"].astype(np.float32)
    return [boxes, meta] + [g1[f"fpn_p{i}"] for i in range(2, 6)]


def test_layer_contract_and_golden_7x7(g1):
    (out,) = run_layer_test(PyramidROIAlign, {"pool_shape": (7, 7), "name": "roi_align_classifier"}, _inputs(g1))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, g1["roialign_out8"])


def test_golden_14x14_edge_and_model_rois(g1):
    layer14 = PyramidROIAlign([14, 14], name="roi_align_mask")
    np.testing.assert_array_equal(layer14(_inputs(g1)), g1["roialign_out8_14"])
    layer7 = PyramidROIAlign((7, 7))
    np.testing.assert_array_equal(layer7(_inputs(g1, "roialign_edge_boxes")), g1["roialign_edge_out"])
    np.testing.assert_array_equal(layer7(_inputs(g1, "ROI", rows=32)), g1["roi_align_classifier_first32"])


def test_float64_meta_and_bad_pool_shape(g1):
    # The golden meta is float64 (as mold_inputs builds it); the layer reads it as is.
    inputs = _inputs(g1)
    inputs[1] = g1["image_meta"]
    np.testing.assert_array_equal(PyramidROIAlign((7, 7))(inputs), g1["roialign_out8"])
    with pytest.raises(ValueError, match="pool_shape"):
        PyramidROIAlign((7,))
