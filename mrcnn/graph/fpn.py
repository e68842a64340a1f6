"""Feature Pyramid Network top-down path with Matterport's layer names.

Shape shorthand: B batch, H, W molded image size, D = TOP_DOWN_PYRAMID_SIZE
(256 in Matterport).

* inputs C2..C5: [B, H/4, W/4, 256] .. [B, H/32, W/32, 2048] (backbone)
* outputs P2..P6: [B, H/4, W/4, D] .. [B, H/64, W/64, D] float32

Layers: 1x1 lateral convs ``fpn_c5p5``, ``fpn_c4p4``, ``fpn_c3p3``,
``fpn_c2p2``; nearest-neighbour ``UpSampling2D`` ``fpn_p5upsampled``,
``fpn_p4upsampled``, ``fpn_p3upsampled``; sums ``fpn_p4add``, ``fpn_p3add``,
``fpn_p2add``; 3x3 output convs ``fpn_p2``..``fpn_p5``; and ``fpn_p6``, a
``MaxPooling2D(pool_size=1, strides=2)`` of P5, i.e. ``P5[:, ::2, ::2]``,
which only the RPN uses (the 5th anchor scale).
"""

import keras

__all__ = ["fpn_graph"]


def fpn_graph(C2, C3, C4, C5, top_down_pyramid_size=256):
    """Build the FPN top-down path and lateral connections.

    C2..C5: backbone stage outputs (see module docstring), float32.
    top_down_pyramid_size: D, channels of every pyramid level.

    Returns: [P2, P3, P4, P5, P6], each [B, h, w, D] float32.
    The layer creation order is Matterport's (it fixes the model's weight
    order).
    """
    D = top_down_pyramid_size
    P5 = keras.layers.Conv2D(D, (1, 1), name="fpn_c5p5")(C5)
    P4 = keras.layers.Add(name="fpn_p4add")([
        keras.layers.UpSampling2D(size=(2, 2), name="fpn_p5upsampled")(P5),
        keras.layers.Conv2D(D, (1, 1), name="fpn_c4p4")(C4)])
    P3 = keras.layers.Add(name="fpn_p3add")([
        keras.layers.UpSampling2D(size=(2, 2), name="fpn_p4upsampled")(P4),
        keras.layers.Conv2D(D, (1, 1), name="fpn_c3p3")(C3)])
    P2 = keras.layers.Add(name="fpn_p2add")([
        keras.layers.UpSampling2D(size=(2, 2), name="fpn_p3upsampled")(P3),
        keras.layers.Conv2D(D, (1, 1), name="fpn_c2p2")(C2)])
    # A 3x3 conv on every merged level reduces the aliasing of upsampling
    # (FPN paper, section 3).
    P2 = keras.layers.Conv2D(D, (3, 3), padding="same", name="fpn_p2")(P2)
    P3 = keras.layers.Conv2D(D, (3, 3), padding="same", name="fpn_p3")(P3)
    P4 = keras.layers.Conv2D(D, (3, 3), padding="same", name="fpn_p4")(P4)
    P5 = keras.layers.Conv2D(D, (3, 3), padding="same", name="fpn_p5")(P5)
    # P6 serves the 5th anchor scale of the RPN: P5 subsampled by 2.
    P6 = keras.layers.MaxPooling2D(pool_size=(1, 1), strides=2, name="fpn_p6")(P5)
    return [P2, P3, P4, P5, P6]
