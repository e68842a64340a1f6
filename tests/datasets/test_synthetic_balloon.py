"""Synthetic balloon data set: VIA layout round trip through ViaDataset."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mrcnn.datasets.synthetic_balloon import (ellipse_mask, make_balloon_dataset,
                                              render_balloon_image)
from mrcnn.datasets.via import ViaDataset

SIZE = (96, 128)


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("via_version", [1, 2])
def test_round_trip_masks_match_drawn_ellipses(tmp_path, via_version):
    root = make_balloon_dataset(tmp_path / "balloon", n_train=3, n_val=2, size=SIZE,
                                seed=7, via_version=via_version)
    assert root == str(tmp_path / "balloon")
    for subset_index, (subset, count) in enumerate((("train", 3), ("val", 2))):
        folder = tmp_path / "balloon" / subset
        data = json.loads((folder / "via_region_data.json").read_text())
        regions = next(iter(data.values()))["regions"]
        assert isinstance(regions, dict if via_version == 1 else list)
        dataset = ViaDataset()
        dataset.load_via(root, subset)
        dataset.prepare()
        assert dataset.num_images == count
        for i in dataset.image_ids:
            info = dataset.image_info[i]
            assert info["id"] == f"balloon_{subset}_{i:04d}.jpg"
            # Recreate the drawing from the same seed.
            expected_image, ellipses = render_balloon_image(
                np.random.default_rng([7, subset_index, i]), *SIZE)
            image = dataset.load_image(i)
            assert image.shape == SIZE + (3,)
            # JPEG changes pixels a little, not a lot.
            assert np.abs(image.astype(int) - expected_image).mean() < 6
            mask, class_ids = dataset.load_mask(i)
            assert mask.shape == SIZE + (len(ellipses),)
            np.testing.assert_array_equal(class_ids, np.ones(len(ellipses)))
            for k, e in enumerate(ellipses):
                assert iou(mask[:, :, k], ellipse_mask(e, *SIZE)) > 0.9
                # The balloon is drawn where its mask is: its colour differs
                # from a ring of background just around it.
                cx, cy, rx, ry, theta = e
                ring = (ellipse_mask((cx, cy, rx + 4, ry + 4, theta), *SIZE)
                        & ~mask.any(-1))
                contrast = np.abs(image[mask[:, :, k]].mean(0) - image[ring].mean(0))
                assert contrast.max() > 30


def test_same_seed_same_files(tmp_path):
    a = make_balloon_dataset(tmp_path / "a", n_train=2, n_val=1, size=SIZE, seed=3)
    b = make_balloon_dataset(tmp_path / "b", n_train=2, n_val=1, size=SIZE, seed=3)
    for subset in ("train", "val"):
        names = sorted(os.listdir(os.path.join(a, subset)))
        assert names == sorted(os.listdir(os.path.join(b, subset)))
        for name in names:
            with open(os.path.join(a, subset, name), "rb") as fa, \
                    open(os.path.join(b, subset, name), "rb") as fb:
                assert fa.read() == fb.read()


def test_balloons_inside_and_apart():
    for seed in range(20):
        _, ellipses = render_balloon_image(np.random.default_rng(seed), *SIZE)
        assert 1 <= len(ellipses) <= 3
        masks = [ellipse_mask(e, *SIZE) for e in ellipses]
        assert all(m.sum() > 50 for m in masks)
        if len(masks) > 1:
            assert np.sum(masks, axis=0).max() == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="via_version"):
        make_balloon_dataset("/nonexistent", via_version=3)
    with pytest.raises(ValueError, match="too small"):
        make_balloon_dataset("/nonexistent", size=(10, 10))


def test_command_line(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "mrcnn.datasets.synthetic_balloon", str(out),
         "--n-train", "1", "--n-val", "1", "--height", "64", "--width", "80",
         "--via-version", "1"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Wrote 1 training and 1 validation images" in proc.stdout
    for subset in ("train", "val"):
        files = sorted(os.listdir(out / subset))
        assert files == [f"balloon_{subset}_0000.jpg", "via_region_data.json"]
