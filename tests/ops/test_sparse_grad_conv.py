"""conv2d_sparse_grad: the forward pass is tf.nn.conv2d; the gradients,
from the sparse (gathered) path or the dense fallback, equal the dense ones."""
import numpy as np
import pytest
import tensorflow as tf

from mrcnn.ops.sparse_grad_conv import conv2d_sparse_grad, same_padding


def _grads(fn, x, k, w):
    with tf.GradientTape() as tape:
        tape.watch([x, k])
        y = fn(x, k)
        loss = tf.reduce_sum(y * w)
    return y, tape.gradient(loss, [x, k])


def test_same_padding_matches_tensorflow():
    # 7 pixels, kernel 3, stride 2: 4 outputs, (4-1)*2+3-7 = 2 -> (1, 1);
    # 8 pixels, stride 2: (4-1)*2+3-8 = 1 -> (0, 1) (the extra pixel goes after).
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(8, 3, 2) == (0, 1)
    assert same_padding(8, 3, 1) == (1, 1)
    assert same_padding(8, 1, 1) == (0, 0)


@pytest.mark.parametrize("stride, padding, size", [
    (1, "SAME", (9, 7)), (2, "SAME", (8, 9)), (2, "SAME", (7, 7)), (1, "VALID", (6, 8)),
    (2, "VALID", (9, 8))])
@pytest.mark.parametrize("fraction", [0.05, 0.4, 1.0])
def test_gradients_equal_the_dense_convolution(stride, padding, size, fraction):
    """fraction: share of output positions with a non-zero gradient (0.05 and
    0.4 take the gathered path, 1.0 the dense fallback)."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2,) + size + (5,)).astype("f4"))
    k = tf.constant(rng.normal(size=(3, 3, 5, 4)).astype("f4"))
    dense = lambda a, b: tf.nn.conv2d(a, b, strides=stride, padding=padding)  # noqa: E731
    ours = lambda a, b: conv2d_sparse_grad(a, b, (stride, stride), padding)   # noqa: E731
    y = dense(x, k)
    mask = rng.random(y.shape[:3]) < fraction
    mask[0, 0, 0] = mask[1, -1, -1] = True           # the corners touch the padding
    w = tf.constant((rng.normal(size=y.shape) * mask[..., None]).astype("f4"))
    (y_ref, (dx_ref, dk_ref)) = _grads(dense, x, k, w)
    (y_ours, (dx, dk)) = _grads(ours, x, k, w)
    np.testing.assert_array_equal(y_ours.numpy(), y_ref.numpy())
    assert np.abs(dk_ref.numpy()).max() > 0.1 and np.abs(dx_ref.numpy()).max() > 0.1
    np.testing.assert_allclose(dk.numpy(), dk_ref.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx.numpy(), dx_ref.numpy(), rtol=1e-4, atol=1e-4)


def test_one_position_by_hand():
    """One output position (b=0, i=1, j=2) with gradient g: the kernel
    gradient is its input patch times g, the input gradient is the kernel
    times g placed on the patch; no other pixel gets a gradient."""
    x = tf.reshape(tf.range(1 * 4 * 5 * 1, dtype=tf.float32), (1, 4, 5, 1))
    k = tf.reshape(tf.range(9, dtype=tf.float32), (3, 3, 1, 1))
    w = np.zeros((1, 4, 5, 1), "f4")
    w[0, 1, 2, 0] = 2.0
    _, (dx, dk) = _grads(lambda a, b: conv2d_sparse_grad(a, b), x, k, tf.constant(w))
    patch = x.numpy()[0, 0:3, 1:4, 0]                 # rows 0..2, cols 1..3
    np.testing.assert_array_equal(dk.numpy()[..., 0, 0], 2.0 * patch)
    expected = np.zeros((4, 5), "f4")
    expected[0:3, 1:4] = 2.0 * k.numpy()[..., 0, 0]
    np.testing.assert_array_equal(dx.numpy()[0, ..., 0], expected)


def test_inside_tf_function_and_zero_gradient():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(1, 6, 6, 3)).astype("f4"))
    k = tf.constant(rng.normal(size=(3, 3, 3, 2)).astype("f4"))

    @tf.function
    def f(x, k, w):
        return _grads(lambda a, b: conv2d_sparse_grad(a, b), x, k, w)[1]

    dx, dk = f(x, k, tf.zeros((1, 6, 6, 2)))
    assert not np.any(dx.numpy()) and not np.any(dk.numpy())


def test_unknown_spatial_size():
    """Traced with [1, None, None, C] (the shared RPN serves every pyramid
    level): the gradients are still the dense ones."""
    rng = np.random.default_rng(2)
    k = tf.constant(rng.normal(size=(3, 3, 2, 3)).astype("f4"))

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 2]), tf.TensorSpec([1, None, None, 3])])
    def both(x, w):
        return (_grads(lambda a, b: conv2d_sparse_grad(a, b, (2, 2)), x, k, w)[1],
                _grads(lambda a, b: tf.nn.conv2d(a, b, 2, "SAME"), x, k, w)[1])

    x = tf.constant(rng.normal(size=(1, 9, 8, 2)).astype("f4"))
    w = np.zeros((1, 5, 4, 3), "f4")
    w[0, 4, 3] = [1.0, -2.0, 0.5]
    (dx, dk), (dx_ref, dk_ref) = both(x, tf.constant(w))
    np.testing.assert_allclose(dk.numpy(), dk_ref.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx.numpy(), dx_ref.numpy(), rtol=1e-5, atol=1e-5)
