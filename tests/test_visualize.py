"""Tests for mrcnn.visualize: every function renders headless to a PNG.

Figures are tiny (2-3 inches at 50-100 dpi) so the whole file runs in seconds.
"""
import colorsys
import os
import random
import subprocess
import sys
import warnings

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from mrcnn import tables, visualize

CLASS_NAMES = ["BG", "square", "circle", "triangle"]
GRAY = 100
RED_ON_GRAY = (177, 50, 50)  # 100 * 0.5 + 0.5 * (255, 0, 0), truncated


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def load_png(path):
    assert os.path.getsize(path) > 0, "{} is empty".format(path)
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int32)


def assert_not_blank(pixels):
    assert pixels.reshape(-1, 3).std(axis=0).max() > 0, "the PNG is one flat color"


def pixels_near(pixels, rgb, tol=3):
    return np.all(np.abs(pixels - np.array(rgb)) <= tol, axis=-1)


def scene(h=40, w=40):
    """A gray image with two instances: a box on the left, a disk on the right."""
    image = np.full((h, w, 3), GRAY, np.uint8)
    masks = np.zeros((h, w, 2), bool)
    masks[8:32, 4:16, 0] = True
    yy, xx = np.mgrid[:h, :w]
    masks[:, :, 1] = (yy - 20) ** 2 + (xx - 30) ** 2 <= 36
    boxes = np.array([[8, 4, 32, 16], [14, 24, 27, 37]], np.int32)
    class_ids = np.array([1, 2], np.int32)
    return image, boxes, masks, class_ids


def assert_saved_and_closed(path):
    pixels = load_png(path)
    assert_not_blank(pixels)
    assert plt.get_fignums() == [], "save_path must close the figure"
    return pixels


# ---------------------------------------------------------------- basics

