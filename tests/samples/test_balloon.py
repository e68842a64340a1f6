"""The balloon sample: color splash (image, video), its command line and errors.

One tiny inference model (ResNet-50, 64x64 images, random weights under a
fixed seed) is built per module; its weights are saved so that the command
line, which builds its own model, must give the very same splash.
"""
import glob
import os
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from samples.balloon import balloon
from tests.checkpoint_helpers import write_minimal_checkpoint  # issue 14

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "samples", "balloon", "balloon.py")

# The command line's --tiny config at 64 pixels, as the fixture model has it.
TINY_ARGS = ["--tiny", "--image-size", "64"]


def run_main(argv):
    """main(argv)'s exit code, whether it returns it or argparse exits."""
    try:
        return balloon.main(argv)
    except SystemExit as e:
        return e.code


def is_gray(pixels):
    """pixels [..., 3]: every pixel has R == G == B."""
    return bool(np.all(pixels[..., 0] == pixels[..., 1]) and
                np.all(pixels[..., 1] == pixels[..., 2]))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A synthetic balloon data set (4 train, 2 val images of 64x80)."""
    from mrcnn.datasets import make_balloon_dataset
    return make_balloon_dataset(tmp_path_factory.mktemp("balloon"), n_train=4, n_val=2,
                                size=(64, 80), seed=3)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """(model, weights_path): a random tiny inference model and its weights."""
    import keras
    from mrcnn import model as modellib
    keras.utils.set_random_seed(7)
    config = balloon.make_config("splash", tiny=True, IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64)
    logs = tmp_path_factory.mktemp("logs")
    model = modellib.MaskRCNN(mode="inference", config=config, model_dir=str(logs))
    path = str(logs / "tiny_balloon.h5")
    model.save_weights(path)
    return model, path


# ---------------------------------------------------------------------------
# Configuration and data set
# ---------------------------------------------------------------------------

def test_configs_are_matterports_unless_asked():
    c = balloon.BalloonConfig()
    assert (c.NAME, c.IMAGES_PER_GPU, c.NUM_CLASSES, c.STEPS_PER_EPOCH,
            c.DETECTION_MIN_CONFIDENCE) == ("balloon", 2, 2, 100, 0.9)
    assert c.BACKBONE == "resnet101" and c.IMAGE_MAX_DIM == 1024
    assert balloon.make_config("splash").BATCH_SIZE == 1
    # --cpu (or its older name --tiny): the package's CPU recipe
    from mrcnn.graph.small_backbone import small_resnet_graph
    t = balloon.make_config("train", cpu=True, STEPS_PER_EPOCH=3)
    assert (t.NAME, t.BACKBONE, t.IMAGE_MAX_DIM, t.STEPS_PER_EPOCH, t.BATCH_SIZE) == (
        "cpu_balloon", small_resnet_graph, 256, 3, 4)
    assert list(t.IMAGE_SHAPE) == [256, 256, 3]
    assert t.TOP_DOWN_PYRAMID_SIZE == 64 and t.NUM_CLASSES == 2
    assert type(balloon.make_config("train", tiny=True)) is balloon.CpuBalloonConfig
    assert balloon.make_config("evaluate", cpu=True).BATCH_SIZE == 1


def test_load_balloon_reads_the_synthetic_set(synthetic):
    ds = balloon.BalloonDataset()
    assert ds.load_balloon(synthetic, "val") == 2
    ds.prepare()
    assert ds.class_names == ["BG", "balloon"]
    mask, class_ids = ds.load_mask(0)
    assert mask.shape[:2] == (64, 80) and mask.shape[2] >= 1
    assert np.all(class_ids == 1)
    assert ds.image_reference(0).endswith("balloon_val_0000.jpg")
    with pytest.raises(ValueError, match="'train' or 'val'"):
        ds.load_balloon(synthetic, "test")


# ---------------------------------------------------------------------------
# color_splash
# ---------------------------------------------------------------------------

def test_color_splash_by_hand():
    image = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
    # Luminance 0.2125 R + 0.7154 G + 0.0721 B, truncated: 54, 182, 18, 18.596 -> 18
    gray = np.array([54, 182, 18, 18], np.uint8)
    empty = balloon.color_splash(image, np.zeros((1, 4, 0), bool))
    np.testing.assert_array_equal(empty, np.repeat(gray[None, :, None], 3, axis=2))
    # Two instances: pixel 1 in the first, pixel 3 in both; their union keeps colour.
    mask = np.zeros((1, 4, 2), bool)
    mask[0, 1, 0] = mask[0, 3, 0] = mask[0, 3, 1] = True
    out = balloon.color_splash(image, mask)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 1], [0, 255, 0])
    np.testing.assert_array_equal(out[0, 3], [10, 20, 30])
    np.testing.assert_array_equal(out[0, 0], [54, 54, 54])
    np.testing.assert_array_equal(out[0, 2], [18, 18, 18])
    with pytest.raises(ValueError, match="mask must be"):
        balloon.color_splash(image, np.zeros((2, 4, 1), bool))


class _FixedMaskModel:
    """detect() returns one instance covering the left half of the image."""

    def detect(self, images, verbose=0):
        h, w = images[0].shape[:2]
        mask = np.zeros((h, w, 1), bool)
        mask[:, : w // 2] = True
        return [{"rois": np.array([[0, 0, h, w // 2]]), "class_ids": np.array([1]),
                 "scores": np.array([0.99]), "masks": mask}]


def test_splash_keeps_colour_inside_the_masks_only(synthetic, tmp_path):
    src = os.path.join(synthetic, "val", "balloon_val_0001.jpg")
    path = balloon.detect_and_color_splash(_FixedMaskModel(), image_path=src,
                                           out_dir=str(tmp_path))
    assert os.path.dirname(path) == str(tmp_path) and path.endswith(".png")
    image = np.asarray(Image.open(src).convert("RGB"))
    out = np.asarray(Image.open(path))
    assert out.shape == image.shape == (64, 80, 3)
    np.testing.assert_array_equal(out[:, :40], image[:, :40])
    assert is_gray(out[:, 40:]) and not is_gray(image[:, 40:])
    # A second splash in the same second gets its own file.
    again = balloon.detect_and_color_splash(_FixedMaskModel(), image_path=src,
                                            out_dir=str(tmp_path))
    assert again != path and os.path.isfile(again) and os.path.isfile(path)


# ---------------------------------------------------------------------------
# With a real (tiny, random) model
# ---------------------------------------------------------------------------

def test_splash_image_with_a_model(tiny_model, synthetic, tmp_path, capsys):
    model, _ = tiny_model
    src = os.path.join(synthetic, "val", "balloon_val_0000.jpg")
    path = balloon.detect_and_color_splash(model, image_path=src, out_dir=str(tmp_path),
                                           verbose=0)
    assert f"Saved to {path}" in capsys.readouterr().out
    image = np.asarray(Image.open(src).convert("RGB"))
    out = np.asarray(Image.open(path))
    assert out.shape == image.shape
    masks = model.detect([image])[0]["masks"]
    np.testing.assert_array_equal(out, balloon.color_splash(image, masks))
    outside = ~masks.any(axis=2)
    assert is_gray(out[outside])
    np.testing.assert_array_equal(out[~outside], image[~outside])


def write_video(path, frames, fps=8):
    import cv2
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))  # RGB -> BGR
    writer.release()


def read_video(path):
    import cv2
    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])  # BGR -> RGB
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


def _block_means(image, k=4):
    """[H, W, 3] -> [H/k, W/k, 3] means of k x k blocks (H, W multiples of k)."""
    h, w, c = image.shape
    return image.astype(float).reshape(h // k, k, w // k, k, c).mean(axis=(1, 3))


def test_splash_video_with_a_model(tiny_model, synthetic, tmp_path):
    model, _ = tiny_model
    from mrcnn.datasets.synthetic_balloon import render_balloon_image
    frames = [render_balloon_image(np.random.default_rng(i), 48, 72)[0] for i in range(6)]
    src = str(tmp_path / "clip.avi")
    write_video(src, frames)
    decoded, _ = read_video(src)  # what the model sees (MJPG is lossy)
    assert len(decoded) == 6

    path = balloon.detect_and_color_splash(model, video_path=src, out_dir=str(tmp_path / "o"),
                                           verbose=0)
    assert path.endswith(".avi")
    out, fps = read_video(path)
    assert len(out) == 6 and fps == pytest.approx(8)
    for frame, splashed in zip(decoded, out):
        assert splashed.shape == (48, 72, 3)
        expected = balloon.color_splash(frame, model.detect([frame])[0]["masks"])
        # Re-encoding (MJPG) costs a few grey levels on average, more at the
        # edges of the masks (the random model's masks are ragged), never
        # the picture: 4x4 block means agree closely.
        blocks = np.abs(_block_means(splashed) - _block_means(expected))
        assert blocks.mean() < 3, blocks.mean()


def test_command_line_splash_gives_the_models_splash(tiny_model, synthetic, tmp_path):
    model, weights = tiny_model
    src = os.path.join(synthetic, "val", "balloon_val_0001.jpg")
    out_dir = tmp_path / "out"
    code = run_main(["splash", "--weights", weights, "--image", src, "--out", str(out_dir),
                     "--logs", str(tmp_path / "logs"), *TINY_ARGS])
    assert code == 0
    [path] = glob.glob(str(out_dir / "splash_*.png"))
    image = np.asarray(Image.open(src).convert("RGB"))
    expected = balloon.color_splash(image, model.detect([image])[0]["masks"])
    np.testing.assert_array_equal(np.asarray(Image.open(path)), expected)


# ---------------------------------------------------------------------------
# Command-line errors: one line, exit code 2, the path named, no model built
# ---------------------------------------------------------------------------

def error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("balloon.py: error: ")
    return err[0]


def test_missing_dataset_folder(tmp_path, capsys):
    missing = str(tmp_path / "no_such_dataset")
    assert run_main(["train", "--dataset", missing, "--weights", "none"]) == 2
    assert missing in error_line(capsys)


def test_empty_annotation_file(synthetic, tmp_path, capsys):
    for subset in ("train", "val"):
        (tmp_path / subset).mkdir()
    (tmp_path / "train" / "via_region_data.json").write_text("")
    assert run_main(["train", "--dataset", str(tmp_path), "--weights", "none"]) == 2
    line = error_line(capsys)
    assert str(tmp_path / "train" / "via_region_data.json") in line and "empty" in line


def _copy_set(synthetic, dest):
    import shutil
    shutil.copytree(synthetic, dest)
    return dest


def test_listed_image_missing(synthetic, tmp_path, capsys):
    root = _copy_set(synthetic, tmp_path / "b")
    gone = root / "val" / "balloon_val_0001.jpg"
    gone.unlink()
    assert run_main(["train", "--dataset", str(root), "--weights", "none"]) == 2
    assert str(gone) in error_line(capsys)


def test_unreadable_image(synthetic, tmp_path, capsys):
    root = _copy_set(synthetic, tmp_path / "b")
    broken = root / "train" / "balloon_train_0002.jpg"
    broken.write_bytes(b"this is not a JPEG")
    assert run_main(["train", "--dataset", str(root), "--weights", "none"]) == 2
    assert str(broken) in error_line(capsys)
    # The same file given to splash.
    assert run_main(["splash", "--weights", "none", "--image", str(broken)]) == 2
    assert str(broken) in error_line(capsys)


def test_no_annotated_image(tmp_path, capsys):
    for subset in ("train", "val"):
        (tmp_path / subset).mkdir()
        (tmp_path / subset / "via_region_data.json").write_text("{}")
    assert run_main(["train", "--dataset", str(tmp_path), "--weights", "none"]) == 2
    assert "No annotated images" in error_line(capsys)


def test_splash_input_errors(tmp_path, capsys):
    missing = str(tmp_path / "nothing.jpg")
    assert run_main(["splash", "--weights", "none", "--image", missing]) == 2
    assert missing in error_line(capsys)
    not_video = tmp_path / "clip.avi"
    not_video.write_bytes(b"\x00" * 100)
    assert run_main(["splash", "--weights", "none", "--video", str(not_video)]) == 2
    assert str(not_video) in error_line(capsys)
    # argparse's own errors exit 2 too
    assert run_main(["splash", "--weights", "none"]) == 2
    assert run_main(["train", "--weights", "none"]) == 2
    assert "--dataset is required" in capsys.readouterr().err


def test_weights_errors(synthetic, tmp_path, capsys):
    src = os.path.join(synthetic, "val", "balloon_val_0000.jpg")
    missing = str(tmp_path / "nowhere.h5")
    assert run_main(["splash", "--weights", missing, "--image", src]) == 2
    assert missing in error_line(capsys)


def test_coco_weights_offline_say_where_to_put_the_file(synthetic, tmp_path, monkeypatch,
                                                        capsys):
    target = tmp_path / "weights" / "mask_rcnn_coco.h5"
    monkeypatch.setattr(balloon, "COCO_WEIGHTS_PATH", str(target))
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no network in the test")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert run_main(["train", "--dataset", synthetic, "--weights", "coco",
                     "--logs", str(tmp_path / "logs")]) == 2
    line = error_line(capsys)
    assert str(target) in line and "mask_rcnn_coco.h5" in line
    assert calls == ["https://github.com/matterport/Mask_RCNN/releases/download/v2.0/"
                     "mask_rcnn_coco.h5"]
    # Nothing half-written is left behind.
    assert not target.exists() and not os.path.exists(str(target) + ".part")


def test_traceback_flag_reraises(tmp_path):
    with pytest.raises(FileNotFoundError):
        balloon.main(["train", "--dataset", str(tmp_path / "x"), "--weights", "none",
                      "--traceback"])


def test_script_runs_standalone(tmp_path):
    """`python samples/balloon/balloon.py ...` from elsewhere: imports work,
    the error is one line on stderr, exit code 2, and TensorFlow is not even
    loaded for it (quick)."""
    missing = str(tmp_path / "missing")
    proc = subprocess.run([sys.executable, SCRIPT, "train", "--dataset", missing,
                           "--weights", "none"], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"balloon.py: error: Dataset folder not found: {missing}. Expected a folder with "
        "train/ and val/ sub-folders, each holding images and via_region_data.json."]


class _RecordingModel:
    """Stands in for MaskRCNN in _load_weights: records load_weights calls."""

    def __init__(self, model_dir):
        self.config = balloon.BalloonConfig()
        self.model_dir = str(model_dir)
        self.calls = []

    def load_weights(self, path, by_name=False, exclude=None):
        self.calls.append((path, by_name, exclude))


def test_weights_choices(tmp_path, monkeypatch):
    coco = tmp_path / "mask_rcnn_coco.h5"
    coco.write_bytes(b"present, so nothing is downloaded")
    monkeypatch.setattr(balloon, "COCO_WEIGHTS_PATH", str(coco))
    run = tmp_path / "logs" / "balloon20240101T0000"
    run.mkdir(parents=True)
    write_minimal_checkpoint(run / "mask_rcnn_balloon_0003.h5")  # issue 14: find_last opens it
    # "cpu_balloon" runs are another config's: never picked by "last"
    (tmp_path / "logs" / "cpu_balloon20250101T0000").mkdir()
    write_minimal_checkpoint(tmp_path / "logs" / "cpu_balloon20250101T0000"
                             / "mask_rcnn_cpu_balloon_0009.h5")
    mine = tmp_path / "my.h5"
    mine.write_bytes(b"")
    m = _RecordingModel(tmp_path / "logs")
    assert balloon._load_weights(m, "none") is None
    assert balloon._load_weights(m, "COCO") == str(coco)
    assert balloon._load_weights(m, "last") == str(run / "mask_rcnn_balloon_0003.h5")
    assert balloon._load_weights(m, str(mine)) == str(mine)
    assert m.calls == [
        # The COCO heads have 81 classes: left out, as in Matterport.
        (str(coco), True, ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]),
        (str(run / "mask_rcnn_balloon_0003.h5"), True, None),
        (str(mine), True, None)]
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        balloon._load_weights(m, str(tmp_path / "nowhere.h5"))


@pytest.mark.slow
def test_train_one_epoch_then_splash_with_last(synthetic, tmp_path):
    """train: 1 epoch of 2 steps on the synthetic set writes Matterport's
    checkpoint; splash --weights last finds and uses it."""
    import keras
    keras.utils.set_random_seed(5)
    logs = tmp_path / "logs"
    code = run_main(["train", "--dataset", synthetic, "--weights", "none", "--logs", str(logs),
                     "--epochs", "1", "--steps", "2", "--val-steps", "1", *TINY_ARGS])
    assert code == 0
    [checkpoint] = glob.glob(str(logs / "cpu_balloon*" / "mask_rcnn_cpu_balloon_0001.h5"))
    src = os.path.join(synthetic, "val", "balloon_val_0000.jpg")
    code = run_main(["splash", "--weights", "last", "--image", src, "--logs", str(logs),
                     "--out", str(tmp_path / "out"), *TINY_ARGS])
    assert code == 0
    [png] = glob.glob(str(tmp_path / "out" / "splash_*.png"))
    assert np.asarray(Image.open(png)).shape == (64, 80, 3)
