"""CocoDataset on a small COCO file written here, and COCO evaluation."""
import json
import re
import urllib.error

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402

from mrcnn import utils  # noqa: E402
from mrcnn.datasets.coco import (CocoDataset, build_coco_results,  # noqa: E402
                                 evaluate_coco_results)

# Image sizes (height, width) by COCO image id; image 3 has no annotations,
# image 4 only one smaller than a pixel.
SIZES = {1: (60, 80), 2: (50, 50), 3: (40, 40), 4: (30, 30)}
# Non-contiguous category ids -> dataset class ids 1, 2, 3.
CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 12, "name": "bird"}]


def box_mask(shape, y1, x1, y2, x2):
    m = np.zeros(shape, np.uint8)
    m[y1:y2, x1:x2] = 1
    return m


def uncompressed_rle(mask):
    """COCO's uncompressed RLE: run lengths over the column-major pixels,
    starting with a run of zeros."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"counts": counts, "size": list(mask.shape)}


def compressed_rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"counts": rle["counts"].decode("ascii"), "size": list(mask.shape)}


def annotations():
    """(annotation without bbox/area, expected mask or None)."""
    return [
        # image 1: a cat polygon, a dog in compressed RLE, a crowd of dogs in
        # uncompressed RLE.
        ({"image_id": 1, "category_id": 3, "iscrowd": 0,
          "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]}, None),
        ({"image_id": 1, "category_id": 7, "iscrowd": 0,
          "segmentation": compressed_rle(box_mask((60, 80), 35, 40, 50, 70))},
         box_mask((60, 80), 35, 40, 50, 70)),
        ({"image_id": 1, "category_id": 7, "iscrowd": 1,
          "segmentation": uncompressed_rle(box_mask((60, 80), 0, 60, 6, 80))},
         box_mask((60, 80), 0, 60, 6, 80)),
        # image 2: a two-part bird polygon plus a 2-point part that is dropped
        # (pycocotools would read its 4 numbers as a box).
        ({"image_id": 2, "category_id": 12, "iscrowd": 0,
          "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15], [30, 30, 40, 30, 40, 40, 30, 40],
                           [1, 1, 2, 2]]}, None),
        # image 4: only a cat smaller than a pixel (skipped by load_mask).
        ({"image_id": 4, "category_id": 3, "iscrowd": 0,
          "segmentation": [[3.1, 3.1, 3.3, 3.1, 3.3, 3.3]]}, None),
    ]


@pytest.fixture()
def coco_dir(tmp_path):
    """tmp/annotations/instances_val2017.json and tmp/val2017/*.jpg."""
    images = []
    for image_id, (h, w) in SIZES.items():
        images.append({"id": image_id, "file_name": f"{image_id:06d}.jpg",
                       "height": h, "width": w})
    (tmp_path / "val2017").mkdir()
    for image in images:
        Image.new("RGB", (image["width"], image["height"]), (image["id"] * 40, 0, 0)).save(
            tmp_path / "val2017" / image["file_name"])
    anns = []
    for ann_id, (ann, _) in enumerate(annotations(), start=1):
        h, w = SIZES[ann["image_id"]]
        # bbox and area from the decoded mask (exact pixel extents), so that
        # boxes taken from masks match the ground truth exactly.
        polys = ann["segmentation"]
        if isinstance(polys, list):
            rle = mask_utils.merge(mask_utils.frPyObjects([p for p in polys if len(p) >= 6], h, w))
        elif isinstance(polys["counts"], list):
            rle = mask_utils.frPyObjects(polys, h, w)
        else:
            rle = dict(polys, counts=polys["counts"].encode())
        m = mask_utils.decode(rle)
        ys, xs = np.nonzero(m)
        bbox = ([float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()),
                 float(ys.max() + 1 - ys.min())] if len(ys) else [3.1, 3.1, 0.2, 0.2])
        anns.append(dict(ann, id=ann_id, bbox=bbox, area=float(m.sum())))
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": CATEGORIES}))
    return tmp_path


def load(coco_dir, **kwargs):
    dataset = CocoDataset()
    coco = dataset.load_coco(coco_dir, "val", year=2017, return_coco=True, **kwargs)
    dataset.prepare()
    return dataset, coco


def test_classes_and_images(coco_dir):
    dataset, coco = load(coco_dir)
    assert dataset.class_names == ["BG", "cat", "dog", "bird"]
    # Image 3 has no annotations: left out, as Matterport does.
    assert [info["id"] for info in dataset.image_info] == [1, 2, 4]
    assert dataset.map_source_class_id("coco.12") == 3
    assert dataset.get_source_class_id(2, "coco") == 7
    assert dataset.image_reference(0) == "http://cocodataset.org/#explore?id=1"
    assert dataset.load_image(1).shape == (50, 50, 3)
    assert len(coco.getImgIds()) == 4


def test_masks_and_class_ids(coco_dir):
    dataset, _ = load(coco_dir)
    mask, class_ids = dataset.load_mask(0)  # image 1
    assert mask.dtype == bool and mask.shape == (60, 80, 3)
    np.testing.assert_array_equal(class_ids, [1, 2, -2])  # crowd: negative
    assert class_ids.dtype == np.int32
    # pycocotools rasterises polygons by pixel area: corners 10..30 give the
    # 20x20 pixels of rows and columns 10..29.
    np.testing.assert_array_equal(mask[:, :, 0], box_mask((60, 80), 10, 10, 30, 30))
    expected = annotations()
    np.testing.assert_array_equal(mask[:, :, 1], expected[1][1].astype(bool))
    np.testing.assert_array_equal(mask[:, :, 2], expected[2][1].astype(bool))

    mask, class_ids = dataset.load_mask(1)  # image 2: bird in two parts
    np.testing.assert_array_equal(class_ids, [3])
    np.testing.assert_array_equal(
        mask[:, :, 0], box_mask((50, 50), 5, 5, 15, 15) | box_mask((50, 50), 30, 30, 40, 40))

    mask, class_ids = dataset.load_mask(2)  # image 4: only a sub-pixel object
    assert mask.shape == (0, 0, 0) and class_ids.shape == (0,)  # the base class's empties


def test_keep_empty_and_class_filter(coco_dir):
    dataset, _ = load(coco_dir, keep_empty=True)
    assert [info["id"] for info in dataset.image_info] == [1, 2, 3, 4]
    mask, class_ids = dataset.load_mask(2)
    assert mask.size == 0 and class_ids.size == 0
    dataset, _ = load(coco_dir, class_ids=[7])
    assert dataset.class_names == ["BG", "dog"]
    assert [info["id"] for info in dataset.image_info] == [1]
    np.testing.assert_array_equal(dataset.load_mask(0)[1], [1, -1])
    with pytest.raises(ValueError, match=r"class_ids \[5\]"):
        load(coco_dir, class_ids=[5])


def test_any_coco_json_and_image_folder(coco_dir):
    (coco_dir / "my.json").write_text(
        (coco_dir / "annotations" / "instances_val2017.json").read_text())
    dataset = CocoDataset()
    dataset.load_coco(coco_dir, None, year=None, annotation_file="my.json",
                      image_dir=coco_dir / "val2017")
    dataset.prepare()
    assert dataset.num_images == 3
    assert dataset.image_info[0]["path"] == str(coco_dir / "val2017" / "000001.jpg")
    dataset = CocoDataset()
    dataset.load_coco(coco_dir, "val", year=2017, annotation_file=coco_dir / "my.json")
    assert dataset.image_info[0]["path"] == str(coco_dir / "val2017" / "000001.jpg")


def test_missing_files_name_the_path(coco_dir):
    with pytest.raises(FileNotFoundError, match=re.escape(
            str(coco_dir / "annotations" / "instances_train2017.json"))):
        load_train = CocoDataset()
        load_train.load_coco(coco_dir, "train", year="2017")
    with pytest.raises(FileNotFoundError, match="COCO image folder not found: " + re.escape(
            str(coco_dir / "val2014"))):
        CocoDataset().load_coco(coco_dir, "val", year=2014, annotation_file=(
            coco_dir / "annotations" / "instances_val2017.json"))
    (coco_dir / "bad.json").write_text("{oops")
    with pytest.raises(ValueError, match="not a valid COCO annotation file"):
        CocoDataset().load_coco(coco_dir, None, annotation_file="bad.json")


def test_rle_of_the_wrong_size_is_reported(coco_dir):
    dataset, _ = load(coco_dir)
    dataset.image_info[0]["annotations"][1]["segmentation"] = compressed_rle(
        box_mask((10, 10), 0, 0, 5, 5))
    with pytest.raises(ValueError, match="annotation 2 of image 1"):
        dataset.load_mask(0)


def test_auto_download_offline_names_url_and_destination(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(ConnectionError) as info:
        CocoDataset().load_coco(tmp_path / "coco", "val", year=2017, auto_download=True)
    message = str(info.value)
    assert "http://images.cocodataset.org/zips/val2017.zip" in message
    assert str(tmp_path / "coco" / "val2017.zip") in message
    # Nothing half-done is left behind that would stop the next attempt.
    assert sorted(p.name for p in (tmp_path / "coco").iterdir()) == []


def perfect_results(dataset):
    results = []
    for image_id in dataset.image_ids:
        mask, class_ids = dataset.load_mask(image_id)
        if mask.size == 0:
            continue
        keep = class_ids > 0  # crowds are not objects to detect
        mask, class_ids = mask[:, :, keep], class_ids[keep]
        rois = utils.extract_bboxes(mask)
        results += build_coco_results(dataset, [dataset.image_info[image_id]["id"]], rois,
                                      class_ids, np.linspace(1.0, 0.9, len(class_ids)), mask)
    return results


def test_build_coco_results_format(coco_dir):
    dataset, _ = load(coco_dir)
    results = perfect_results(dataset)
    assert len(results) == 3
    first = results[0]
    assert first["image_id"] == 1 and first["category_id"] == 3
    assert first["bbox"] == [10.0, 10.0, 20.0, 20.0]  # x, y, width, height
    assert first["score"] == 1.0
    decoded = mask_utils.decode(first["segmentation"])
    np.testing.assert_array_equal(decoded, dataset.load_mask(0)[0][:, :, 0])
    json.dumps(results)  # plain Python types only
    assert build_coco_results(dataset, [1], None, None, None, None) == []


def test_evaluation_perfect_and_wrong(coco_dir, capsys):
    dataset, coco = load(coco_dir)
    results = perfect_results(dataset)
    # Images 1 and 2: image 4's sub-pixel cat is a ground truth nobody can
    # detect (it would cap AP at 2/3 for cats).
    images = [0, 1]
    stats = evaluate_coco_results(dataset, coco, results, image_ids=images)
    assert set(stats) == {"bbox", "segm"}
    for eval_type in ("bbox", "segm"):
        assert stats[eval_type].shape == (12,)
        assert stats[eval_type][0] == pytest.approx(1.0)   # AP@[.5:.95]
        assert stats[eval_type][1] == pytest.approx(1.0)   # AP50
    assert "Average Precision" in capsys.readouterr().out
    # The results may be evaluated again (loadRes got copies).
    again = evaluate_coco_results(dataset, coco, results, "segm", image_ids=images)
    assert again["segm"][0] == pytest.approx(1.0)
    # With image 4, the undetectable cat caps cat recall at 1/2: cat AP is
    # 51/101 (COCO's 101 recall points), the mean over cat, dog, bird
    # (51/101 + 1 + 1) / 3.
    assert evaluate_coco_results(dataset, coco, results, "bbox")["bbox"][0] == pytest.approx(
        (51 / 101 + 2) / 3)

    # Wrong: every detection shifted by half its size.
    wrong = []
    for r in results:
        m = mask_utils.decode(r["segmentation"])
        x, y, w, h = r["bbox"]
        shifted = np.roll(np.roll(m, int(h) // 2, axis=0), int(w) // 2, axis=1)
        rle = mask_utils.encode(np.asfortranarray(shifted))
        rle["counts"] = rle["counts"].decode()
        wrong.append(dict(r, bbox=[x + w // 2, y + h // 2, w, h], segmentation=rle))
    stats = evaluate_coco_results(dataset, coco, wrong, image_ids=images)
    for eval_type in ("bbox", "segm"):
        assert stats[eval_type][0] < 0.1
    # No detections at all: AP 0, not an exception.
    stats = evaluate_coco_results(dataset, coco, [], image_ids=images)
    assert stats["bbox"][0] == 0.0 and stats["segm"][0] == 0.0
    with pytest.raises(ValueError, match="image ids \\[99\\]"):
        evaluate_coco_results(dataset, coco, [dict(results[0], image_id=99)])
