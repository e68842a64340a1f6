"""mrcnn.data: U1 golden replay of build_rpn_targets, load_image_gt on a toy
Dataset (with albumentations), the robustness rules, and the NumPy targets."""
import functools
import logging
import os

import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")   # no network check on import

from mrcnn import data, pipeline, utils  # noqa: E402
from mrcnn.config import Config  # noqa: E402
from tests import u1  # noqa: E402

RPN_CASES = u1.load_cases(function="mrcnn.model.build_rpn_targets")
QUIRK_CASE = "c069"   # "Matterport quirk": a gt box overlapping no anchor


############################################################
#  build_rpn_targets against Matterport (U1)
############################################################

def test_u1_has_the_rpn_cases():
    assert [c["id"] for c in RPN_CASES] == ["c067", "c068", "c069", "c070", "c071"]


@pytest.mark.parametrize("case", [c for c in RPN_CASES if c["id"] != QUIRK_CASE], ids=u1.case_id)
def test_build_rpn_targets_matches_matterport(case):
    # c070 is seeded and subsamples with np.random.choice: the same calls in
    # the same order give the same anchors, so it is compared exactly too.
    u1.check_case(case, fn=data.build_rpn_targets)


def test_build_rpn_targets_matterport_quirk_on_legacy_path():
    # By default we do not copy the quirk (every anchor with IoU 0 to a gt box
    # that overlaps no anchor becomes positive); legacy_zero_iou_match=True does.
    case = next(c for c in RPN_CASES if c["id"] == QUIRK_CASE)
    u1.check_case(case, fn=functools.partial(data.build_rpn_targets, legacy_zero_iou_match=True))


def test_build_rpn_targets_quirk_fixed_by_default():
    case = next(c for c in RPN_CASES if c["id"] == QUIRK_CASE)
    args, kwargs = u1.call_args(case)
    expected_match = u1.expected_outputs(case)[0][1]
    assert np.sum(expected_match == 1) > 1          # Matterport: many positives
    rpn_match, rpn_bbox = data.build_rpn_targets(*args, **kwargs)
    # The only gt box overlaps no anchor: nothing is positive, every anchor is
    # a negative (max IoU 0 < 0.3), and no delta points at the far box.
    np.testing.assert_array_equal(rpn_match, -1)
    np.testing.assert_array_equal(rpn_bbox, 0)


def test_build_rpn_targets_without_gt():
    case = next(c for c in RPN_CASES if c["id"] == "c068")     # has a crowd box
    args, _ = u1.call_args(case)
    image_shape, anchors, class_ids, boxes, config = args
    crowd = class_ids < 0
    # Only the crowd box left: Matterport raised (argmax of an empty array).
    rpn_match, rpn_bbox = data.build_rpn_targets(image_shape, anchors, class_ids[crowd],
                                                 boxes[crowd], config)
    crowd_iou = utils.compute_overlaps(anchors, boxes[crowd]).max(axis=1)
    np.testing.assert_array_equal(rpn_match, np.where(crowd_iou < 0.001, -1, 0))
    np.testing.assert_array_equal(rpn_bbox, 0)
    rpn_match, _ = data.build_rpn_targets(image_shape, anchors, np.zeros([0], np.int32),
                                          np.zeros([0, 4], np.int32), config)
    np.testing.assert_array_equal(rpn_match, -1)


############################################################
#  A toy dataset: 32x64 images, two rectangles
############################################################

A_BOX = (4, 4, 12, 14)     # rows 4..11, cols 4..13 (y2, x2 exclusive)
B_BOX = (20, 30, 28, 44)


class ToyConfig(Config):
    NAME = "toy"
    NUM_CLASSES = 3
    IMAGES_PER_GPU = 2
    IMAGE_MIN_DIM = 64
    IMAGE_MAX_DIM = 64
    MINI_MASK_SHAPE = (8, 8)
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    RPN_TRAIN_ANCHORS_PER_IMAGE = 32
    TRAIN_ROIS_PER_IMAGE = 8
    MAX_GT_INSTANCES = 5


class ToyDataset(utils.Dataset):
    """Images 32x64: a horizontal gradient; instances given per image as
    (class_id, box) lists, each mask the filled box."""

    def __init__(self, instances):
        super().__init__()
        self.add_class("toy", 1, "a")
        self.add_class("toy", 2, "b")
        for i, inst in enumerate(instances):
            self.add_image("toy", i, path=f"toy{i}.png", instances=inst)
        self.prepare()

    def load_image(self, image_id):
        image = np.zeros((32, 64, 3), np.uint8)
        image[:, :, 0] = np.arange(64, dtype=np.uint8)[None, :] * 3
        image[:, :, 1] = 100
        return image

    def load_mask(self, image_id):
        inst = self.image_info[image_id]["instances"]
        mask = np.zeros((32, 64, len(inst)), bool)
        for i, (_, (y1, x1, y2, x2)) in enumerate(inst):
            mask[y1:y2, x1:x2, i] = True
        return mask, np.array([c for c, _ in inst], np.int32)


