"""mrcnn.utils against Matterport's outputs: every mrcnn.utils case of the U1
golden set (tests/golden/u1_utils.*), values, dtypes and shapes exactly.

The two seeded ``resize_image(mode="crop")`` cases follow GOLDEN.md: the
crop position is random, so the image is compared given the recorded crop.
(Since we draw the crop with the same ``random.randint`` calls as Matterport,
the seeded crop itself matches too, and that is checked as well.)
"""
import numpy as np
import pytest

from mrcnn import utils
from tests import u1

CASES = u1.load_cases(prefix="mrcnn.utils.")


def test_all_utils_cases_present():
    # 75 mrcnn.utils cases; the other 17 (mrcnn.model.*) belong to other modules.
    assert len(CASES) == 75
    assert len(u1.load_cases()) == 92
    assert len({c["function"] for c in CASES}) == 20


# Matterport warned on the same cases (0/0 IoU, log(0), AP without gt).
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("case", CASES, ids=u1.case_id)
def test_golden_case(case):
    fn = getattr(utils, case["function"].rsplit(".", 1)[1])
    is_random_crop = (case["function"].endswith("resize_image") and case["setup_seed"] is not None)
    if not is_random_crop:
        u1.check_case(case, fn)
        return

    # Seeded crop: window, scale, padding exactly; the image given the crop.
    (_, exp_image), (_, exp_window), (_, exp_scale), (_, exp_padding), (_, exp_crop) = \
        u1.expected_outputs(case)
    image, window, scale, padding, crop = u1.run_case(case, fn)
    u1.compare(exp_window, window, "window")
    u1.compare(exp_scale, scale, "scale")
    u1.compare(exp_padding, padding, "padding")
    (src,), _ = u1.call_args(case)
    # The scaled image before cropping: resize_image's own scale rule.
    h, w = src.shape[:2]
    scaled = utils.resize(src, (round(h * exp_scale), round(w * exp_scale)),
                          preserve_range=True).astype(src.dtype) if exp_scale != 1 else src
    y, x, ch, cw = exp_crop
    u1.compare(exp_image, np.ascontiguousarray(scaled[y:y + ch, x:x + cw]), "image given crop")
    # Same random draws as Matterport: the crop itself matches as well.
    u1.compare(exp_crop, crop, "crop")
    u1.compare(exp_image, image, "image")
