"""TRAIN_PRECISION (mrcnn/precision.py): mixed_bfloat16 and mixed_float16
training on the tiny shapes config of tests/distribute_helpers.py.

Tolerances (measured on this config, from the same weights and batches,
learning rate 0.02 from random weights):

* mixed_bfloat16 (8-bit mantissa): the total loss of each of the first 3
  steps within 5% of float32 (measured 0.1%, 1.6%, 2.9%);
* mixed_float16 (11-bit mantissa, loss scale 16 so no step overflows): the
  first 2 steps within 1% (measured 0.1%).

float16 has no fast CPU kernels (a step is ~15 s here against 0.3 s in
float32), so the float16 tests run few steps.
"""
import os

import h5py
import keras
import numpy as np
import pytest

from mrcnn import precision, training
from tests import distribute_helpers as H


def _model(precision_name, init=None, **fields):
    from mrcnn import model as modellib
    config = H.make_config(TRAIN_PRECISION=precision_name, **H.EXACT, **fields)
    model = modellib.MaskRCNN("training", config, "unused")
    if init is not None:
        model.keras_model.set_weights(init)
    training.set_trainable(model.keras_model, "all", verbose=0)
    training.compile_model(model.keras_model, config.LEARNING_RATE, 0.9, 5.0)
    return model


class _Losses(keras.callbacks.Callback):
    """Each step's total loss (fit logs the running mean of the epoch)."""

    def __init__(self):
        super().__init__()
        self.means, self.scales = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.means.append(float(logs["loss"]))
        self.scales.append(precision.loss_scale(self.model.optimizer))

    def steps(self):
        m = np.array(self.means)
        return m * np.arange(1, len(m) + 1) - np.concatenate([[0.0], m[:-1] * np.arange(1, len(m))])


@pytest.fixture(scope="module")
def data():
    keras.utils.set_random_seed(1)
    with H.deterministic_targets():
        batches = H.fixed_batches(H.make_config(**H.EXACT), 3, 2)
        init = _model("float32").keras_model.get_weights()
        reference = _fit(_model("float32", init), batches)
    return batches, init, reference


def _fit(model, batches):
    losses = _Losses()
    with H.deterministic_targets():
        model.keras_model.fit(H.Batches(batches), epochs=1, verbose=0, shuffle=False,
                              callbacks=[losses])
    return losses


def test_config_field_is_validated():
    assert H.make_config().TRAIN_PRECISION == "float32"
    with pytest.raises(ValueError, match="TRAIN_PRECISION: unknown precision 'float16'"):
        H.make_config(TRAIN_PRECISION="float16")
    with pytest.raises(ValueError, match="SYNC_BATCH_NORM"):
        H.make_config(SYNC_BATCH_NORM=None)


@pytest.mark.parametrize("name,compute", [("mixed_bfloat16", "bfloat16"),
                                          ("mixed_float16", "float16")])
def test_what_computes_in_low_precision_and_what_stays_float32(name, compute):
    model = _model(name)
    km = model.keras_model
    # Convolutions compute in the low precision, every weight is float32.
    assert km.get_layer("tiny_conv1").compute_dtype == compute
    assert km.get_layer("fpn_p2").compute_dtype == compute
    assert {w.dtype for w in km.weights} == {"float32"}
    # Outputs, proposals, ROI targets and losses stay float32.
    for layer in ("rpn_class_logits", "rpn_bbox", "mrcnn_class_logits", "mrcnn_bbox",
                  "mrcnn_mask", "ROI", "output_rois") + training.LOSS_NAMES:
        assert km.get_layer(layer).output.dtype == "float32", layer
    for t in km.get_layer("proposal_targets").output:
        assert t.dtype in ("float32", "int32")
    # float16 trains through a dynamic loss scale; bfloat16 needs none.
    optimizer = km.optimizer
    if name == "mixed_float16":
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(optimizer.inner_optimizer, training.ClippedMomentumSGD)
        assert precision.loss_scale(optimizer) == precision.INITIAL_LOSS_SCALE
        # A new compile_model (same weights) resets the scale, as a new optimizer would.
        optimizer.dynamic_scale.assign(4.0)
        training.compile_model(km, 0.01, 0.9, 5.0)
        assert km.optimizer is optimizer and precision.loss_scale(optimizer) == 2.0 ** 15
        np.testing.assert_allclose(float(optimizer.learning_rate), 0.01)
    else:
        assert isinstance(optimizer, training.ClippedMomentumSGD)
        assert precision.loss_scale(optimizer) is None
    # Models built later are float32 again.
    assert keras.config.dtype_policy().name == "float32"


