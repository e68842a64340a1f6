"""The ``mrcnn`` command line (mrcnn/predict.py, mrcnn/__main__.py): predict
on images, folders, globs and videos (COCO JSON + pictures), export, and bad
input (one line naming the file, exit code 2, the other images still done)."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mrcnn import predict
from tests.export_helpers import sample_images, tiny_model

ROOT = pathlib.Path(__file__).parents[1]

CONFIG_FILE = f'''
import sys
sys.path.insert(0, {str(ROOT)!r})
from tests.export_helpers import TinyConfig


class TinyInferenceConfig(TinyConfig):
    CLASS_NAMES = ["BG", "a", "b", "c"]
'''

OTHER_CONFIG_FILE = CONFIG_FILE.replace('CLASS_NAMES = ["BG", "a", "b", "c"]',
                                        'NUM_CLASSES = 3')


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Weights of the tiny model, its config file, three images, a corrupt
    file, a 3-frame video, and detect()'s results on the images."""
    import cv2

    tmp = tmp_path_factory.mktemp("cli")
    model = tiny_model(tmp / "logs")
    model.save_weights(str(tmp / "tiny.h5"))
    (tmp / "tiny_config.py").write_text(CONFIG_FILE)
    (tmp / "other_config.py").write_text(OTHER_CONFIG_FILE)
    images = sample_images()
    folder = tmp / "images"
    folder.mkdir()
    for k, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{k:03d}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not a jpeg" * 20)
    video = tmp / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (80, 64))
    for k in range(3):
        writer.write(np.ascontiguousarray(sample_images(k)[0][:64, :80, ::-1]))
    writer.release()
    return {"tmp": tmp, "weights": tmp / "tiny.h5", "config": tmp / "tiny_config.py",
            "folder": folder, "video": video, "images": images,
            "want": model.detect(images), "model": model}


def _run(argv, capsys):
    code = predict.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _error_lines(err):
    return [line for line in err.replace("\r", "\n").splitlines() if "error:" in line]


def test_predict_folder_writes_coco_json_and_pictures_and_skips_broken_files(setup, capsys,
                                                                             tmp_path):
    from pycocotools import mask as mask_utils

    out = tmp_path / "out"
    code, _, err = _run(["predict", "--weights", setup["weights"], "--config", setup["config"],
                         "--input", setup["folder"], "--output", out], capsys)
    assert code == 2
    errors = _error_lines(err)
    assert len(errors) == 2, err
    assert errors[0].startswith("mrcnn predict: error:") and "broken.jpg" in errors[0]
    assert "1 of 4 inputs" in errors[1]
    assert "%|" in err                                   # the progress bar
    for k, (image, want) in enumerate(zip(setup["images"], setup["want"])):
        results = json.loads((out / f"{k:03d}.json").read_text())
        assert len(results) == len(want["rois"]) > 0
        for r, box, class_id, score, m in zip(results, want["rois"], want["class_ids"],
                                              want["scores"], np.moveaxis(want["masks"], 2, 0)):
            assert r["image_id"] == k                     # the file name's number
            assert r["category_id"] == int(class_id)
            y1, x1, y2, x2 = box
            assert r["bbox"] == [x1, y1, x2 - x1, y2 - y1]
            assert abs(r["score"] - float(score)) < 1e-6
            assert r["segmentation"]["size"] == list(image.shape[:2])
            np.testing.assert_array_equal(mask_utils.decode(r["segmentation"]), m)
        picture = np.asarray(Image.open(out / f"{k:03d}.png"))
        assert picture.shape == image.shape and not np.array_equal(picture, image)
    assert not (out / "broken.json").exists()


