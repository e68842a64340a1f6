"""mrcnn.meta (re-exported by mrcnn.model): Matterport's image meta and
mold/unmold, replayed on the 12 U1 golden cases, plus the round trip."""
import numpy as np
import pytest

from mrcnn import model as modellib
from mrcnn.meta import compose_image_meta, parse_image_meta
from tests import u1

META_FUNCTIONS = ("compose_image_meta", "parse_image_meta", "mold_image", "unmold_image")
CASES = [c for c in u1.load_cases(prefix="mrcnn.model.")
         if c["function"].rsplit(".", 1)[1] in META_FUNCTIONS]


def test_all_twelve_cases_are_here():
    assert len(CASES) == 12


@pytest.mark.parametrize("case", CASES, ids=u1.case_id)
def test_golden_case(case):
    # resolves e.g. mrcnn.model.compose_image_meta: the re-export is tested too
    u1.check_case(case)


def test_compose_then_parse_round_trip():
    meta = compose_image_meta(3, (300, 500, 3), (512, 512, 3), (103, 0, 409, 512), 1,
                              np.array([1, 1, 0]))
    assert meta.dtype == np.float64 and meta.shape == (1 + 3 + 3 + 4 + 1 + 3,)
    parsed = parse_image_meta(meta[None])
    assert parsed["image_id"].tolist() == [3]
    assert parsed["window"].tolist() == [[103, 0, 409, 512]]
    assert parsed["active_class_ids"].tolist() == [[1, 1, 0]]
    assert modellib.parse_image_meta is parse_image_meta


def test_parse_rejects_a_single_vector():
    with pytest.raises(ValueError, match="batch"):
        parse_image_meta(np.zeros(15))
