"""Small box layers of the graphs: pixel -> normalized ground-truth boxes,
and the boxes of the detections."""
import keras
import tensorflow as tf

from mrcnn.ops.boxes import norm_boxes_graph

__all__ = ["NormBoxes", "DetectionBoxes"]


@keras.saving.register_keras_serializable(package="mrcnn")
class NormBoxes(keras.layers.Layer):
    """Pixel boxes -> normalized boxes, keeping all-zero padding rows zero.

    Matterport's ``norm_boxes_graph(x, K.shape(input_image)[1:3])`` turns a
    zero padding row into (0, 0, -1/(H-1), -1/(W-1)), which no longer looks
    like padding; here padding rows stay (0, 0, 0, 0).

    Inputs: ``[boxes, image]``
        boxes: [B, N, (y1, x1, y2, x2)] pixels (any numeric dtype), zero-padded.
        image: [B, H, W, C], only its height and width are read.
    Output: [B, N, (y1, x1, y2, x2)] float32, normalized.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.built = True

    def call(self, inputs):
        boxes, image = inputs
        boxes = tf.cast(boxes, tf.float32)
        normalized = norm_boxes_graph(boxes, tf.shape(image)[1:3])
        is_box = tf.reduce_any(tf.not_equal(boxes, 0.0), axis=-1, keepdims=True)
        return tf.where(is_box, normalized, tf.zeros_like(normalized))

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs[0].shape, dtype="float32")


@keras.saving.register_keras_serializable(package="mrcnn")
class DetectionBoxes(keras.layers.Layer):
    """The boxes of DetectionLayer's output (Matterport's ``x[..., :4]``).

    Input: [B, M, (y1, x1, y2, x2, class_id, score)] float32.
    Output: [B, M, (y1, x1, y2, x2)] float32, normalized, zero rows kept
    (they stay padding for the mask head).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.built = True

    def call(self, detections):
        return detections[..., :4]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (4,)