def _shift(box, dy):
    """Square resize mode pads 16 rows on top of a 32x64 image (scale 1)."""
    y1, x1, y2, x2 = box
    return (y1 + dy, x1, y2 + dy, x2)


def test_load_image_gt_plain():
    ds = ToyDataset([[(1, A_BOX), (2, B_BOX)]])
    cfg = ToyConfig()
    image, meta, class_ids, bbox, mask = data.load_image_gt(ds, cfg, 0, use_mini_mask=False)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[16:48], ds.load_image(0))
    np.testing.assert_array_equal(image[:16], 0)
    np.testing.assert_array_equal(class_ids, [1, 2])
    assert class_ids.dtype == np.int32 and bbox.dtype == np.int32
    np.testing.assert_array_equal(bbox, [_shift(A_BOX, 16), _shift(B_BOX, 16)])
    assert mask.shape == (64, 64, 2) and mask.dtype == bool
    assert mask[:, :, 0].sum() == 8 * 10 and mask[20:28, 4:14, 0].all()
    # [id 0, original 32 64 3, molded 64 64 3, window 16 0 48 64, scale 1, active 1 1 1]
    np.testing.assert_array_equal(meta, [0, 32, 64, 3, 64, 64, 3, 16, 0, 48, 64, 1, 1, 1, 1])
    # Mini-masks (the config's default): each box's mask cut out and resized.
    _, _, _, bbox2, mini = data.load_image_gt(ds, cfg, 0)
    np.testing.assert_array_equal(bbox2, bbox)
    assert mini.shape == (8, 8, 2) and mini.all()


def test_load_image_gt_horizontal_flip_moves_masks():
    import albumentations as A

    ds = ToyDataset([[(1, A_BOX), (2, B_BOX)]])
    cfg = ToyConfig()
    plain = data.load_image_gt(ds, cfg, 0, use_mini_mask=False)
    flip = A.Compose([A.HorizontalFlip(p=1.0)])
    image, meta, class_ids, bbox, mask = data.load_image_gt(ds, cfg, 0, augmentation=flip,
                                                            use_mini_mask=False)
    np.testing.assert_array_equal(image, plain[0][:, ::-1])
    np.testing.assert_array_equal(mask, plain[4][:, ::-1])
    # Columns x -> 63 - x: A's 4..13 become 50..59.
    np.testing.assert_array_equal(bbox, [(20, 50, 28, 60), (36, 20, 44, 34)])
    np.testing.assert_array_equal(class_ids, [1, 2])
    np.testing.assert_array_equal(meta, plain[1])


def test_load_image_gt_colour_transform_keeps_masks():
    import albumentations as A

    ds = ToyDataset([[(1, A_BOX), (2, B_BOX)]])
    cfg = ToyConfig()
    plain = data.load_image_gt(ds, cfg, 0, use_mini_mask=False)
    invert = A.Compose([A.InvertImg(p=1.0)])
    image, _, class_ids, bbox, mask = data.load_image_gt(ds, cfg, 0, augmentation=invert,
                                                         use_mini_mask=False)
    np.testing.assert_array_equal(image, 255 - plain[0])
    np.testing.assert_array_equal(mask, plain[4])
    np.testing.assert_array_equal(bbox, plain[3])


def test_matterport_positional_augment_flag():
    import random

    ds = ToyDataset([[(1, A_BOX)]])
    plain = data.load_image_gt(ds, ToyConfig(), 0, False, use_mini_mask=False)
    flips = []
    for s in range(8):
        random.seed(s)
        image = data.load_image_gt(ds, ToyConfig(), 0, True, use_mini_mask=False)[0]
        flips.append(np.array_equal(image, plain[0][:, ::-1]))
        assert flips[-1] or np.array_equal(image, plain[0])
    assert any(flips) and not all(flips)


def test_vanished_instance_dropped_with_debug_log(caplog):
    def erase_second(image, masks):   # a plain callable with the same contract
        masks = [m.copy() for m in masks]
        masks[1][:] = 0
        return {"image": image, "masks": masks}

    ds = ToyDataset([[(1, A_BOX), (2, B_BOX)]])
    with caplog.at_level(logging.DEBUG, logger="mrcnn.data"):
        _, _, class_ids, bbox, mask = data.load_image_gt(ds, ToyConfig(), 0, erase_second)
    np.testing.assert_array_equal(class_ids, [1])
    assert bbox.shape == (1, 4) and mask.shape == (8, 8, 1)
    assert any(r.levelno == logging.DEBUG and "vanished" in r.getMessage() for r in caplog.records)


