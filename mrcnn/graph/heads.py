"""Second-stage heads: box classifier/regressor and mask head.

Functional graphs of ``TimeDistributed`` standard layers (the convolutions
followed by a BatchNorm are ``FoldedConv2D``, a Conv2D with the same config
and weights that can fold the frozen BatchNorm at inference), named exactly as in
Matterport (``mrcnn_class_conv1``, ``mrcnn_class_bn1``, ..., ``mrcnn_mask``),
so weight files load by top-level layer name. The wrapper carries the name;
the wrapped layer gets the same name, which makes a variable's path
``mrcnn_class_conv1/mrcnn_class_conv1/kernel``, the path Keras 2 wrote into
the HDF5 files.

Shape shorthand: B batch (dynamic), N ROIs per image (POST_NMS_ROIS_* or
DETECTION_MAX_INSTANCES; padded with zero boxes), P pool size (POOL_SIZE 7
or MASK_POOL_SIZE 14), D pyramid depth (256), K NUM_CLASSES (with
background), F FPN_CLASSIF_FC_LAYERS_SIZE (1024).

Each head is split in two so the part after ROI pooling can be built and
tested on its own: ``fpn_classifier_graph`` = ``PyramidROIAlign`` +
``classifier_head_graph``, ``build_fpn_mask_graph`` = ``PyramidROIAlign`` +
``mask_head_graph``.
"""

import keras

from mrcnn.layers.batch_norm import BatchNorm, FoldedConv2D, pair_conv_bn
from mrcnn.layers.roi_align import PyramidROIAlign
from mrcnn.layers.time_distributed import TimeDistributed

__all__ = ["TimeDistributed", "fpn_classifier_graph", "classifier_head_graph",
           "build_fpn_mask_graph", "mask_head_graph"]


# The heads' output layers always compute in float32, also when the rest of
# the network runs in bfloat16 (Config.INFERENCE_PRECISION): scores, box
# deltas and mask probabilities need float32's precision; their cost is small.
OUTPUT_DTYPE = "float32"


def _td(layer, name, dtype=None):
    """Wrap ``layer`` in our TimeDistributed; both carry ``name``."""
    return TimeDistributed(layer, name=name, dtype=dtype)


def _td_conv_bn(x, filters, kernel_size, name, bn_name, train_bn, padding="valid"):
    """Matterport's ``TimeDistributed(Conv2D(name=name))`` followed by
    ``TimeDistributed(BatchNorm(name=bn_name))``, the inner layers paired
    (``pair_conv_bn``) so that inference models can fold the frozen
    normalization into the convolution (``layers.fold_batch_norms``). The
    pair does not fold inside ``fit()`` (``in_fit=False``): the heads'
    training step stays as it was (their BatchNorms run as one fused op).

    x: [B, N, h, w, C_in]. Returns the BatchNorm's output [B, N, h', w', filters].
    """
    conv = FoldedConv2D(filters, kernel_size, padding=padding, name=name)
    bn = BatchNorm(name=bn_name, train_bn=train_bn)
    pair_conv_bn(conv, bn, in_fit=False)
    return _td(bn, bn_name)(_td(conv, name)(x))


def classifier_head_graph(pooled, pool_size, num_classes, train_bn=True,
                          fc_layers_size=1024):
    """Classifier and box regressor on ROI-pooled features.

    pooled: [B, N, P, P, D] float32, PyramidROIAlign output (P = pool_size).
    pool_size: P; the first "FC" layer is a PxP valid conv.
    num_classes: K.
    train_bn: Config.TRAIN_BN (see backbone.BatchNorm).
    fc_layers_size: F, width of the two FC layers.

    Returns:
        mrcnn_class_logits: [B, N, K] float32, before softmax
        mrcnn_class: [B, N, K] float32, softmax probabilities
        mrcnn_bbox: [B, N, K, (dy, dx, log(dh), log(dw))] float32, per class,
            *before* multiplication by BBOX_STD_DEV
    """
    # Two F-wide FC layers, implemented as convs (Matterport: "for consistency").
    x = _td_conv_bn(pooled, fc_layers_size, (pool_size, pool_size), "mrcnn_class_conv1",
                    "mrcnn_class_bn1", train_bn)
    x = keras.layers.Activation("relu")(x)
    x = _td_conv_bn(x, fc_layers_size, (1, 1), "mrcnn_class_conv2", "mrcnn_class_bn2",
                    train_bn)
    x = keras.layers.Activation("relu")(x)

    # [B, N, 1, 1, F] -> [B, N, F]
    shared = keras.layers.Reshape((-1, fc_layers_size), name="pool_squeeze")(x)

    # Classifier head
    f32 = OUTPUT_DTYPE
    mrcnn_class_logits = _td(keras.layers.Dense(num_classes, name="mrcnn_class_logits",
                                                dtype=f32), "mrcnn_class_logits", f32)(shared)
    mrcnn_probs = _td(keras.layers.Activation("softmax", name="mrcnn_class", dtype=f32),
                      "mrcnn_class", f32)(mrcnn_class_logits)

    # BBox head: [B, N, K * 4] -> [B, N, K, (dy, dx, log(dh), log(dw))]
    x = _td(keras.layers.Dense(num_classes * 4, activation="linear", name="mrcnn_bbox_fc",
                               dtype=f32), "mrcnn_bbox_fc", f32)(shared)
    mrcnn_bbox = keras.layers.Reshape((-1, num_classes, 4), name="mrcnn_bbox", dtype=f32)(x)

    return mrcnn_class_logits, mrcnn_probs, mrcnn_bbox


