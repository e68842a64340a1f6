"""A small ResNet-like backbone for training Mask R-CNN from scratch on a CPU.

The backbone of the CPU recipe (``mrcnn.recipes.CpuRecipe``), plugged in
through Matterport's custom-backbone contract: a config sets

    BACKBONE = staticmethod(small_resnet_graph)
    COMPUTE_BACKBONE_SHAPE = staticmethod(compute_small_backbone_shapes)

and the model calls ``BACKBONE(input_image, stage5=True, train_bn=TRAIN_BN)``
for C1..C5, then ``COMPUTE_BACKBONE_SHAPE(image_shape)`` for the feature-map
sizes of the anchors. (``staticmethod``: a plain function set as a class
attribute would be called as a method, with the config as first argument.)

The network keeps ResNet's strides (C2..C5 at 1/4, 1/8, 1/16, 1/32 of the
image, so ``BACKBONE_STRIDES`` [4, 8, 16, 32, 64] stays right) but has basic
residual blocks (two 3x3 convs) with few channels: at 128x128 pixels it costs
about 0.07 GMAC per image, against ~1.3 for ResNet-50. A ResNet-50 is built
to be fine-tuned from ImageNet or COCO weights; from random weights, on
three kinds of flat-colored shapes, the small network needs no more steps
and each step is much cheaper (README.md and samples/shapes/README.md have the numbers).

Shape shorthand: B batch, H, W input height and width (multiples of 32),
WIDTHS = (w2, w3, w4, w5) the channels of stages 2..5.

* C1: [B, H/4, W/4, w2]  (stem: two stride-2 3x3 convs)
* C2: [B, H/4, W/4, w2]
* C3: [B, H/8, W/8, w3]
* C4: [B, H/16, W/16, w4]
* C5: [B, H/32, W/32, w5]

All float32, channels last. Layer names: ``stem_conv1``, ``stem_bn1``, ...,
then ``res{stage}{block}_conv{i}`` / ``bn{stage}{block}_{i}`` (shortcut
``res{stage}{block}_short`` / ``bn{stage}{block}_short``): the stage number
in the name keeps Matterport's layer presets ("3+", "4+", "5+") meaningful,
and none of them is a Matterport layer name, so loading COCO or Matterport
weights by name leaves this backbone alone instead of failing on shapes.
"""

import math

import numpy as np

# keras (TensorFlow) and mrcnn.layers are imported inside the functions that
# build layers (a documented lazy import, listed in tests/test_architecture.py):
# a Config naming this backbone (mrcnn.recipes) stays importable without
# TensorFlow, so the samples report bad command-line arguments before
# TensorFlow's few seconds of loading.

__all__ = ["WIDTHS", "BLOCKS", "small_resnet_graph", "compute_small_backbone_shapes"]

# Channels of stages 2..5 and residual blocks per stage.
WIDTHS = (32, 64, 128, 256)
BLOCKS = (1, 1, 1, 1)


def _conv_bn(x, filters, strides, name, bn_name, train_bn, relu=True):
    """3x3 conv (no bias: the BN after it has one) + BatchNorm [+ ReLU]."""
    import keras

    x = _paired(x, filters, (3, 3), strides, "same", name, bn_name, train_bn)
    return keras.layers.Activation("relu")(x) if relu else x


def _paired(x, filters, kernel_size, strides, padding, name, bn_name, train_bn):
    """Conv2D (no bias) + BatchNorm as a FoldedConv2D paired with its
    BatchNorm: the same layers and weights, folded at inference
    (``layers.fold_batch_norms``), not inside fit() (``in_fit=False``:
    training is what it was)."""
    from mrcnn.layers.batch_norm import BatchNorm, FoldedConv2D, pair_conv_bn

    conv = FoldedConv2D(filters, kernel_size, strides=strides, padding=padding,
                        use_bias=False, name=name)
    bn = BatchNorm(name=bn_name, train_bn=train_bn)
    pair_conv_bn(conv, bn, in_fit=False)
    return bn(conv(x))


def basic_block(x, filters, stage, block, strides, train_bn):
    """ResNet basic block: two 3x3 convs, shortcut 1x1 conv when the shape changes.

    x: [B, h, w, c] float32.
    filters: output channels.
    stage, block: int and letter, used in the layer names.
    strides: 1 or 2 (first conv and shortcut).
    train_bn: Config.TRAIN_BN (see mrcnn.graph.backbone.BatchNorm).

    Returns: [B, h/strides, w/strides, filters] float32, the output of the
    Activation ``res{stage}{block}_out``.
    """
    import keras

    base = f"{stage}{block}"
    y = _conv_bn(x, filters, strides, f"res{base}_conv1", f"bn{base}_1", train_bn)
    y = _conv_bn(y, filters, 1, f"res{base}_conv2", f"bn{base}_2", train_bn, relu=False)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _paired(x, filters, (1, 1), strides, "valid", f"res{base}_short",
                           f"bn{base}_short", train_bn)
    y = keras.layers.Add()([y, shortcut])
    return keras.layers.Activation("relu", name=f"res{base}_out")(y)


def small_resnet_graph(input_image, stage5=True, train_bn=None, widths=WIDTHS, blocks=BLOCKS):
    """Build the small backbone on ``input_image`` (Matterport's BACKBONE contract).

    input_image: [B, H, W, C] float32 KerasTensor, the molded image.
    stage5: build C5 (Mask R-CNN always does; False gives C5 None, as
        Matterport's resnet_graph).
    train_bn: Config.TRAIN_BN.
    widths: channels of stages 2..5; blocks: basic blocks per stage.

    Returns: [C1, C2, C3, C4, C5] (shapes in the module docstring).
    """
    if len(widths) != 4 or len(blocks) != 4:
        raise ValueError(f"small_resnet_graph: widths and blocks need 4 values (stages "
                         f"2..5), got {widths} and {blocks}.")
    # Stem: 1/4 of the image in two stride-2 convs (ResNet: a 7x7 conv and a
    # max pooling), half the stage-2 width at 1/2 to keep it cheap.
    x = _conv_bn(input_image, max(widths[0] // 2, 8), 2, "stem_conv1", "stem_bn1", train_bn)
    C1 = x = _conv_bn(x, widths[0], 2, "stem_conv2", "stem_bn2", train_bn)
    outputs = [C1]
    for stage, (filters, count) in enumerate(zip(widths, blocks), start=2):
        if stage == 5 and not stage5:
            outputs.append(None)
            break
        for i in range(count):
            strides = 2 if (i == 0 and stage > 2) else 1
            x = basic_block(x, filters, stage, chr(ord("a") + i), strides, train_bn)
        outputs.append(x)
    return outputs


def compute_small_backbone_shapes(image_shape, strides=(4, 8, 16, 32, 64)):
    """Feature-map sizes of the pyramid levels (Matterport's COMPUTE_BACKBONE_SHAPE).

    image_shape: (height, width[, channels]) of the molded image, pixels.
    strides: the config's BACKBONE_STRIDES (the default is Matterport's).
    Returns: [5, (height, width)] int array, ``ceil(size / stride)`` (the
    "same"-padded stride-2 convs round up, as ResNet's).
    """
    return np.array([[int(math.ceil(image_shape[0] / s)), int(math.ceil(image_shape[1] / s))]
                     for s in strides])
