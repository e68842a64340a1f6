"""BatchNorm (Matterport's frozen-or-not batch normalization) and
FoldedConv2D (a convolution that applies a frozen BatchNorm after it itself).

``pair_conv_bn(conv, bn)`` ties the two: ``graph.backbone.conv_bn`` builds
every backbone conv/BatchNorm pair this way, ``graph.heads`` the heads'
four mask convs and two classifier convs, ``graph.small_backbone`` the CPU
recipe's.

Where the fold happens:

* inside ``fit()`` (``training`` true), for the pairs made with
  ``in_fit=True`` (the ResNet backbone's): it saves a feature map per
  convolution in the backward pass;
* at inference, for every pair of a model passed to
  :func:`fold_batch_norms` (the inference model of
  ``INFERENCE_PRECISION`` "float32" and "bfloat16"; "float32_exact" leaves
  it off): one convolution instead of a convolution and a normalization
  pass over its output, and Grappler then fuses convolution, bias, residual
  add and ReLU into one oneDNN op. This is torchvision's
  ``FrozenBatchNorm2d`` + ``fuse_conv_bn_eval`` and detectron2's frozen
  BatchNorm, done per call inside the compiled function (the scaled kernels
  cost ~1% of the forward pass to compute, and a loaded weight file or
  ``set_weights`` can never leave stale folded copies behind).
"""
import keras
import numpy as np
import tensorflow as tf

from mrcnn.distribute import sync_moments

