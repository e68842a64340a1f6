"""Config: Matterport's fields and defaults, derived values, validation errors."""
import json

import numpy as np
import pytest

from mrcnn.config import Config


class TinyConfig(Config):
    NAME = "tiny"
    NUM_CLASSES = 4


def make(**overrides):
    cls = type("Custom", (TinyConfig,), overrides)
    return cls()


def test_matches_golden_g1_display(golden_dir):
    """Every attribute Matterport's display() showed for the G1 config, same value."""
    golden = json.load(open(golden_dir / "g1_config.json"))

    class G1(Config):
        NAME = "golden"
        GPU_COUNT = 1
        IMAGES_PER_GPU = 1
        BACKBONE = "resnet50"
        NUM_CLASSES = 5
        IMAGE_RESIZE_MODE = "square"
        IMAGE_MIN_DIM = 256
        IMAGE_MAX_DIM = 256
        RPN_ANCHOR_SCALES = (16, 32, 64, 128, 256)
        POST_NMS_ROIS_INFERENCE = 300
        DETECTION_MIN_CONFIDENCE = 0.0
        DETECTION_MAX_INSTANCES = 50

    ours = G1().to_dict()
    assert set(golden) <= set(ours)
    for key, value in golden.items():
        assert ours[key] == value, key


def test_derived_fields():
    c = make(IMAGES_PER_GPU=3, GPU_COUNT=2, IMAGE_MAX_DIM=512, IMAGE_MIN_DIM=256)
    assert c.BATCH_SIZE == 6
    assert c.IMAGE_SHAPE.tolist() == [512, 512, 3]
    assert c.IMAGE_META_SIZE == 12 + 4
    crop = make(IMAGE_RESIZE_MODE="crop", IMAGE_MIN_DIM=320)
    assert crop.IMAGE_SHAPE.tolist() == [320, 320, 3]


def test_to_dict_is_json_ready_and_display_prints(capsys):
    c = make()
    d = json.loads(json.dumps(c.to_dict()))
    assert d["MEAN_PIXEL"] == [123.7, 116.8, 103.9]
    assert d["NAME"] == "tiny"
    c.display()
    out = capsys.readouterr().out
    assert "NUM_CLASSES" in out and "IMAGE_META_SIZE" in out


def test_callable_backbone_shows_and_serializes():
    def my_backbone(image, stage5=True, train_bn=True):
        return image

    def shapes(image_shape):
        return [[1, 1]] * 5

    c = make(BACKBONE=staticmethod(my_backbone), COMPUTE_BACKBONE_SHAPE=staticmethod(shapes))
    assert "my_backbone" in json.dumps(c.to_dict())


@pytest.mark.parametrize("overrides, field", [
    (dict(IMAGE_MAX_DIM=500), "IMAGE_MAX_DIM"),
    (dict(IMAGE_RESIZE_MODE="crop", IMAGE_MIN_DIM=100), "IMAGE_MIN_DIM"),
    (dict(IMAGE_RESIZE_MODE="stretch"), "IMAGE_RESIZE_MODE"),
    (dict(BACKBONE="resnet152"), "BACKBONE"),
    (dict(MEAN_PIXEL=np.array([1.0, 2.0])), "MEAN_PIXEL"),
    (dict(IMAGE_CHANNEL_COUNT=1), "MEAN_PIXEL"),
    (dict(DETECTION_MIN_CONFIDENCE=1.5), "DETECTION_MIN_CONFIDENCE"),
    (dict(RPN_NMS_THRESHOLD=-0.1), "RPN_NMS_THRESHOLD"),
    (dict(DETECTION_NMS_THRESHOLD=2), "DETECTION_NMS_THRESHOLD"),
    (dict(ROI_POSITIVE_RATIO=1.2), "ROI_POSITIVE_RATIO"),
    (dict(RPN_ANCHOR_SCALES=(32, 64)), "RPN_ANCHOR_SCALES"),
    (dict(NUM_CLASSES=0), "NUM_CLASSES"),
    (dict(IMAGES_PER_GPU=0), "IMAGES_PER_GPU"),
    (dict(MASK_SHAPE=[56, 56]), "MASK_SHAPE"),
    (dict(LOSS_WEIGHTS={"rpn_class_loss": 1.0}), "LOSS_WEIGHTS"),
    (dict(BBOX_STD_DEV=np.array([0.1, 0.1, 0.2])), "BBOX_STD_DEV"),
    (dict(BACKBONE=staticmethod(lambda x: x)), "COMPUTE_BACKBONE_SHAPE"),
    (dict(IMAGE_MIN_DIM=1024, IMAGE_MAX_DIM=512), "IMAGE_MIN_DIM"),
])
def test_validation_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        make(**overrides)


def test_divisible_by_64_error_suggests_a_size():
    with pytest.raises(ValueError, match="try 512"):
        make(IMAGE_MAX_DIM=500)


