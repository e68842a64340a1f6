"""Graph builders with Matterport's layer names (see ARCHITECTURE.md).

* ``backbone``: BatchNorm, resnet_graph (ResNet-50/101), compute_backbone_shapes
* ``fpn``: fpn_graph (P2..P6)
* ``rpn``: rpn_graph, build_rpn_model (the nested "rpn_model")
* ``heads``: fpn_classifier_graph, build_fpn_mask_graph (TimeDistributed layers)
* ``build``: the one place that reads a Config; build_inference_model
"""
from mrcnn.graph.backbone import (BatchNorm, compute_backbone_shapes, conv_block,
                                  identity_block, resnet_graph)
from mrcnn.graph.fpn import fpn_graph
from mrcnn.graph.heads import (TimeDistributed, build_fpn_mask_graph,
                               classifier_head_graph, fpn_classifier_graph,
                               mask_head_graph)
from mrcnn.graph.rpn import build_rpn_model, rpn_graph
from mrcnn.graph.build import (build_feature_graph, build_inference_model, build_rpn_graph,
                               layer_args)
