"""Training precision: ``Config.TRAIN_PRECISION`` as a Keras dtype policy,
and the loss scaling float16 needs.

Values:

* ``"float32"`` (default): everything in float32, as Matterport.
* ``"mixed_float16"``: layers compute in float16, weights stay float32; for
  GPUs with tensor cores (Volta and later). float16's range is small
  (largest 65504, smallest normal 6e-5), so the loss is multiplied by a
  dynamic loss scale before the gradients are taken and the gradients
  divided by it afterwards (``keras.optimizers.LossScaleOptimizer`` around
  the SGD): a step whose gradients overflow (inf/NaN) is skipped and the
  scale halved; after 2000 finite steps it is doubled. On a CPU float16 has
  no fast kernels and is slower than float32: use it on GPUs.
* ``"mixed_bfloat16"``: layers compute in bfloat16 (float32's range, 8 bits
  of mantissa), weights stay float32; no loss scaling needed. For TPUs and
  for CPUs with AVX-512 BF16 / AMX (Cooper Lake, Sapphire Rapids and later);
  older CPUs emulate it slowly.

What stays float32 in every precision: the input images, the RPN and head
output layers (``rpn_class_raw``, ``rpn_bbox_pred``, ``mrcnn_class_logits``,
``mrcnn_bbox_fc``, ``mrcnn_mask``: they are built with ``dtype="float32"``),
the anchors, the proposals (``ProposalLayer``), the ROI sampling and targets
(``DetectionTargetLayer``), box normalization, the five losses and the L2
weight decay (all ``autocast=False`` layers computing in float32), BatchNorm's
statistics (Keras upcasts them), ROI Align's crop_and_resize of bfloat16 maps
(``ops.roi_align`` upcasts them), every weight and every optimizer slot.

Checkpoints: the weights are float32 variables in every precision, so a
checkpoint is float32 and loads into a model of any precision (and into
Matterport's). The precision is a property of the model built, not of the
file.

How the custom train step uses the loss scale (Keras 3): ``train_step`` calls
``self.optimizer.scale_loss(loss)`` (the identity for a plain optimizer; the
loss times the dynamic scale for a LossScaleOptimizer) before
``tape.gradient``, and ``optimizer.apply(grads)``, which for a
LossScaleOptimizer checks the gradients, unscales them and applies the inner
SGD (or skips and halves the scale). Keras' ``compile`` would wrap the
optimizer automatically when the model's policy is mixed_float16
(``auto_scale_loss=True``); :func:`wrap_optimizer` does it explicitly so the
initial scale and the reset on a new ``compile_model`` are ours.
"""

import contextlib
import logging

import keras
import tensorflow as tf

from mrcnn.config import TRAIN_PRECISIONS
from mrcnn.graph.training_graph import build_training_model as _build_training_model

logger = logging.getLogger(__name__)

__all__ = ["TRAIN_PRECISIONS", "training_policy", "dtype_policy", "build_training_model",
           "wrap_optimizer", "reset_optimizer", "loss_scale", "INITIAL_LOSS_SCALE"]

# Keras' default initial loss scale (2**15); lowered at once by overflows.
INITIAL_LOSS_SCALE = 2.0 ** 15


def training_policy(config):
    """The Keras dtype policy name of ``config.TRAIN_PRECISION``."""
    precision = getattr(config, "TRAIN_PRECISION", "float32")
    if precision not in TRAIN_PRECISIONS:
        raise ValueError(f"{type(config).__name__}.TRAIN_PRECISION: unknown precision "
                         f"{precision!r}; use one of {', '.join(TRAIN_PRECISIONS)}.")
    return precision


@contextlib.contextmanager
def dtype_policy(policy):
    """Keras' global dtype policy set to ``policy`` inside the block, restored
    after it: layers take the policy in force when they are created, so a
    model built inside computes in that precision and models built later do
    not."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_training_model(config):
    """``mrcnn.graph.training_graph.build_training_model(config)`` under the
    dtype policy of ``TRAIN_PRECISION``."""
    build = _build_training_model
    policy = training_policy(config)
    if policy == "mixed_float16":
        if not tf.config.list_logical_devices("GPU"):
            logger.warning("TRAIN_PRECISION 'mixed_float16' without a GPU: float16 has no "
                           "fast CPU kernels, expect a slower step than float32 (on a CPU "
                           "with AVX-512 BF16 use 'mixed_bfloat16').")
    if policy == "float32":
        return build(config)
    with dtype_policy(policy):
        return build(config)


def wrap_optimizer(optimizer, keras_model, initial_scale=INITIAL_LOSS_SCALE):
    """``optimizer`` wrapped in a dynamic ``keras.optimizers.LossScaleOptimizer``
    when ``keras_model`` computes in float16; else unchanged."""
    if (keras_model.dtype_policy.name == "mixed_float16"
            and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)):
        return keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=initial_scale)
    return optimizer


def reset_optimizer(optimizer, learning_rate, initial_step=0):
    """Fresh optimizer state in place (what a new optimizer would have):
    momentums zero, the step count at ``initial_step``, the new learning
    rate (a float; a schedule stays the optimizer's own), and for a
    LossScaleOptimizer its initial scale. Keeps the traced train step."""
    inner = optimizer
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        inner = optimizer.inner_optimizer
        if optimizer.built:
            optimizer.step_counter.assign(0)
            optimizer.dynamic_scale.assign(float(optimizer.initial_scale))
    for v in getattr(inner, "momentums", []):   # SGD's public slot list
        v.assign(keras.ops.zeros(v.shape, v.dtype))
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        inner.learning_rate = float(learning_rate)
    inner.iterations.assign(int(initial_step))


def loss_scale(optimizer):
    """The current dynamic loss scale (float), or None without loss scaling."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) and optimizer.built:
        return float(keras.ops.convert_to_numpy(optimizer.dynamic_scale))
    return None
