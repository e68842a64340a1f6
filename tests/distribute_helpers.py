"""Shared pieces of the distribution and precision tests (and of the
multi-worker test's worker processes, tests/mwms_worker.py).

* ``TinyShapesConfig``: the shapes task at 64x64 with a tiny backbone
  (three strided conv + BatchNorm stages, ``tiny_backbone``), 32-channel FPN,
  few ROIs: a train step traces in seconds.
  ``RPN_TRAIN_ANCHORS_PER_IMAGE`` covers every anchor (1023 at 64x64), so
  ``build_rpn_targets`` never subsamples with NumPy's global RNG and the same
  image always gives the same targets, in any process and any order.
* ``deterministic_targets()``: the ROI sampling of DetectionTargetLayer
  draws random subsets in the graph (``tf.random.uniform``), differently on
  each replica; inside this context it keeps the first candidates in index
  order instead, so a one-device step and a distributed step see the same
  ROIs. The distribution machinery (loss normalization, gradient sum, sync
  BatchNorm, optimizer) is what the tests compare, not the sampling.
* ``EXACT``: the config fields of the equality tests. With the RPN's
  proposals as ROIs (USE_RPN_ROIS True) the ROI set depends on the weights
  through top-k, NMS and IoU thresholds, and from random weights a float32
  round-off difference (a convolution over 2 images instead of 4 rounds
  differently) flips a near-tied proposal now and then: after one step the
  weights of the two runs differ by 1e-7, and the second step can pick
  another positive ROI (measured: mrcnn_bbox_loss 5.02 instead of 5.74).
  With ``input_roi`` (USE_RPN_ROIS False, ROIs drawn from the data by
  ``deterministic_targets``) the losses are smooth functions of the
  weights and several steps stay within round-off.
"""
import contextlib
import math
import zlib

import keras
import numpy as np
import tensorflow as tf

from mrcnn.config import Config
from mrcnn.datasets.shapes import ShapesDataset


def tiny_backbone(input_image, stage5=True, train_bn=None):
    """Matterport's callable BACKBONE contract: C1..C5 at strides 2..32,
    one 3x3 conv + BatchNorm + ReLU per stage, 8..32 channels."""
    from mrcnn.graph.backbone import BatchNorm
    x = input_image
    outputs = []
    for i, (filters, stride) in enumerate([(8, 2), (8, 2), (16, 2), (16, 2), (32, 2)], 1):
        x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                                name=f"tiny_conv{i}")(x)
        x = BatchNorm(name=f"tiny_bn{i}", train_bn=train_bn)(x)
        x = keras.layers.Activation("relu")(x)
        outputs.append(x)
    return outputs


def tiny_backbone_shapes(image_shape):
    return np.array([[int(math.ceil(image_shape[0] / s)), int(math.ceil(image_shape[1] / s))]
                     for s in (4, 8, 16, 32, 64)])


class TinyShapesConfig(Config):
    NAME = "tinyshapes"
    BACKBONE = staticmethod(tiny_backbone)
    COMPUTE_BACKBONE_SHAPE = staticmethod(tiny_backbone_shapes)
    NUM_CLASSES = 1 + 3
    GPU_COUNT = 1
    IMAGES_PER_GPU = 2
    IMAGE_MIN_DIM = 64
    IMAGE_MAX_DIM = 64
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    RPN_TRAIN_ANCHORS_PER_IMAGE = 1024   # >= all anchors: no NumPy subsampling
    TOP_DOWN_PYRAMID_SIZE = 32
    PRE_NMS_LIMIT = 256
    POST_NMS_ROIS_TRAINING = 32
    POST_NMS_ROIS_INFERENCE = 16
    TRAIN_ROIS_PER_IMAGE = 8
    ROI_POSITIVE_RATIO = 0.5
    MAX_GT_INSTANCES = 4
    MINI_MASK_SHAPE = (16, 16)
    MASK_POOL_SIZE = 7
    MASK_SHAPE = [14, 14]
    FPN_CLASSIF_FC_LAYERS_SIZE = 32
    LEARNING_RATE = 0.02
    STEPS_PER_EPOCH = 2
    VALIDATION_STEPS = 1


# Fields of the step-equality tests (see the module docstring).
EXACT = {"USE_RPN_ROIS": False}


def make_config(**fields):
    """A TinyShapesConfig with ``fields`` overridden (class attributes, so
    derived fields such as BATCH_SIZE follow)."""
    return type("Config", (TinyShapesConfig,), dict(fields))()


def shapes(count, seed=1, size=64):
    ds = ShapesDataset()
    ds.load_shapes(count, size, size, seed=seed)
    ds.prepare()
    return ds


def fixed_batches(config, count, batch_size, seed=0, dataset_seed=1):
    """``count`` training batches (dicts of NumPy arrays) of ``batch_size``
    images from the shapes data set, in DataSequence order."""
    from mrcnn import training
    seq = training.DataSequence(shapes(max(8, count * batch_size), seed=dataset_seed), config,
                                steps=count, batch_size=batch_size, seed=seed, shuffle=False)
    return [seq[i][0] for i in range(count)]


class Batches(keras.utils.PyDataset):
    """Fixed batches as a PyDataset (``(inputs,)`` items)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = list(batches)

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return (self.batches[index],)


@contextlib.contextmanager
def deterministic_targets():
    """Training targets that depend on the data only, never on a random
    draw (module docstring): DetectionTargetLayer keeps the first candidate
    ROIs in index order, and ``pipeline.generate_random_rois`` (the ``input_roi``
    of USE_RPN_ROIS False) draws from a generator seeded by the image's
    boxes instead of NumPy's global RNG. In force while the train step is
    traced and the batches are loaded.

    TensorFlow's op determinism is on too: without it some CPU kernels sum
    in thread order (which ones was not traced), and with TRAIN_BN True (near-zero batch variances)
    one step's stem update moved by up to 4e-4 from run to run (the
    2-replica test failed 2 runs in 5 at atol ~4e-5; with it 4 of 4 passed).
    """
    from mrcnn import pipeline
    from mrcnn.ops import targets
    from tensorflow.python.framework import config as tf_config
    original_order, original_rois = targets._random_order, pipeline.generate_random_rois

    def first_candidates(candidates, seed=None):
        keys = tf.where(candidates, 0.0, 1.0)
        return tf.argsort(keys, axis=1, stable=True, direction="ASCENDING")

    def seeded_rois(image_shape, count, gt_class_ids, gt_boxes):
        state = np.random.get_state()
        np.random.seed(zlib.crc32(np.ascontiguousarray(gt_boxes, np.int64).tobytes()))
        try:
            return original_rois(image_shape, count, gt_class_ids, gt_boxes)
        finally:
            np.random.set_state(state)

    targets._random_order, pipeline.generate_random_rois = first_candidates, seeded_rois
    was_deterministic = tf_config.is_op_determinism_enabled()
    tf_config.enable_op_determinism()
    try:
        yield
    finally:
        targets._random_order, pipeline.generate_random_rois = original_order, original_rois
        if not was_deterministic:
            tf_config.disable_op_determinism()


def weights_of(keras_model):
    """{variable path: NumPy value} of every weight (first replica)."""
    return {w.path: keras.ops.convert_to_numpy(w) for w in keras_model.weights}


def replica_values(variable):
    """NumPy values of every replica's copy of a (mirrored) Keras variable."""
    value = variable.value if isinstance(variable, keras.Variable) else variable
    if hasattr(value, "values"):  # DistributedVariable: one copy per replica
        return [v.numpy() for v in value.values]
    return [value.numpy()]