__all__ = ["BatchNorm", "FoldedConv2D", "pair_conv_bn", "fold_batch_norms",
           "paired_batch_norms"]


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
        # Where the pair folds (pair_conv_bn, fold_batch_norms): inside fit()
        # and/or at inference. Neither is part of the layer config.
        object.__setattr__(self, "_fold_in_fit", False)
        object.__setattr__(self, "_fold_at_inference", False)

    def _frozen(self, training):
        """True when this call normalizes with the moving statistics
        (TRAIN_BN False, the layer not trainable, or not training)."""
        effective = training if self.train_bn is None else self.train_bn
        # issue 14: getattr, Keras < 3.13 has no BatchNormalization.renorm
        return not (bool(effective) and self.trainable) and not getattr(self, "renorm", False)

    def folds_into_conv(self, training):
        """True when, in this call, the paired FoldedConv2D applies this
        normalization itself and this layer passes its input through.

        Only with frozen statistics (TRAIN_BN False, the layer not
        trainable, or not training): normalizing with constants is an affine
        map per channel, so it folds into the convolution's kernel and bias
        (see FoldedConv2D). Then inside ``fit()`` (``training`` true) when
        the pair was made with ``in_fit=True``, and at inference when
        :func:`fold_batch_norms` switched it on.
        """
        if (self._folded_conv is None or not self._frozen(training)
                or keras.backend.backend() != "tensorflow"):
            return False
        return self._fold_in_fit if bool(training) else self._fold_at_inference

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

    def _moments(self, inputs, mask):
        # Statistics synchronized across tf.distribute replicas
        # (Config.SYNC_BATCH_NORM) in two passes, not Keras' one-pass
        # E[x^2] - E[x]^2, which loses digits in float32 (mrcnn.distribute).
        if self.synchronized and mask is None:
            return sync_moments(inputs, self._reduction_axes)
        return super()._moments(inputs, mask)

    def _fused_pays(self, inputs, training):
        """Whether a frozen call should use one FusedBatchNormV3 op
        (``_frozen_fused``) instead of Keras' formula.

        Only on an NHWC map, and only where it pays: inside ``fit()``
        (``training`` true) for a BatchNorm not folded into its conv (the
        heads'; one op forward and one backward instead of several
        element-wise ones, 5% of a 1024x1024 ResNet-101 step before the
        backbone's were folded) and in reduced-precision inference of an
        unfolded BatchNorm (no float32 round trip of every feature map).
        Unfolded float32 inference ("float32_exact") keeps Keras' formula:
        it is no faster fused, and it keeps the float32 results as close to
        Matterport's as they are.
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
    that can apply the frozen normalization itself.

    Weights, names and outputs are those of the two Matterport layers (the
    conv keeps ``kernel`` and ``bias``, the BatchNorm its four weights).
    When the pair folds (``BatchNorm.folds_into_conv``: frozen statistics,
    and inside ``fit()`` or at inference as the pair was set up), the
    normalization ``y = (conv(x) - mean) * s + beta`` with
    ``s = gamma / sqrt(var + eps)`` is computed as one convolution::

        y = conv(x, kernel * s) + (bias - mean) * s + beta

    and the BatchNorm passes it through. Otherwise the two layers run as
    written. The result is the same function; the floating-point rounding
    differs (the golden tests state by how much).

    Inside ``fit()`` gamma and beta still get their gradients (through the
    folded kernel and bias). The saving is in the backward pass: it needs
    the conv input only, not the pre-normalization map as well, so training
    keeps one feature map per convolution instead of two (ResNet-101 at
    1024x1024: about 1 GB less) and skips the normalization passes. At
    inference the saving is the normalization pass over every conv output.

    The pairing is made by :func:`conv_bn` and is not part of the layer
    config: a model rebuilt from its config runs the two layers unfolded
    (the same function, without the saving).

    inputs: [B, H, W, C_in] (or [B*N, h, w, C_in] inside TimeDistributed);
    output: [B, H', W', filters], compute dtype.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "_folded_bn", None)

    def call(self, inputs, training=None):
        bn = self._folded_bn
        if bn is None or not bn.folds_into_conv(training):
            return super().call(inputs)
        if self.data_format != "channels_last" or self.groups != 1:
            raise ValueError(f"{self.name}: folding a BatchNorm needs a channels_last, "
                             f"ungrouped convolution.")
        dtype = self.compute_dtype
        with tf.control_dependencies(self._fold_after(inputs, training)):
            scale = tf.cast(bn.gamma, "float32") * tf.math.rsqrt(
                tf.cast(bn.moving_variance, "float32") + bn.epsilon)      # [filters]
            kernel = tf.cast(self.kernel, "float32") * scale                # [kh, kw, in, filters]
            bias = tf.cast(bn.beta, "float32") - tf.cast(bn.moving_mean, "float32") * scale
            if self.use_bias:
                bias = bias + tf.cast(self.bias, "float32") * scale
        if self._is_dense(inputs):
            y = self._dense_conv(tf.cast(inputs, dtype), tf.cast(kernel, dtype))
        else:
            y = tf.nn.conv2d(tf.cast(inputs, dtype), tf.cast(kernel, dtype),
                             strides=self.strides, padding=self.padding.upper(),
                             dilations=self.dilation_rate)
        y = tf.nn.bias_add(y, tf.cast(bias, dtype))
        if self.activation is not None:
            y = self.activation(y)
        return y

    def _is_dense(self, inputs):
        """True when the kernel covers the whole input ("valid" padding,
        kernel size = the static input size, no dilation): every output is
        one [1, 1] pixel, the convolution is a matrix product. The classifier
        head's two convolutions are (7x7 on 7x7 ROIs, then 1x1 on 1x1)."""
        return (self.padding == "valid" and tuple(self.dilation_rate) == (1, 1)
                and inputs.shape.rank == 4
                and tuple(inputs.shape[1:3]) == tuple(self.kernel_size))

    def _dense_conv(self, inputs, kernel):
        """The convolution of a kernel that covers the whole input, as one
        MatMul: [M, kh, kw, C_in] -> [M, kh*kw*C_in] @ [kh*kw*C_in, filters]
        -> [M, 1, 1, filters]. The same sums in another order (float32
        round-off). oneDNN runs the conv form of these far below its peak:
        the 1x1 conv of 1000 ROIs x 1024 channels at 15 GMAC/s against
        160 as a MatMul, the 7x7 one at 100 against 150 (bench/bench_detect.py
        classifier head: 0.16 s -> 0.08 s in float32 at 1024 px)."""
        depth = int(np.prod(kernel.shape[:3]))
        y = tf.matmul(tf.reshape(inputs, (-1, depth)), tf.reshape(kernel, (depth, self.filters)))
        return tf.reshape(y, (-1, 1, 1, self.filters))

    @staticmethod
    def _fold_after(inputs, training):
        """Control inputs of the ops that scale the kernel at inference: one
        element of the input of the FoldedConv2D traced before this one in
        the same graph. Nothing else orders them, and the executor would make
        every scaled kernel at the start and hold them all (70-170 MB more
        peak memory for ResNet-101 at 1024x1024); after its own conv's input
        they would wait on the critical path (8% slower backbone); after the
        previous conv's input each is made while that conv runs.

        A slice, not the tensor itself: a control edge out of a conv's ReLU
        stops Grappler from fusing conv, bias and ReLU. Trace order is a
        topological order, so the edge cannot close a cycle. None in
        training and in eager calls.
        """
        if training or not hasattr(inputs, "graph") or inputs.shape.rank is None:
            return []
        # kept on the graph being traced (it goes when the graph goes)
        graph = inputs.graph
        previous = getattr(graph, "_mrcnn_last_fold_input", None)
        graph._mrcnn_last_fold_input = inputs[(slice(0, 1),) * inputs.shape.rank]
        return [] if previous is None else [previous]


