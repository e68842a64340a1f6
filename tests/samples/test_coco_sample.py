"""The COCO sample: evaluate_coco (perfect detections score AP 1.0 for boxes
and masks), the evaluate command with a real tiny model, and command-line
errors (missing files, offline downloads)."""
import glob
import hashlib
import json
import os
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from mrcnn import utils
from samples.coco import coco as coco_sample

# Two categories with COCO-like, non-contiguous ids.
CATEGORIES = [{"id": 3, "name": "car"}, {"id": 7, "name": "train"}]


def run_main(argv):
    try:
        return coco_sample.main(argv)
    except SystemExit as e:
        return e.code


def _rle(mask):
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory):
    """A COCO-format data set: 3 images of 64x80 (one with 2 objects),
    masks as RLE, boxes and areas computed from the masks.
    Returns (annotation file, image folder)."""
    root = tmp_path_factory.mktemp("coco")
    images_dir = root / "images"
    images_dir.mkdir()
    rng = np.random.default_rng(0)
    objects = {  # file -> [(category id, y1, x1, y2, x2, ellipse?)]
        "a.png": [(3, 10, 12, 40, 50, False)],
        "b.png": [(7, 5, 5, 30, 30, True), (3, 35, 40, 60, 75, False)],
        "c.png": [(7, 20, 20, 55, 70, True)],
    }
    data = {"images": [], "annotations": [], "categories": CATEGORIES}
    ann_id = 1
    for image_id, (name, objs) in enumerate(objects.items(), start=1):
        image = rng.integers(0, 60, (64, 80, 3)).astype(np.uint8)
        for category, y1, x1, y2, x2, round_ in objs:
            mask = np.zeros((64, 80), bool)
            if round_:
                yy, xx = np.mgrid[:64, :80]
                cy, cx, ry, rx = (y1 + y2 - 1) / 2, (x1 + x2 - 1) / 2, (y2 - y1) / 2, (x2 - x1) / 2
                mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            else:
                mask[y1:y2, x1:x2] = True
            image[mask] = [200, 80 + 20 * category, 40]
            by1, bx1, by2, bx2 = utils.extract_bboxes(mask[..., None])[0]
            data["annotations"].append({
                "id": ann_id, "image_id": image_id, "category_id": category, "iscrowd": 0,
                "segmentation": _rle(mask), "area": int(mask.sum()),
                "bbox": [int(bx1), int(by1), int(bx2 - bx1), int(by2 - by1)]})
            ann_id += 1
        Image.fromarray(image).save(images_dir / name)
        data["images"].append({"id": image_id, "file_name": name, "height": 64, "width": 80})
    ann = root / "instances.json"
    ann.write_text(json.dumps(data))
    return str(ann), str(images_dir)


def load(tiny_coco):
    dataset = coco_sample.CocoDataset()
    coco = dataset.load_coco(os.path.dirname(tiny_coco[0]), None, year=None,
                             return_coco=True, annotation_file=tiny_coco[0],
                             image_dir=tiny_coco[1])
    dataset.prepare()
    return dataset, coco


class PerfectModel:
    """detect() returns the ground truth of the image it is given (found by
    the image's bytes), with score 1."""

    def __init__(self, dataset, model_dir):
        self.model_dir = model_dir
        self.truth = {}
        for i in dataset.image_ids:
            mask, class_ids = dataset.load_mask(i)
            key = hashlib.sha1(dataset.load_image(i).tobytes()).hexdigest()
            self.truth[key] = {"rois": utils.extract_bboxes(mask), "class_ids": class_ids,
                               "scores": np.ones(len(class_ids), np.float32), "masks": mask}
        self.calls = 0

    def detect(self, images, verbose=0):
        assert len(images) == 1
        self.calls += 1
        return [self.truth[hashlib.sha1(np.asarray(images[0]).tobytes()).hexdigest()]]


def test_config_is_matterports():
    c = coco_sample.CocoConfig()
    assert (c.NAME, c.IMAGES_PER_GPU, c.NUM_CLASSES) == ("coco", 2, 81)
    e = coco_sample.make_config("evaluate")
    assert (e.BATCH_SIZE, e.DETECTION_MIN_CONFIDENCE, e.NUM_CLASSES) == (1, 0, 81)
    t = coco_sample.make_config("evaluate", tiny=True, NUM_CLASSES=3)
    assert (t.BACKBONE, t.IMAGE_MAX_DIM, t.NUM_CLASSES, t.IMAGE_META_SIZE) == (
        "resnet50", 128, 3, 12 + 3)


