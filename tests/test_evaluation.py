"""evaluation.evaluate_model (mAP and COCO AP of a model on a data set) and
Dataset.to_coco (COCO ground truth of any data set), on hand-made detections."""
import json

import numpy as np
import pytest

from mrcnn import coco_eval, evaluation, utils
from mrcnn.datasets.shapes import ShapesDataset


class _FakeModel:
    """Stands in for MaskRCNN in inference mode: detect() returns what
    ``answer(image_index)`` gives."""

    def __init__(self, answer):
        self.answer, self.calls = answer, 0

    def detect(self, images):
        results = [self.answer(self.calls + i) for i in range(len(images))]
        self.calls += len(images)
        return results


@pytest.fixture(scope="module")
def shapes():
    dataset = ShapesDataset()
    dataset.load_shapes(5, 64, 64, seed=3)
    dataset.prepare()
    truth = [evaluation.ground_truth(dataset, i) for i in dataset.image_ids]
    return dataset, truth


def _perfect(truth):
    def answer(i):
        _, class_ids, boxes, masks = truth[i]
        return {"rois": boxes, "class_ids": class_ids, "masks": masks,
                "scores": np.linspace(0.99, 0.9, len(class_ids))}
    return answer


def test_perfect_detections_score_one_everywhere(shapes):
    dataset, truth = shapes
    scores = evaluation.evaluate_model(_FakeModel(_perfect(truth)), dataset, batch_size=2,
                                       verbose=0)
    assert scores["mAP50"] == 1.0 and scores["mAP"] == 1.0
    assert scores["image_ids"] == list(dataset.image_ids) and len(scores["results"]) == 5
    for kind in ("bbox", "segm"):
        # AP, AP50, AP75 of COCOeval
        np.testing.assert_allclose(scores["coco"][kind][:3], 1.0)


def test_no_detections_and_wrong_classes_score_zero(shapes):
    dataset, truth = shapes

    def nothing(i):
        return {"rois": np.zeros((0, 4), np.int32), "class_ids": np.zeros(0, np.int32),
                "masks": np.zeros((64, 64, 0), bool), "scores": np.zeros(0, np.float32)}

    scores = evaluation.evaluate_model(_FakeModel(nothing), dataset, verbose=0)
    assert scores["mAP50"] == 0.0 and scores["mAP"] == 0.0
    assert scores["coco"]["segm"][0] == 0.0

    # Right boxes and masks, wrong classes: no match at any IoU.
    def wrong_class(i):
        result = _perfect(truth)(i)
        return dict(result, class_ids=result["class_ids"] % 3 + 1)

    scores = evaluation.evaluate_model(_FakeModel(wrong_class), dataset, verbose=0)
    assert scores["mAP50"] == 0.0 and scores["coco"]["bbox"][1] == 0.0


def test_half_the_images_found(shapes):
    """Images 0, 2, 4 perfect, 1 and 3 nothing: mAP@0.5 is the mean over
    images, 3/5."""
    dataset, truth = shapes
    perfect = _perfect(truth)

    def every_other(i):
        if i % 2 == 0:
            return perfect(i)
        return {"rois": np.zeros((0, 4), np.int32), "class_ids": np.zeros(0, np.int32),
                "masks": np.zeros((64, 64, 0), bool), "scores": np.zeros(0, np.float32)}

    scores = evaluation.evaluate_model(_FakeModel(every_other), dataset, coco=False, verbose=0)
    assert scores["mAP50"] == pytest.approx(3 / 5)
    assert scores["APs"].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert "coco" not in scores


class _Toy(utils.Dataset):
    """Two 10x12 images: one with a square (class 1) and a crowd region
    (class -2) and an empty mask, one without instances."""

    def __init__(self):
        super().__init__()
        self.add_class("toy", 7, "cat")
        self.add_class("toy", 9, "dog")
        self.add_image("toy", image_id="a.png", path="a.png", height=10, width=12)
        self.add_image("toy", image_id="b.png", path="b.png", height=10, width=12)
        self.prepare()

    def load_mask(self, image_id):
        if image_id == 1:
            return super().load_mask(image_id)
        masks = np.zeros((10, 12, 3), bool)
        masks[2:5, 3:7, 0] = True   # 3x4 square
        masks[6:9, 0:2, 1] = True   # crowd
        return masks, np.array([1, -2, 2], np.int32)


def test_to_coco_of_a_hand_made_dataset():
    gt = _Toy().to_coco()
    json.dumps(gt)  # JSON-ready
    assert [im["id"] for im in gt["images"]] == [1, 2]  # no id 0 (COCOeval's "unmatched")
    assert [(im["height"], im["width"], im["source_id"]) for im in gt["images"]] == [
        (10, 12, "a.png"), (10, 12, "b.png")]
    assert gt["categories"] == [
        {"id": 1, "name": "cat", "source": "toy", "source_id": 7},
        {"id": 2, "name": "dog", "source": "toy", "source_id": 9}]
    square, crowd = gt["annotations"]  # the empty mask is left out
    assert (square["id"], square["image_id"], square["category_id"]) == (1, 1, 1)
    assert square["bbox"] == [3.0, 2.0, 4.0, 3.0] and square["area"] == 12
    assert square["iscrowd"] == 0
    assert (crowd["category_id"], crowd["iscrowd"], crowd["area"]) == (2, 1, 6)
    _, _, mask_utils = coco_eval.pycocotools()
    decoded = mask_utils.decode(dict(square["segmentation"],
                                     counts=square["segmentation"]["counts"].encode()))
    assert decoded.sum() == 12 and decoded[2:5, 3:7].all()


def test_to_coco_needs_prepare():
    dataset = utils.Dataset()
    with pytest.raises(ValueError, match="prepare"):
        dataset.to_coco()


def test_coco_evaluate_refuses_unknown_types():
    with pytest.raises(ValueError, match="keypoints"):
        coco_eval.coco_evaluate(_Toy().to_coco(), [], eval_types=("keypoints",))
