"""ResNet-50/101 backbone with Matterport's layer names.

Every weight-carrying layer keeps the name it has in Matterport's weight
files (``conv1``, ``bn_conv1``, ``res2a_branch2a``, ``bn2a_branch2a``, ...,
``res5c_branch2c``), so ``mask_rcnn_coco.h5`` and Matterport checkpoints load
by name. Each residual block's output is an Activation named
``res{stage}{block}_out`` (the inspection notebook reads ``res4w_out``).

Shape shorthand: B batch, H, W input image height and width.

* C1: [B, H/4, W/4, 64]  (after conv1 stride 2 and max pooling stride 2)
* C2: [B, H/4, W/4, 256]
* C3: [B, H/8, W/8, 512]
* C4: [B, H/16, W/16, 1024]
* C5: [B, H/32, W/32, 2048]

All float32, channels last.

Batch normalization: :class:`BatchNorm` takes Matterport's ``TRAIN_BN``
value as a constructor argument (``train_bn``) instead of a call-time
``training=`` flag, so a frozen BN (``TRAIN_BN=False``, the default) stays
frozen inside ``fit()`` too, and the flag survives ``get_config()``.
"""

import keras

from mrcnn.anchors import compute_backbone_shapes  # noqa: F401 (old import path)
from mrcnn.layers.batch_norm import BatchNorm, FoldedConv2D, pair_conv_bn

__all__ = ["BatchNorm", "FoldedConv2D", "conv_bn", "conv_bn_layers", "identity_block",
           "conv_block", "resnet_graph", "compute_backbone_shapes", "RESNET_STAGE4_BLOCKS"]

# Number of identity blocks after res4a: ResNet-50 has res4b..res4f,
# ResNet-101 has res4b..res4w.
RESNET_STAGE4_BLOCKS = {"resnet50": 5, "resnet101": 22}


def conv_bn_layers(filters, kernel_size, name, bn_name, train_bn, strides=(1, 1),
                   padding="valid", use_bias=True):
    """Matterport's ``Conv2D(name=name)`` and ``BatchNorm(name=bn_name)`` as
    a paired FoldedConv2D and BatchNorm (same layers, names and weights).
    Apply the BatchNorm to the conv's output, directly or each inside a
    (folding) TimeDistributed. Returns (conv, bn)."""
    conv = FoldedConv2D(filters, kernel_size, strides=strides, padding=padding,
                        name=name, use_bias=use_bias)
    bn = BatchNorm(name=bn_name, train_bn=train_bn)
    pair_conv_bn(conv, bn)
    return conv, bn


def conv_bn(x, filters, kernel_size, name, bn_name, train_bn, strides=(1, 1),
            padding="valid", use_bias=True):
    """``conv_bn_layers`` applied to x: [B, H, W, C_in]. Returns the
    BatchNorm's output, [B, H', W', filters]."""
    conv, bn = conv_bn_layers(filters, kernel_size, name, bn_name, train_bn, strides=strides,
                              padding=padding, use_bias=use_bias)
    return bn(conv(x))


def _bottleneck(input_tensor, kernel_size, filters, stage, block, strides,
                shortcut_conv, use_bias, train_bn):
    """The three-conv bottleneck shared by identity_block and conv_block.

    The order in which layers are created (branch2a, 2b, 2c, then the
    shortcut branch1) is Matterport's, and so is the weight order of the
    model that results.
    """
    nb_filter1, nb_filter2, nb_filter3 = filters
    conv_name_base = f"res{stage}{block}_branch"
    bn_name_base = f"bn{stage}{block}_branch"

    x = conv_bn(input_tensor, nb_filter1, (1, 1), conv_name_base + "2a", bn_name_base + "2a",
                train_bn, strides=strides, use_bias=use_bias)
    x = keras.layers.Activation("relu")(x)

    x = conv_bn(x, nb_filter2, (kernel_size, kernel_size), conv_name_base + "2b",
                bn_name_base + "2b", train_bn, padding="same", use_bias=use_bias)
    x = keras.layers.Activation("relu")(x)

    x = conv_bn(x, nb_filter3, (1, 1), conv_name_base + "2c", bn_name_base + "2c",
                train_bn, use_bias=use_bias)

    if shortcut_conv:
        shortcut = conv_bn(input_tensor, nb_filter3, (1, 1), conv_name_base + "1",
                           bn_name_base + "1", train_bn, strides=strides, use_bias=use_bias)
    else:
        shortcut = input_tensor

    x = keras.layers.Add()([x, shortcut])
    return keras.layers.Activation("relu", name=f"res{stage}{block}_out")(x)


