"""mrcnn.ops.image_meta against Matterport's NumPy parse_image_meta (U1)."""
import json

import numpy as np
import pytest

from mrcnn.ops.image_meta import parse_image_meta_graph


@pytest.mark.parametrize("cid", ["c073", "c074"])
def test_parse_matches_matterport(golden_dir, cid):
    index = {c["id"]: c for c in json.loads((golden_dir / "u1_utils.json").read_text())["cases"]}
    arrays = np.load(golden_dir / "u1_utils.npz")
    case = index[cid]
    meta = arrays[case["args"][0]["key"]]
    parsed = parse_image_meta_graph(meta)
    for out in case["outputs"]:
        # The NumPy version casts to int; the graph version keeps the float dtype.
        np.testing.assert_allclose(parsed[out["name"]].numpy(), arrays[out["key"]], rtol=1e-6, err_msg=out["name"])


def test_parse_g1_meta(golden_dir):
    meta = np.load(golden_dir / "g1_model.npz")["image_meta"].astype(np.float32)
    m = parse_image_meta_graph(meta)
    np.testing.assert_array_equal(m["image_shape"], [[256, 256, 3]])
    np.testing.assert_array_equal(m["original_image_shape"], [[512, 512, 3]])
    np.testing.assert_array_equal(m["window"], [[0, 0, 256, 256]])
    np.testing.assert_array_equal(m["scale"], [0.5])
    assert m["active_class_ids"].shape == (1, 5)


def test_bad_meta_shape_raises():
    with pytest.raises(ValueError, match="batch"):
        parse_image_meta_graph(np.zeros(17, np.float32))
    with pytest.raises(ValueError, match="compose_image_meta"):
        parse_image_meta_graph(np.zeros((1, 8), np.float32))
