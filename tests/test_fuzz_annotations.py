"""Fuzz test of the data path (issue 14, item 6): random degenerate
annotations in VIA, COCO and ``load_mask`` form, on images of 1x1, 1x10000,
0 bytes and normal sizes. Every case must give a defined result (an image of
IMAGE_SHAPE, boxes inside it, one non-empty mask per instance, class ids in
range) or an error that names the image (or the annotation file, for a file
that cannot be read at all). Then one fixed training run on the surviving
kinds of cases must keep every loss finite.

Bounded in time: ``MAX_EXAMPLES`` examples per form (60; the environment
variable MRCNN_FUZZ_EXAMPLES raises it for a longer hunt), derandomized so
that CI runs the same cases every time (MRCNN_FUZZ_RANDOM=1 draws new ones).
"""
import json
import math
import os
import tempfile
import warnings

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mrcnn import utils  # noqa: E402
from mrcnn.arguments import ground_truth_spec  # noqa: E402
from mrcnn.config import Config  # noqa: E402
from mrcnn.data import load_ground_truth  # noqa: E402
from mrcnn.datasets.coco import CocoDataset  # noqa: E402
from mrcnn.datasets.via import ViaDataset  # noqa: E402
from mrcnn.image_io import ImageReadError  # noqa: E402