def test_augmentation_must_keep_the_size():
    def crop(image, masks):
        return {"image": image[:32], "masks": [m[:32] for m in masks]}

    with pytest.raises(ValueError, match="image id 0.*changed the image shape"):
        data.load_image_gt(ToyDataset([[(1, A_BOX)]]), ToyConfig(), 0, crop)


def test_empty_mask_from_dataset_dropped_with_warning(caplog):
    ds = ToyDataset([[(1, A_BOX), (2, (5, 5, 5, 9))]])     # zero-height box: empty mask
    with caplog.at_level(logging.WARNING, logger="mrcnn.data"):
        _, _, class_ids, bbox, _ = data.load_image_gt(ds, ToyConfig(), 0)
    np.testing.assert_array_equal(class_ids, [1])
    np.testing.assert_array_equal(bbox, [_shift(A_BOX, 16)])
    assert any("image id 0" in r.getMessage() and "empty mask" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)


@pytest.mark.parametrize("bad_id", [3, 0, -3])
def test_class_id_out_of_range(bad_id):
    ds = ToyDataset([[(1, A_BOX)], [(1, A_BOX), (bad_id, B_BOX)]])
    with pytest.raises(ValueError, match=r"image id 1 \(toy1.png\).*class ids \[" + str(bad_id)):
        data.load_image_gt(ds, ToyConfig(), 1)


def test_no_instances():
    ds = ToyDataset([[]])
    image, meta, class_ids, bbox, mask = data.load_image_gt(ds, ToyConfig(), 0)
    assert image.shape == (64, 64, 3)
    assert class_ids.shape == (0,) and bbox.shape == (0, 4) and mask.shape == (8, 8, 0)
    # The base Dataset.load_mask returns np.empty([0, 0, 0]): also "no instances".
    base = utils.Dataset()
    base.add_class("toy", 1, "a")
    base.add_image("toy", 0, path="x")
    base.prepare()
    base.load_image = ds.load_image
    _, _, class_ids, _, mask = data.load_image_gt(base, ToyConfig(), 0, use_mini_mask=False)
    assert class_ids.shape == (0,) and mask.shape == (64, 64, 0)


def test_too_many_instances_keeps_the_first(caplog):
    boxes = [(1 + (k % 2), (2 * k, 0, 2 * k + 2, 8)) for k in range(7)]
    with caplog.at_level(logging.WARNING, logger="mrcnn.data"):
        _, _, class_ids, bbox, _ = data.load_image_gt(ToyDataset([boxes]), ToyConfig(), 0)
    assert class_ids.shape == (5,)
    np.testing.assert_array_equal(bbox[:, 0], [16, 18, 20, 22, 24])
    assert any("MAX_GT_INSTANCES=5" in r.getMessage() for r in caplog.records)


def test_mask_shape_mismatch_is_named():
    ds = ToyDataset([[(1, A_BOX)]])
    ds.load_mask = lambda i: (np.ones((16, 16, 1), bool), np.array([1]))
    with pytest.raises(ValueError, match="image id 0.*16x16.*32x64"):
        data.load_image_gt(ds, ToyConfig(), 0)


############################################################
#  data_generator
############################################################

def test_data_generator_batches_and_skips_empty_images(caplog):
    ds = ToyDataset([[(1, A_BOX), (2, B_BOX)], [], [(2, B_BOX)]])
    cfg = ToyConfig()
    gen = pipeline.data_generator(ds, cfg, shuffle=False, batch_size=2)
    with caplog.at_level(logging.WARNING, logger="mrcnn.data"):
        inputs, outputs = next(gen)
    images, meta, rpn_match, rpn_bbox, gt_class_ids, gt_boxes, gt_masks = inputs
    assert outputs == []
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.float32
    np.testing.assert_allclose(images[0, 0, 0], -cfg.MEAN_PIXEL, rtol=1e-6)   # padding row
    np.testing.assert_array_equal(meta[:, 0], [0, 2])          # image 1 was skipped
    assert rpn_match.shape[0] == 2 and rpn_match.shape[2] == 1
    assert rpn_bbox.shape == (2, 32, 4)
    np.testing.assert_array_equal(gt_class_ids, [[1, 2, 0, 0, 0], [2, 0, 0, 0, 0]])
    np.testing.assert_array_equal(gt_boxes[0, :2], [_shift(A_BOX, 16), _shift(B_BOX, 16)])
    assert gt_masks.shape == (2, 8, 8, 5) and gt_masks.dtype == bool
    assert any("image id 1" in r.getMessage() and "1 image(s) skipped" in r.getMessage()
               for r in caplog.records)
    # Each image has positives, at most half of the 32 training anchors.
    for b in range(2):
        n_pos = np.sum(rpn_match[b] == 1)
        assert 1 <= n_pos <= 16 and np.sum(rpn_match[b] != 0) <= 32
        assert np.all(np.isfinite(rpn_bbox[b]))
        np.testing.assert_array_equal(rpn_bbox[b, n_pos:], 0)