def test_predict_glob_and_single_image(setup, capsys, tmp_path):
    code, _, err = _run(["predict", "--weights", setup["weights"], "--config", setup["config"],
                         "--input", setup["folder"] / "00[02].png", "--output", tmp_path / "g",
                         "--quiet", "--no-pictures"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["000.json", "002.json"]
    code, _, err = _run(["predict", "--weights", setup["weights"], "--config",
                         f"{setup['config']}:TinyInferenceConfig", "--input",
                         setup["folder"] / "001.png", "--output", tmp_path / "one", "--quiet",
                         "--min-confidence", "0.45"], capsys)
    assert code == 0, err
    results = json.loads((tmp_path / "one" / "001.json").read_text())
    assert results and all(r["score"] >= 0.45 for r in results)
    assert (tmp_path / "one" / "001.png").exists()


def test_predict_video_writes_a_json_per_frame_and_a_video(setup, capsys, tmp_path):
    import cv2

    out = tmp_path / "v"
    code, _, err = _run(["predict", "--weights", setup["weights"], "--config", setup["config"],
                         "--input", setup["video"], "--output", out, "--quiet"], capsys)
    assert code == 0, err
    frames = sorted(p.name for p in out.glob("clip_f*.json"))
    assert frames == ["clip_f000000.json", "clip_f000001.json", "clip_f000002.json"]
    assert json.loads((out / frames[1]).read_text())[0]["image_id"] == 1
    cap = cv2.VideoCapture(str(out / "clip_detections.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()


def test_missing_weights_is_one_line_and_exit_code_2(setup, capsys, tmp_path):
    code, _, err = _run(["predict", "--weights", tmp_path / "nope.h5", "--config",
                         setup["config"], "--input", setup["folder"], "--output",
                         tmp_path / "o"], capsys)
    assert code == 2
    assert _error_lines(err) == [f"mrcnn predict: error: weights file not found: "
                                 f"{tmp_path / 'nope.h5'}"]
    assert not (tmp_path / "o").exists()


def test_config_that_does_not_fit_the_weights_is_one_line(setup, capsys, tmp_path):
    code, _, err = _run(["predict", "--weights", setup["weights"], "--config",
                         setup["tmp"] / "other_config.py", "--input", setup["folder"],
                         "--output", tmp_path / "o"], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert str(setup["weights"]) in line and "do not fit config 'tiny'" in line
    assert "mrcnn_class_logits" in line and "NUM_CLASSES" in line


def test_missing_input_and_bad_config_specs(setup, capsys, tmp_path):
    code, _, err = _run(["predict", "--weights", setup["weights"], "--config", setup["config"],
                         "--input", tmp_path / "none*.jpg", "--output", tmp_path / "o"], capsys)
    assert code == 2 and "no files match" in err
    with pytest.raises(ValueError, match="neither a preset"):
        predict.load_config("cocoa")
    with pytest.raises(FileNotFoundError, match="missing.py"):
        predict.load_config(str(tmp_path / "missing.py"))
    with pytest.raises(ValueError, match="no Config subclass named 'Nope'"):
        predict.load_config(f"{setup['config']}:Nope")
    with pytest.raises(ValueError, match="2 class names for NUM_CLASSES=4"):
        predict.load_config(str(setup["config"]), class_names="BG,x")


def test_presets_and_module_specs():
    config, names, categories = predict.load_config("coco")
    assert config.NUM_CLASSES == 81 == len(names) == len(categories)
    assert config.BATCH_SIZE == 1 and names[1] == "person" and categories[80] == 90
    config, names, _ = predict.load_config("shapes")
    assert config.NUM_CLASSES == 4 and names == ["BG", "square", "circle", "triangle"]
    config, names, _ = predict.load_config("balloon", class_names="BG,ball")
    assert config.NUM_CLASSES == 2 and names == ["BG", "ball"]
    config, _, _ = predict.load_config("tests.export_helpers:TinyConfig")
    assert config.NAME == "tiny"


def test_export_command_writes_a_savedmodel_that_gives_detect(setup, capsys, tmp_path):
    import tensorflow as tf

    out = tmp_path / "export" / "1"
    code, stdout, err = _run(["export", "--weights", setup["weights"], "--config",
                              setup["config"], "--output", out, "--no-batch"], capsys)
    assert code == 0, err
    assert "wrote SavedModel" in stdout
    info = json.loads((out / "assets.extra" / "mrcnn.json").read_text())
    assert info["class_names"] == ["BG", "a", "b", "c"]
    loaded = tf.saved_model.load(str(out))
    assert sorted(loaded.signatures) == ["serving_bytes", "serving_default"]
    got = loaded.signatures["serving_default"](image=tf.constant(setup["images"][1]))
    want = setup["want"][1]
    np.testing.assert_array_equal(got["rois"].numpy(), want["rois"])
    np.testing.assert_array_equal(got["masks"].numpy().astype(bool), want["masks"])
    code, _, err = _run(["export", "--weights", setup["weights"], "--config",
                         setup["config"], "--output", out], capsys)
    assert code == 2 and "--overwrite" in err


def test_console_entry_point():
    # issue 14: the metadata moved to pyproject.toml
    assert 'mrcnn = "mrcnn.predict:main"' in (ROOT / "pyproject.toml").read_text()
    proc = subprocess.run([sys.executable, "-m", "mrcnn", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "predict" in proc.stdout and "export" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "mrcnn", "predict"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--weights" in proc.stderr