MAX_EXAMPLES = int(os.environ.get("MRCNN_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                derandomize=not os.environ.get("MRCNN_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class FuzzConfig(Config):
    NAME = "fuzz"
    NUM_CLASSES = 1 + 2
    IMAGE_MIN_DIM = 64
    IMAGE_MAX_DIM = 64
    MINI_MASK_SHAPE = (16, 16)
    MAX_GT_INSTANCES = 6


CONFIG = FuzzConfig()
SPEC = ground_truth_spec(CONFIG)



def often(usual, rare, times=4):
    """``usual`` about ``times`` times as often as ``rare`` (so that most
    examples keep some instances and the checks on results run too)."""
    return st.sampled_from([usual] * times + [rare]).flatmap(lambda s: s)


# Image files: (height, width) or "empty" (a 0-byte file).
IMAGE_KINDS = often(st.just((24, 32)),
                    st.sampled_from([(1, 1), (1, 10000), (10000, 1), "empty"]), times=2)

# Coordinates: ordinary, on and past the borders, negative, huge, not finite.
COORD = often(st.one_of(st.floats(-10, 40, allow_nan=False), st.integers(-5, 40)),
              st.sampled_from([0, 0.5, 31.9, 32, -1e12, 1e12, 1e300, -1e300, 3e9,
                               math.nan, math.inf, -math.inf]), times=8)


def write_image(folder, name, kind):
    path = os.path.join(folder, name)
    if kind == "empty":
        open(path, "wb").close()
    else:
        h, w = kind
        Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(path)
    return path


def _event(name):
    """Count an outcome for --hypothesis-show-statistics (outside a
    hypothesis test: nothing)."""
    try:
        hypothesis.event(name)
    except hypothesis.errors.InvalidArgument:
        pass


def check_ground_truth(dataset, image_id, names):
    """A defined result, or an error naming the image; returns the instance
    count, or None for an error."""
    try:
        image, meta, class_ids, boxes, masks = load_ground_truth(dataset, image_id, SPEC)
    except (ValueError, OSError) as e:    # ImageReadError, FileNotFoundError are OSErrors
        message = str(e)
        assert f"image id {image_id}" in message.lower() or any(
            n in message for n in names), message
        _event(f"error: {type(e).__name__}")
        return None
    n = len(class_ids)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert np.all(np.isfinite(meta)) and meta.shape == (CONFIG.IMAGE_META_SIZE,)
    assert class_ids.dtype == np.int32 and np.all(class_ids != 0)
    assert np.all(np.abs(class_ids) < CONFIG.NUM_CLASSES)
    assert boxes.shape == (n, 4) and np.all(boxes >= 0) and np.all(boxes <= 64)
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    assert masks.shape == (16, 16, n) and masks.dtype == bool
    assert n <= CONFIG.MAX_GT_INSTANCES
    _event("instances" if n else "no instances")
    return n


# ---------------------------------------------------------------------------
# VIA
# ---------------------------------------------------------------------------

def via_shape(draw):
    name = draw(st.sampled_from(["polygon", "polyline", "rect", "circle", "ellipse", "point",
                                 "bogus"]))
    if name in ("polygon", "polyline"):
        n = draw(st.integers(0, 7))
        xs = draw(st.lists(COORD, min_size=n, max_size=n))
        extra = draw(st.sampled_from([0] * 9 + [1]))   # x and y lists of other lengths
        ys = draw(st.lists(COORD, min_size=n + extra, max_size=n + extra))
        return {"name": name, "all_points_x": xs, "all_points_y": ys}
    if name == "rect":
        return {"name": name, "x": draw(COORD), "y": draw(COORD), "width": draw(COORD),
                "height": draw(COORD)}
    if name == "circle":
        return {"name": name, "cx": draw(COORD), "cy": draw(COORD), "r": draw(COORD)}
    if name == "ellipse":
        return {"name": name, "cx": draw(COORD), "cy": draw(COORD), "rx": draw(COORD),
                "ry": draw(COORD), "theta": draw(COORD)}
    if name == "point":
        return {"name": name, "cx": draw(COORD), "cy": draw(COORD)}
    return {"name": name}


@st.composite
def via_files(draw):
    images = []
    for k in range(draw(st.integers(1, 3))):
        regions = [{"shape_attributes": via_shape(draw),
                    "region_attributes": {"kind": draw(st.sampled_from(["a", "b", "c", ""]))}}
                   for _ in range(draw(st.integers(0, 4)))]
        images.append((f"img{k}.png", draw(IMAGE_KINDS), regions))
    return images


@FUZZ
@given(via_files())
def test_fuzz_via(images):
    with tempfile.TemporaryDirectory() as folder:
        data = {}
        for name, kind, regions in images:
            write_image(folder, name, kind)
            data[name] = {"filename": name, "regions": regions}
        ann = os.path.join(folder, "via_region_data.json")
        with open(ann, "w") as f:
            json.dump(data, f)   # NaN and Infinity as Python's json writes them
        dataset = ViaDataset()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # load_via's summary of skipped regions
                dataset.load_via(folder, None, class_names=("a", "b"), class_attribute="kind",
                                 keep_empty=True)
        except ValueError as e:
            # only malformed shapes (x and y lists of different lengths)
            assert ann in str(e) and "region" in str(e), str(e)
            _event("file refused")
            return
        dataset.prepare()
        assert dataset.num_images == len(images)
        for image_id in dataset.image_ids:
            name = os.path.basename(dataset.image_info[image_id]["path"])
            check_ground_truth(dataset, image_id, [name])


# ---------------------------------------------------------------------------
# COCO
# ---------------------------------------------------------------------------

def _rle_string(draw, size):
    from pycocotools import mask as mask_utils
    h, w = size
    m = np.zeros((h, w), np.uint8)
    if draw(st.booleans()):
        y, x = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        m[y:y + draw(st.integers(1, h)), x:x + draw(st.integers(1, w))] = 1
    return mask_utils.encode(np.asfortranarray(m))["counts"].decode("ascii")


def coco_segmentation(draw, size):
    kind = draw(often(st.sampled_from(["polygons", "rle"]),
                      st.sampled_from(["rle_other_size", "uncompressed", "garbage", "none",
                                       "bad", "short polygons"]), times=3))
    if kind == "polygons":
        return [draw(st.lists(COORD, min_size=6, max_size=12))
                for _ in range(draw(st.integers(1, 3)))]
    if kind == "short polygons":
        return [draw(st.lists(COORD, max_size=7)) for _ in range(draw(st.integers(0, 3)))]
    if kind == "rle":
        return {"size": list(size), "counts": _rle_string(draw, size)}
    if kind == "rle_other_size":
        other = (draw(st.integers(1, 30)), draw(st.integers(1, 30)))
        return {"size": list(other), "counts": _rle_string(draw, other)}
    if kind == "uncompressed":
        counts = draw(st.lists(st.integers(-3, size[0] * size[1] + 3), max_size=5))
        return {"size": list(size), "counts": counts}
    if kind == "garbage":
        return {"size": list(size), "counts": draw(st.sampled_from(["", "xyz!!", "0", "00000"]))}
    if kind == "none":
        return None
    return draw(st.sampled_from(["a string", 7, {"counts": "x"}, {"size": [1, 2, 3],
                                                                  "counts": "0"}]))


@st.composite
def coco_files(draw):
    images, annotations = [], []
    for k in range(draw(st.integers(1, 3))):
        kind = draw(IMAGE_KINDS)
        size = (24, 32) if kind == "empty" else kind
        h, w = draw(often(st.just(size), st.sampled_from([(None, None), (0, 0), (-3, 5),
                                                          (size[0] + 4, size[1])])))
        image_id = 2 * k + draw(st.sampled_from([0, 0, 0, 1]))   # ids from 0 or 1
        images.append({"id": image_id, "file_name": f"img{k}.png", "height": h, "width": w,
                       "_kind": kind})
        for _ in range(draw(st.integers(0, 3))):
            ann = {"id": draw(st.integers(0, 3)), "image_id": image_id,
                   "category_id": draw(st.sampled_from([0, 1, 0, 1, 2, 99])),
                   "iscrowd": draw(st.sampled_from([0, 0, 1])),
                   "segmentation": coco_segmentation(draw, size)}
            if draw(st.booleans()):
                ann["bbox"] = draw(st.one_of(st.lists(COORD, min_size=4, max_size=4),
                                             st.lists(COORD, max_size=5)))
            annotations.append(ann)
    categories = [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}]
    return images, annotations, categories


@FUZZ
@given(coco_files())
def test_fuzz_coco(files):
    images, annotations, categories = files
    with tempfile.TemporaryDirectory() as folder:
        for im in images:
            write_image(folder, im["file_name"], im.pop("_kind"))
        path = os.path.join(folder, "annotations.json")
        with open(path, "w") as f:
            json.dump({"images": images, "annotations": annotations,
                       "categories": categories}, f)
        dataset = CocoDataset()
        try:
            dataset.load_coco(folder, None, annotation_file=path, keep_empty=True)
        except (ValueError, OSError) as e:
            # a file that cannot be read as a whole (an image whose size is
            # not in the file and cannot be read from it) names the image
            assert path in str(e) or any(im["file_name"] in str(e) for im in images), str(e)
            _event("file refused")
            return
        dataset.prepare()
        for image_id in dataset.image_ids:
            info = dataset.image_info[image_id]
            name = os.path.basename(info["path"])
            check_ground_truth(dataset, image_id, [name, f"image {info['id']} "])


# ---------------------------------------------------------------------------
# load_mask form (a Dataset subclass of the user's)
# ---------------------------------------------------------------------------

class ArrayDataset(utils.Dataset):
    """Images and masks given as arrays, as a user's load_mask returns them."""

    def __init__(self, cases):
        super().__init__()
        self.cases = cases
        self.add_class("user", 1, "a")
        self.add_class("user", 2, "b")
        for i in range(len(cases)):
            self.add_image("user", image_id=i, path=f"case{i}.png")
        self.prepare()

    def load_image(self, image_id):
        return self.cases[image_id][0]

    def load_mask(self, image_id):
        return self.cases[image_id][1], self.cases[image_id][2]


@st.composite
def array_cases(draw):
    shape = draw(often(st.sampled_from([(24, 32, 3), (64, 64, 3), (1, 1, 3)]),
                       st.sampled_from([(1, 10000, 3), (0, 0, 3), (24, 32), (24, 32, 4)])))
    image = np.full(shape, 100, np.uint8)
    n = draw(st.integers(0, 8))
    mshape = draw(often(st.just(shape[:2] + (n,)),
                        st.sampled_from([(5, 5, n), shape[:2], shape[:2] + (n, 1)])))
    content = draw(often(st.sampled_from(["empty", "pixel", "random", "full"]),
                         st.just("nan"), times=8))
    dtype = draw(st.sampled_from([bool, np.uint8, np.float32]))
    if content == "nan":
        mask = np.full(mshape, np.nan, np.float32)
    else:
        mask = np.zeros(mshape, dtype)
        if content == "pixel" and mask.size and mask.ndim >= 2:
            mask[(0,) * mask.ndim] = 1
        elif content == "random" and mask.size:
            rng = np.random.default_rng(draw(st.integers(0, 1000)))
            mask[...] = rng.random(mshape) > 0.7
        elif content == "full":
            mask[...] = 1
    good = st.sampled_from([1, 2, 2, -1, 2.0])
    bad = st.sampled_from([0, 3, 7, 1.5, -5])
    extra = draw(st.sampled_from([0] * 9 + [1]))        # a class id too many
    ids = draw(st.lists(often(good, bad, times=12), min_size=n + extra, max_size=n + extra))
    return image, mask, np.asarray(ids)


@FUZZ
@given(st.lists(array_cases(), min_size=1, max_size=3))
def test_fuzz_load_mask(cases):
    dataset = ArrayDataset(cases)
    for image_id in dataset.image_ids:
        check_ground_truth(dataset, image_id, [f"case{image_id}.png"])


# ---------------------------------------------------------------------------
# The survivors train
# ---------------------------------------------------------------------------

def test_fuzz_found_nothing_that_kills_the_process():
    """The cases that used to take the process down (pycocotools on NaN,
    infinite or huge polygon coordinates: SIGKILL / SIGSEGV) give masks."""
    from pycocotools import mask as mask_utils

    from mrcnn.datasets.coco_masks import clip_polygon, segmentation_rle
    cases = [([math.nan, 1, 10, 1, 10, 10], 0), ([math.inf, 1, 10, 1, 10, 10], 0),
             # far left vertex: the part inside is the quadrilateral
             # (-1, 1) (10, 1) (10, 10) (-1, 10): rows 1..9 of columns 0..9
             ([-1e30, 1, 10, 1, 10, 10], 9 * 10),
             # entirely beyond the image (x + y >= 1e12)
             ([1e12, 1, 1e12, 1e12, 1, 1e12], 0),
             # covers the whole image
             ([-1e12, -1e12, 1e12, -1e12, 0, 3e9], 20 * 30)]
    for coords, area in cases:
        rle, problems = segmentation_rle({"segmentation": [coords]}, 20, 30, mask_utils)
        mask = mask_utils.decode(rle) if rle is not None else np.zeros((20, 30), np.uint8)
        assert mask.shape == (20, 30) and int(mask.sum()) == area, coords
        assert bool(problems) == (not math.isfinite(coords[0])), (coords, problems)
    # clipping is exact: a square half outside keeps its inside part
    xs, ys = clip_polygon([-10, 10, 10, -10], [2, 2, 8, 8], -1, -1, 31, 21)
    assert sorted(set(xs.tolist())) == [-1.0, 10.0] and sorted(set(ys.tolist())) == [2.0, 8.0]


def survivor_datasets(folder):
    """The kinds of degenerate cases that give a result, in the three forms."""
    write_image(folder, "big.png", (64, 64))
    write_image(folder, "tiny.png", (1, 1))
    write_image(folder, "wide.png", (24, 32))
    nan = math.nan

    def region(kind, shape):
        return {"shape_attributes": shape, "region_attributes": {"kind": kind}}
    via = {
        "big.png": {"filename": "big.png", "regions": [
            region("a", {"name": "polygon", "all_points_x": [-1e12, 1e12, 30],
                         "all_points_y": [-1e12, -1e12, 40]}),      # huge, clipped
            region("b", {"name": "rect", "x": 10, "y": 50, "width": 1, "height": 1}),  # 1 px
            region("b", {"name": "polygon", "all_points_x": [-20, 20, 20],
                         "all_points_y": [-5, -5, 30]}),            # negative, partly inside
            region("a", {"name": "polygon", "all_points_x": [nan, 3, 9],
                         "all_points_y": [1, 2, 9]}),               # NaN: skipped
            region("a", {"name": "polygon", "all_points_x": [1, 5],
                         "all_points_y": [1, 5]})]},                # 2 points: skipped
        "tiny.png": {"filename": "tiny.png", "regions": [
            region("a", {"name": "circle", "cx": 0, "cy": 0, "r": 1e12})]},
        "wide.png": {"filename": "wide.png", "regions": [
            region("b", {"name": "ellipse", "cx": 16, "cy": 12, "rx": 9, "ry": 4,
                         "theta": 0.5})]},
    }
    with open(os.path.join(folder, "via_region_data.json"), "w") as f:
        json.dump(via, f)
    via_ds = ViaDataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        via_ds.load_via(folder, None, class_names=("a", "b"), class_attribute="kind")
    via_ds.prepare()

    images = [{"id": 0, "file_name": "big.png", "height": 64, "width": 64},
              {"id": 1, "file_name": "tiny.png", "height": 1, "width": 1},
              {"id": 2, "file_name": "wide.png"}]               # size from the file
    anns = [
        {"id": 0, "image_id": 0, "category_id": 0, "iscrowd": 0,
         "segmentation": [[-1e12, -1e12, 1e12, -1e12, 30, 40], [1, 1, nan, 2, 3, 3], [4, 4]]},
        {"id": 0, "image_id": 0, "category_id": 1, "iscrowd": 0,
         "segmentation": [[10, 50, 11, 50, 11, 51, 10, 51]]},      # one pixel
        {"id": 1, "image_id": 0, "category_id": 1, "iscrowd": 1,
         "segmentation": {"size": [9, 9], "counts": "0"}},          # crowd, other size
        {"id": 2, "image_id": 1, "category_id": 0, "iscrowd": 0,
         "bbox": [0, 0, 1e12, 1e12]},                               # bbox only, huge
        {"id": 3, "image_id": 2, "category_id": 1, "iscrowd": 0,
         "segmentation": [[3, 3, 3e9, 3, 3, 3e9]]}]
    with open(os.path.join(folder, "coco.json"), "w") as f:
        json.dump({"images": images, "annotations": anns,
                   "categories": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}]}, f)
    coco_ds = CocoDataset()
    coco_ds.load_coco(folder, None, annotation_file=os.path.join(folder, "coco.json"))
    coco_ds.prepare()

    def masks(shape, *boxes):
        m = np.zeros(shape + (len(boxes),), bool)
        for k, (y1, x1, y2, x2) in enumerate(boxes):
            m[y1:y2, x1:x2, k] = True
        return m
    full = np.full((64, 64, 3), 90, np.uint8)
    array_ds = ArrayDataset([
        (full, masks((64, 64), (3, 3, 4, 4), (10, 10, 40, 30), (0, 0, 0, 0)),
         np.array([1, 2, 1])),                                      # 1 px, normal, empty
        (np.full((1, 1, 3), 200, np.uint8), masks((1, 1), (0, 0, 1, 1)), np.array([2.0])),
        (full, masks((64, 64), *[(2 * k, 0, 2 * k + 2, 64) for k in range(9)]),
         np.array([1] * 8 + [-1])),                                 # too many, a crowd
        (full, masks((64, 64), (0, 0, 64, 1)), np.array([2]))])     # 1 px wide
    return via_ds, coco_ds, array_ds


