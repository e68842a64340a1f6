"""The golden weight recipe (GOLDEN.md section 1) and a helper that applies it.

Every weight of the golden G1 model is a pure function of
``(layer_name, index, shape, kind, layer_class)``. ``apply_recipe(model)``
walks our Keras 3 model the way Matterport's weight files are keyed (nested
``rpn_model`` by its inner layer names, ``TimeDistributed`` by the wrapper's
name) and sets every weight, so our model computes what Matterport's did.
"""
import math
import re
import zlib

import keras
import numpy as np

# Weight names by index, as Keras 2 stored them (GOLDEN.md section 1).
KINDS = {
    "Conv2D": ("kernel", "bias"),
    "Dense": ("kernel", "bias"),
    "Conv2DTranspose": ("kernel", "bias"),
    "BatchNorm": ("gamma", "beta", "moving_mean", "moving_variance"),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
}


def recipe(layer_name, index, shape, kind, layer_class):
    """The golden value of one weight, float32 array of ``shape``.

    layer_name: Matterport's layer name (TimeDistributed: the wrapper's name;
        RPN: the inner name, e.g. "rpn_conv_shared").
    index: position of the weight in the layer (kernel 0, bias 1; gamma 0,
        beta 1, moving_mean 2, moving_variance 3).
    shape: the weight's shape (Keras layout).
    kind: "kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance".
    layer_class: "Conv2D", "Dense", "Conv2DTranspose", "BatchNorm".
    """
    shape = tuple(int(s) for s in shape)
    seed = zlib.crc32(f"{layer_name}:{index}".encode())
    q = np.random.default_rng(seed).integers(-8, 9, size=shape).astype(np.float64)
    if kind == "kernel":
        if len(shape) == 2:
            fan_in = shape[0]
        elif layer_class == "Conv2DTranspose":
            fan_in = shape[0] * shape[1] * shape[3]
        else:
            fan_in = shape[0] * shape[1] * shape[2]
        w = q * (math.sqrt(2.0 / fan_in) / math.sqrt(24.0))
        if layer_name == "conv1":  # amendment A1
            w = w * (1.0 / 128.0)
    elif kind == "bias":
        w = q * 0.01
    elif kind == "gamma":
        w = 1.0 + 0.05 * q / 8.0
        if re.fullmatch(r"bn\d+[a-z]+_branch2c", layer_name):
            w = w * 0.2
    elif kind == "beta":
        w = 0.05 * q / 8.0
    elif kind == "moving_mean":
        w = 0.05 * q / 8.0
    elif kind == "moving_variance":
        w = 1.0 + 0.25 * np.abs(q) / 8.0
    else:
        raise ValueError(f"recipe: unknown weight kind {kind!r} of layer {layer_name!r}")
    return w.astype(np.float32)


def weight_layers(model):
    """Yield ``(group, name, class_name, layer)`` for every weight-carrying layer.

    group: the top-level group of Matterport's HDF5 file ("rpn_model" for
    the RPN's layers, else the layer name). name: the recipe's layer name
    (the wrapper's name for TimeDistributed). class_name: the class of the
    layer that owns the weights (the wrapped layer for TimeDistributed).
    Order: the model's layer order (the file order).
    """
    for layer in model.layers:
        if not layer.weights:
            continue
        if isinstance(layer, keras.Model):
            for inner in layer.layers:
                if inner.weights:
                    yield layer.name, inner.name, _matterport_class(inner), inner
        elif isinstance(layer, keras.layers.TimeDistributed):
            yield layer.name, layer.name, _matterport_class(layer.layer), layer
        else:
            yield layer.name, layer.name, _matterport_class(layer), layer


def _matterport_class(layer):
    """The Keras class name of the layer in Matterport's model: our
    FoldedConv2D and SparseGradConv2D are Conv2Ds there (same weights)."""
    name = type(layer).__name__
    return "Conv2D" if name in ("FoldedConv2D", "SparseGradConv2D") else name


def weight_kinds(layer, class_name):
    """The kinds of ``layer.get_weights()`` in order, checked against the variables."""
    kinds = KINDS[class_name]
    names = [v.name.split("/")[-1].split(":")[0] for v in layer.weights]
    if tuple(names) != kinds:
        raise AssertionError(f"layer {layer.name}: weights {names}, expected {kinds}")
    return kinds


def apply_recipe(model):
    """Set every weight of ``model`` to its recipe value. Returns the count."""
    count = 0
    for _, name, class_name, layer in weight_layers(model):
        kinds = weight_kinds(layer, class_name)
        values = [recipe(name, i, w.shape, kind, class_name)
                  for i, (w, kind) in enumerate(zip(layer.get_weights(), kinds))]
        layer.set_weights(values)
        count += len(values)
    return count


def weight_checksums(*models):
    """{(layer_name, index): (class, kind, shape list, SHA-256 of the float32
    little-endian bytes)} over all weights of ``models``, the form of
    tests/golden/g1_recipe_weights.json."""
    import hashlib

    sums = {}
    for model in models:
        for _, name, class_name, layer in weight_layers(model):
            kinds = weight_kinds(layer, class_name)
            for i, (value, kind) in enumerate(zip(layer.get_weights(), kinds)):
                digest = hashlib.sha256(np.ascontiguousarray(value, dtype="<f4").tobytes())
                sums[(name, i)] = (class_name, kind, list(value.shape), digest.hexdigest())
    return sums
