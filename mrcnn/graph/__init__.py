"""Graph builders with Matterport's layer names (see ARCHITECTURE.md).

* ``backbone``: resnet_graph (ResNet-50/101), conv_bn pairs
* ``fpn``: fpn_graph (P2..P6)
* ``rpn``: rpn_graph, build_rpn_model (the nested "rpn_model")
* ``heads``: fpn_classifier_graph, build_fpn_mask_graph (TimeDistributed layers)
* ``build``: the inference model from ``arguments.layer_args``
* ``training_graph`` / ``training_model``: the training model and its train step

The custom layers they use are in ``mrcnn.layers``.
"""
from mrcnn.graph.backbone import (BatchNorm, compute_backbone_shapes, conv_block,
                                  identity_block, resnet_graph)
from mrcnn.graph.build import (build_feature_graph, build_inference_model, build_rpn_graph,
                               layer_args)
from mrcnn.graph.fpn import fpn_graph
from mrcnn.graph.heads import (TimeDistributed, build_fpn_mask_graph,
                               classifier_head_graph, fpn_classifier_graph,
                               mask_head_graph)
from mrcnn.graph.rpn import build_rpn_model, rpn_graph

__all__ = ["BatchNorm", "compute_backbone_shapes", "conv_block", "identity_block",
           "resnet_graph", "fpn_graph", "TimeDistributed", "build_fpn_mask_graph",
           "classifier_head_graph", "fpn_classifier_graph", "mask_head_graph",
           "build_rpn_model", "rpn_graph", "build_feature_graph", "build_inference_model",
           "build_rpn_graph", "layer_args"]