@pytest.mark.slow
def test_training_on_the_survivors_keeps_every_loss_finite(tmp_path):
    import keras

    import mrcnn.demo
    from mrcnn import model as modellib
    from mrcnn.recipes import CpuShapesConfig

    datasets = survivor_datasets(str(tmp_path))
    counts = [[check_ground_truth(ds, i, []) for i in ds.image_ids] for ds in datasets]
    # every case gave a result, and the cleaning left instances in most
    assert counts == [[3, 1, 1], [3, 1, 1], [2, 1, 6, 1]], counts
    mrcnn.demo.seed_everything(3)
    config = mrcnn.demo.make_config(CpuShapesConfig, IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64,
                                    NUM_CLASSES=3, STEPS_PER_EPOCH=3, IMAGES_PER_GPU=2,
                                    MAX_GT_INSTANCES=6, RPN_ANCHOR_SCALES=(8, 16, 32, 48, 64))
    model = modellib.MaskRCNN("training", config, str(tmp_path / "logs"))
    for epoch, dataset in enumerate(datasets, start=1):
        history = model.train(dataset, dataset, 0.02, epochs=epoch, layers="all", verbose=0,
                              seed=epoch, workers=1)
        for name, values in history.history.items():
            assert np.all(np.isfinite(values)), (type(dataset).__name__, name, values)
        assert {"loss", "mrcnn_mask_loss", "val_rpn_bbox_loss"} <= set(history.history)
    for w in model.keras_model.weights:
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(w))), w.path
