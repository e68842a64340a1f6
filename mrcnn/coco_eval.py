"""COCO-style evaluation (pycocotools' COCOeval, bbox and segm) for any Dataset.

``Dataset.to_coco()`` (:func:`dataset_to_coco`) turns a prepared dataset's
ground truth into a COCO annotation dict; :func:`detections_to_coco` turns
``detect()`` results into COCO results; :func:`coco_evaluate` runs COCOeval
and returns the 12 standard numbers per type. ``evaluation.evaluate_model``
puts them together for a model.

Ids: COCO tools treat id 0 as "no match" (``COCOeval.evaluateImg`` marks
matches with the matched annotation's id, so a ground-truth annotation with
id 0 never counts as matched and perfect detections score below 1). Here
image ids are the dataset's internal image ids + 1, category ids its
internal class ids (1..NUM_CLASSES-1; 0 is the background, never a
category), annotation ids count from 1. The dataset's own ids are kept in
``"source_id"`` / ``"source"`` fields for reference.

The same rule for COCO files of the user's (:func:`safe_coco_ids`): several
annotation tools number annotations (and images, categories) from 0, or
write the same id twice. ``CocoDataset.load_coco`` renumbers such annotations
as it reads the file (pycocotools indexes annotations by id, so duplicates
would silently become copies of one annotation), and ``coco_evaluate`` /
``datasets.coco.evaluate_coco_results`` move image and category ids that are
0 (or negative) to positive ones on a copy, translating the results the same
way, so that perfect detections score AP 1.0. One warning is logged; results
files (``build_coco_results``) keep the user's image and category ids.

Crowd regions (negative class ids, COCO's ``iscrowd``) become ``iscrowd: 1``
annotations: detections on them are neither true nor false positives.
"""
import contextlib
import copy
import io
import logging
import warnings
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from mrcnn.boxes import extract_bboxes

__all__ = ["COCO_STATS_NAMES", "dataset_to_coco", "detections_to_coco", "coco_evaluate",
           "pycocotools", "safe_coco_ids", "results_to_safe_ids", "warn_id_problems"]

logger = logging.getLogger(__name__)

