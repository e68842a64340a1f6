"""MaskRCNN (inference): detect() end to end against Matterport's golden G1
results, run_graph, batching, anchors and bad input."""

import numpy as np
import pytest

from mrcnn import model as modellib
from tests.checkpoint_helpers import write_minimal_checkpoint  # issue 14
from tests.graph import g1_config
from tests.recipe import apply_recipe


# The golden G1 configuration (GOLDEN.md section 2), checked field by field
# against tests/golden/g1_config.json by tests.graph.g1_config.
G1Config = type(g1_config())


@pytest.fixture(scope="module")
def golden(golden_dir):
    return np.load(golden_dir / "g1_model.npz")


@pytest.fixture(scope="module")
def g1_model(tmp_path_factory):
    model = modellib.MaskRCNN("inference", G1Config(), str(tmp_path_factory.mktemp("logs")))
    apply_recipe(model.keras_model)
    return model


def match_rows(ours, theirs, atol=1e-4):
    """Greedy matching of box rows (GOLDEN.md section 5): for each golden row
    the index of our row whose coordinates differ by < atol, or -1."""
    taken = set()
    index = []
    for row in theirs:
        d = np.abs(ours[:, :4] - row[:4]).max(axis=1)
        best = [i for i in np.argsort(d) if d[i] < atol and i not in taken]
        index.append(best[0] if best else -1)
        if best:
            taken.add(best[0])
    return np.array(index)


def test_anchors_are_the_golden_anchors(g1_model, golden):
    anchors = g1_model.get_anchors(np.array([256, 256, 3]))
    assert anchors.dtype == np.float32
    np.testing.assert_array_equal(anchors, golden["anchors"])
    np.testing.assert_array_equal(g1_model.anchors, golden["anchors_pixels"])


def test_mold_inputs_is_the_golden_input(g1_model, golden):
    molded, metas, windows = g1_model.mold_inputs([golden["input_image"]])
    np.testing.assert_array_equal(molded.astype(np.float32), golden["molded_image"])
    np.testing.assert_array_equal(metas, golden["image_meta"])
    np.testing.assert_array_equal(windows, golden["window"])


def test_detect_reproduces_matterport(g1_model, golden):
    """detect() on the astronaut image with the recipe weights: the same 50
    detections as Matterport (GOLDEN.md section 4: boxes and class ids
    identical, scores within 1e-5, masks equal but for a few border pixels),
    but for the detections of far-edge ROIs whose classifier row jumped
    (tests/graph/__init__.py: on some CPUs one detection is new and, in
    exchange, Matterport's 50th falls past DETECTION_MAX_INSTANCES)."""
    from tests.graph import g1_inputs, match_detections
    from tests.graph.test_inference_g1 import OUTPUT_KEYS

    r = g1_model.detect([golden["input_image"]])[0]
    assert r["rois"].shape == (50, 4) and r["masks"].shape == (512, 512, 50)
    assert r["masks"].dtype == bool
    # Which golden detections the network must reproduce (the rest may be
    # replaced by a flipped far-edge ROI's detection).
    outputs = dict(zip(OUTPUT_KEYS, g1_model.keras_model.predict_on_batch(g1_inputs(golden))))
    must = match_detections(outputs, golden) >= 0
    assert must.sum() >= 45
    # detections come out score-descending, as golden; match rows by box anyway
    rows = match_rows(r["rois"].astype(np.float64), golden["detect_rois"].astype(np.float64),
                      atol=0.5)
    assert (rows[must] >= 0).all(), "some golden detections are missing"
    assert (rows >= 0).sum() == must.sum()
    rows = rows[must]
    np.testing.assert_array_equal(r["class_ids"][rows], golden["detect_class_ids"][must])
    np.testing.assert_allclose(r["scores"][rows], golden["detect_scores"][must], atol=1e-5)
    flipped = (r["masks"][..., rows] != golden["detect_masks"][..., must].astype(bool)).sum(
        axis=(0, 1))
    # GOLDEN.md section 4: another correct kernel library flips up to ~130
    # pixels of a border-touching mask; require at least that closeness.
    assert flipped.max() <= 200, flipped
    assert flipped.sum() <= 400, flipped


def test_run_graph_returns_named_layer_outputs(g1_model, golden):
    km = g1_model.keras_model
    out = g1_model.run_graph([golden["input_image"]], [
        ("fpn_p6", km.get_layer("fpn_p6").output),
        ("rois", "ROI"),
        ("detections", km.get_layer("mrcnn_detection")),
    ])
    assert list(out) == ["fpn_p6", "rois", "detections"]
    np.testing.assert_allclose(out["fpn_p6"], golden["fpn_p6"], atol=1e-4)
    assert out["rois"].shape == (1, 300, 4)
    rows = match_rows(out["detections"][0], golden["mrcnn_detection"][0], atol=1e-4)
    assert (rows >= 0).all()


