"""Display and visualization functions (Matterport's ``mrcnn.visualize`` API).

Every function keeps Matterport's name, positional arguments and defaults, so
notebooks written for Matterport's Mask R-CNN run unchanged. Additions, all
keyword arguments with backwards-compatible defaults:

- ``save_path``: every plotting function takes it. When given, the figure is
  written to that PNG file and closed instead of shown, so the functions work
  in scripts, CI and on machines without a display.
- ``ax``: where Matterport creates its own figure, an existing matplotlib
  ``Axes`` can be passed; the function then draws into it and neither shows
  nor saves (the caller owns the figure).
- ``figsize`` where Matterport hard-coded a figure size.
- ``random_colors(..., seed=...)`` for reproducible colors.

Headless use: this module imports ``matplotlib.pyplot`` but never selects a
backend, so Jupyter keeps its inline backend and a machine without a display
falls back to Agg by matplotlib's own rules. Showing a figure on a
non-interactive backend (Agg) is a silent no-op here (no warning), and the
figure stays open, so ``plt.savefig`` still works afterwards.

``display_table`` / ``display_weight_stats`` (``mrcnn.tables``, re-exported
here) render HTML inside a Jupyter notebook (as Matterport did) and print a
plain-text table otherwise.

Deviations from Matterport, all bug fixes:
- ``display_instances`` accepts ``colors`` as a NumPy array, grayscale and
  RGBA images, and raises ``ValueError`` on inconsistent lengths instead of a
  bare ``assert``.
- ``display_images`` no longer adds an empty row when ``len(images)`` is a
  multiple of ``cols``.
- ``draw_box`` draws with NumPy (OpenCV is not a dependency): the same 3-pixel
  wide outline as ``cv2.rectangle(thickness=2)``, with square corners.
- ``display_differences`` copes with images that have no ground truth, and
  sorts predictions by score first, so captions stay right when the input is
  not sorted (Matterport paired input-order scores with sorted-order IoUs).
- ``draw_boxes`` blends masks of visibility-0 instances in gray (Matterport
  crashed indexing the color name "gray").
"""

import itertools

import numpy as np
import matplotlib.pyplot as plt
from matplotlib import lines, patches
from matplotlib.colors import to_rgb

from mrcnn import utils
from mrcnn.drawing import (_as_rgb, _draw_mask_outline, _finish, _new_axes, apply_mask,  # noqa: F401
                           draw_box, random_colors)
from mrcnn.tables import display_table, display_weight_stats  # noqa: F401

__all__ = [
    "display_images",
    "random_colors",
    "apply_mask",
    "display_instances",
    "display_differences",
    "draw_rois",
    "draw_box",
    "display_top_masks",
    "plot_precision_recall",
    "plot_overlaps",
    "draw_boxes",
    "display_table",
    "display_weight_stats",
    "display_comparison",
]


############################################################
#  Figure plumbing
############################################################


############################################################
#  Visualization
############################################################

