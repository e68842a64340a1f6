"""mrcnn.recipes (the CPU recipe) and its backbone, and what train() does with
a learning-rate schedule, an optimizer of the user's and custom callbacks."""
import math

import keras
import numpy as np
import pytest

import mrcnn.demo
from mrcnn import model as modellib
from mrcnn import training
from mrcnn.config import Config
from mrcnn.graph import small_backbone
from mrcnn.graph.small_backbone import compute_small_backbone_shapes, small_resnet_graph
from mrcnn.recipes import CpuRecipe, CpuShapesConfig, learning_rate_schedule, warmup_steps

TINY = dict(IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64, STEPS_PER_EPOCH=2, IMAGES_PER_GPU=2,
            VALIDATION_STEPS=1)


def test_the_recipe_config():
    config = CpuShapesConfig()
    assert config.BACKBONE is small_resnet_graph
    assert config.COMPUTE_BACKBONE_SHAPE is compute_small_backbone_shapes
    assert config.TOP_DOWN_PYRAMID_SIZE == 64 and config.TRAIN_BN is None
    assert config.BATCH_NORM_MOMENTUM == 0.9 and config.LEARNING_RATE == 0.04
    # The mask head's output is twice its pooled size.
    assert list(config.MASK_SHAPE) == [2 * config.MASK_POOL_SIZE] * 2
    # A mixin: listed first, its settings win over the data set's config.
    class Mine(CpuRecipe, Config):
        NAME = "mine"
        NUM_CLASSES = 3
    assert Mine().BACKBONE is small_resnet_graph and Mine().NUM_CLASSES == 3


def test_learning_rate_schedule_warms_up_then_follows_a_cosine_to_zero():
    config = mrcnn.demo.make_config(CpuShapesConfig, LEARNING_RATE=0.2)
    schedule = learning_rate_schedule(config, total_steps=1000)
    assert isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule)
    assert warmup_steps(config, 1000) == 100
    rate = [float(schedule(s)) / 0.2 for s in (0, 50, 100, 550, 775, 1000, 5000)]
    # linear from 0 to the peak in 100 steps, then 0.5 * (1 + cos(pi * t / 900))
    assert rate == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.5 * (1 - math.sqrt(0.5)), 0.0, 0.0],
                                 abs=1e-6)
    # epochs count STEPS_PER_EPOCH steps; the warm-up is at most a tenth of the run
    assert float(learning_rate_schedule(config, epochs=1)(5)) == pytest.approx(0.1)
    # no warm-up: the cosine starts at the peak
    flat = mrcnn.demo.make_config(CpuShapesConfig, LR_WARMUP_STEPS=0)
    assert float(learning_rate_schedule(flat, total_steps=10)(0)) == pytest.approx(0.04)
    assert float(learning_rate_schedule(config, total_steps=10, peak=1.0)(1)) == 1.0
    with pytest.raises(ValueError, match="epochs or total_steps"):
        learning_rate_schedule(config)