def test_detect_any_number_of_images_any_size(g1_model, golden):
    """Three images (BATCH_SIZE is 1): one is the golden image, the others
    another size; results come back in input order."""
    image = golden["input_image"]
    small = image[::4, ::2]                       # 128x256
    results = g1_model.detect([small, image, small])
    assert len(results) == 3
    assert results[0]["masks"].shape[:2] == (128, 256)
    assert results[1]["masks"].shape[:2] == (512, 512)
    np.testing.assert_array_equal(results[0]["rois"], results[2]["rois"])
    assert len(results[1]["rois"]) == 50
    assert g1_model.detect([]) == []


def test_detect_batches_same_size_images_and_traces_once(g1_model, golden):
    """detect(images, batch_size=2) with BATCH_SIZE 1: the square-mode images
    (all mold to 256x256) go through the network two at a time, the last call
    padded to two, so the compiled network is traced once for any number of
    images; results come back in input order, and equal those of one image
    per call (the same detections; a batch of two runs other conv kernels, so
    scores may move by float noise)."""
    image = golden["input_image"]
    other = np.ascontiguousarray(image[::-1])           # another image, same size
    calls = []
    predict = g1_model._predict

    def spy(images, metas, anchors):
        calls.append(images.shape[0])
        return predict(images, metas, anchors)

    g1_model._predict = spy
    try:
        batched = g1_model.detect([image, other, image, other, image], batch_size=2)
        assert calls == [2, 2, 2]
        g1_model.detect([other], batch_size=2)
    finally:
        del g1_model._predict
    assert calls == [2, 2, 2, 2]
    assert g1_model._predict_fn[2].experimental_get_tracing_count() == 1
    for a, b in [(0, 2), (1, 3)]:       # same image, same position in a call of two
        for key in ("rois", "class_ids", "scores", "masks"):
            np.testing.assert_array_equal(batched[a][key], batched[b][key])
    single = g1_model.detect([image, other])
    for one, many in zip(single, batched[:2]):
        rows = match_rows(many["rois"].astype(np.float64), one["rois"].astype(np.float64),
                          atol=1.5)
        assert (rows >= 0).mean() >= 0.9
        found = rows[rows >= 0]
        np.testing.assert_allclose(many["scores"][found], one["scores"][rows >= 0], atol=1e-3)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        g1_model.detect([image], batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        g1_model.detect([image], batch_size=1.5)


def test_detect_converts_grayscale_and_rgba(g1_model, golden):
    image = golden["input_image"]
    gray = image.mean(axis=2).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    r_gray, r_rgb, r_rgba = g1_model.detect(
        [gray, rgb, np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], 2)])
    np.testing.assert_array_equal(r_gray["rois"], r_rgb["rois"])
    np.testing.assert_array_equal(r_rgba["rois"], g1_model.detect([image])[0]["rois"])


@pytest.mark.parametrize("image, message", [
    (np.zeros((64, 64, 5), np.uint8), "5 channels"),
    (np.zeros((64, 64, 3), np.float32) + 2.0 * 255, r"values in \[510, 510\]"),
    (np.full((64, 64, 3), np.nan, np.float32), "NaN"),
    (np.zeros((1, 64, 3), np.uint8), "at least 2x2"),
    (np.zeros((4, 64, 64, 3), np.uint8), "shape"),
])
def test_detect_rejects_bad_images_clearly(g1_model, image, message):
    with pytest.raises(ValueError, match=message):
        g1_model.detect([image])


def test_detect_wants_a_list(g1_model, golden):
    with pytest.raises(ValueError, match="list"):
        g1_model.detect(golden["input_image"])


def test_float_images_in_0_255_are_accepted(g1_model, golden):
    # 256x256: molded at scale 1, so the uint8 and float paths see equal pixels
    # (when resizing, Matterport keeps a float image's fractions, so they'd differ)
    image = np.ascontiguousarray(golden["input_image"][::2, ::2])
    a = g1_model.detect([image.astype(np.float32)])[0]
    b = g1_model.detect([image])[0]
    assert len(b["rois"]) == 50
    np.testing.assert_array_equal(a["rois"], b["rois"])


