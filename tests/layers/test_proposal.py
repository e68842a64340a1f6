"""ProposalLayer: Keras contract, Matterport-compatible constructor, golden ROI."""
import numpy as np
import pytest

from mrcnn.config import Config
from mrcnn.layers import ProposalLayer
from tests.layers.layer_test import run_layer_test


@pytest.fixture(scope="module")
def g1(golden_dir):
    return np.load(golden_dir / "g1_model.npz")


def _inputs(g1):
    return [g1["rpn_class"], g1["rpn_bbox"], g1["anchors"][None]]


def test_layer_contract_and_golden_roi(g1):
    kwargs = {"proposal_count": 300, "nms_threshold": 0.7, "name": "ROI"}
    (out,) = run_layer_test(ProposalLayer, kwargs, _inputs(g1))
    assert out.shape == (1, 300, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out, g1["ROI"], rtol=0, atol=1e-6)


def test_matterport_constructor_reads_config_and_does_not_keep_it(g1):
    class G1Config(Config):
        NAME = "golden"
        PRE_NMS_LIMIT = 50
        RPN_BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])

    layer = ProposalLayer(proposal_count=300, nms_threshold=0.7, config=G1Config(), name="ROI")
    assert layer.pre_nms_limit == 50
    assert not any(isinstance(v, Config) for v in vars(layer).values())
    cfg = layer.get_config()
    assert "config" not in cfg and cfg["pre_nms_limit"] == 50 and cfg["rpn_bbox_std_dev"] == [0.1, 0.1, 0.2, 0.2]
    out = layer(_inputs(g1)).numpy()[0]
    # Only the top 50 anchors enter NMS: at most 50 real rows, then zero padding.
    # Greedy NMS keeps the same leading boxes as the full (6000-anchor) run.
    real = np.any(out != 0, axis=1)
    n = int(real.sum())
    assert 0 < n <= 50 and real[:n].all() and not real[n:].any()
    np.testing.assert_allclose(out[:n], g1["ROI"][0, :n], rtol=0, atol=1e-6)


def test_constructor_validation():
    with pytest.raises(ValueError, match="rpn_bbox_std_dev"):
        ProposalLayer(10, 0.7, rpn_bbox_std_dev=(0.1, 0.2))
    with pytest.raises(ValueError, match="proposal_count"):
        ProposalLayer(0, 0.7)
