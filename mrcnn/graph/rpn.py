"""Region Proposal Network: one small conv net shared by all pyramid levels.

The RPN is a nested ``keras.Model`` named ``rpn_model`` (as in Matterport,
whose weight files store it as one group ``rpn_model`` holding the weights
of ``rpn_conv_shared``, ``rpn_class_raw`` and ``rpn_bbox_pred``). It is
called once per level P2..P6 with shared weights.

Shape shorthand: B batch (dynamic), h, w one level's feature map size,
A anchors per location (len(RPN_ANCHOR_RATIOS), 3), D feature depth.

Outputs, for a [B, h, w, D] input (anchor_stride 1):

* rpn_class_logits: [B, h*w*A, (bg, fg)] float32, before softmax
* rpn_probs: [B, h*w*A, (bg, fg)] float32, softmax
* rpn_bbox: [B, h*w*A, (dy, dx, log(dh), log(dw))] float32, *before*
  multiplication by RPN_BBOX_STD_DEV

Anchor order inside a level is row-major over (y, x, anchor), the order in
which ``utils.generate_anchors`` lists anchors.
"""

import keras

from mrcnn.layers.sparse_grad_conv import SparseGradConv2D

__all__ = ["rpn_graph", "build_rpn_model", "SparseGradConv2D"]

OUTPUT_DTYPE = "float32"


def rpn_graph(feature_map, anchors_per_location, anchor_stride):
    """Build the RPN head on one feature map.

    feature_map: [B, h, w, D] float32 KerasTensor.
    anchors_per_location: A, anchors per feature-map cell.
    anchor_stride: 1 for an anchor set at every cell, 2 for every other
        cell (the shared conv then has stride 2).

    Returns: [rpn_class_logits, rpn_probs, rpn_bbox] (module docstring).
    """
    # Shared convolutional base of the RPN
    shared = SparseGradConv2D(512, (3, 3), padding="same", activation="relu",
                              strides=anchor_stride, name="rpn_conv_shared")(feature_map)

    # The small output layers compute in float32 even when the network runs
    # in bfloat16 (Config.INFERENCE_PRECISION): proposal ranking and box
    # deltas need the precision.
    f32 = OUTPUT_DTYPE

    # Anchor score: [B, h, w, A * 2] -> [B, h*w*A, 2]. Reshape keeps the
    # batch axis dynamic (no BATCH_SIZE baked in).
    x = keras.layers.Conv2D(2 * anchors_per_location, (1, 1), padding="valid",
                            activation="linear", name="rpn_class_raw", dtype=f32)(shared)
    rpn_class_logits = keras.layers.Reshape((-1, 2), name="rpn_class_logits_reshape",
                                            dtype=f32)(x)

    # Softmax on the last axis (bg, fg). Matterport's name.
    rpn_probs = keras.layers.Activation("softmax", name="rpn_class_xxx",
                                        dtype=f32)(rpn_class_logits)

    # Box refinement: [B, h, w, A * 4] -> [B, h*w*A, (dy, dx, log(dh), log(dw))]
    x = keras.layers.Conv2D(anchors_per_location * 4, (1, 1), padding="valid",
                            activation="linear", name="rpn_bbox_pred", dtype=f32)(shared)
    rpn_bbox = keras.layers.Reshape((-1, 4), name="rpn_bbox_reshape", dtype=f32)(x)

    return [rpn_class_logits, rpn_probs, rpn_bbox]


def build_rpn_model(anchor_stride, anchors_per_location, depth):
    """The RPN as a nested Keras model, so all levels share its weights.

    anchor_stride: see rpn_graph.
    anchors_per_location: A, see rpn_graph.
    depth: D, channels of the feature maps (TOP_DOWN_PYRAMID_SIZE).

    Returns: ``keras.Model`` named "rpn_model", input
    ``input_rpn_feature_map`` [B, None, None, D], outputs
    [rpn_class_logits, rpn_probs, rpn_bbox] (module docstring).
    """
    input_feature_map = keras.Input(shape=[None, None, depth],
                                    name="input_rpn_feature_map")
    outputs = rpn_graph(input_feature_map, anchors_per_location, anchor_stride)
    return keras.Model([input_feature_map], outputs, name="rpn_model")
