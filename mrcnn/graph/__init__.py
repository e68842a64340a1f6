"""Graph builders with Matterport's layer names (see ARCHITECTURE.md).

* ``backbone``: resnet_graph (ResNet-50/101), conv_bn pairs
* ``small_backbone``: the CPU recipe's small ResNet-like backbone
* ``fpn``: fpn_graph (P2..P6)
* ``rpn``: rpn_graph, build_rpn_model (the nested "rpn_model")
* ``heads``: fpn_classifier_graph, build_fpn_mask_graph (TimeDistributed layers)
* ``build``: the inference model from ``arguments.layer_args``
* ``training_graph`` / ``training_model``: the training model and its train step

The custom layers they use are in ``mrcnn.layers``. The names below are
imported on first use (PEP 562), so that importing one submodule, e.g.
``small_backbone`` from a Config, does not import Keras and TensorFlow.
"""
import importlib

_EXPORTS = {
    "BatchNorm": "backbone", "compute_backbone_shapes": "backbone", "conv_block": "backbone",
    "identity_block": "backbone", "resnet_graph": "backbone",
    "fpn_graph": "fpn",
    "TimeDistributed": "heads", "build_fpn_mask_graph": "heads",
    "classifier_head_graph": "heads", "fpn_classifier_graph": "heads",
    "mask_head_graph": "heads",
    "build_rpn_model": "rpn", "rpn_graph": "rpn",
    "build_feature_graph": "build", "build_inference_model": "build",
    "build_rpn_graph": "build", "layer_args": "build",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