def fpn_classifier_graph(rois, feature_maps, image_meta, pool_size, num_classes,
                         train_bn=True, fc_layers_size=1024):
    """FPN classifier and box regressor heads, ROI pooling included.

    rois: [B, N, (y1, x1, y2, x2)] float32, normalized proposal boxes,
        zero-padded.
    feature_maps: [P2, P3, P4, P5], each [B, h, w, D] float32.
    image_meta: [B, IMAGE_META_SIZE] float32 (compose_image_meta).
    pool_size, num_classes, train_bn, fc_layers_size: see
        classifier_head_graph.

    Returns: mrcnn_class_logits [B, N, K], mrcnn_class [B, N, K],
    mrcnn_bbox [B, N, K, 4] (see classifier_head_graph). Rows follow ``rois``.
    """
    # [B, N, P, P, D]
    pooled = PyramidROIAlign((pool_size, pool_size), name="roi_align_classifier")(
        [rois, image_meta] + list(feature_maps))
    return classifier_head_graph(pooled, pool_size, num_classes, train_bn=train_bn,
                                 fc_layers_size=fc_layers_size)


def mask_head_graph(pooled, num_classes, train_bn=True):
    """Mask head on ROI-pooled features.

    pooled: [B, N, P, P, D] float32, PyramidROIAlign output (P = MASK_POOL_SIZE).
    num_classes: K.
    train_bn: Config.TRAIN_BN (see backbone.BatchNorm).

    Returns: mrcnn_mask [B, N, 2P, 2P, K] float32, per-class mask
    probabilities (sigmoid), one channel per class.
    """
    x = pooled
    for i in range(1, 5):
        x = _td_conv_bn(x, 256, (3, 3), f"mrcnn_mask_conv{i}", f"mrcnn_mask_bn{i}",
                        train_bn, padding="same")
        x = keras.layers.Activation("relu")(x)
    # [B, N, P, P, 256] -> [B, N, 2P, 2P, 256]
    x = _td(keras.layers.Conv2DTranspose(256, (2, 2), strides=2, activation="relu",
                                         name="mrcnn_mask_deconv"), "mrcnn_mask_deconv")(x)
    # [B, N, 2P, 2P, K]
    return _td(keras.layers.Conv2D(num_classes, (1, 1), strides=1, activation="sigmoid",
                                   name="mrcnn_mask", dtype=OUTPUT_DTYPE),
               "mrcnn_mask", OUTPUT_DTYPE)(x)


def build_fpn_mask_graph(rois, feature_maps, image_meta, pool_size, num_classes,
                         train_bn=True):
    """FPN mask head, ROI pooling included.

    rois: [B, N, (y1, x1, y2, x2)] float32, normalized boxes, zero-padded
        (detection boxes at inference, sampled ROIs in training).
    feature_maps: [P2, P3, P4, P5], each [B, h, w, D] float32.
    image_meta: [B, IMAGE_META_SIZE] float32.
    pool_size: P, MASK_POOL_SIZE (14).
    num_classes: K.
    train_bn: Config.TRAIN_BN.

    Returns: mrcnn_mask [B, N, 2P, 2P, K] float32 (see mask_head_graph).
    """
    # [B, N, P, P, D]
    pooled = PyramidROIAlign((pool_size, pool_size), name="roi_align_mask")(
        [rois, image_meta] + list(feature_maps))
    return mask_head_graph(pooled, num_classes, train_bn=train_bn)