def pair_conv_bn(conv: FoldedConv2D, bn: BatchNorm, in_fit: bool = True) -> None:
    """Tie a FoldedConv2D to the BatchNorm applied to its output, so that
    with frozen statistics the conv can apply the normalization and the
    BatchNorm pass its input through.

    in_fit: fold inside ``fit()`` (the backbone's pairs). The heads' and the
        CPU recipe backbone's pairs are made with False, so their training
        step is what it was before they were paired; every pair folds at
        inference once :func:`fold_batch_norms` switches it on.

    The tie is set with ``object.__setattr__``: Keras does not track the
    other layer as a sublayer (its weights would count twice).
    """
    if not isinstance(conv, FoldedConv2D) or not isinstance(bn, BatchNorm):
        raise TypeError(f"pair_conv_bn: needs a FoldedConv2D and a BatchNorm, got "
                        f"{type(conv).__name__} and {type(bn).__name__}.")
    object.__setattr__(conv, "_folded_bn", bn)
    object.__setattr__(bn, "_folded_conv", conv)
    object.__setattr__(bn, "_fold_in_fit", bool(in_fit))


def _layers_of(model):
    """Every layer of ``model``: nested models and TimeDistributed wrappers
    opened (the wrapper and the layer it wraps both listed)."""
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        if isinstance(layer, keras.layers.TimeDistributed):
            out.append(layer.layer)
        if isinstance(layer, keras.Model):
            out.extend(_layers_of(layer))
    return out


def paired_batch_norms(model):
    """The BatchNorms of ``model`` tied to a FoldedConv2D (pair_conv_bn), in
    layer order."""
    return [layer for layer in _layers_of(model)
            if isinstance(layer, BatchNorm) and layer._folded_conv is not None]


def fold_batch_norms(model, enabled: bool = True) -> int:
    """Fold (``enabled``) or unfold every paired frozen BatchNorm of
    ``model`` into its convolution at inference (``training`` false).

    The model's weights, layers and config are unchanged: the fold happens
    in each call, from the current weights. The inference model of
    ``INFERENCE_PRECISION`` "float32" or "bfloat16" is built folded,
    "float32_exact" unfolded (``graph.build.inference_graph``).

    The switch is read when a call is traced: the model's own compiled
    ``predict``/``evaluate`` functions are dropped here so they trace again,
    but a ``tf.function`` of yours that already traced the model keeps what
    it traced (trace it again, e.g. ``MaskRCNN.detect`` after
    ``load_weights`` does).

    Returns the number of pairs (ResNet-101 inference model: 104 in the
    backbone + 6 in the heads; ResNet-50: 53 + 6).
    """
    bns = paired_batch_norms(model)
    for bn in bns:
        object.__setattr__(bn, "_fold_at_inference", bool(enabled))
    for name in ("predict_function", "test_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)
    return len(bns)
