"""COCO files whose ids start at 0 (or repeat): loading, scoring, results
(issue 14, item 1). The files are written here."""
import contextlib
import copy
import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from mrcnn import coco_eval, utils  # noqa: E402
from mrcnn.datasets.coco import CocoDataset, build_coco_results, evaluate_coco_results  # noqa

SIZE = (40, 48)


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"counts": rle["counts"].decode("ascii"), "size": list(mask.shape)}


def write_coco(folder, first_image=0, first_category=0, annotation_ids="from0"):
    """3 images x 2 categories, one box-shaped instance of each per image."""
    images = [{"id": first_image + i, "file_name": f"{i}.png", "height": SIZE[0],
               "width": SIZE[1]} for i in range(3)]
    categories = [{"id": first_category + k, "name": name} for k, name in
                  enumerate(("ring", "disc"))]
    anns = []
    for i, image in enumerate(images):
        Image.new("RGB", SIZE[::-1], (40 * i, 9, 9)).save(folder / image["file_name"])
        for k, category in enumerate(categories):
            m = np.zeros(SIZE, np.uint8)
            m[4 + 14 * k: 14 + 14 * k + i, 3 + 5 * i: 30 + 5 * k] = 1
            ys, xs = np.nonzero(m)
            ann_id = {"from0": len(anns), "all0": 0, "from1": len(anns) + 1}[annotation_ids]
            anns.append({"id": ann_id, "image_id": image["id"], "category_id": category["id"],
                         "iscrowd": 0, "area": int(m.sum()), "segmentation": _rle(m),
                         "bbox": [float(xs.min()), float(ys.min()),
                                  float(xs.max() + 1 - xs.min()),
                                  float(ys.max() + 1 - ys.min())]})
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": categories}))
    return path


def load(folder, path):
    dataset = CocoDataset()
    coco = dataset.load_coco(folder, None, annotation_file=path, return_coco=True)
    dataset.prepare()
    return dataset, coco


def perfect_results(dataset):
    results = []
    for image_id in dataset.image_ids:
        mask, class_ids = dataset.load_mask(image_id)
        results += build_coco_results(dataset, [dataset.image_info[image_id]["id"]],
                                      utils.extract_bboxes(mask), class_ids,
                                      np.ones(len(class_ids)), mask)
    return results


def _raw_pycocotools_ap(path, results):
    """What pycocotools alone gives on the file (no mrcnn in between)."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        e = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e.stats[0]


def _id_warnings(caplog):
    return [r for r in caplog.records if "pycocotools uses id 0" in r.getMessage()]


def test_ids_from_zero_score_ap_one_and_results_keep_the_users_ids(tmp_path, caplog):
    path = write_coco(tmp_path)
    with caplog.at_level(logging.WARNING):
        dataset, coco = load(tmp_path, path)
        results = perfect_results(dataset)
        # the results keep the file's ids: image 0, category 0
        assert sorted({r["image_id"] for r in results}) == [0, 1, 2]
        assert sorted({r["category_id"] for r in results}) == [0, 1]
        assert len(results) == 6
        # pycocotools alone scores this perfect set below 1 (the annotation
        # with id 0 never counts as matched): the case is real
        assert _raw_pycocotools_ap(path, results) < 0.9
        stats = evaluate_coco_results(dataset, coco, results)
        again = evaluate_coco_results(dataset, coco, results, "segm", image_ids=[0])
    for eval_type in ("bbox", "segm"):
        assert stats[eval_type][0] == pytest.approx(1.0), eval_type
        assert stats[eval_type][8] == pytest.approx(1.0), eval_type   # AR100
    assert again["segm"][0] == pytest.approx(1.0)
    warnings = _id_warnings(caplog)
    assert len(warnings) == 1, [w.getMessage() for w in warnings]
    message = warnings[0].getMessage()
    assert str(path) in message
    assert "image id [0]" in message and "category id [0]" in message
    assert "annotation id(s) that are not >= 1" in message
    # the user's COCO object keeps their image and category ids
    assert sorted(coco.getImgIds()) == [0, 1, 2] and sorted(coco.getCatIds()) == [0, 1]
    assert sorted(coco.anns) == [1, 2, 3, 4, 5, 6]
    assert dataset.image_reference(0).endswith("?id=0")


def test_repeated_annotation_ids_are_not_collapsed(tmp_path, caplog):
    """Every annotation id 0: pycocotools' index keeps one annotation per
    id, so each image would get copies of the last annotation of the file."""
    path = write_coco(tmp_path, first_image=1, first_category=1, annotation_ids="all0")
    with caplog.at_level(logging.WARNING):
        dataset, coco = load(tmp_path, path)
    assert len(coco.anns) == 6
    masks = [dataset.load_mask(i)[0] for i in dataset.image_ids]
    assert [m.shape[-1] for m in masks] == [2, 2, 2]
    # the masks differ image by image (not six copies of one)
    assert len({m.tobytes() for m in masks}) == 3
    stats = evaluate_coco_results(dataset, coco, perfect_results(dataset))
    assert stats["bbox"][0] == pytest.approx(1.0) and stats["segm"][0] == pytest.approx(1.0)
    (warning,) = _id_warnings(caplog)
    assert "5 repeated annotation id(s)" in warning.getMessage()


def test_a_clean_file_is_untouched_and_silent(tmp_path, caplog):
    path = write_coco(tmp_path, first_image=5, first_category=1, annotation_ids="from1")
    data = json.loads(path.read_text())
    assert coco_eval.safe_coco_ids(data) == (data, {}, [])
    with caplog.at_level(logging.WARNING):
        dataset, coco = load(tmp_path, path)
        stats = evaluate_coco_results(dataset, coco, perfect_results(dataset), "bbox")
    assert stats["bbox"][0] == pytest.approx(1.0)
    assert _id_warnings(caplog) == []


def test_coco_evaluate_on_a_dict_with_zero_ids(tmp_path, caplog):
    data = json.loads(write_coco(tmp_path).read_text())
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "segmentation": a["segmentation"], "score": 1.0} for a in data["annotations"]]
    with caplog.at_level(logging.WARNING):
        stats = coco_eval.coco_evaluate(data, results, verbose=False)
    assert stats["bbox"][0] == pytest.approx(1.0) and stats["segm"][0] == pytest.approx(1.0)
    assert len(_id_warnings(caplog)) == 1
    # the input was not modified
    assert data["annotations"][0]["id"] == 0 and results[0]["image_id"] == 0


def test_safe_ids_shift_negative_ids_and_refuse_duplicate_images():
    data = {"images": [{"id": -2}, {"id": 0}, {"id": 7}],
            "categories": [{"id": 4}],
            "annotations": [{"id": 3, "image_id": -2, "category_id": 4},
                            {"id": 3, "image_id": 7, "category_id": 4}]}
    safe, maps, problems = coco_eval.safe_coco_ids(data)
    assert [im["id"] for im in safe["images"]] == [1, 3, 10]
    assert maps == {"image": {-2: 1, 0: 3, 7: 10}}
    assert [(a["id"], a["image_id"]) for a in safe["annotations"]] == [(1, 1), (2, 10)]
    assert len(problems) == 2
    assert coco_eval.results_to_safe_ids([{"image_id": 0, "category_id": 4}], maps) == [
        {"image_id": 3, "category_id": 4}]
    with pytest.raises(ValueError, match=r"my.json: image ids \[7\] appear more than once"):
        coco_eval.safe_coco_ids({"images": [{"id": 7}, {"id": 7}]}, "my.json")
