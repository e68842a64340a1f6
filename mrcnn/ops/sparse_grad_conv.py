"""A 2-D convolution whose backward pass is cheap when few output positions
receive a gradient.

Why: the RPN's shared 3x3 convolution (``rpn_conv_shared``, 256 -> 512
channels) runs on every pyramid level, 87,000 positions at 1024x1024, and is
about a fifth of a training step's work. Its outputs get gradients only from
the RPN losses, and those look at the RPN_TRAIN_ANCHORS_PER_IMAGE (256)
sampled anchors: all but a few hundred positions receive exactly zero (the
proposals carry no gradient, see ``DetectionTargetLayer``). A dense
backward pass spends almost all its time multiplying those zeros.

:func:`conv2d_sparse_grad` computes the forward convolution as usual. Its
gradient finds the output positions with a non-zero gradient and computes
the kernel and input gradients from those positions only (a gather of the
input patches and two matrix products). Per position that is the same
arithmetic as the dense kernels, so it pays as soon as a good share of the
positions has a zero gradient; when more than DENSE_FRACTION (half) of
them carry one, the dense kernels are used. The results are the dense
gradients up to float summation order.

Measured with bench/bench_train.py pinned to one core (one run each, other
work on the second core): the 1024x1024 ResNet-101 step went from 23.9 s
to 18.8 s, the 128x128 batch-8 shapes step from 5.8 s to 5.4 s.
"""

import tensorflow as tf

__all__ = ["conv2d_sparse_grad", "same_padding"]

# Above this fraction of output positions with a non-zero gradient, the
# dense backward kernels are used (the gathered path does the same
# arithmetic per position, plus a gather and a scatter).
DENSE_FRACTION = 1 / 2


def same_padding(size, kernel, stride):
    """(before, after) padding of TensorFlow's "SAME" convolution along one
    axis of ``size`` pixels (an int, or a scalar int32 tensor)."""
    out = -(-size // stride)
    if isinstance(size, int):
        total = max((out - 1) * stride + kernel - size, 0)
    else:
        total = tf.maximum((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _dim(x, axis):
    """Static size of ``x`` along ``axis`` if known, else a scalar tensor."""
    static = x.shape[axis]
    return int(static) if static is not None else tf.shape(x)[axis]


def conv2d_sparse_grad(x, kernel, strides=(1, 1), padding="SAME"):
    """``tf.nn.conv2d(x, kernel, strides, padding)`` with a backward pass that
    only visits output positions whose gradient is non-zero.

    x: [B, H, W, C_in] float, channels last. H, W must be static.
    kernel: [kh, kw, C_in, C_out] float.
    strides: (sy, sx). padding: "SAME" or "VALID".

    Returns: [B, H', W', C_out], the convolution. The gradients with respect
    to ``x`` and ``kernel`` equal the dense ones (up to summation order).
    """
    padding = padding.upper()
    sy, sx = (int(s) for s in strides)

    @tf.custom_gradient
    def conv(x, kernel):
        y = tf.nn.conv2d(x, kernel, strides=[1, sy, sx, 1], padding=padding)

        def grad(dy):
            return _backward(x, kernel, dy, sy, sx, padding)
        return y, grad

    return conv(x, kernel)


def _backward(x, kernel, dy, sy, sx, padding):
    """(dx, dkernel) of the convolution for the output gradient ``dy``
    [B, H', W', C_out]."""
    dy = tf.cast(dy, x.dtype)
    nonzero = tf.reduce_any(tf.not_equal(dy, 0), axis=-1)           # [B, H', W']
    where = tf.where(nonzero)                                       # [K, 3] (b, i, j)
    total = tf.size(nonzero)
    sparse = tf.cast(tf.shape(where)[0], tf.float32) <= DENSE_FRACTION * tf.cast(total, tf.float32)

    def dense():
        dx = tf.raw_ops.Conv2DBackpropInput(
            input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
            strides=[1, sy, sx, 1], padding=padding)
        dk = tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=tf.shape(kernel), out_backprop=dy,
            strides=[1, sy, sx, 1], padding=padding)
        return dx, dk

    def gathered():
        return _sparse_backward(x, kernel, dy, where, sy, sx, padding)

    return tf.cond(sparse, gathered, dense)


def _sparse_backward(x, kernel, dy, where, sy, sx, padding):
    """The gradients from the K output positions in ``where`` [K, 3]."""
    kh, kw, cin, cout = kernel.shape
    H, W = _dim(x, 1), _dim(x, 2)
    if padding == "SAME":
        (pt, pb), (pl, pr) = same_padding(H, kh, sy), same_padding(W, kw, sx)
    else:
        pt = pb = pl = pr = 0
    x_pad = tf.pad(x, [[0, 0], [pt, pb], [pl, pr], [0, 0]])
    where = tf.cast(where, tf.int32)
    g = tf.gather_nd(dy, where)                                     # [K, C_out]
    # Input pixels (in padded coordinates) seen by each position: its
    # top-left corner plus the kh x kw kernel offsets.
    oy, ox = tf.meshgrid(tf.range(kh), tf.range(kw), indexing="ij")
    offsets = tf.stack([tf.zeros([kh * kw], tf.int32), tf.reshape(oy, [-1]),
                        tf.reshape(ox, [-1])], axis=-1)             # [kh*kw, 3]
    corner = where * tf.constant([1, sy, sx], tf.int32)             # [K, 3]
    pixels = corner[:, None, :] + offsets[None]                     # [K, kh*kw, 3]
    patches = tf.reshape(tf.gather_nd(x_pad, pixels), [-1, kh * kw * cin])
    dk = tf.reshape(tf.matmul(patches, g, transpose_a=True), [kh, kw, cin, cout])
    contrib = tf.matmul(g, tf.reshape(kernel, [kh * kw * cin, cout]), transpose_b=True)
    dx_pad = tf.scatter_nd(tf.reshape(pixels, [-1, 3]), tf.reshape(contrib, [-1, cin]),
                           tf.shape(x_pad, out_type=tf.int32))
    dx = dx_pad[:, pt:pt + H, pl:pl + W, :]
    return dx, dk
