"""mrcnn.ops.proposals: golden ROI and a hand-worked 4-anchor case."""
import math

import numpy as np
import pytest

from mrcnn.ops.proposals import generate_proposals

# Four anchors, normalized. a1 overlaps a0 with IoU 0.036/0.044 = 0.818;
# a3 sticks out of the image and is clipped to [0.9, 0.9, 1, 1].
ANCHORS = np.array(
    [
        [0.10, 0.10, 0.30, 0.30],
        [0.12, 0.10, 0.32, 0.30],
        [0.60, 0.60, 0.80, 0.80],
        [0.90, 0.90, 1.10, 1.10],
    ],
    np.float32,
)
FG = np.array([0.6, 0.9, 0.3, 0.8], np.float32)
# a2: dy = 1 (x std 0.1 -> shift 0.1 * h = 0.02), log(dh) = log(2) / 0.2 (x std 0.2 -> h doubles).
DELTAS = np.zeros((4, 4), np.float32)
DELTAS[2] = [1.0, 0.0, math.log(2.0) / 0.2, 0.0]
A1 = ANCHORS[1]
A0 = ANCHORS[0]
A2_REFINED = [0.52, 0.60, 0.92, 0.80]  # centre 0.72, height 0.4
A3_CLIPPED = [0.90, 0.90, 1.00, 1.00]


def _run(fg=FG, **kwargs):
    probs = np.stack([1 - fg, fg], axis=-1)[None]
    args = dict(proposal_count=5, nms_threshold=0.7, pre_nms_limit=6000)
    args.update(kwargs)
    return generate_proposals(probs, DELTAS[None], ANCHORS, **args).numpy()


def test_hand_worked_rank_apply_clip_nms_pad():
    out = _run()
    assert out.shape == (1, 5, 4) and out.dtype == np.float32
    # Score order a1 (0.9), a3 (0.8), a0 (0.6, suppressed by a1: IoU 0.818 > 0.7), a2 (0.3).
    expected = np.array([A1, A3_CLIPPED, A2_REFINED, [0, 0, 0, 0], [0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(out[0], expected, rtol=0, atol=1e-6)


def test_hand_worked_threshold_and_pre_nms_limit():
    # IoU 0.818 < 0.9: a0 survives.
    out = _run(nms_threshold=0.9)
    np.testing.assert_allclose(out[0], [A1, A3_CLIPPED, A0, A2_REFINED, [0, 0, 0, 0]], rtol=0, atol=1e-6)
    # Only the top 3 by score (a1, a3, a0) enter NMS; a0 is suppressed.
    out = _run(pre_nms_limit=3)
    np.testing.assert_allclose(out[0], [A1, A3_CLIPPED, [0] * 4, [0] * 4, [0] * 4], rtol=0, atol=1e-6)
    # proposal_count smaller than the survivors: truncated in score order.
    out = _run(proposal_count=2)
    np.testing.assert_allclose(out[0], [A1, A3_CLIPPED], rtol=0, atol=1e-6)


def test_batch_images_are_independent():
    fg2 = np.array([0.9, 0.1, 0.2, 0.3], np.float32)  # now a0 leads and suppresses a1
    probs = np.stack([np.stack([1 - FG, FG], -1), np.stack([1 - fg2, fg2], -1)])
    anchors = np.stack([ANCHORS, ANCHORS])  # the [B, A, 4] form
    out = generate_proposals(probs, np.stack([DELTAS, DELTAS]), anchors, 5, 0.7).numpy()
    np.testing.assert_allclose(out[0], _run()[0], rtol=0, atol=0)
    np.testing.assert_allclose(out[1], [A0, A3_CLIPPED, A2_REFINED, [0] * 4, [0] * 4], rtol=0, atol=1e-6)


def test_golden_roi(golden_dir):
    g1 = np.load(golden_dir / "g1_model.npz")
    out = generate_proposals(g1["rpn_class"], g1["rpn_bbox"], g1["anchors"], 300, 0.7, 6000, (0.1, 0.1, 0.2, 0.2))
    # Same boxes in the same (NMS keep) order; in practice bit-identical.
    np.testing.assert_allclose(out.numpy(), g1["ROI"], rtol=0, atol=1e-6)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="rpn_probs"):
        generate_proposals(np.zeros((4, 2), np.float32), DELTAS[None], ANCHORS, 5, 0.7)
    with pytest.raises(ValueError, match="anchors"):
        generate_proposals(np.zeros((1, 4, 2), np.float32), DELTAS[None], ANCHORS[:, :3], 5, 0.7)
