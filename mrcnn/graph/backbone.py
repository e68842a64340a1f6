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

import math

import keras
import numpy as np

__all__ = ["BatchNorm", "FoldedConv2D", "conv_bn", "conv_bn_layers", "identity_block",
           "conv_block", "resnet_graph", "compute_backbone_shapes", "RESNET_STAGE4_BLOCKS"]

# Number of identity blocks after res4a: ResNet-50 has res4b..res4f,
# ResNet-101 has res4b..res4w.
RESNET_STAGE4_BLOCKS = {"resnet50": 5, "resnet101": 22}


@keras.saving.register_keras_serializable(package="mrcnn")
class BatchNorm(keras.layers.BatchNormalization):
    """Matterport's BatchNorm: a BatchNormalization with a fixed mode.

    ``train_bn`` has the meaning of Matterport's ``Config.TRAIN_BN``:

    * ``False``: frozen. Always normalizes with the moving mean and variance
      (``training=False``), in ``predict()`` and in ``fit()`` alike, and
      never updates them. Good when batches are small (the default config).
    * ``None``: normal Keras behaviour, batch statistics while training,
      moving statistics at inference (the ``training`` argument of the call
      decides).
    * ``True``: always batch statistics, even at inference (Matterport's
      "don't use" setting, kept for compatibility).

    With ``train_bn`` None the call-time ``training`` argument is honoured,
    so ``BatchNorm(name=...)(x, training=False)`` as written in Matterport's
    code still freezes the layer.

    Input: [..., channels] float32. Output: same shape and dtype.
    epsilon 1e-3 and momentum 0.99 are the Keras defaults Matterport used.
    """

    def __init__(self, train_bn=None, **kwargs):
        if kwargs.get("dtype") is None and keras.config.dtype_policy().name == "bfloat16":
            # Built under a pure bfloat16 policy (INFERENCE_PRECISION
            # "bfloat16"): normalize bfloat16 maps, but keep gamma, beta and
            # the statistics in float32 (a variance in bfloat16 loses digits).
            kwargs["dtype"] = "mixed_bfloat16"
        super().__init__(**kwargs)
        if train_bn not in (None, True, False):
            raise ValueError(f"BatchNorm {self.name!r}: train_bn must be None, True "
                             f"or False (Config.TRAIN_BN), got {train_bn!r}.")
        self.train_bn = train_bn
        # The FoldedConv2D whose output this layer normalizes, when they were
        # built as a pair (conv_bn). Set with object.__setattr__ so Keras
        # does not track the conv as a sublayer (its weights would count twice).
        object.__setattr__(self, "_folded_conv", None)

    def _frozen(self, training):
        """True when this call normalizes with the moving statistics
        (TRAIN_BN False, the layer not trainable, or not training)."""
        effective = training if self.train_bn is None else self.train_bn
        return not (bool(effective) and self.trainable) and not self.renorm

    def folds_into_conv(self, training):
        """True when, in this call, the paired FoldedConv2D applies this
        normalization itself and this layer passes its input through.

        That is inside ``fit()`` (``training`` true) with frozen statistics
        (TRAIN_BN False, or the layer not trainable): normalizing with
        constants is an affine map per channel, so it folds into the
        convolution's kernel and bias (see FoldedConv2D).
        """
        return (self._folded_conv is not None and bool(training) and self._frozen(training)
                and keras.backend.backend() == "tensorflow")

    def call(self, inputs, training=None, mask=None):
        """
        Note about training values:
            None: Train BN layers. This is the normal mode
            False: Freeze BN layers. Good when batch size is small
            True: (don't use). Set layer in training mode even when making inferences
        """
        if mask is None and self.folds_into_conv(training):
            return inputs  # already normalized by the paired FoldedConv2D
        if mask is None and self._frozen(training) and self._fused_pays(inputs, training):
            return self._frozen_fused(inputs)
        if self.train_bn is not None:
            training = self.train_bn
        return super().call(inputs, training=training, mask=mask)

    def _fused_pays(self, inputs, training):
        """Whether a frozen call should use one FusedBatchNormV3 op
        (``_frozen_fused``) instead of Keras' formula.

        Only on an NHWC map, and only where it pays: inside ``fit()``
        (``training`` true) for a BatchNorm not folded into its conv (the
        heads'; one op forward and one backward instead of several
        element-wise ones, 5% of a 1024x1024 ResNet-101 step before the
        backbone's were folded) and in reduced-precision inference (no
        float32 round trip of every feature map: bfloat16 detect()
        2.4 -> 2.2 s and 150 MB less peak memory). Float32 inference keeps
        Keras' formula: it is no faster fused, and it keeps the float32
        results as close to Matterport's as they are.
        """
        if not (bool(training) or self.compute_dtype in ("bfloat16", "float16")):
            return False
        return (self.scale and self.center and len(inputs.shape) == 4
                and self.axis in (-1, 3, [3], [-1])
                and keras.backend.backend() == "tensorflow")

    def _frozen_fused(self, inputs):
        """Frozen batch normalization as one TensorFlow FusedBatchNormV3 op.

        Same function as ``gamma * (x - mean) / sqrt(var + eps) + beta`` with
        the moving statistics (the Keras path), but one pass over the feature
        map instead of a multiply and an add, and Grappler can fold it into
        the convolution before it. Gradients reach gamma, beta and the input
        (the statistics stay constants), as in the Keras path.

        inputs: [B, H, W, C] float32 or bfloat16; output: same shape, the
        layer's compute dtype.
        """
        import tensorflow as tf
        x = inputs
        if x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
            x = tf.cast(x, tf.float32)
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            x, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32),
            mean=tf.cast(self.moving_mean, tf.float32),
            variance=tf.cast(self.moving_variance, tf.float32),
            epsilon=self.epsilon, data_format="NHWC", is_training=False)
        return tf.cast(y, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config["train_bn"] = self.train_bn
        return config


@keras.saving.register_keras_serializable(package="mrcnn")
class FoldedConv2D(keras.layers.Conv2D):
    """A Conv2D followed by a BatchNorm (built together by :func:`conv_bn`)
    that applies the frozen normalization itself when training.

    Weights, names and outputs are those of the two Matterport layers (the
    conv keeps ``kernel`` and ``bias``, the BatchNorm its four weights).
    Outside ``fit()``, or when the BatchNorm uses batch statistics, the two
    layers run as written. Inside ``fit()`` with a frozen BatchNorm
    (Matterport's default TRAIN_BN False) the normalization
    ``y = (conv(x) - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``
    is computed as one convolution::

        y = conv(x, kernel * s) + (bias - mean) * s + beta

    and the BatchNorm passes it through. Gamma and beta still get their
    gradients (through the folded kernel and bias). The saving is in the
    backward pass: it needs the conv input only, not the pre-normalization
    map as well, so training keeps one feature map per convolution instead
    of two (ResNet-101 at 1024x1024: about 1 GB less) and skips the
    normalization passes.

    The pairing is made by :func:`conv_bn` and is not part of the layer
    config: a model rebuilt from its config runs the two layers unfolded
    (same results, without the saving).

    inputs: [B, H, W, C_in]; output: [B, H', W', filters], compute dtype.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "_folded_bn", None)

    def call(self, inputs, training=None):
        bn = self._folded_bn
        if bn is None or not bn.folds_into_conv(training):
            return super().call(inputs)
        import tensorflow as tf
        if self.data_format != "channels_last" or self.groups != 1:
            raise ValueError(f"{self.name}: folding a BatchNorm needs a channels_last, "
                             f"ungrouped convolution.")
        dtype = self.compute_dtype
        scale = tf.cast(bn.gamma, "float32") * tf.math.rsqrt(
            tf.cast(bn.moving_variance, "float32") + bn.epsilon)          # [filters]
        kernel = tf.cast(self.kernel, "float32") * scale                    # [kh, kw, in, filters]
        bias = tf.cast(bn.beta, "float32") - tf.cast(bn.moving_mean, "float32") * scale
        if self.use_bias:
            bias = bias + tf.cast(self.bias, "float32") * scale
        y = tf.nn.conv2d(tf.cast(inputs, dtype), tf.cast(kernel, dtype), strides=self.strides,
                         padding=self.padding.upper(), dilations=self.dilation_rate)
        y = tf.nn.bias_add(y, tf.cast(bias, dtype))
        if self.activation is not None:
            y = self.activation(y)
        return y


def conv_bn_layers(filters, kernel_size, name, bn_name, train_bn, strides=(1, 1),
                   padding="valid", use_bias=True):
    """Matterport's ``Conv2D(name=name)`` and ``BatchNorm(name=bn_name)`` as
    a paired FoldedConv2D and BatchNorm (same layers, names and weights).
    Apply the BatchNorm to the conv's output, directly or each inside a
    (folding) TimeDistributed. Returns (conv, bn)."""
    conv = FoldedConv2D(filters, kernel_size, strides=strides, padding=padding,
                        name=name, use_bias=use_bias)
    bn = BatchNorm(name=bn_name, train_bn=train_bn)
    object.__setattr__(conv, "_folded_bn", bn)
    object.__setattr__(bn, "_folded_conv", conv)
    return conv, bn


def conv_bn(x, filters, kernel_size, name, bn_name, train_bn, strides=(1, 1),
            padding="valid", use_bias=True):
    """``conv_bn_layers`` applied to x: [B, H, W, C_in]. Returns the
    BatchNorm's output, [B, H', W', filters]."""
    conv, bn = conv_bn_layers(filters, kernel_size, name, bn_name, train_bn, strides=strides,
                              padding=padding, use_bias=use_bias)
    return bn(conv(x))


def compute_backbone_shapes(image_shape, backbone_strides, compute_backbone_shape=None):
    """Height and width of the feature map of each pyramid level.

    image_shape: (height, width[, channels]) of the molded image, pixels.
    backbone_strides: stride of each level, e.g. [4, 8, 16, 32, 64] for P2..P6.
    compute_backbone_shape: optional callable ``f(image_shape) -> [N, 2]``
        (Matterport's ``COMPUTE_BACKBONE_SHAPE`` for a callable BACKBONE);
        when given, its result is returned as an int array.

    Returns: [N, (height, width)] int array, ``ceil(image / stride)`` per level.
    """
    if compute_backbone_shape is not None:
        return np.asarray(compute_backbone_shape(image_shape))
    return np.array(
        [[int(math.ceil(image_shape[0] / stride)),
          int(math.ceil(image_shape[1] / stride))]
         for stride in backbone_strides])


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