def display_images(images, titles=None, cols=4, cmap=None, norm=None,
                   interpolation=None, figsize=None, save_path=None):
    """Displays a list of images in a grid, optionally with titles.

    images: list of images, each [height, width] or [height, width, 3];
        cast to uint8 for display (as Matterport), so pass 0..255 values.
    titles: optional list with one title per image.
    cols: number of images per row.
    cmap: optional color map for single-channel images, e.g. "Blues".
    norm: optional ``matplotlib.colors.Normalize`` mapping values to colors.
    interpolation: optional imshow interpolation.
    figsize: (width, height) in inches; default (14, 14 * rows // cols).
    save_path: optional PNG path; the figure is saved there and closed.
    """
    titles = titles if titles is not None else [""] * len(images)
    if len(titles) != len(images):
        raise ValueError("display_images: got {} titles for {} images".format(
            len(titles), len(images)))
    rows = max(1, -(-len(images) // cols))  # ceil
    if figsize is None:
        figsize = (14, max(1, 14 * rows // cols))
    fig = plt.figure(figsize=figsize)
    for i, (image, title) in enumerate(zip(images, titles), start=1):
        plt.subplot(rows, cols, i)
        plt.title(title, fontsize=9)
        plt.axis("off")
        plt.imshow(np.asarray(image).astype(np.uint8), cmap=cmap, norm=norm,
                   interpolation=interpolation)
    _finish(fig, True, save_path)


def _check_instances(image, boxes, masks, class_ids, scores, colors, captions,
                     class_names):
    """Raises ValueError naming the argument whose length does not match."""
    n = boxes.shape[0]
    if boxes.ndim != 2 or boxes.shape[1] < 4:
        raise ValueError("display_instances: boxes must be [N, (y1, x1, y2, x2)], "
                         "got shape {}".format(boxes.shape))
    if masks.ndim != 3 or masks.shape[-1] != n:
        raise ValueError(
            "display_instances: masks must be [height, width, N] with N={} (the "
            "number of boxes), got shape {}".format(n, masks.shape))
    if masks.shape[:2] != image.shape[:2]:
        raise ValueError(
            "display_instances: masks are {}x{} but the image is {}x{}; resize "
            "the masks to the image (utils.resize_mask / unmold_mask)".format(
                masks.shape[0], masks.shape[1], image.shape[0], image.shape[1]))
    if class_ids.shape[0] != n:
        raise ValueError("display_instances: {} class_ids for {} boxes".format(
            class_ids.shape[0], n))
    for name, values in (("scores", scores), ("colors", colors),
                         ("captions", captions)):
        if values is not None and len(values) < n:
            raise ValueError("display_instances: {} {} for {} boxes".format(
                len(values), name, n))
    if captions is None and n and (class_ids.min() < 0 or
                                   class_ids.max() >= len(class_names)):
        raise ValueError(
            "display_instances: class_ids must be in [0, {}) (len(class_names)), "
            "got range [{}, {}]".format(len(class_names), class_ids.min(),
                                        class_ids.max()))


def display_instances(image, boxes, masks, class_ids, class_names,
                      scores=None, title="",
                      figsize=(16, 16), ax=None,
                      show_mask=True, show_bbox=True,
                      colors=None, captions=None, save_path=None):
    """Draws instances (masks, boxes, labels) over an image.

    image: [height, width, 3] (or grayscale / RGBA) image, 0..255 values.
    boxes: [N, (y1, x1, y2, x2)] int or float, image pixel coordinates; an
        all-zero box marks an instance to skip (lost in cropping).
    masks: [height, width, N] bool or 0/1.
    class_ids: [N] int, indices into class_names.
    class_names: list of class names of the dataset, index 0 = "BG".
    scores: optional [N] float confidences, shown as "name 0.987".
    title: figure title.
    figsize: figure size in inches when ``ax`` is None.
    ax: optional matplotlib Axes to draw into (then nothing is shown/saved).
    show_mask, show_bbox: draw the masks (blended color) / dashed boxes.
    colors: optional [N] list or array of (r, g, b[, a]) floats in [0, 1];
        default ``random_colors(N)``.
    captions: optional [N] strings replacing the "name score" labels.
    save_path: optional PNG path; the figure is saved there and closed.
    """
    image = _as_rgb(image)
    boxes = np.asarray(boxes)
    masks = np.asarray(masks)
    class_ids = np.asarray(class_ids)
    if captions is not None and len(captions) == 0:
        captions = None  # Matterport treats an empty list as "no captions"
    N = boxes.shape[0]
    if not N:
        print("\n*** No instances to display *** \n")
    else:
        _check_instances(image, boxes, masks, class_ids, scores, colors,
                         captions, class_names)

    ax, owns_figure = _new_axes(ax, figsize)
    if colors is None:
        colors = random_colors(N)

    # Show a margin around the image so boxes on the border stay visible.
    height, width = image.shape[:2]
    ax.set_ylim(height + 10, -10)
    ax.set_xlim(-10, width + 10)
    ax.axis("off")
    ax.set_title(title)

    # uint32 so that blending cannot overflow before the final cast.
    masked_image = image.astype(np.uint32).copy()
    for i in range(N):
        color = colors[i]
        if not np.any(boxes[i]):
            # No box: the instance was likely lost in image cropping.
            continue
        y1, x1, y2, x2 = boxes[i][:4]
        if show_bbox:
            ax.add_patch(patches.Rectangle(
                (x1, y1), x2 - x1, y2 - y1, linewidth=2, alpha=0.7,
                linestyle="dashed", edgecolor=color, facecolor="none"))

        if captions is None:
            label = class_names[int(class_ids[i])]
            score = scores[i] if scores is not None else None
            caption = "{} {:.3f}".format(label, score) if score else label
        else:
            caption = captions[i]
        ax.text(x1, y1 + 8, caption, color="w", size=11, backgroundcolor="none")

        mask = masks[:, :, i]
        if show_mask:
            masked_image = apply_mask(masked_image, mask, color)
        _draw_mask_outline(ax, mask, color)
    ax.imshow(masked_image.astype(np.uint8))
    _finish(ax.figure, owns_figure, save_path)


def display_differences(image,
                        gt_box, gt_class_id, gt_mask,
                        pred_box, pred_class_id, pred_score, pred_mask,
                        class_names, title="", ax=None,
                        show_mask=True, show_box=True,
                        iou_threshold=0.5, score_threshold=0.5,
                        figsize=(16, 16), save_path=None):
    """Draws ground truth (green) and predictions (red) on the same image.

    Predictions are captioned "score / IoU": the IoU with the matched ground
    truth box, or the best IoU with any ground truth when unmatched.

    gt_box: [G, (y1, x1, y2, x2)] pixels; gt_class_id: [G] int;
    gt_mask: [height, width, G].
    pred_box: [P, (y1, x1, y2, x2)] pixels; pred_class_id: [P] int;
    pred_score: [P] float; pred_mask: [height, width, P].
    iou_threshold, score_threshold: passed to ``utils.compute_matches``.
    Other arguments as in ``display_instances``.
    """
    # compute_matches returns pred_match and overlaps in descending score
    # order; sort the predictions that way first so that captions, colors and
    # masks line up with them even when the input is not sorted.
    order = np.argsort(-np.asarray(pred_score), kind="stable")
    pred_box = np.asarray(pred_box)[order]
    pred_class_id = np.asarray(pred_class_id)[order]
    pred_score = np.asarray(pred_score)[order]
    pred_mask = np.asarray(pred_mask)[..., order]
    gt_match, pred_match, overlaps = utils.compute_matches(
        gt_box, gt_class_id, gt_mask,
        pred_box, pred_class_id, pred_score, pred_mask,
        iou_threshold=iou_threshold, score_threshold=score_threshold)
    colors = [(0, 1, 0, .8)] * len(gt_match) + [(1, 0, 0, 1)] * len(pred_match)
    class_ids = np.concatenate([gt_class_id, pred_class_id])
    scores = np.concatenate([np.zeros([len(gt_match)]), pred_score])
    boxes = np.concatenate([gt_box, pred_box])
    masks = np.concatenate([gt_mask, pred_mask], axis=-1)

    def best_iou(i):
        if pred_match[i] > -1:
            return overlaps[i, int(pred_match[i])]
        return overlaps[i].max() if overlaps.shape[1] else 0.0

    captions = [""] * len(gt_match) + [
        "{:.2f} / {:.2f}".format(pred_score[i], best_iou(i))
        for i in range(len(pred_match))]
    title = title or ("Ground Truth and Detections\n GT=green, pred=red, "
                      "captions: score/IoU")
    display_instances(image, boxes, masks, class_ids, class_names, scores,
                      title=title, figsize=figsize, ax=ax,
                      show_bbox=show_box, show_mask=show_mask,
                      colors=colors, captions=captions, save_path=save_path)


def draw_rois(image, rois, refined_rois, mask, class_ids, class_names, limit=10,
              ax=None, figsize=(12, 12), save_path=None):
    """Draws detection-target ROIs and their refinements (training targets).

    Positive ROIs (class_id > 0) are drawn dashed, with the refined box solid,
    a line joining their top-left corners, the class label and the mask;
    negative ROIs are gray. At most ``limit`` ROIs, picked at random
    (``np.random``), are drawn. Prints the positive/negative counts.

    image: [height, width, 3] uint8.
    rois: [N, (y1, x1, y2, x2)] pixels.
    refined_rois: [N, (y1, x1, y2, x2)] pixels, rois with the deltas applied.
    mask: [N, mask_height, mask_width] float masks in ROI coordinates
        (e.g. the mask target of each ROI's class), pasted with
        ``utils.unmold_mask``.
    class_ids: [N] int, 0 = background.
    ax, figsize, save_path: as in ``display_instances``.
    """
    masked_image = image.copy()
    rois = np.asarray(rois)
    class_ids = np.asarray(class_ids)

    # Pick random ROIs in case there are too many.
    ids = np.arange(rois.shape[0], dtype=np.int32)
    ids = np.random.choice(ids, limit, replace=False) if ids.shape[0] > limit else ids

    ax, owns_figure = _new_axes(ax, figsize)
    if rois.shape[0] > limit:
        ax.set_title("Showing {} random ROIs out of {}".format(len(ids), rois.shape[0]))
    else:
        ax.set_title("{} ROIs".format(len(ids)))

    # Show a margin around the image (wider on the left for labels).
    ax.set_ylim(image.shape[0] + 20, -20)
    ax.set_xlim(-50, image.shape[1] + 20)
    ax.axis("off")

    for id_ in ids:
        color = np.random.rand(3)
        class_id = class_ids[id_]
        y1, x1, y2, x2 = rois[id_][:4]
        ax.add_patch(patches.Rectangle(
            (x1, y1), x2 - x1, y2 - y1, linewidth=2,
            edgecolor=color if class_id else "gray",
            facecolor="none", linestyle="dashed"))
        if class_id:
            ry1, rx1, ry2, rx2 = refined_rois[id_][:4]
            ax.add_patch(patches.Rectangle(
                (rx1, ry1), rx2 - rx1, ry2 - ry1, linewidth=2,
                edgecolor=color, facecolor="none"))
            # Connect the top-left corners of the ROI and its refinement.
            ax.add_line(lines.Line2D([x1, rx1], [y1, ry1], color=color))
            ax.text(rx1, ry1 + 8, "{}".format(class_names[class_id]),
                    color="w", size=11, backgroundcolor="none")
            m = utils.unmold_mask(mask[id_], rois[id_][:4].astype(np.int32),
                                  image.shape)
            masked_image = apply_mask(masked_image, m, color)

    ax.imshow(masked_image)

    positives = int(np.sum(class_ids > 0))
    print("Positive ROIs: ", positives)
    print("Negative ROIs: ", int(np.sum(class_ids == 0)))
    print("Positive Ratio: {:.2f}".format(positives / max(1, class_ids.shape[0])))
    _finish(ax.figure, owns_figure, save_path)


def display_top_masks(image, mask, class_ids, class_names, limit=4,
                      figsize=None, save_path=None):
    """Displays the image and the masks of its ``limit`` largest classes.

    image: [height, width, 3] uint8.
    mask: [height, width, N] bool or 0/1 instance masks.
    class_ids: [N] int class of each mask.
    Classes are ranked by total mask area; each panel shows that class's
    instances numbered 1, 2, ... Empty panels are titled "-".
    figsize, save_path: as in ``display_images``.
    """
    class_ids = np.asarray(class_ids)
    to_display = [image]
    titles = ["H x W={}x{}".format(image.shape[0], image.shape[1])]
    # Pick the most prominent classes in this image.
    unique_class_ids = np.unique(class_ids)
    mask_area = [np.sum(mask[:, :, np.where(class_ids == i)[0]])
                 for i in unique_class_ids]
    top_ids = [v[0] for v in sorted(zip(unique_class_ids, mask_area),
                                    key=lambda r: r[1], reverse=True) if v[1] > 0]
    for i in range(limit):
        class_id = top_ids[i] if i < len(top_ids) else -1
        # Instances of this class, labelled 1..k so each has its own shade.
        m = mask[:, :, np.where(class_ids == class_id)[0]]
        m = np.sum(m * np.arange(1, m.shape[-1] + 1), -1)
        to_display.append(m)
        titles.append(class_names[class_id] if class_id != -1 else "-")
    display_images(to_display, titles=titles, cols=limit + 1, cmap="Blues_r",
                   figsize=figsize, save_path=save_path)


def plot_precision_recall(AP, precisions, recalls, ax=None, figsize=None,
                          save_path=None):
    """Draws the precision-recall curve.

    AP: average precision at IoU >= 0.5, shown in the title.
    precisions, recalls: [K] float, e.g. from ``utils.compute_ap``.
    ax, figsize, save_path: as in ``display_instances`` (figsize None =
        matplotlib's default).
    """
    ax, owns_figure = _new_axes(ax, figsize)
    ax.set_title("Precision-Recall Curve. AP@50 = {:.3f}".format(AP))
    ax.set_ylim(0, 1.1)
    ax.set_xlim(0, 1.1)
    ax.plot(recalls, precisions)
    _finish(ax.figure, owns_figure, save_path)


def plot_overlaps(gt_class_ids, pred_class_ids, pred_scores,
                  overlaps, class_names, threshold=0.5, ax=None,
                  figsize=(12, 10), save_path=None):
    """Draws a grid of IoUs showing how ground truth objects are classified.

    gt_class_ids: [G] int ground truth classes (zeros, i.e. padding, dropped).
    pred_class_ids: [P] int predicted classes (zeros dropped).
    pred_scores: [P] float scores of the predictions.
    overlaps: [P, G] float IoU of each prediction with each ground truth,
        e.g. from ``utils.compute_overlaps_masks``.
    class_names: list of all class names in the dataset.
    threshold: IoU above which a cell is labelled "match" (same class) or
        "wrong" (different class).
    ax, figsize, save_path: as in ``display_instances``.
    """
    gt_class_ids = np.asarray(gt_class_ids)
    pred_class_ids = np.asarray(pred_class_ids)
    gt_class_ids = gt_class_ids[gt_class_ids != 0]
    pred_class_ids = pred_class_ids[pred_class_ids != 0]
    overlaps = np.asarray(overlaps)
    if overlaps.shape != (len(pred_class_ids), len(gt_class_ids)):
        raise ValueError(
            "plot_overlaps: overlaps must be [predictions, ground truth] = "
            "[{}, {}] (non-zero class ids), got shape {}".format(
                len(pred_class_ids), len(gt_class_ids), overlaps.shape))

    ax, owns_figure = _new_axes(ax, figsize)
    if overlaps.size == 0:
        # No prediction or no ground truth: nothing to draw a matrix of
        # (imshow of an empty array warns about identical limits).
        ax.set_title("Overlaps: no predictions or no ground truth")
        ax.axis("off")
        _finish(ax.figure, owns_figure, save_path)
        return
    ax.imshow(overlaps, interpolation="nearest", cmap=plt.cm.Blues)
    ax.set_yticks(np.arange(len(pred_class_ids)),
                  ["{} ({:.2f})".format(class_names[int(id_)], pred_scores[i])
                   for i, id_ in enumerate(pred_class_ids)])
    ax.set_xticks(np.arange(len(gt_class_ids)),
                  [class_names[int(id_)] for id_ in gt_class_ids], rotation=90)

    thresh = overlaps.max() / 2. if overlaps.size else 0.
    for i, j in itertools.product(range(overlaps.shape[0]),
                                  range(overlaps.shape[1])):
        text = ""
        if overlaps[i, j] > threshold:
            text = "match" if gt_class_ids[j] == pred_class_ids[i] else "wrong"
        color = ("white" if overlaps[i, j] > thresh
                 else "black" if overlaps[i, j] > 0
                 else "grey")
        ax.text(j, i, "{:.3f}\n{}".format(overlaps[i, j], text),
                horizontalalignment="center", verticalalignment="center",
                fontsize=9, color=color)

    ax.set_xlabel("Ground Truth")
    ax.set_ylabel("Predictions")
    if owns_figure:
        ax.figure.tight_layout()
    _finish(ax.figure, owns_figure, save_path)


def draw_boxes(image, boxes=None, refined_boxes=None,
               masks=None, captions=None, visibilities=None,
               title="", ax=None, figsize=(12, 12), save_path=None):
    """Draws boxes, refined boxes and masks with per-box emphasis.

    image: [height, width, 3] 0..255 image.
    boxes: [N, (y1, x1, y2, x2)] pixels, drawn dotted; all-zero rows skipped.
    refined_boxes: like boxes, drawn solid, joined to ``boxes`` by a line, to
        show that they refine ``boxes``.
    masks: [height, width, N] bool or 0/1.
    captions: N strings, drawn at the top-left of each (refined) box.
    visibilities: optional N values in {0, 1, 2}: 0 = gray dotted box, no
        refined box; 1 = colored dotted; 2 = colored solid. Default 1.
    title: optional title.
    ax, figsize, save_path: as in ``display_instances``.
    """
    if boxes is None and refined_boxes is None:
        raise ValueError("draw_boxes: pass boxes, refined_boxes or both")
    boxes = None if boxes is None else np.asarray(boxes)
    refined_boxes = None if refined_boxes is None else np.asarray(refined_boxes)
    N = boxes.shape[0] if boxes is not None else refined_boxes.shape[0]

    ax, owns_figure = _new_axes(ax, figsize)
    colors = random_colors(N)

    # Show a margin of 10% around the image.
    margin = image.shape[0] // 10
    ax.set_ylim(image.shape[0] + margin, -margin)
    ax.set_xlim(-margin, image.shape[1] + margin)
    ax.axis("off")
    ax.set_title(title)

    masked_image = image.astype(np.uint32).copy()
    for i in range(N):
        visibility = visibilities[i] if visibilities is not None else 1
        if visibility == 0:
            color, style, alpha = "gray", "dotted", 0.5
        elif visibility == 1:
            color, style, alpha = colors[i], "dotted", 1
        elif visibility == 2:
            color, style, alpha = colors[i], "solid", 1
        else:
            raise ValueError("draw_boxes: visibilities[{}] = {} must be 0, 1 "
                             "or 2".format(i, visibility))

        if boxes is not None:
            if not np.any(boxes[i]):
                # No box: the instance was likely lost in cropping.
                continue
            y1, x1, y2, x2 = boxes[i][:4]
            ax.add_patch(patches.Rectangle(
                (x1, y1), x2 - x1, y2 - y1, linewidth=2, alpha=alpha,
                linestyle=style, edgecolor=color, facecolor="none"))

        if refined_boxes is not None and visibility > 0:
            ry1, rx1, ry2, rx2 = refined_boxes[i][:4].astype(np.int32)
            ax.add_patch(patches.Rectangle(
                (rx1, ry1), rx2 - rx1, ry2 - ry1, linewidth=2,
                edgecolor=color, facecolor="none"))
            if boxes is not None:
                ax.add_line(lines.Line2D([x1, rx1], [y1, ry1], color=color))

        if captions is not None:
            # Caption the refined box when there is one.
            if refined_boxes is not None:
                y1, x1 = refined_boxes[i][:2]
            ax.text(x1, y1, captions[i], size=11, verticalalignment="top",
                    color="w", backgroundcolor="none",
                    bbox={"facecolor": color, "alpha": 0.5,
                          "pad": 2, "edgecolor": "none"})

        if masks is not None:
            mask = masks[:, :, i]
            # to_rgb: "gray" (visibility 0) is a name, apply_mask needs RGB.
            masked_image = apply_mask(masked_image, mask, to_rgb(color))
            _draw_mask_outline(ax, mask, color)
    ax.imshow(masked_image.astype(np.uint8))
    _finish(ax.figure, owns_figure, save_path)


def display_comparison(image, gt, result, class_names, title="", save_path=None,
                       figsize=(10, 5.4)):
    """Ground truth (left) and detections (right) of one image, side by
    side, each class in one fixed color on both sides.

    image: [H, W, 3] uint8.
    gt: (class_ids [N], boxes [N, (y1, x1, y2, x2)], masks [H, W, N]).
    result: one dict of ``MaskRCNN.detect()`` (rois, class_ids, scores, masks).
    class_names: the dataset's class names ("BG" first).
    save_path: write a PNG there and close the figure (else show it).
    Returns the matplotlib Figure.
    """
    palette = random_colors(max(len(class_names) - 1, 1), seed=0)

    def colors(ids):
        return [palette[(int(i) - 1) % len(palette)] for i in ids]

    class_ids, boxes, masks = gt
    fig, (left, right) = plt.subplots(1, 2, figsize=figsize)
    display_instances(image, boxes, masks, class_ids, class_names, ax=left,
                      title="Ground truth", colors=colors(class_ids))
    found = len(result["class_ids"])
    display_instances(image, result["rois"], result["masks"], result["class_ids"],
                      class_names, scores=result["scores"], ax=right,
                      title=f"Detections ({found})" if found else "Detections: none",
                      colors=colors(result["class_ids"]))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _finish(fig, True, save_path)
    return fig