# What COCOeval.stats holds, in order (bbox and segm).
COCO_STATS_NAMES = (
    "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def pycocotools():
    """(COCO, COCOeval, mask) of pycocotools, with an install hint instead of
    a bare ImportError (imported on use: only evaluation needs it)."""
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise ImportError("COCO evaluation needs pycocotools: pip install pycocotools") from e
    return COCO, COCOeval, mask_utils


############################################################
#  Ids pycocotools can score
############################################################

def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _shift(items: list, kind: str, where: str) -> Tuple[Dict, Optional[str]]:
    """{old id: new id} moving the ids of images or categories to >= 1
    (every id + (1 - min id)), or {} when they are all >= 1 already."""
    ids = [item.get("id") for item in items]
    seen, dup = set(), []
    for i in ids:
        if i in seen:
            dup.append(i)
        seen.add(i)
    if dup:
        raise ValueError(f"{where}: {kind} ids {sorted(set(dup), key=str)[:10]} appear more "
                         f"than once; every {kind} needs its own id.")
    ints = [i for i in ids if _is_int(i)]
    if len(ints) != len(ids) or not ints or min(ints) >= 1:
        return {}, None
    offset = 1 - int(min(ints))
    zero = [i for i in ints if i <= 0]
    return ({i: int(i) + offset for i in ints},
            f"{kind} id{'s' if len(zero) > 1 else ''} {sorted(zero)[:5]} (all {kind} ids "
            f"moved up by {offset})")


def safe_coco_ids(ground_truth: dict, where: str = "COCO ground truth",
                  images_and_categories: bool = True) -> Tuple[dict, Dict[str, Dict], List[str]]:
    """A COCO annotation dict whose ids pycocotools scores correctly.

    pycocotools' COCOeval marks a match with the matched annotation's id,
    so id 0 reads as "unmatched", and ``COCO.createIndex`` keeps one
    annotation per id.

    ground_truth: a COCO dict ("images", "annotations", "categories").
    where: names the file in errors and warnings.
    images_and_categories: also move image and category ids <= 0 up
        (False: only annotations are renumbered, as when loading).
    Returns (dict, maps, problems): the input itself when nothing is wrong,
    else a copy where annotations with an id that is not an int >= 1, or
    not unique, are renumbered 1..n in file order, and image / category
    ids <= 0 are shifted so the smallest is 1 (``maps["image"]``,
    ``maps["category"]``: {user id: internal id}, for the results);
    ``problems`` describes what was changed (empty when nothing was).
    Raises ValueError naming the file for duplicate image or category ids.
    """
    images = list(ground_truth.get("images") or [])
    categories = list(ground_truth.get("categories") or [])
    annotations = list(ground_truth.get("annotations") or [])
    maps, problems = {}, []
    for kind, items in (("image", images), ("category", categories)):
        mapping, problem = _shift(items, kind, where)
        if mapping and images_and_categories:
            maps[kind] = mapping
            problems.append(problem)
    ann_ids = [a.get("id") for a in annotations]
    bad = [i for i in ann_ids if not _is_int(i) or i < 1]
    renumber = bool(bad) or len(set(map(str, ann_ids))) != len(ann_ids)
    if renumber:
        what = []
        if bad:
            what.append(f"{len(bad)} annotation id(s) that are not >= 1 (e.g. {bad[:3]})")
        if len(set(map(str, ann_ids))) != len(ann_ids):
            what.append(f"{len(ann_ids) - len(set(map(str, ann_ids)))} repeated annotation id(s)")
        problems.append(" and ".join(what) + " (annotations renumbered 1..n)")
    if not problems:
        return ground_truth, {}, []
    out = dict(ground_truth)
    image_map, category_map = maps.get("image", {}), maps.get("category", {})
    out["images"] = [dict(im, id=image_map.get(im.get("id"), im.get("id"))) for im in images]
    out["categories"] = [dict(c, id=category_map.get(c.get("id"), c.get("id")))
                         for c in categories]
    new_anns = []
    for k, a in enumerate(annotations):
        a = dict(a)
        if renumber:
            a["id"] = k + 1
        a["image_id"] = image_map.get(a.get("image_id"), a.get("image_id"))
        a["category_id"] = category_map.get(a.get("category_id"), a.get("category_id"))
        new_anns.append(a)
    out["annotations"] = new_anns
    return out, maps, problems


def results_to_safe_ids(results: Sequence[dict], maps: Dict[str, Dict]) -> List[dict]:
    """COCO results in the user's ids -> the ids of ``safe_coco_ids``
    (copies; the input is not modified)."""
    image_map, category_map = maps.get("image", {}), maps.get("category", {})
    if not image_map and not category_map:
        return list(results)
    return [dict(r, image_id=image_map.get(r["image_id"], r["image_id"]),
                 category_id=category_map.get(r["category_id"], r["category_id"]))
            for r in results]


def warn_id_problems(where: str, problems: Sequence[str]) -> None:
    """The one warning about ids pycocotools cannot use."""
    if problems:
        logger.warning(
            "%s: %s. pycocotools uses id 0 for \"no match\" (and one annotation per id), so "
            "mrcnn uses its own ids for loading and scoring; results files keep your image "
            "and category ids.", where, "; ".join(problems))


def _rle(mask: np.ndarray) -> dict:
    """[H, W] bool mask -> COCO RLE with str counts (JSON-ready)."""
    _, _, mask_utils = pycocotools()
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _xywh(box) -> List[float]:
    """(y1, x1, y2, x2) pixels, y2/x2 exclusive -> COCO [x, y, width, height]."""
    y1, x1, y2, x2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def dataset_to_coco(dataset, image_ids: Optional[Iterable[int]] = None) -> dict:
    """COCO ground truth of a prepared ``Dataset``: a dict with "images",
    "annotations" and "categories" (``pycocotools.coco.COCO`` reads it after
    ``coco.dataset = d; coco.createIndex()``; ``json.dump`` writes it).

    image_ids: internal image ids (default all). Each image is read with
        ``load_image`` only for its size when ``image_info`` has no
        "height"/"width", and its instances with ``load_mask``.
    Annotations carry the mask as RLE, its area and its box; empty masks are
    left out (``load_image_gt`` drops them too). Ids: see the module docstring.
    """
    image_ids = list(dataset.image_ids if image_ids is None else image_ids)
    images, annotations = [], []
    for image_id in image_ids:
        image_id = int(image_id)
        info = dataset.image_info[image_id]
        masks, class_ids = dataset.load_mask(image_id)
        masks, class_ids = np.asarray(masks), np.asarray(class_ids).reshape(-1)
        height, width = info.get("height"), info.get("width")
        if masks.ndim == 3 and masks.shape[-1]:
            height, width = masks.shape[:2]
        elif not height or not width:
            height, width = dataset.load_image(image_id).shape[:2]
        images.append({"id": image_id + 1, "height": int(height), "width": int(width),
                       "file_name": str(info.get("path", "")), "source": info.get("source"),
                       "source_id": info.get("id")})
        if not class_ids.size:
            continue
        boxes = extract_bboxes(masks)
        for i, class_id in enumerate(class_ids):
            mask = masks[:, :, i].astype(bool)
            area = int(mask.sum())
            if area == 0:
                continue
            annotations.append({"id": len(annotations) + 1, "image_id": image_id + 1,
                                "category_id": int(abs(class_id)), "iscrowd": int(class_id < 0),
                                "area": area, "bbox": _xywh(boxes[i]),
                                "segmentation": _rle(mask)})
    categories = [{"id": int(i), "name": str(dataset.class_names[i]),
                   "source": dataset.class_info[i].get("source"),
                   "source_id": dataset.class_info[i].get("id")}
                  for i in range(1, int(dataset.num_classes))]
    return {"images": images, "annotations": annotations, "categories": categories}


def detections_to_coco(image_ids: Sequence[int], results: Sequence[Dict]) -> List[dict]:
    """``detect()`` results -> COCO results (bbox, segmentation RLE, score).

    image_ids: the internal image id of each result.
    results: dicts with rois [N, 4], class_ids [N], scores [N], masks [H, W, N].
    Returns a list of dicts with image_id (internal id + 1, as
    dataset_to_coco), category_id (the class id), bbox, score, segmentation.
    """
    out = []
    for image_id, r in zip(image_ids, results):
        for i in range(len(r["class_ids"])):
            out.append({"image_id": int(image_id) + 1, "category_id": int(r["class_ids"][i]),
                        "bbox": _xywh(r["rois"][i]), "score": float(r["scores"][i]),
                        "segmentation": _rle(r["masks"][:, :, i])})
    return out


def coco_evaluate(ground_truth: dict, results: List[dict], eval_types=("bbox", "segm"),
                  verbose: bool = True) -> Dict[str, np.ndarray]:
    """Run COCOeval on a ground-truth dict and a result list.

    ground_truth: from dataset_to_coco (or any COCO annotation dict).
    results: COCO result dicts (detections_to_coco); not modified.
    eval_types: any of "bbox", "segm".
    verbose: print COCO's summary table.
    Returns {eval_type: stats [12] float64} in COCO_STATS_NAMES order;
    -1 where there is no ground truth to score.
    """
    COCO, COCOeval, _ = pycocotools()
    if isinstance(eval_types, str):
        eval_types = (eval_types,)
    for t in eval_types:
        if t not in ("bbox", "segm"):
            raise ValueError(f"coco_evaluate: eval type {t!r} is not 'bbox' or 'segm'")
    ground_truth, maps, problems = safe_coco_ids(ground_truth)
    warn_id_problems("coco_evaluate", problems)
    results = results_to_safe_ids(results, maps)
    gt = COCO()
    gt.dataset = copy.deepcopy(ground_truth)
    with _quiet():
        gt.createIndex()
    stats = {}
    for eval_type in eval_types:
        if results:
            # loadRes adds fields to the dicts it gets, so give it copies.
            with _quiet():
                dt = gt.loadRes(copy.deepcopy(list(results)))
        else:
            # loadRes cannot take an empty list; an empty result set scores 0.
            dt = COCO()
            dt.dataset = {"images": copy.deepcopy(ground_truth["images"]),
                          "categories": copy.deepcopy(ground_truth["categories"]),
                          "annotations": []}
            with _quiet(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dt.createIndex()
        coco_eval = COCOeval(gt, dt, eval_type)
        coco_eval.params.imgIds = [im["id"] for im in ground_truth["images"]]
        with _quiet():
            coco_eval.evaluate()
            coco_eval.accumulate()
        with _quiet(not verbose):
            print(f"COCO {eval_type} ({len(ground_truth['images'])} images, "
                  f"{len(results)} detections):")
            coco_eval.summarize()
        stats[eval_type] = np.array(coco_eval.stats, dtype=np.float64)
    return stats


def _quiet(quiet=True):
    """Swallow pycocotools' progress prints ("index created!", timings)."""
    return contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()