def test_import_selects_no_backend():
    """Importing the module must leave backend selection to matplotlib/Jupyter."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    code = ("import matplotlib, mrcnn.visualize; "
            "print(matplotlib.rcParams._get_backend_or_none())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "None"


def test_apply_mask_hand_computed():
    image = np.full((4, 5, 3), 100, np.uint8)
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2:4] = True
    out = visualize.apply_mask(image, mask, (1.0, 0.0, 0.2), alpha=0.5)
    assert out is image  # in place, as Matterport
    # 100 * 0.5 + 0.5 * 255 = 177.5 -> 177; 100 * 0.5 = 50;
    # 100 * 0.5 + 0.5 * 0.2 * 255 = 75.5 -> 75 (uint8 truncates).
    np.testing.assert_array_equal(image[1:3, 2:4].reshape(-1, 3), [[177, 50, 75]] * 4)
    outside = image.copy()
    outside[1:3, 2:4] = 100
    np.testing.assert_array_equal(outside, np.full((4, 5, 3), 100))

    # Float image, alpha 0.25: 200 * 0.75 + 0.25 * (0.4 * 255) = 175.5.
    image = np.full((2, 2, 3), 200.0)
    visualize.apply_mask(image, np.eye(2, dtype=np.uint8), (0.4, 0.4, 0.4), alpha=0.25)
    np.testing.assert_allclose(image[..., 0], [[175.5, 200.0], [200.0, 175.5]])


def test_random_colors_hsv_and_seeded():
    colors = visualize.random_colors(6, seed=3)
    expected = {colorsys.hsv_to_rgb(i / 6, 1, 1.0) for i in range(6)}
    assert set(colors) == expected and len(colors) == 6
    assert colors == visualize.random_colors(6, seed=3)
    assert colors == visualize.random_colors(6, seed=random.Random(3))
    gen = visualize.random_colors(6, seed=np.random.default_rng(0))
    assert set(gen) == expected
    assert gen == visualize.random_colors(6, seed=np.random.default_rng(0))
    # Shuffled: across seeds the order is not always the hue order.
    assert any(visualize.random_colors(6, seed=s) != [colorsys.hsv_to_rgb(i / 6, 1, 1.0)
                                                      for i in range(6)]
               for s in range(5))
    dim = visualize.random_colors(4, bright=False, seed=0)
    assert max(max(c) for c in dim) == pytest.approx(0.7)


def test_draw_box_hand_computed():
    image = np.zeros((12, 12, 3), np.uint8)
    out = visualize.draw_box(image, (3, 2, 9, 8), (255, 0, 0))
    assert out is image
    drawn = image[..., 0] == 255
    # A 3-pixel wide ring centered on rows 3, 9 and columns 2, 8:
    # outer square rows 2..10, cols 1..9 (9x9), inner hole rows 5..7, cols 4..6.
    expected = np.zeros((12, 12), bool)
    expected[2:11, 1:10] = True
    expected[5:8, 4:7] = False
    np.testing.assert_array_equal(drawn, expected)
    assert not image[..., 1:].any()
    # A box on the border is clipped, not wrapped around.
    image = np.zeros((6, 6), np.uint8)
    visualize.draw_box(image, (0, 0, 5, 5), 1)
    assert image[0].all() and image[:, 0].all() and image[5].all() and image[:, 5].all()
    assert not image[2:4, 2:4].any()


# ---------------------------------------------------------------- display_instances

def test_display_instances_mask_color_inside_mask(tmp_path):
    image, boxes, masks, class_ids = scene()
    path = tmp_path / "instances.png"
    # One instance, red, no box: the blended red must appear inside the
    # mask's region of the rendered image and nowhere else.
    visualize.display_instances(image, boxes[:1], masks[:, :, :1], class_ids[:1],
                                CLASS_NAMES, scores=np.array([0.9]),
                                figsize=(3, 3), colors=[(1.0, 0.0, 0.0)],
                                show_bbox=False, save_path=str(path))
    pixels = assert_saved_and_closed(path)
    red = pixels_near(pixels, RED_ON_GRAY)
    gray = pixels_near(pixels, (GRAY,) * 3)
    assert red.sum() > 100
    # The image occupies the bounding box of gray + blended pixels.
    ys, xs = np.nonzero(red | gray)
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    ry, rx = np.nonzero(red)
    rel_y = (ry - top) / (bottom - top)
    rel_x = (rx - left) / (right - left)
    # Mask rows 8..31 and columns 4..15 of 40 -> [0.2, 0.8] x [0.1, 0.4].
    assert rel_y.min() > 0.15 and rel_y.max() < 0.85
    assert rel_x.min() > 0.05 and rel_x.max() < 0.45
    # Most of that region is indeed red (text and outline cover a little).
    region = red[top + int(0.25 * (bottom - top)):top + int(0.75 * (bottom - top)),
                 left + int(0.15 * (right - left)):left + int(0.35 * (right - left))]
    assert region.mean() > 0.8


def test_display_instances_into_ax_exact_pixels():
    image, boxes, masks, class_ids = scene()
    fig, ax = plt.subplots(figsize=(2, 2))
    colors = [(1.0, 0.0, 0.0), (0.0, 0.0, 1.0)]
    visualize.display_instances(image, boxes, masks, class_ids, CLASS_NAMES,
                                scores=np.array([0.987, 0.5]), ax=ax, colors=colors)
    assert plt.fignum_exists(fig.number)  # caller's figure: not closed
    shown = np.asarray(ax.images[0].get_array())
    expected = image.copy()
    expected[masks[:, :, 0]] = RED_ON_GRAY
    expected[masks[:, :, 1]] = (50, 50, 177)
    np.testing.assert_array_equal(shown, expected)
    assert [t.get_text() for t in ax.texts] == ["square 0.987", "circle 0.500"]
    assert len(ax.patches) == 4  # 2 dashed boxes + 2 mask outlines
    assert image[0, 0, 0] == GRAY  # input image untouched


def test_display_instances_captions_and_skipped_box():
    image, boxes, masks, class_ids = scene()
    boxes = boxes.copy()
    boxes[1] = 0  # lost in cropping: skipped
    fig, ax = plt.subplots(figsize=(2, 2))
    visualize.display_instances(image, boxes, masks, class_ids, CLASS_NAMES, ax=ax,
                                captions=["a", "b"], colors=np.array([[0, 1, 0], [1, 0, 0]]))
    assert [t.get_text() for t in ax.texts] == ["a"]


def test_display_instances_no_instances(tmp_path, capsys):
    image = np.full((20, 30, 3), 80, np.uint8)
    image[5:10] = 200
    path = tmp_path / "empty.png"
    visualize.display_instances(image, np.zeros((0, 4)), np.zeros((20, 30, 0)),
                                np.zeros((0,), np.int32), CLASS_NAMES,
                                figsize=(2, 2), save_path=path)
    assert "No instances to display" in capsys.readouterr().out
    assert_saved_and_closed(path)


@pytest.mark.parametrize("field", ["masks", "class_ids", "scores", "mask_size", "class_range"])
def test_display_instances_mismatch_raises(field):
    image, boxes, masks, class_ids = scene()
    scores = np.array([0.9, 0.8])
    if field == "masks":
        masks = masks[:, :, :1]
    elif field == "class_ids":
        class_ids = class_ids[:1]
    elif field == "scores":
        scores = scores[:1]
    elif field == "mask_size":
        masks = masks[:20]
    else:
        class_ids = np.array([1, 7])
    with pytest.raises(ValueError, match="masks|class_ids|scores"):
        visualize.display_instances(image, boxes, masks, class_ids, CLASS_NAMES,
                                    scores=scores, figsize=(2, 2))


def test_display_instances_headless_show_does_not_warn():
    assert matplotlib.get_backend().lower() == "agg"
    image, boxes, masks, class_ids = scene()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        visualize.display_instances(image, boxes, masks, class_ids, CLASS_NAMES,
                                    figsize=(2, 2))
    # Figure left open so the caller can still plt.savefig() it.
    assert len(plt.get_fignums()) == 1


def test_display_instances_grayscale_image(tmp_path):
    image, boxes, masks, class_ids = scene()
    path = tmp_path / "gray.png"
    visualize.display_instances(image[..., 0], boxes, masks, class_ids, CLASS_NAMES,
                                figsize=(2, 2), colors=[(1.0, 0, 0)] * 2,
                                save_path=path)
    assert pixels_near(assert_saved_and_closed(path), RED_ON_GRAY).sum() > 20


# ---------------------------------------------------------------- other figures

def test_display_images_and_top_masks(tmp_path, monkeypatch):
    image, _, masks, class_ids = scene()
    path = tmp_path / "images.png"
    visualize.display_images([image, masks[..., 0] * 255, masks[..., 1] * 255],
                             titles=["a", "b", "c"], cols=3, figsize=(3, 1),
                             cmap="gray", save_path=path)
    assert_saved_and_closed(path)

    path = tmp_path / "top.png"
    visualize.display_top_masks(image, masks, class_ids, CLASS_NAMES, limit=3,
                                figsize=(4, 1), save_path=path)
    assert_saved_and_closed(path)

    # Ranking: the square (24 * 12 = 288 px) outranks the disk (113 px).
    calls = []
    monkeypatch.setattr(visualize, "display_images",
                        lambda images, **kw: calls.append((images, kw)))
    visualize.display_top_masks(image, masks, class_ids, CLASS_NAMES, limit=3)
    images, kw = calls[0]
    assert kw["titles"] == ["H x W=40x40", "square", "circle", "-"]
    np.testing.assert_array_equal(images[1], masks[..., 0].astype(int))
    assert not images[3].any()


def test_plot_precision_recall(tmp_path):
    precisions = np.array([1, 1, 0.67, 0.75, 0.6, 0.6, 0])
    recalls = np.array([0, 0.25, 0.25, 0.5, 0.75, 0.75, 1])
    path = tmp_path / "pr.png"
    visualize.plot_precision_recall(0.6875, precisions, recalls, figsize=(2, 2),
                                    save_path=path)
    assert_saved_and_closed(path)
    fig, ax = plt.subplots()
    visualize.plot_precision_recall(0.6875, precisions, recalls, ax=ax)
    assert ax.get_title() == "Precision-Recall Curve. AP@50 = 0.688"
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), recalls)
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), precisions)


def test_plot_overlaps(tmp_path):
    gt = np.array([1, 2, 0])         # trailing 0 = padding, dropped
    pred = np.array([1, 1])
    scores = np.array([0.9, 0.7])
    overlaps = np.array([[0.8, 0.1], [0.0, 0.6]])
    path = tmp_path / "overlaps.png"
    visualize.plot_overlaps(gt, pred, scores, overlaps, CLASS_NAMES, figsize=(3, 3),
                            save_path=path)
    assert_saved_and_closed(path)
    fig, ax = plt.subplots()
    visualize.plot_overlaps(gt, pred, scores, overlaps, CLASS_NAMES, ax=ax)
    assert [t.get_text() for t in ax.texts] == [
        "0.800\nmatch", "0.100\n", "0.000\n", "0.600\nwrong"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["square (0.90)", "square (0.70)"]
    with pytest.raises(ValueError, match="overlaps"):
        visualize.plot_overlaps(gt, pred, scores, overlaps.T[:1], CLASS_NAMES)


def test_draw_boxes(tmp_path):
    image, boxes, masks, _ = scene()
    refined = boxes + 2
    path = tmp_path / "boxes.png"
    visualize.draw_boxes(image, boxes=boxes, refined_boxes=refined, masks=masks,
                         captions=["x", "y"], visibilities=[0, 2], title="t",
                         figsize=(2, 2), save_path=path)
    assert_saved_and_closed(path)
    fig, ax = plt.subplots()
    visualize.draw_boxes(image, refined_boxes=refined, captions=["x", "y"], ax=ax)
    assert [t.get_text() for t in ax.texts] == ["x", "y"]
    assert len(ax.patches) == 2
    # visibility 0 blends its mask in matplotlib's "gray" (128/255):
    # 100 * 0.5 + 0.5 * 128 = 114.
    fig, ax = plt.subplots()
    visualize.draw_boxes(image, boxes=boxes, masks=masks, visibilities=[0, 1], ax=ax)
    shown = np.asarray(ax.images[0].get_array())
    np.testing.assert_array_equal(np.unique(shown[masks[..., 0]], axis=0), [[114] * 3])
    with pytest.raises(ValueError, match="boxes"):
        visualize.draw_boxes(image)


def test_draw_rois(tmp_path, capsys):
    image, boxes, _, _ = scene()
    rois = np.array([[8, 4, 32, 16], [14, 24, 27, 37], [0, 0, 10, 10]], np.int32)
    refined = rois + 1
    class_ids = np.array([1, 2, 0])
    mini_masks = np.ones((3, 7, 7), np.float32)
    path = tmp_path / "rois.png"
    np.random.seed(0)
    visualize.draw_rois(image, rois, refined, mini_masks, class_ids, CLASS_NAMES,
                        figsize=(2, 2), save_path=path)
    out = capsys.readouterr().out
    assert "Positive ROIs:  2" in out and "Negative ROIs:  1" in out
    assert "Positive Ratio: 0.67" in out
    assert_saved_and_closed(path)
    fig, ax = plt.subplots()
    visualize.draw_rois(image, rois, refined, mini_masks, class_ids, CLASS_NAMES,
                        limit=2, ax=ax)
    assert ax.get_title() == "Showing 2 random ROIs out of 3"


def test_display_differences(tmp_path):
    image, boxes, masks, class_ids = scene()
    pred_boxes = boxes.copy()
    pred_masks = masks.copy()
    pred_ids = np.array([1, 3])          # second prediction: wrong class
    pred_scores = np.array([0.95, 0.85])
    path = tmp_path / "diff.png"
    visualize.display_differences(image, boxes, class_ids, masks, pred_boxes, pred_ids,
                                  pred_scores, pred_masks, CLASS_NAMES, figsize=(2, 2),
                                  save_path=path)
    assert_saved_and_closed(path)
    fig, ax = plt.subplots()
    visualize.display_differences(image, boxes, class_ids, masks, pred_boxes, pred_ids,
                                  pred_scores, pred_masks, CLASS_NAMES, ax=ax)
    # GT captions are empty; predictions show score / IoU (matched: 1.00,
    # unmatched wrong class: best IoU with any GT, also 1.00 here).
    assert [t.get_text() for t in ax.texts] == ["", "", "0.95 / 1.00", "0.85 / 1.00"]
    assert ax.get_title().startswith("Ground Truth and Detections")
    # Each mask is blended green (GT) then red (prediction) on gray 100:
    # G: (50, 177.5, 50) -> (50, 177, 50); R: (25 + 127.5, 88.5, 25) -> (152, 88, 25).
    shown = np.asarray(ax.images[0].get_array())
    np.testing.assert_array_equal(np.unique(shown[masks[..., 0]], axis=0), [[152, 88, 25]])


# ---------------------------------------------------------------- tables

def test_display_table_text_fallback(capsys):
    visualize.display_table([["NAME", "SHAPE"], ["conv1/kernel:0", (3, 3)], [1.5, ""]])
    assert capsys.readouterr().out == (
        "NAME            SHAPE\n"
        "conv1/kernel:0  (3, 3)\n"
        "1.5\n")


def test_display_table_html_in_notebook(monkeypatch):
    ipd = pytest.importorskip("IPython.display")
    shown = []
    monkeypatch.setattr(tables, "_in_notebook", lambda: True)
    monkeypatch.setattr(ipd, "display", shown.append)
    visualize.display_table([["a", 1]])
    html = shown[0].data
    assert html.startswith("<table><tr><td>a") and html.endswith("</td></tr></table>")
    assert html.count("<td>") == 2


def test_not_in_notebook_here():
    assert tables._in_notebook() is False


def test_display_weight_stats_keras_sequential(capsys):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(3, 3, name="conv1"),
        keras.layers.BatchNormalization(name="bn_conv1"),
        keras.layers.Flatten(),
        keras.layers.Dense(4, name="fc"),
    ])
    fc_kernel = model.get_layer("fc").get_weights()[0]
    fc_kernel[0, 0] = np.nan
    model.get_layer("fc").set_weights([fc_kernel, np.full(4, 2000.0, np.float32)])
    visualize.display_weight_stats(model)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["WEIGHT", "NAME", "SHAPE", "MIN", "MAX", "STD"]
    rows = {line.split()[0]: line for line in out[1:]}
    assert list(rows) == ["conv1/kernel:0", "conv1/bias:0", "bn_conv1/gamma:0",
                          "bn_conv1/beta:0", "bn_conv1/moving_mean:0",
                          "bn_conv1/moving_variance:0", "fc/kernel:0", "fc/bias:0"]
    assert "(3, 3, 2, 3)" in rows["conv1/kernel:0"]
    assert "***" not in rows["conv1/kernel:0"]
    assert "***" not in rows["conv1/bias:0"]          # zero conv bias: exempt
    assert "*** dead?" in rows["bn_conv1/gamma:0"]     # all ones: std 0
    assert "*** NaN/Inf?" in rows["fc/kernel:0"]
    assert "*** dead?" in rows["fc/bias:0"] and "*** Overflow?" in rows["fc/bias:0"]
    # min, max and std of conv1/kernel as numbers.
    k = model.get_layer("conv1").get_weights()[0]
    cells = rows["conv1/kernel:0"].split(")")[-1].split()
    np.testing.assert_allclose([float(c) for c in cells], [k.min(), k.max(), k.std()],
                               atol=1e-4)


def test_display_weight_stats_matterport_names(capsys):
    """TimeDistributed lends its name; nested models list their own layers."""
    keras = pytest.importorskip("keras")
    rpn = keras.Sequential([keras.Input((4, 4, 2)),
                            keras.layers.Conv2D(2, 1, name="rpn_conv_shared")],
                           name="rpn_model")
    inp = keras.Input((2, 4, 4, 2))
    x = keras.layers.TimeDistributed(keras.layers.Conv2D(2, 1),
                                     name="mrcnn_class_conv1")(inp)
    model = keras.Model(inp, [x, rpn(inp[:, 0])])

    class Wrapper:  # what MaskRCNN looks like: the Keras model in .keras_model
        keras_model = model

    visualize.display_weight_stats(Wrapper())
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert names == ["mrcnn_class_conv1/kernel:0", "mrcnn_class_conv1/bias:0",
                     "rpn_conv_shared/kernel:0", "rpn_conv_shared/bias:0"]


def test_display_differences_unsorted_predictions():
    """Scores and IoUs stay paired when predictions are not sorted by score."""
    image, boxes, masks, class_ids = scene()
    half_disk = masks[..., 1].copy()
    half_disk[:, 30:] = False
    iou = half_disk.sum() / masks[..., 1].sum()
    pred_masks = np.stack([half_disk, masks[..., 0]], axis=-1)
    pred_boxes = np.array([[14, 24, 27, 30], [8, 4, 32, 16]])
    fig, ax = plt.subplots()
    visualize.display_differences(image, boxes, class_ids, masks, pred_boxes,
                                  np.array([2, 1]), np.array([0.6, 0.9]), pred_masks,
                                  CLASS_NAMES, ax=ax)
    assert [t.get_text() for t in ax.texts][2:] == [
        "0.90 / 1.00", "0.60 / {:.2f}".format(iou)]
    assert 0.4 < iou < 0.7


def test_plot_overlaps_without_predictions_draws_a_note(tmp_path, recwarn):
    out = tmp_path / "empty.png"
    visualize.plot_overlaps(np.array([1, 2]), np.zeros((0,), np.int32), np.zeros((0,)),
                            np.zeros((0, 2)), ["bg", "a", "b"], save_path=str(out))
    assert out.exists()
    assert not [w for w in recwarn if "identical" in str(w.message)]


def test_draw_boxes_accepts_lists(tmp_path):
    out = tmp_path / "lists.png"
    image = np.zeros((32, 32, 3), np.uint8)
    visualize.draw_boxes(image, boxes=[[2, 2, 10, 10]], refined_boxes=[[3, 3, 12, 12]],
                         save_path=str(out))
    assert out.exists()