def test_mixed_bfloat16_losses_follow_float32(data):
    batches, init, reference = data
    bf16 = _fit(_model("mixed_bfloat16", init), batches)
    steps, ref = bf16.steps(), reference.steps()
    assert np.all(np.isfinite(steps))
    np.testing.assert_allclose(steps, ref, rtol=0.05)
    assert not np.allclose(steps, ref, rtol=1e-6)  # it did compute in bfloat16
    assert ref[-1] < ref[0]  # and the reference trained


def test_mixed_float16_loss_scale_halves_on_overflow_then_trains(data):
    """Loss scale 2**40: the float16 gradients overflow, the step is skipped
    (weights unchanged) and the scale halved. At scale 16 the next steps are
    finite and follow float32 within 1%."""
    batches, init, reference = data
    model = _model("mixed_float16", init)
    km, optimizer = model.keras_model, model.keras_model.optimizer
    optimizer.dynamic_scale.assign(2.0 ** 40)
    losses = _fit(model, batches[:1])
    assert losses.scales == [2.0 ** 39]
    for w, w0 in zip(km.get_weights(), init):
        np.testing.assert_array_equal(w, w0)
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 0

    # Same start (the skipped step changed nothing), a scale that fits.
    optimizer.dynamic_scale.assign(16.0)
    losses = _fit(model, batches[:2])
    assert losses.scales == [16.0, 16.0]
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 2
    steps = losses.steps()
    assert np.all(np.isfinite(steps))
    np.testing.assert_allclose(steps, reference.steps()[:2], rtol=0.01)
    assert not np.allclose(km.get_weights()[0], init[0])


def test_checkpoints_are_float32_and_load_into_any_precision(data, tmp_path):
    """A mixed_bfloat16 model's checkpoint is float32; it loads into float32
    and mixed_float16 training models and into a bfloat16 inference model
    with the same values (bfloat16 inference rounds its conv weights)."""
    from mrcnn import model as modellib
    batches, init, _ = data
    bf16 = _model("mixed_bfloat16", init)
    _fit(bf16, batches[:1])
    path = str(tmp_path / "mask_rcnn_tinyshapes_0001.h5")
    bf16.save_weights(path)
    with h5py.File(path, "r") as f:
        dtypes = set()
        f.visititems(lambda name, obj: dtypes.add(str(obj.dtype))
                     if isinstance(obj, h5py.Dataset) else None)
    assert dtypes == {"float32"}
    trained = bf16.keras_model.get_weights()
    assert not np.allclose(trained[0], init[0])
    for other in ("float32", "mixed_float16"):
        model = _model(other)
        model.load_weights(path, by_name=True)
        for a, b in zip(model.keras_model.get_weights(), trained):
            np.testing.assert_array_equal(a, b)
    config = H.make_config(INFERENCE_PRECISION="bfloat16", **H.EXACT)
    inference = modellib.MaskRCNN("inference", config, str(tmp_path))
    inference.load_weights(path, by_name=True)
    kernel = inference.keras_model.get_layer("tiny_conv2").kernel
    expected = bf16.keras_model.get_layer("tiny_conv2").kernel.numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel).astype(np.float32), expected,
                               rtol=1e-2)
    assert os.path.isfile(path)
