"""Evaluation: matching detections to ground truth, AP, recall, and a whole
model on a whole data set.

* Matterport's functions (``mrcnn.utils`` re-exports them): ``compute_matches``,
  ``compute_ap`` (VOC-style AP of one image on mask IoU), ``compute_ap_range``,
  ``compute_recall``, ``trim_zeros``.
* :func:`evaluate_model`: ``detect()`` on every image of a Dataset, then
  mAP@0.5 and mAP@[.5:.95] (the mean over images of ``compute_ap``, as
  Matterport's notebooks report it) and COCO's AP through pycocotools
  (``coco_eval``, bbox and segm).
"""
import time
from typing import Dict, Optional, Sequence

import numpy as np
from tqdm import tqdm

from mrcnn import coco_eval
from mrcnn._checks import _EmptyInputError, _as_boxes
from mrcnn.boxes import compute_overlaps, compute_overlaps_masks, extract_bboxes

__all__ = ["trim_zeros", "compute_matches", "compute_ap", "compute_ap_range", "compute_recall",
           "ground_truth", "evaluate_model"]


def trim_zeros(x: np.ndarray) -> np.ndarray:
    """It's common to have tensors larger than the available data and
    pad with zeros. This function removes rows that are all zeros.

    x: [rows, columns].
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise _EmptyInputError(f"trim_zeros: x must be 2-D [rows, columns], got shape {x.shape}.")
    return x[~np.all(x == 0, axis=1)]


def compute_matches(gt_boxes, gt_class_ids, gt_masks,
                    pred_boxes, pred_class_ids, pred_scores, pred_masks,
                    iou_threshold=0.5, score_threshold=0.0):
    """Finds matches between prediction and ground truth instances.

    gt_boxes: [G, (y1, x1, y2, x2)], zero rows are padding and trimmed.
    gt_class_ids: [G] int. gt_masks: [H, W, G].
    pred_boxes: [P, (y1, x1, y2, x2)] (zero rows trimmed), pred_class_ids:
        [P], pred_scores: [P], pred_masks: [H, W, P].
    iou_threshold: minimum mask IoU for a match.
    score_threshold: despite the name, Matterport compares it with the IoU:
        gt candidates with IoU below it are not considered.

    Predictions are sorted by ``np.argsort(scores)[::-1]`` and matched
    greedily on *mask* IoU, the best-overlapping unmatched gt of the same
    class first. Each gt is matched at most once. (Matterport tested
    "already matched" with gt_match > 0, so a gt matched to the top-scoring
    prediction 0 could be matched again and counted twice; fixed here.)

    Returns:
        gt_match: [G'] float64. For each GT box the index of the matched
                  predicted box (in sorted order), -1 if none.
        pred_match: [P'] float64. For each predicted box (sorted by score),
                    the index of the matched ground truth box, -1 if none.
        overlaps: [P', G'] mask IoU (float32; float64 zeros when empty).
    """
    # Trim zero padding
    gt_boxes = trim_zeros(_as_boxes(gt_boxes, "gt_boxes", "compute_matches"))
    gt_masks = np.asarray(gt_masks)[..., :gt_boxes.shape[0]]
    pred_boxes = trim_zeros(_as_boxes(pred_boxes, "pred_boxes", "compute_matches"))
    pred_scores = np.asarray(pred_scores)[:pred_boxes.shape[0]]
    gt_class_ids = np.asarray(gt_class_ids)
    # Sort predictions by score from high to low
    indices = np.argsort(pred_scores)[::-1]
    pred_boxes = pred_boxes[indices]
    pred_class_ids = np.asarray(pred_class_ids)[indices]
    pred_masks = np.asarray(pred_masks)[..., indices]

    # Compute IoU overlaps [pred_masks, gt_masks]
    overlaps = compute_overlaps_masks(pred_masks, gt_masks)

    # Loop through predictions and find matching ground truth boxes
    pred_match = -1 * np.ones([pred_boxes.shape[0]])
    gt_match = -1 * np.ones([gt_boxes.shape[0]])
    for i in range(len(pred_boxes)):
        # Find best matching ground truth box
        # 1. Sort matches by score
        sorted_ixs = np.argsort(overlaps[i])[::-1]
        # 2. Remove low scores
        low_score_idx = np.where(overlaps[i, sorted_ixs] < score_threshold)[0]
        if low_score_idx.size > 0:
            sorted_ixs = sorted_ixs[:low_score_idx[0]]
        # 3. Find the match
        for j in sorted_ixs:
            # If ground truth box is already matched, go to next one.
            # Deviation from Matterport, whose test was "> 0" and so missed a
            # match with prediction 0: that gt could be matched (and counted
            # as a true positive) twice. No golden case depends on it.
            if gt_match[j] > -1:
                continue
            # If we reach IoU smaller than the threshold, end the loop
            iou = overlaps[i, j]
            if iou < iou_threshold:
                break
            # Do we have a match?
            if pred_class_ids[i] == gt_class_ids[j]:
                gt_match[j] = i
                pred_match[i] = j
                break

    return gt_match, pred_match, overlaps


def compute_ap(gt_boxes, gt_class_ids, gt_masks,
               pred_boxes, pred_class_ids, pred_scores, pred_masks,
               iou_threshold=0.5):
    """Compute Average Precision at a set IoU threshold (default 0.5).

    Arguments as ``compute_matches`` (mask IoU). The precision envelope is
    made monotone (VOC style) and AP is the area under the precision/recall
    step curve.

    Returns:
    mAP: float64 Mean Average Precision (NaN when there is no gt)
    precisions: [P' + 2] float64 precisions at different class score
        thresholds, padded with 0 at both ends.
    recalls: [P' + 2] float64 recall values, padded with 0 and 1.
    overlaps: [P', G'] IoU overlaps.
    """
    # Get matches and overlaps
    gt_match, pred_match, overlaps = compute_matches(
        gt_boxes, gt_class_ids, gt_masks,
        pred_boxes, pred_class_ids, pred_scores, pred_masks,
        iou_threshold)

    # Compute precision and recall at each prediction box step
    precisions = np.cumsum(pred_match > -1) / (np.arange(len(pred_match)) + 1)
    recalls = np.cumsum(pred_match > -1).astype(np.float32) / len(gt_match)

    # Pad with start and end values to simplify the math
    precisions = np.concatenate([[0], precisions, [0]])
    recalls = np.concatenate([[0], recalls, [1]])

    # Ensure precision values decrease but don't increase. This way, the
    # precision value at each recall threshold is the maximum it can be
    # for all following recall thresholds, as specified by the VOC paper.
    precisions = np.maximum.accumulate(precisions[::-1])[::-1]

    # Compute mean AP over recall range
    indices = np.where(recalls[:-1] != recalls[1:])[0] + 1
    mAP = np.sum((recalls[indices] - recalls[indices - 1]) *
                 precisions[indices])

    return mAP, precisions, recalls, overlaps


def compute_ap_range(gt_box, gt_class_id, gt_mask,
                     pred_box, pred_class_id, pred_score, pred_mask,
                     iou_thresholds=None, verbose=1):
    """Compute AP over a range or IoU thresholds. Default range is 0.5-0.95
    (``np.arange(0.5, 1.0, 0.05)``).

    Returns: float64 mean of ``compute_ap`` over the thresholds; prints each
    AP when verbose.
    """
    # Default is 0.5 to 0.95 with increments of 0.05 (None or empty)
    if iou_thresholds is None or len(iou_thresholds) == 0:
        iou_thresholds = np.arange(0.5, 1.0, 0.05)

    # Compute AP over range of IoU thresholds
    AP = []
    for iou_threshold in iou_thresholds:
        ap, precisions, recalls, overlaps =\
            compute_ap(gt_box, gt_class_id, gt_mask,
                       pred_box, pred_class_id, pred_score, pred_mask,
                       iou_threshold=iou_threshold)
        if verbose:
            print("AP @{:.2f}:\t {:.3f}".format(iou_threshold, ap))
        AP.append(ap)
    AP = np.array(AP).mean()
    if verbose:
        print("AP @{:.2f}-{:.2f}:\t {:.3f}".format(
            iou_thresholds[0], iou_thresholds[-1], AP))
    return AP


def compute_recall(pred_boxes: np.ndarray, gt_boxes: np.ndarray, iou: float):
    """Compute the recall at the given IoU threshold. It's an indication
    of how many GT boxes were found by the given prediction boxes.

    pred_boxes: [N, (y1, x1, y2, x2)] in image coordinates
    gt_boxes: [N, (y1, x1, y2, x2)] in image coordinates
    iou: box IoU threshold (>=).

    Returns: recall (Python float, the fraction of gt boxes that are the best
    match of some prediction with IoU >= iou) and positive_ids [K] int64,
    the predictions with such a match. Raises ValueError if there is no gt
    box (recall undefined).
    """
    gt_boxes = _as_boxes(gt_boxes, "gt_boxes", "compute_recall")
    if gt_boxes.shape[0] == 0:
        raise ValueError("compute_recall: gt_boxes is empty; recall is undefined "
                         "without ground truth.")
    # Measure overlaps
    overlaps = compute_overlaps(pred_boxes, gt_boxes)
    iou_max = np.max(overlaps, axis=1)
    iou_argmax = np.argmax(overlaps, axis=1)
    positive_ids = np.where(iou_max >= iou)[0]
    matched_gt_boxes = iou_argmax[positive_ids]

    recall = len(set(matched_gt_boxes)) / gt_boxes.shape[0]
    return recall, positive_ids


############################################################
#  A model on a data set
############################################################

def ground_truth(dataset, image_id: int):
    """(image, class_ids, boxes, masks) of one image at its original size,
    for evaluation: ``load_image`` and ``load_mask`` with empty masks and
    crowd regions (class id <= 0) left out.

    Returns image [H, W, C], class_ids [N] int32, boxes [N, (y1, x1, y2, x2)]
    int32 pixels, masks [H, W, N] bool.
    """
    image = dataset.load_image(image_id)
    masks, class_ids = dataset.load_mask(image_id)
    masks, class_ids = np.asarray(masks), np.asarray(class_ids).reshape(-1).astype(np.int32)
    if masks.ndim != 3 or masks.shape[-1] == 0:
        return image, np.zeros([0], np.int32), np.zeros([0, 4], np.int32), \
            np.zeros(image.shape[:2] + (0,), bool)
    masks = masks.astype(bool)
    keep = (class_ids > 0) & masks.any(axis=(0, 1))
    masks, class_ids = masks[:, :, keep], class_ids[keep]
    return image, class_ids, extract_bboxes(masks), masks


def evaluate_model(model, dataset, image_ids: Optional[Sequence[int]] = None,
                   batch_size: int = 8, coco: bool = True, verbose: int = 1) -> Dict:
    """Detect every image of ``dataset`` and score the detections.

    model: a MaskRCNN in inference mode (anything with ``detect(images)``).
    dataset: a prepared Dataset (images the model has not trained on).
    image_ids: default all images.
    batch_size: images per ``detect()`` call.
    coco: also run COCOeval (bbox and segm) on ``dataset.to_coco()``.
    verbose: 1 shows a progress bar and COCO's tables.

    Returns a dict:
      mAP50: mean over images of ``compute_ap`` at mask IoU 0.5 (NaN-free:
        images without ground truth are left out of the mean);
      mAP: the same averaged over IoU 0.5:0.95 (``compute_ap_range``);
      APs: [images] AP@0.5 of each image (NaN without ground truth);
      coco: {"bbox": stats [12], "segm": stats [12]} (COCO_STATS_NAMES
        order; stats[0] is AP@[.5:.95], stats[1] AP@0.5), when ``coco``;
      image_ids, results (the detect() dicts, in that order), seconds.
    """
    start = time.time()
    image_ids = [int(i) for i in (dataset.image_ids if image_ids is None else image_ids)]
    aps, aps_range, results = [], [], []
    with tqdm(total=len(image_ids), desc="Evaluating", unit="image",
              disable=not verbose) as progress:
        for first in range(0, len(image_ids), batch_size):
            ids = image_ids[first:first + batch_size]
            gts = [ground_truth(dataset, i) for i in ids]
            detections = model.detect([g[0] for g in gts])
            for (_, class_ids, boxes, masks), r in zip(gts, detections):
                if len(class_ids) == 0:
                    aps.append(np.nan)
                    aps_range.append(np.nan)
                    continue
                args = (boxes, class_ids, masks, r["rois"], r["class_ids"], r["scores"],
                        r["masks"])
                aps.append(compute_ap(*args, iou_threshold=0.5)[0])
                aps_range.append(compute_ap_range(*args, verbose=0))
            results += detections
            progress.update(len(ids))
    scores = {"mAP50": float(np.nanmean(aps)) if np.isfinite(aps).any() else float("nan"),
              "mAP": float(np.nanmean(aps_range)) if np.isfinite(aps_range).any()
              else float("nan"),
              "APs": np.asarray(aps), "image_ids": image_ids, "results": results}
    if coco:
        gt = coco_eval.dataset_to_coco(dataset, image_ids)
        scores["coco"] = coco_eval.coco_evaluate(
            gt, coco_eval.detections_to_coco(image_ids, results), verbose=bool(verbose))
    scores["seconds"] = time.time() - start
    return scores