def test_perfect_detections_score_one(tiny_coco, tmp_path, capsys):
    dataset, coco = load(tiny_coco)
    model = PerfectModel(dataset, str(tmp_path / "logs"))
    stats = coco_sample.evaluate_coco(model, dataset, coco)
    assert set(stats) == {"bbox", "segm"}
    for kind in ("bbox", "segm"):
        assert stats[kind][0] == pytest.approx(1.0)   # AP@[.5:.95]
        assert stats[kind][1] == pytest.approx(1.0)   # AP50
        assert stats[kind][8] == pytest.approx(1.0)   # AR100
    assert model.calls == 3
    out = capsys.readouterr().out
    assert out.count("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all") == 2
    # The detections went to a JSON file in the logs folder, in COCO result format.
    [path] = glob.glob(str(tmp_path / "logs" / "coco_results_*.json"))
    results = json.loads(open(path).read())
    assert len(results) == 4
    assert sorted((r["image_id"], r["category_id"]) for r in results) == [
        (1, 3), (2, 3), (2, 7), (3, 7)]
    first = next(r for r in results if r["image_id"] == 1)
    assert first["bbox"] == [12.0, 10.0, 38.0, 30.0] and first["score"] == 1.0


def test_limit_eval_type_and_results_path(tiny_coco, tmp_path):
    dataset, coco = load(tiny_coco)
    model = PerfectModel(dataset, str(tmp_path / "unused"))
    # Drop one of image 2's detections: its class "car" (id 3) then misses
    # one of two objects, "train" stays perfect.
    image_2 = next(i for i in dataset.image_ids if dataset.image_info[i]["id"] == 2)
    truth = model.truth[hashlib.sha1(dataset.load_image(image_2).tobytes()).hexdigest()]
    keep = truth["class_ids"] == dataset.map_source_class_id("coco.7")
    for k in ("rois", "class_ids", "scores"):
        truth[k] = truth[k][keep]
    truth["masks"] = truth["masks"][..., keep]
    results_path = str(tmp_path / "r.json")
    stats = coco_sample.evaluate_coco(model, dataset, coco, "segm", limit=2,
                                      results_path=results_path)
    assert list(stats) == ["segm"] and model.calls == 2
    # Images 1 and 2: car found 1 of 2 (AP 0.5 by COCO's 101-point recall
    # interpolation: precision 1 up to recall 0.5, 0 after -> 51/101), train 1 of 1.
    assert stats["segm"][0] == pytest.approx((51 / 101 + 1.0) / 2)
    assert len(json.loads(open(results_path).read())) == 2
    assert not os.path.exists(str(tmp_path / "unused"))


def test_evaluate_command_with_a_tiny_model(tiny_coco, tmp_path, monkeypatch, capsys):
    """The whole command: data, a random tiny model, detection, COCOeval."""
    import keras
    keras.utils.set_random_seed(3)
    seen = {}
    real = coco_sample.evaluate_coco

    def spy(model, dataset, coco, eval_type, **kwargs):
        seen["config"] = model.config
        seen["stats"] = real(model, dataset, coco, eval_type, **kwargs)
        return seen["stats"]

    monkeypatch.setattr(coco_sample, "evaluate_coco", spy)
    logs = tmp_path / "logs"
    code = run_main(["evaluate", "--annotations", tiny_coco[0], "--images", tiny_coco[1],
                     "--model", "none", "--tiny", "--image-size", "64", "--logs", str(logs),
                     "--limit", "0"])
    assert code == 0
    assert seen["config"].NUM_CLASSES == 3 and seen["config"].IMAGE_MAX_DIM == 64
    for kind in ("bbox", "segm"):
        s = seen["stats"][kind]
        assert s.shape == (12,)
        # Random weights: any score, but a real one (COCO's -1 = nothing to score).
        assert np.all(np.isfinite(s)) and np.all((s == -1) | ((s >= 0) & (s <= 1)))
    [path] = glob.glob(str(logs / "coco_results_*.json"))
    for r in json.loads(open(path).read()):
        assert r["image_id"] in (1, 2, 3) and r["category_id"] in (3, 7)
        assert 0 <= r["score"] <= 1
    assert "Running COCO evaluation on 3 images." in capsys.readouterr().out


# ---------------------------------------------------------------------------
# Command-line errors: one line, exit code 2, the path named
# ---------------------------------------------------------------------------

def error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("coco.py: error: ")
    return err[0]