def test_tiny_image_gives_a_defined_result(g1_model):
    """An image smaller than the smallest anchor still molds to 256x256 and
    detects (the scale-up is resize_image's job)."""
    r = g1_model.detect([np.full((8, 10, 3), 128, np.uint8)])[0]
    assert r["masks"].shape[:2] == (8, 10)
    assert r["rois"].shape[1] == 4
    assert (r["rois"][:, [0, 2]] <= 8).all() and (r["rois"][:, [1, 3]] <= 10).all()


def test_trainable_layers_and_find_trainable_layer(g1_model):
    layers = g1_model.get_trainable_layers()
    names = [l.name for l in layers]
    assert "conv1" in names and "mrcnn_mask" in names and "rpn_model" in names
    td = g1_model.keras_model.get_layer("mrcnn_class_conv1")
    assert g1_model.find_trainable_layer(td) is td.layer


def test_log_dir_and_epoch_from_checkpoint_path(tmp_path):
    model = modellib.MaskRCNN.__new__(modellib.MaskRCNN)
    model.config = G1Config()
    model.model_dir = str(tmp_path)
    model.set_log_dir(str(tmp_path / "golden20240131T0915" / "mask_rcnn_golden_0007.h5"))
    assert model.epoch == 7
    assert model.log_dir.endswith("golden20240131T0915")
    assert model.checkpoint_path.endswith("mask_rcnn_golden_{epoch:04d}.h5")
    with pytest.raises(FileNotFoundError, match="golden"):
        model.find_last()
    run = tmp_path / "golden20240131T0915"
    run.mkdir()
    write_minimal_checkpoint(run / "mask_rcnn_golden_0001.h5")  # issue 14: find_last opens it
    write_minimal_checkpoint(run / "mask_rcnn_golden_0002.h5")
    assert model.find_last() == str(run / "mask_rcnn_golden_0002.h5")