def identity_block(input_tensor, kernel_size, filters, stage, block,
                   use_bias=True, train_bn=True):
    """Residual block whose shortcut is the identity.

    input_tensor: [B, h, w, filters[2]] float32.
    kernel_size: size of the middle conv of the main path (3 in ResNet).
    filters: (f1, f2, f3) filters of the three convs of the main path.
    stage: int, stage number (2..5), used in layer names.
    block: 'a', 'b', ..., block letter, used in layer names.
    use_bias: conv biases (Matterport's backbone always has them).
    train_bn: Config.TRAIN_BN (see BatchNorm).

    Returns: [B, h, w, f3] float32, output of layer ``res{stage}{block}_out``.
    """
    return _bottleneck(input_tensor, kernel_size, filters, stage, block, (1, 1),
                       shortcut_conv=False, use_bias=use_bias, train_bn=train_bn)


def conv_block(input_tensor, kernel_size, filters, stage, block,
               strides=(2, 2), use_bias=True, train_bn=True):
    """Residual block with a 1x1 conv (``res..._branch1``) on the shortcut.

    Same arguments as identity_block, plus ``strides`` of the first 1x1 conv
    of the main path and of the shortcut conv (2 from stage 3 on, 1 in
    stage 2, whose input is already downsampled by the max pooling).

    Returns: [B, h/s, w/s, f3] float32, output of ``res{stage}{block}_out``.
    """
    return _bottleneck(input_tensor, kernel_size, filters, stage, block, strides,
                       shortcut_conv=True, use_bias=use_bias, train_bn=train_bn)


def resnet_graph(input_image, architecture, stage5=False, train_bn=True):
    """Build a ResNet-50 or ResNet-101 graph on ``input_image``.

    input_image: [B, H, W, C] float32 KerasTensor, the molded image.
    architecture: "resnet50" or "resnet101".
    stage5: build stage 5 (C5). Mask R-CNN always does.
    train_bn: Config.TRAIN_BN (see BatchNorm).

    Returns: [C1, C2, C3, C4, C5] (shapes in the module docstring); C5 is
    None when ``stage5`` is False.
    """
    if architecture not in RESNET_STAGE4_BLOCKS:
        raise ValueError(f"resnet_graph: unknown architecture {architecture!r}; "
                         f"use one of {sorted(RESNET_STAGE4_BLOCKS)}.")
    # Stage 1
    x = keras.layers.ZeroPadding2D((3, 3))(input_image)
    x = conv_bn(x, 64, (7, 7), "conv1", "bn_conv1", train_bn, strides=(2, 2))
    x = keras.layers.Activation("relu")(x)
    C1 = x = keras.layers.MaxPooling2D((3, 3), strides=(2, 2), padding="same")(x)
    # Stage 2
    x = conv_block(x, 3, [64, 64, 256], stage=2, block="a", strides=(1, 1), train_bn=train_bn)
    x = identity_block(x, 3, [64, 64, 256], stage=2, block="b", train_bn=train_bn)
    C2 = x = identity_block(x, 3, [64, 64, 256], stage=2, block="c", train_bn=train_bn)
    # Stage 3
    x = conv_block(x, 3, [128, 128, 512], stage=3, block="a", train_bn=train_bn)
    for block in "bcd":
        x = identity_block(x, 3, [128, 128, 512], stage=3, block=block, train_bn=train_bn)
    C3 = x
    # Stage 4: res4a, then res4b.. (5 blocks in ResNet-50, 22 in ResNet-101)
    x = conv_block(x, 3, [256, 256, 1024], stage=4, block="a", train_bn=train_bn)
    for i in range(RESNET_STAGE4_BLOCKS[architecture]):
        x = identity_block(x, 3, [256, 256, 1024], stage=4, block=chr(ord("b") + i),
                           train_bn=train_bn)
    C4 = x
    # Stage 5
    if stage5:
        x = conv_block(x, 3, [512, 512, 2048], stage=5, block="a", train_bn=train_bn)
        x = identity_block(x, 3, [512, 512, 2048], stage=5, block="b", train_bn=train_bn)
        C5 = identity_block(x, 3, [512, 512, 2048], stage=5, block="c", train_bn=train_bn)
    else:
        C5 = None
    return [C1, C2, C3, C4, C5]
