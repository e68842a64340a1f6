"""SparseGradConv2D: a Conv2D whose backward pass only visits the output
positions that receive a gradient (``rpn_conv_shared``)."""
import keras
import tensorflow as tf

from mrcnn.ops.sparse_grad_conv import conv2d_sparse_grad

__all__ = ["SparseGradConv2D"]


@keras.saving.register_keras_serializable(package="mrcnn")
class SparseGradConv2D(keras.layers.Conv2D):
    """Keras' Conv2D (same config and weights) whose backward pass only
    visits output positions that receive a gradient
    (:func:`mrcnn.ops.sparse_grad_conv.conv2d_sparse_grad`).

    Used for ``rpn_conv_shared``: the RPN losses look at 256 sampled anchors
    per image, so nearly all of its output positions get a zero gradient,
    and its dense backward pass would be about a fifth of a 1024x1024
    training step. Forward values are Keras' Conv2D's. Other backends, and
    grouped or dilated or channels_first convolutions, use Conv2D itself.

    inputs: [B, h, w, C_in]; output: [B, h', w', filters].
    """

    def call(self, inputs):
        if (keras.backend.backend() != "tensorflow" or self.groups != 1
                or self.data_format != "channels_last"
                or tuple(self.dilation_rate) != (1, 1)):
            return super().call(inputs)
        dtype = self.compute_dtype
        y = conv2d_sparse_grad(tf.cast(inputs, dtype), tf.cast(self.kernel, dtype),
                               self.strides, self.padding)
        if self.use_bias:
            y = tf.nn.bias_add(y, tf.cast(self.bias, dtype))
        if self.activation is not None:
            y = self.activation(y)
        return y