def test_weights_round_trip_through_matterport_layout(g1_model, golden, tmp_path):
    path = tmp_path / "g1.h5"
    g1_model.save_weights(str(path))
    other = modellib.MaskRCNN("inference", G1Config(), str(tmp_path))
    other.load_weights(str(path), by_name=True)
    for a, b in zip(g1_model.keras_model.weights, other.keras_model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # A model with other heads loads the same file when the heads are excluded
    class Other(G1Config):
        NUM_CLASSES = 3
    third = modellib.MaskRCNN("inference", Other(), str(tmp_path))
    with pytest.raises(ValueError, match="exclude"):
        third.load_weights(str(path), by_name=True)
    third.load_weights(str(path), by_name=True,
                       exclude=["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"])
    np.testing.assert_array_equal(third.keras_model.get_layer("conv1").get_weights()[0],
                                  g1_model.keras_model.get_layer("conv1").get_weights()[0])


def test_bfloat16_inference_stays_close_to_float32(golden, tmp_path):
    """INFERENCE_PRECISION="bfloat16": convolutions in bfloat16 (BatchNorms
    folded into them), outputs in float32. The stated tolerance, on the
    golden image and weights: every one of the 10 best detections is found
    again (same class, box IoU >= 0.9, score within 0.01) and at least 75% of
    all 50 are (the tail of this random-weight model has near-equal scores,
    so its order is fragile).

    Except boxes clipped by the image on two or more sides: their free edges
    come from exponentiated box deltas that reach 15 in this random-weight
    model, so bfloat16's ~1% on a delta moves them by tens of pixels. They
    must be found with the same class and score within 0.01 at box IoU >= 0.5.
    Measured (Intel Xeon): BatchNorms folded, the 9 stable top-10 detections
    IoU >= 0.93 but detection 0 ([175, 0, 512, 512], clipped on 3 sides) at
    0.77, 88% of all 50 at >= 0.9, feature maps within 0.85-1.1% of float32
    (max |diff| / max |value|); unfolded (before): >= 0.92, 78%, 0.9-1.3%."""
    from mrcnn import utils

    class BF16(G1Config):
        INFERENCE_PRECISION = "bfloat16"

    model = modellib.MaskRCNN("inference", BF16(), str(tmp_path))
    apply_recipe(model.keras_model)
    assert model.keras_model.get_layer("res2a_branch2a").compute_dtype == "bfloat16"
    assert model.keras_model.get_layer("mrcnn_class_logits").compute_dtype == "float32"
    r = model.detect([golden["input_image"]])[0]
    assert r["scores"].dtype == np.float32
    iou = utils.compute_overlaps(golden["detect_rois"].astype(np.float64),
                                 r["rois"].astype(np.float64))
    iou[golden["detect_class_ids"][:, None] != r["class_ids"][None, :]] = 0
    best, j = iou.max(axis=1), iou.argmax(axis=1)
    score_diff = np.abs(golden["detect_scores"] - r["scores"][j])
    # A detection whose IoU with a better one of its class is within 0.02
    # of the NMS threshold is kept or suppressed by float noise alone (in
    # G1, detection 9 overlaps detection 0 at IoU 0.2946 against 0.3), so
    # the top-10 check leaves such detections to the 75% check below.
    ref_boxes = golden["detect_rois"].astype(np.float64)
    self_iou = utils.compute_overlaps(ref_boxes, ref_boxes)
    same_class = golden["detect_class_ids"][:, None] == golden["detect_class_ids"][None, :]
    earlier = np.tril(same_class, k=-1)
    closest = np.where(earlier, self_iou, 0).max(axis=1)
    stable = np.abs(closest - BF16.DETECTION_NMS_THRESHOLD) > 0.02
    boxes = golden["detect_rois"]
    clipped = ((boxes[:, :2] <= 0).sum(axis=1) + (boxes[:, 2:] >= 512).sum(axis=1)) >= 2
    top = np.flatnonzero(stable[:10])
    assert len(top) >= 9
    assert (score_diff[top] < 0.01).all(), (best[:10], score_diff[:10])
    assert (best[top][~clipped[top]] >= 0.9).all(), (best[:10], score_diff[:10])
    assert (best[top][clipped[top]] >= 0.5).all(), (best[:10], score_diff[:10])
    assert clipped[top].sum() <= 2
    assert (best >= 0.9).mean() >= 0.75
    # Mask probabilities of the top detections. This random-weight model's
    # masks sit near the 0.5 threshold (10-20% of pixels within 0.05 of it),
    # so compare probabilities, not thresholded masks.
    out = model.run_graph([golden["input_image"]], [("det", "mrcnn_detection"),
                                                     ("mask", "mrcnn_mask")])
    det, ours = out["det"][0], out["mask"][0]
    ref_det, ref = golden["mrcnn_detection"][0], golden["mrcnn_mask"][0]
    box_iou = utils.compute_overlaps(ref_det[:10, :4].astype(np.float64),
                                     det[:, :4].astype(np.float64))
    box_iou[ref_det[:10, 4][:, None] != det[:, 4][None, :]] = 0
    diffs = []
    for k, m in enumerate(box_iou.argmax(axis=1)):
        c = int(ref_det[k, 4])
        diffs.append(np.abs(ref[k, :, :, c] - ours[m, :, :, c]).mean())
    assert max(diffs) < 0.12 and np.mean(diffs) < 0.04, diffs


def test_bfloat16_model_stores_bfloat16_conv_weights_and_saves_float32_files(tmp_path):
    """INFERENCE_PRECISION="bfloat16": conv and dense weights are bfloat16
    variables (half the memory), BatchNorm and output layers keep float32;
    a float32 file loads (rounded to nearest, as a runtime cast would) and
    save_weights writes float32 arrays, loadable by a float32 model."""
    import h5py
    import tensorflow as tf

    class BF16(G1Config):
        INFERENCE_PRECISION = "bfloat16"

    fp32 = modellib.MaskRCNN("inference", G1Config(), str(tmp_path))
    apply_recipe(fp32.keras_model)
    fp32.save_weights(str(tmp_path / "fp32.h5"))
    model = modellib.MaskRCNN("inference", BF16(), str(tmp_path))
    km = model.keras_model
    assert km.get_layer("res2a_branch2a").kernel.dtype == "bfloat16"
    assert km.get_layer("bn2a_branch2a").moving_variance.dtype == "float32"
    assert km.get_layer("mrcnn_class_logits").layer.kernel.dtype == "float32"
    model.load_weights(str(tmp_path / "fp32.h5"), by_name=True)
    want = fp32.keras_model.get_layer("res2a_branch2a").kernel.numpy()
    got = km.get_layer("res2a_branch2a").kernel.numpy()
    np.testing.assert_array_equal(got.astype(np.float32),
                                  tf.cast(tf.cast(want, tf.bfloat16), tf.float32).numpy())
    model.save_weights(str(tmp_path / "bf16.h5"))
    with h5py.File(tmp_path / "bf16.h5", "r") as f:
        group = f["res2a_branch2a"]
        name = group.attrs["weight_names"][0]
        name = name.decode() if isinstance(name, bytes) else name
        assert group[name].dtype == np.float32
        np.testing.assert_array_equal(group[name][()], got.astype(np.float32))
    back = modellib.MaskRCNN("inference", G1Config(), str(tmp_path))
    back.load_weights(str(tmp_path / "bf16.h5"), by_name=True)
