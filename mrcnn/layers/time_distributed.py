"""TimeDistributed that folds the time axis into the batch (as Keras 2 did)."""
import keras
from keras import ops

from mrcnn import keras_compat  # issue 14

__all__ = ["TimeDistributed"]


@keras.saving.register_keras_serializable(package="mrcnn")
class TimeDistributed(keras.layers.TimeDistributed):
    """``keras.layers.TimeDistributed`` that folds the time axis into the batch.

    Keras 3's TimeDistributed unrolls a Python loop over the time axis when
    it is static (300 separate 7x7x256x1024 convs for the classifier head)
    or uses ``vectorized_map`` when it is not. Keras 2, which Matterport
    used, reshaped ``[B, N, ...] -> [B*N, ...]``, applied the layer once and
    reshaped back. This does the same: one big op, the numbers of Keras 2,
    and a graph that does not grow with N.

    Input: [B, N, *inner] with a static ``inner`` shape. Output:
    [B, N, *inner_out]. B and N may be dynamic. ``isinstance(layer,
    keras.layers.TimeDistributed)`` still holds, so weight loading by
    wrapper name works as for the stock class.
    """

    def call(self, inputs, training=None, mask=None):
        inner_shape = tuple(inputs.shape[2:])
        if any(d is None for d in inner_shape):
            # Rare: no static inner shape to fold with. Use Keras' own path.
            return super().call(inputs, training=training, mask=mask)
        shape = ops.shape(inputs)
        batch, steps = shape[0], shape[1]
        # [B, N, *inner] -> [B*N, *inner]
        x = ops.reshape(inputs, (-1,) + inner_shape)
        kwargs = {}
        if keras_compat.call_has_training_arg(self.layer):  # issue 14: guarded internal
            kwargs["training"] = training
        y = self.layer.call(x, **kwargs)
        # [B*N, *inner_out] -> [B, N, *inner_out]
        return ops.reshape(y, (batch, steps) + tuple(y.shape[1:]))