@pytest.fixture
def offline(monkeypatch):
    """Every urlopen fails at once; returns the list of URLs asked for."""
    calls = []

    def urlopen(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no network in the test")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def test_missing_official_files(tmp_path, capsys):
    assert run_main(["evaluate", "--dataset", str(tmp_path), "--model", "none"]) == 2
    line = error_line(capsys)
    assert str(tmp_path / "annotations" / "instances_minival2014.json") in line
    assert "auto_download" in line or "--download" in line


def test_missing_custom_annotations(tmp_path, capsys):
    missing = str(tmp_path / "mine.json")
    assert run_main(["evaluate", "--annotations", missing, "--model", "none"]) == 2
    assert missing in error_line(capsys)


def test_download_offline_names_url_and_place(tmp_path, offline, capsys):
    assert run_main(["evaluate", "--dataset", str(tmp_path), "--year", "2017",
                     "--model", "none", "--download"]) == 2
    line = error_line(capsys)
    assert offline == ["http://images.cocodataset.org/zips/val2017.zip"]
    assert "http://images.cocodataset.org/zips/val2017.zip" in line
    assert str(tmp_path / "val2017.zip") in line
    assert not os.path.exists(str(tmp_path / "val2017.zip.part"))


def test_coco_weights_offline_say_where_to_put_the_file(tiny_coco, tmp_path, offline,
                                                        monkeypatch, capsys):
    target = tmp_path / "mask_rcnn_coco.h5"
    monkeypatch.setattr(coco_sample, "COCO_MODEL_PATH", str(target))
    assert run_main(["evaluate", "--annotations", tiny_coco[0], "--images", tiny_coco[1],
                     "--model", "coco"]) == 2
    line = error_line(capsys)
    assert str(target) in line
    assert len(offline) == 1 and offline[0].endswith("/mask_rcnn_coco.h5")


def test_argument_errors(tiny_coco, capsys):
    assert run_main(["evaluate", "--model", "none"]) == 2
    assert "--dataset" in capsys.readouterr().err
    assert run_main(["evaluate", "--annotations", tiny_coco[0], "--model", "none",
                     "--download"]) == 2
    assert run_main(["evaluate", "--dataset", "x", "--model", "none", "--year", "2015"]) == 2
    assert run_main(["evaluate", "--dataset", "x", "--model", "none",
                     "--download=maybe"]) == 2
    args = coco_sample.build_parser().parse_args(
        ["evaluate", "--dataset", "x", "--model", "none", "--download=False"])
    assert args.download is False  # Matterport's type=bool made this True


class _RecordingModel:
    def __init__(self, num_classes):
        self.config = coco_sample.make_config("evaluate", NUM_CLASSES=num_classes)
        self.model_dir = "logs"  # where --model=last would look
        self.calls = []

    def load_weights(self, path, by_name=False, exclude=None):
        self.calls.append((path, by_name, exclude))


def test_coco_weights_keep_the_heads_only_for_81_classes(tmp_path, monkeypatch):
    weights = tmp_path / "mask_rcnn_coco.h5"
    weights.write_bytes(b"present, so nothing is downloaded")
    monkeypatch.setattr(coco_sample, "COCO_MODEL_PATH", str(weights))
    official, own = _RecordingModel(81), _RecordingModel(3)
    coco_sample._load_weights(official, "coco")
    coco_sample._load_weights(own, "coco")
    assert official.calls == [(str(weights), True, None)]
    assert own.calls == [(str(weights), True, ["mrcnn_class_logits", "mrcnn_bbox_fc",
                                               "mrcnn_bbox", "mrcnn_mask"])]


@pytest.mark.slow
def test_train_one_epoch_on_a_coco_format_file(tiny_coco, tmp_path):
    """train --annotations: 1 epoch of 2 steps (flip augmentation on) writes
    Matterport's checkpoint for a 3-class model."""
    import h5py
    import keras
    keras.utils.set_random_seed(2)
    logs = tmp_path / "logs"
    code = run_main(["train", "--annotations", tiny_coco[0], "--images", tiny_coco[1],
                     "--model", "none", "--tiny", "--image-size", "64", "--epochs", "1",
                     "--steps", "2", "--val-steps", "1", "--logs", str(logs)])
    assert code == 0
    [checkpoint] = glob.glob(str(logs / "coco*" / "mask_rcnn_coco_0001.h5"))
    with h5py.File(checkpoint, "r") as f:
        group = f["mrcnn_class_logits"]
        kernel = [n for n in group.attrs["weight_names"] if "kernel" in str(n)][0]
        assert group[kernel].shape == (1024, 3)  # background + car + train
