"""mrcnn: Mask R-CNN instance segmentation for TensorFlow 2 / Keras 3.

Matterport's API: ``from mrcnn.config import Config``,
``from mrcnn import model as modellib, utils, visualize``.
"""
__version__ = "3.0.0.dev0"