def test_pad64_and_none_modes_do_not_need_64_multiples():
    make(IMAGE_RESIZE_MODE="pad64", IMAGE_MAX_DIM=500)
    make(IMAGE_RESIZE_MODE="none", IMAGE_MAX_DIM=500)


def test_training_needs_two_classes():
    c = make(NUM_CLASSES=1)  # fine for building a (useless) inference model
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        c.validate_for_training()
    make(NUM_CLASSES=2).validate_for_training()


def test_grayscale_config_is_valid_with_one_mean():
    c = make(IMAGE_CHANNEL_COUNT=1, MEAN_PIXEL=np.array([120.0]))
    assert c.IMAGE_SHAPE.tolist() == [1024, 1024, 1]


# ---------------------------------------------------------------------------
# Derived fields (issue 14): computed from the current values
# ---------------------------------------------------------------------------

def test_derived_fields_follow_fields_set_on_the_instance():
    c = make(IMAGES_PER_GPU=2, NUM_CLASSES=4, IMAGE_MAX_DIM=256, IMAGE_MIN_DIM=128)
    assert (c.BATCH_SIZE, c.IMAGE_SHAPE.tolist(), c.IMAGE_META_SIZE) == (2, [256, 256, 3], 16)
    c.IMAGES_PER_GPU = 1
    c.GPU_COUNT = 3
    c.NUM_CLASSES = 81
    c.IMAGE_MAX_DIM = 512
    assert (c.BATCH_SIZE, c.IMAGE_SHAPE.tolist(), c.IMAGE_META_SIZE) == (3, [512, 512, 3], 93)
    c.IMAGE_RESIZE_MODE = "crop"
    assert c.IMAGE_SHAPE.tolist() == [128, 128, 3]
    # display() and to_dict() show the current values
    d = c.to_dict()
    assert (d["BATCH_SIZE"], d["IMAGE_SHAPE"], d["IMAGE_META_SIZE"]) == (3, [128, 128, 3], 93)


def test_a_derived_field_set_on_an_instance_is_pinned_until_deleted(capsys):
    c = make(IMAGES_PER_GPU=4)
    c.BATCH_SIZE = 1            # Matterport-era code does this for detect()
    c.IMAGES_PER_GPU = 8
    assert c.BATCH_SIZE == 1
    c.IMAGE_SHAPE = [128, 64, 3]
    assert isinstance(c.IMAGE_SHAPE, np.ndarray) and c.IMAGE_SHAPE.tolist() == [128, 64, 3]
    c.display()
    assert "BATCH_SIZE                     1" in capsys.readouterr().out
    del c.BATCH_SIZE, c.IMAGE_SHAPE
    assert c.BATCH_SIZE == 8 and c.IMAGE_SHAPE.tolist() == [1024, 1024, 3]
    # a pin belongs to its instance
    assert make(IMAGES_PER_GPU=4).BATCH_SIZE == 4


def test_a_derived_field_in_a_class_body_must_agree():
    with pytest.raises(ValueError, match=r"Custom.BATCH_SIZE: is derived from IMAGES_PER_GPU "
                                         r"\* GPU_COUNT \(which give 2\).*got 4"):
        make(BATCH_SIZE=4)
    with pytest.raises(ValueError, match=r"IMAGE_META_SIZE.*NUM_CLASSES.*give 16"):
        make(IMAGE_META_SIZE=93)
    # the value Matterport would have computed anyway is accepted
    c = make(BATCH_SIZE=2, IMAGE_SHAPE=np.array([1024, 1024, 3]))
    assert c.BATCH_SIZE == 2
    c.IMAGES_PER_GPU = 3
    assert c.BATCH_SIZE == 3


@pytest.mark.parametrize("name", ["", "a/b", "runs\\x", 3])
def test_a_bad_name_is_refused(name):
    with pytest.raises(ValueError, match="NAME"):
        make(NAME=name)


def test_a_missing_name_is_a_clear_error_at_model_creation(tmp_path):
    from mrcnn import checkpoints
    from mrcnn import model as modellib

    class NoName(Config):
        NUM_CLASSES = 2
        IMAGE_MIN_DIM = IMAGE_MAX_DIM = 64

    config = NoName()   # a Config without NAME is fine until it names a run
    assert config.NAME is None
    for mode in ("inference", "training"):
        with pytest.raises(ValueError, match=r"Config.NAME is None: give your Config subclass "
                                             r"a NAME \(e.g. NAME = \"balloon\"\)"):
            modellib.MaskRCNN(mode, config, str(tmp_path))
    with pytest.raises(ValueError, match="Config.NAME is None"):
        checkpoints.find_last(str(tmp_path), None)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_paths_of_any_name_resume_their_run():
    from mrcnn import checkpoints
    for name in ("coco", "Experiment 3", "cpu_shapes", "shapes2", "v1.2"):
        log_dir, path, epoch = checkpoints.log_dir_for("logs", name)
        assert epoch == 0
        again = checkpoints.log_dir_for("logs", name, path.format(epoch=12))
        assert again == (log_dir, path, 12), name