def test_data_generator_with_nothing_to_train_on():
    gen = pipeline.data_generator(ToyDataset([[], []]), ToyConfig(), batch_size=1)
    with pytest.raises(ValueError, match="without instances"):
        next(gen)


def test_data_generator_random_rois_and_detection_targets():
    np.random.seed(0)
    cfg = ToyConfig()
    gen = pipeline.data_generator(ToyDataset([[(1, A_BOX), (2, B_BOX)]]), cfg, shuffle=False,
                              batch_size=1, random_rois=20, detection_targets=True)
    inputs, outputs = next(gen)
    rpn_rois, rois = inputs[7], inputs[8]
    assert rpn_rois.shape == (1, 20, 4) and rois.shape == (1, 8, 4)
    class_ids, bboxes, masks = outputs
    assert class_ids.shape == (1, 8, 1) and bboxes.shape == (1, 8, 3, 4)
    assert masks.shape == (1, 8, 28, 28, 3)


############################################################
#  NumPy detection targets
############################################################

def test_generate_random_rois():
    np.random.seed(1)
    gt = np.array([_shift(A_BOX, 16), _shift(B_BOX, 16)])
    rois = data.generate_random_rois((64, 64, 3), 50, np.array([1, 2]), gt)
    assert rois.shape == (50, 4) and rois.dtype == np.int32
    assert np.all(rois[:, 2] > rois[:, 0]) and np.all(rois[:, 3] > rois[:, 1])
    assert rois.min() >= 0 and rois.max() < 64
    # 90%: int(0.9 * 50 / 2) = 22 per gt box, within one box size of it.
    y1, x1, y2, x2 = gt[0]
    h, w = y2 - y1, x2 - x1
    near = rois[:22]
    assert np.all(near[:, 0] >= y1 - h) and np.all(near[:, 2] < y2 + h)
    assert np.all(near[:, 1] >= max(x1 - w, 0)) and np.all(near[:, 3] < x2 + w)
    # A zero-height gt box on the image edge used to loop forever.
    rois = data.generate_random_rois((64, 64, 3), 10, np.array([1]), np.array([[63, 0, 63, 5]]))
    assert np.all(rois[:, 2] > rois[:, 0])


def test_build_detection_targets_by_hand():
    cfg = ToyConfig()       # TRAIN_ROIS_PER_IMAGE 8, ratio 0.33: int(2.64) = 2 foreground
    gt_boxes = np.array([(20, 4, 28, 14)], np.int32)
    gt_masks = np.zeros((64, 64, 1), bool)
    gt_masks[20:28, 4:14, 0] = True
    rois_in = np.array([(20, 4, 28, 14), (20, 4, 28, 12), (40, 40, 60, 60)], np.int32)
    np.random.seed(3)
    rois, class_ids, bboxes, masks = data.build_detection_targets(
        rois_in, np.array([2], np.int32), gt_boxes, utils.minimize_mask(gt_boxes, gt_masks, (8, 8)),
        cfg)
    assert rois.shape == (8, 4) and masks.shape == (8, 28, 28, 3)
    # Foreground: rows 0 (IoU 1) and 1 (IoU 0.8); background: row 2, repeated.
    np.testing.assert_array_equal(rois[:2], rois_in[:2])
    np.testing.assert_array_equal(rois[2:], np.repeat(rois_in[2:], 6, axis=0))
    np.testing.assert_array_equal(class_ids, [2, 2, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(bboxes[0], 0)
    # Row 1: width 8 -> 10, centre x 8 -> 9: dx = 1/8 / 0.1, dw = log(10/8) / 0.2.
    np.testing.assert_allclose(bboxes[1, 2], [0, 1.25, 0, np.log(1.25) / 0.2], rtol=1e-6)
    np.testing.assert_array_equal(bboxes[1, :2], 0)
    np.testing.assert_allclose(masks[:2, :, :, 2], 1.0)
    np.testing.assert_array_equal(masks[2:], 0)
    np.testing.assert_array_equal(masks[:, :, :, :2], 0)