@pytest.mark.parametrize("height, width", [(64, 64), (128, 96)])
def test_small_backbone_gives_c1_to_c5_at_resnet_strides(height, width):
    image = keras.Input(shape=[height, width, 3])
    outputs = small_resnet_graph(image, stage5=True, train_bn=None)
    model = keras.Model(image, outputs)
    features = model.predict(np.ones((2, height, width, 3), np.float32), verbose=0)
    w2, w3, w4, w5 = small_backbone.WIDTHS
    expected = [(2, height // 4, width // 4, w2), (2, height // 4, width // 4, w2),
                (2, height // 8, width // 8, w3), (2, height // 16, width // 16, w4),
                (2, height // 32, width // 32, w5)]
    assert [f.shape for f in features] == expected
    assert all(np.isfinite(f).all() for f in features)
    # COMPUTE_BACKBONE_SHAPE: the sizes of C2..C5 and of P6 (C5 / 2, rounded up).
    sizes = compute_small_backbone_shapes((height, width, 3))
    assert sizes.tolist() == [[height // s, -(-width // s)] for s in (4, 8, 16, 32, 64)]
    # stage5=False: no C5, as Matterport's resnet_graph.
    assert small_resnet_graph(keras.Input(shape=[64, 64, 3]), stage5=False)[4] is None


class _Recorder(keras.callbacks.Callback):
    """What a user's callback sees: the rate at every step, the logs."""

    def __init__(self):
        super().__init__()
        self.rates, self.steps, self.logs = [], [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate))
        self.steps.append(int(self.model.optimizer.iterations))

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs))


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    """Two epochs of the recipe on 64 px shapes, then a resumed third one."""
    logs = tmp_path_factory.mktemp("logs")
    mrcnn.demo.seed_everything(4)
    config = mrcnn.demo.make_config(CpuShapesConfig, **TINY)
    model = modellib.MaskRCNN("training", config, str(logs))
    layers = {layer.name: layer for layer in model.keras_model.layers}
    before = {name: [w.copy() for w in layers[name].get_weights()]
              for name in ("stem_conv1", "res5a_conv2", "bn3a_1")}
    data = mrcnn.demo.make_shapes(4, config, seed=4)
    schedule = learning_rate_schedule(config, total_steps=6, peak=0.01)
    first = _Recorder()
    model.train(data, data, schedule, epochs=2, layers="all", custom_callbacks=[first],
                verbose=0, seed=4)
    # Resume from the checkpoint: a new model, the same schedule, epoch 3.
    again = modellib.MaskRCNN("training", config, str(logs))
    again.load_weights(model.find_last(), by_name=True)
    second = _Recorder()
    again.train(data, None, schedule, epochs=3, layers="all", custom_callbacks=[second],
                verbose=0)
    return dict(model=model, layers=layers, before=before, first=first, second=second,
                schedule=schedule, config=config, logs=logs)


def test_the_schedule_sets_every_step_and_a_resumed_run_continues_it(recipe_run):
    schedule = recipe_run["schedule"]
    expected = [float(schedule(s)) for s in range(6)]
    assert recipe_run["first"].steps == [0, 1, 2, 3]
    assert recipe_run["first"].rates == pytest.approx(expected[:4])
    # epoch 3 starts at step 2 * STEPS_PER_EPOCH = 4, where the first run stopped
    assert recipe_run["second"].steps == [4, 5]
    assert recipe_run["second"].rates == pytest.approx(expected[4:6])


def test_custom_callbacks_see_the_losses_by_name(recipe_run):
    logs = recipe_run["first"].logs
    assert len(logs) == 2
    for name in ("loss",) + training.LOSS_NAMES:
        assert name in logs[0] and math.isfinite(logs[0][name]), name
        assert "val_" + name in logs[0]
    assert logs[0]["loss"] > 0


def test_the_small_backbone_trains_and_reaches_inference(recipe_run):
    """The callable BACKBONE in both modes: its layers learn (weights and
    batch-norm averages move, at BATCH_NORM_MOMENTUM), and the checkpoint
    carries them into the inference model by name."""
    layers = recipe_run["layers"]
    assert {"stem_conv1", "res2a_conv1", "res3a_short", "res5a_conv2", "bn5a_2"} <= set(layers)
    assert layers["bn5a_2"].momentum == 0.9
    for name, weights in recipe_run["before"].items():
        moved = [not np.allclose(a, b) for a, b in zip(weights, layers[name].get_weights())]
        assert all(moved), (name, moved)
    model = recipe_run["model"]
    inference = modellib.MaskRCNN(
        "inference", mrcnn.demo.make_config(CpuShapesConfig, inference=True, **TINY),
        str(recipe_run["logs"]))
    inference.load_weights(model.checkpoint_path.format(epoch=2), by_name=True)
    for name in ("stem_conv1", "res5a_conv2", "bn3a_1", "fpn_p2", "mrcnn_mask_conv1"):
        trained = model.keras_model.get_layer(name).get_weights()
        loaded = inference.keras_model.get_layer(name).get_weights()
        assert all(np.array_equal(a, b) for a, b in zip(trained, loaded)), name


def test_train_takes_the_users_optimizer(recipe_run, tmp_path):
    config = recipe_run["config"]
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    optimizer = keras.optimizers.Adam(learning_rate=1e-4)
    data = mrcnn.demo.make_shapes(2, config, seed=1)
    model.train(data, None, learning_rate=0.5, epochs=1, layers="heads", optimizer=optimizer,
                verbose=0)
    assert model.keras_model.optimizer is optimizer
    assert int(optimizer.iterations) == config.STEPS_PER_EPOCH
    with pytest.raises(TypeError, match="keras.optimizers.Optimizer"):
        training.compile_model(model.keras_model, 0.1, 0.9, optimizer="adam")
