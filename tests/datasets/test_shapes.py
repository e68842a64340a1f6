"""ShapesDataset: reproducible specs, images that match the masks, occlusion."""
import numpy as np
import pytest

from mrcnn.datasets.shapes import SHAPE_NAMES, ShapesConfig, ShapesDataset


def make(count=6, size=(96, 128), seed=3):
    dataset = ShapesDataset()
    dataset.load_shapes(count, size[0], size[1], seed=seed)
    dataset.prepare()
    return dataset


def test_config_matches_matterport():
    config = ShapesConfig()
    assert config.NAME == "shapes"
    assert config.NUM_CLASSES == 4
    assert (config.IMAGE_MIN_DIM, config.IMAGE_MAX_DIM) == (128, 128)
    assert tuple(config.RPN_ANCHOR_SCALES) == (8, 16, 32, 64, 128)
    assert config.TRAIN_ROIS_PER_IMAGE == 32
    assert (config.STEPS_PER_EPOCH, config.VALIDATION_STEPS) == (100, 5)
    assert config.BATCH_SIZE == 8


def test_classes():
    dataset = make(count=1)
    assert dataset.class_names == ["BG", "square", "circle", "triangle"]
    assert dataset.num_classes == 4


def test_same_seed_same_data_and_independent_of_count():
    a, b = make(seed=11), make(seed=11)
    longer = make(count=9, seed=11)
    for i in a.image_ids:
        assert a.image_info[i]["shapes"] == b.image_info[i]["shapes"]
        np.testing.assert_array_equal(a.load_image(i), b.load_image(i))
        ma, ca = a.load_mask(i)
        mb, cb = b.load_mask(i)
        np.testing.assert_array_equal(ma, mb)
        np.testing.assert_array_equal(ca, cb)
        # Image i does not depend on how many images were generated.
        np.testing.assert_array_equal(a.load_image(i), longer.load_image(i))


def test_other_seed_other_data():
    a, b = make(seed=1), make(seed=2)
    assert any(a.image_info[i]["shapes"] != b.image_info[i]["shapes"] for i in a.image_ids)


def test_seed_none_is_recorded_and_reproducible():
    a = ShapesDataset()
    a.load_shapes(3, 64, 64)
    again = make(count=3, size=(64, 64), seed=a.seed)
    assert [i["shapes"] for i in a.image_info] == [i["shapes"] for i in again.image_info]


def test_masks_match_image_pixels():
    dataset = make(count=8, size=(128, 128), seed=5)
    for i in dataset.image_ids:
        info = dataset.image_info[i]
        image = dataset.load_image(i)
        mask, class_ids = dataset.load_mask(i)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert mask.dtype == bool and mask.shape[:2] == (128, 128)
        assert class_ids.dtype == np.int32 and len(class_ids) == mask.shape[-1] >= 1
        assert mask.sum(axis=(0, 1)).min() > 0
        # Masks are disjoint (occlusion removed) ...
        assert mask.sum(axis=-1).max() <= 1
        # ... and each visible shape's pixels carry that shape's colour.
        visible = [s for s in info["shapes"]
                   if dataset.shape_pixels(s[0], s[2], (128, 128))[0].size]
        for k in range(mask.shape[-1]):
            name, color, _ = visible[k]
            assert class_ids[k] == SHAPE_NAMES.index(name) + 1
            assert np.all(image[mask[:, :, k]] == color)
        # Pixels outside all masks show the background.
        assert np.all(image[~mask.any(-1)] == info["bg_color"])


def test_occlusion_later_shape_wins():
    dataset = ShapesDataset()
    dataset.add_class("shapes", 1, "square")
    dataset.add_class("shapes", 2, "circle")
    dataset.add_class("shapes", 3, "triangle")
    # A square, then a circle covering its right half, then a hidden square.
    shapes = [("square", (255, 0, 0), (20, 20, 10)),
              ("circle", (0, 255, 0), (30, 20, 8)),
              ("square", (0, 0, 255), (5, 5, 1))]
    shapes.append(("square", (9, 9, 9), (5, 5, 3)))  # covers the previous one
    dataset.add_image("shapes", image_id=0, path=None, width=48, height=40,
                      bg_color=(0, 0, 0), shapes=shapes)
    dataset.prepare()
    mask, class_ids = dataset.load_mask(0)
    # The fully covered third shape has no mask.
    np.testing.assert_array_equal(class_ids, [1, 2, 1])
    square, circle = mask[:, :, 0], mask[:, :, 1]
    assert square[20, 12] and not square[20, 30]   # left half visible, centre of circle not
    assert circle[20, 30] and circle[20, 22]        # circle over the square's right part
    # Square 21x21 = 441 px; the circle (radius 8, inside the square) takes
    # the pixels within distance 8 of (20, 30), of which those in columns <= 30.
    yy, xx = np.mgrid[:40, :48]
    disk = (yy - 20) ** 2 + (xx - 30) ** 2 <= 8 ** 2
    in_square = (np.abs(yy - 20) <= 10) & (np.abs(xx - 20) <= 10)
    assert square.sum() == 441 - (disk & in_square).sum()
    np.testing.assert_array_equal(circle, disk)
    assert mask[:, :, 2].sum() == 49  # the 7x7 top square


def test_triangle_geometry():
    rr, cc = ShapesDataset.shape_pixels("triangle", (50, 50, 20), (100, 100))
    m = np.zeros((100, 100), bool)
    m[rr, cc] = True
    # Apex at row 30, base at row 70 spanning 50 -/+ 20 / sin(60 deg) = 23.1.
    assert m[31, 50] and not m[28, 50]
    assert m[69, 28] and m[69, 72] and not m[69, 25] and not m[69, 75]
    # Area of the triangle: base 46.2 x height 40 / 2 = 924 px, within edge effects.
    assert abs(m.sum() - 924) < 60


def test_shapes_clipped_at_border_and_small_images():
    dataset = make(count=20, size=(32, 40), seed=0)
    for i in dataset.image_ids:
        mask, _ = dataset.load_mask(i)
        assert mask.shape[:2] == (32, 40)
    with pytest.raises(ValueError, match="16x16"):
        ShapesDataset().load_shapes(1, 8, 8)


def test_load_mask_before_prepare_says_so():
    dataset = ShapesDataset()
    dataset.load_shapes(1, 64, 64, seed=0)
    with pytest.raises(RuntimeError, match="prepare"):
        dataset.load_mask(0)
