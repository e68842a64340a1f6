"""
Mask R-CNN
The main Mask R-CNN model implementation: the ``MaskRCNN`` front door.

Matterport kept the whole network in this one file. Here the pieces live in
their own modules (``mrcnn/README.md`` draws the layers and the data path)
and this file puts them together for the user, re-exporting Matterport's
public names so ``from mrcnn import model as modellib`` code keeps working:

    arguments.py   the one place a Config becomes plain arguments
    transform.py   image checks, resize + mold, unmold detections, paste masks
    anchors.py     the anchors of a molded size (inference, training, data)
    graph/         ResNet + FPN backbone, RPN, heads; the inference and
                   training models (graph/build.py, graph/training_graph.py)
    layers/        every custom Keras layer, over the pure ops in ops/
    data.py, targets.py, pipeline.py   ground truth, targets, training batches
    weights.py     Keras-2 HDF5 weight files (Matterport's layout), Keras 3 files
    checkpoints.py run folders, checkpoint names, find_last
    training.py    layer presets, compile, train()

Shape shorthand used in docstrings:
    B   batch size          N   detections per image (DETECTION_MAX_INSTANCES)
    A   anchors per image   C   NUM_CLASSES (background included)
"""

import logging
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from mrcnn import checkpoints, distribute, export, precision, training, transform, weights
from mrcnn.arguments import anchor_spec, image_spec
from mrcnn.config import Config
# Matterport's public names, re-exported so `modellib.<name>` keeps working.
from mrcnn.data import load_image_gt  # noqa: F401
from mrcnn.graph.backbone import BatchNorm, conv_block, identity_block, resnet_graph  # noqa: F401
from mrcnn.graph.build import build_inference_model, compute_backbone_shapes  # noqa: F401
from mrcnn.graph.fpn import fpn_graph  # noqa: F401
from mrcnn.graph.heads import build_fpn_mask_graph, fpn_classifier_graph  # noqa: F401
from mrcnn.graph.rpn import build_rpn_model, rpn_graph  # noqa: F401
from mrcnn.graph.training_graph import build_training_model  # noqa: F401
from mrcnn.layers import (DetectionLayer, DetectionTargetLayer, ProposalLayer,  # noqa: F401
                          PyramidROIAlign)
from mrcnn.losses import (mrcnn_bbox_loss_graph, mrcnn_class_loss_graph,  # noqa: F401
                          mrcnn_mask_loss_graph, rpn_bbox_loss_graph, rpn_class_loss_graph,
                          smooth_l1_loss)
from mrcnn.masks import paste_masks  # noqa: F401
from mrcnn.meta import compose_image_meta, parse_image_meta  # noqa: F401
from mrcnn.ops import (apply_box_deltas_graph, box_refinement_graph,  # noqa: F401
                       clip_boxes_graph, denorm_boxes_graph, norm_boxes_graph,
                       overlaps_graph, parse_image_meta_graph)
from mrcnn.ops.legacy import (batch_pack_graph, batch_slice,  # noqa: F401
                              detection_targets_graph, log2_graph, refine_detections_graph,
                              trim_zeros_graph)
from mrcnn.ops.targets import detection_targets  # noqa: F401
from mrcnn.pipeline import data_generator  # noqa: F401
from mrcnn.targets import (build_detection_targets, build_rpn_targets,  # noqa: F401
                           generate_random_rois)
from mrcnn.transform import mold_image, unmold_image  # noqa: F401

logger = logging.getLogger(__name__)


############################################################
#  Utility Functions
############################################################

def log(text, array=None):
    """Prints a text message. And, optionally, if a Numpy array is provided it
    prints it's shape, min, and max values.
    """
    if array is not None:
        text = text.ljust(25)
        array = np.asarray(array)
        if array.size:
            text += ("shape: {:20}  min: {:10.5f}  max: {:10.5f}  {}".format(
                str(array.shape), array.min(), array.max(), array.dtype))
        else:
            text += ("shape: {:20}  min: {:10}  max: {:10}  {}".format(
                str(array.shape), "", "", array.dtype))
    print(text)


############################################################
#  MaskRCNN Class
############################################################

class MaskRCNN(object):
    """Encapsulates the Mask RCNN model functionality.

    The actual Keras model is in the keras_model property.
    """

    def __init__(self, mode: str, config: Config, model_dir: str, strategy=None):
        """
        mode: Either "training" or "inference"
        config: A Sub-class of the Config class
        model_dir: Directory to save training logs and trained weights
        strategy: Optional tf.distribute.Strategy to train with (training
            mode). Building the model inside ``with strategy.scope():`` does
            the same; GPU_COUNT > 1 without a strategy means MirroredStrategy
            over GPU_COUNT GPUs (mrcnn/distribute.py).
        """
        if mode not in ("training", "inference"):
            raise ValueError(f"MaskRCNN: mode must be 'training' or 'inference', got {mode!r}.")
        if not isinstance(config, Config):
            raise TypeError(f"MaskRCNN: config must be an instance of a mrcnn.config.Config "
                            f"subclass, got {type(config).__name__}.")
        config.validate()
        if mode == "training":
            config.validate_for_training()
        self.mode = mode
        self.config = config
        self.model_dir = model_dir
        # Config -> plain arguments of detect()'s pre/post-processing and anchors.
        self.image_spec = image_spec(config)
        self.anchor_spec = anchor_spec(config)
        self._predict_fn = None
        # The tf.distribute strategy of training (None: one device).
        self.strategy = (distribute.resolve_strategy(config, strategy)
                         if mode == "training" else None)
        self.set_log_dir()
        self.keras_model = self.build(mode=mode, config=config)

    def build(self, mode: str, config: Config) -> keras.Model:
        """Build Mask R-CNN architecture.
            mode: Either "training" or "inference". The inputs and
                outputs of the model differ accordingly.
        """
        if mode == "training":
            # Built in the strategy's scope (mirrored weights) and in
            # TRAIN_PRECISION's dtype policy (mrcnn/distribute.py, precision.py).
            strategy = getattr(self, "strategy", None)
            with distribute.scope(strategy):
                keras_model = precision.build_training_model(config)
            distribute.configure_batch_norm(keras_model, strategy, config.SYNC_BATCH_NORM)
            return keras_model
        if config.INFERENCE_PRECISION == "bfloat16":
            # Pure bfloat16 layers: weights stored in bfloat16 (half the
            # memory, and no float32 -> bfloat16 copy of every weight at
            # each call; loading rounds them exactly as that copy would).
            # BatchNorm keeps float32 weights (see layers.BatchNorm) and
            # the output layers are float32 throughout.
            return _with_dtype_policy("bfloat16", build_inference_model, config)
        return build_inference_model(config)

    # ------------------------------------------------------------------
    # Checkpoints and weights
    # ------------------------------------------------------------------

    def find_last(self) -> str:
        """Finds the last checkpoint file of the last trained model in the
        model directory: the newest ``mask_rcnn_<name>_*.h5`` of the newest
        run folder named exactly ``<NAME><YYYYMMDDTHHMM>`` (so "shapes" never
        picks a "cpu_shapes" run).
        Returns:
            The path of the last checkpoint file
        """
        return checkpoints.find_last(self.model_dir, self.config.NAME)

    def load_weights(self, filepath, by_name: bool = False, exclude: Optional[Sequence[str]] = None):
        """Load weights from a Matterport/Keras-2 HDF5 file or a Keras 3
        ``.weights.h5`` file.

        exclude: list of layer names to exclude (e.g. the heads when the file
            has another NUM_CLASSES:
            ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]).
        Returns the ``weights.LoadReport``.
        """
        if exclude:
            by_name = True
        report = weights.load_weights(self.keras_model, filepath, by_name=by_name,
                                      exclude=exclude)
        # Update the log directory (a checkpoint path resumes its run and epoch)
        self.set_log_dir(filepath)
        self._predict_fn = None
        return report

    def save_weights(self, filepath) -> None:
        """Save the weights in Matterport's Keras-2 HDF5 layout (atomic write)."""
        weights.save_weights(self.keras_model, filepath)

    def get_imagenet_weights(self) -> str:
        """Downloads ImageNet trained weights from Keras (ResNet-50, no top).
        Returns path to weights file.
        """
        return weights.get_imagenet_weights()

    def set_log_dir(self, model_path=None) -> None:
        """Sets the model log directory and epoch counter.

        model_path: If None, or a format different from what this code uses
            then set a new log directory and start epochs from 0. Otherwise,
            extract the log directory and the epoch counter from the file
            name (``checkpoints.log_dir_for``).
        """
        self.log_dir, self.checkpoint_path, self.epoch = checkpoints.log_dir_for(
            self.model_dir, self.config.NAME, model_path)

    # ------------------------------------------------------------------
    # Training (mrcnn/training.py does the work)
    # ------------------------------------------------------------------

    def compile(self, learning_rate, momentum) -> None:
        """Gets the model ready for training: SGD with momentum and
        GRADIENT_CLIP_NORM; the losses and L2 weight decay are added by the
        training model's train_step."""
        training.compile_model(self.keras_model, learning_rate, momentum,
                               self.config.GRADIENT_CLIP_NORM)

    def set_trainable(self, layer_regex, keras_model=None, indent=0, verbose=1) -> List[str]:
        """Sets model layers as trainable if their names match
        the given regular expression. Returns the names made trainable."""
        return training.set_trainable(keras_model or self.keras_model, layer_regex,
                                      verbose=verbose, indent=indent)

    def train(self, train_dataset, val_dataset, learning_rate, epochs: int, layers,
              augmentation=None, custom_callbacks=None, no_augmentation_sources=None,
              **kwargs):
        """Train the model.
        train_dataset, val_dataset: Training and validation Dataset objects.
        learning_rate: The learning rate to train with
        epochs: Number of training epochs. Note that previous training epochs
                are considered to be done already, so this actually determines
                the epochs to train in total rather than in this particular
                call.
        layers: Allows selecting which layers to train. It can be:
            - A regular expression to match layer names to train
            - One of these predefined values:
              heads: The RPN, classifier and mask heads of the network
              all: All the layers
              3+: Train Resnet stage 3 and up
              4+: Train Resnet stage 4 and up
              5+: Train Resnet stage 5 and up
        augmentation: Optional. An albumentations Compose (or any callable
            with its ``image=..., masks=[...]`` keyword contract) applied to
            training images; flips and rotations move the masks too.
        custom_callbacks: Optional. Add custom callbacks to be called
            with the keras fit_generator method. Must be list type.
        no_augmentation_sources: Optional. List of sources to exclude for
            augmentation. A source is string that identifies a dataset and is
            defined in the Dataset class.
        kwargs: verbose, workers, use_multiprocessing, seed (see
            mrcnn.training.train).
        Returns Keras' History.
        """
        return training.train(self, train_dataset, val_dataset, learning_rate, epochs, layers,
                              augmentation=augmentation, custom_callbacks=custom_callbacks,
                              no_augmentation_sources=no_augmentation_sources, **kwargs)

    # ------------------------------------------------------------------
    # Inference
    # ------------------------------------------------------------------

    def mold_inputs(self, images):
        """Takes a list of images and modifies them to the format expected
        as an input to the neural network.
        images: List of image matrices [height,width,depth]. Images can have
            different sizes.

        Returns 3 Numpy matrices:
        molded_images: [N, h, w, 3]. Images resized and normalized.
        image_metas: [N, length of meta data]. Details about each image.
        windows: [N, (y1, x1, y2, x2)]. The portion of the image that has the
            original image (padding excluded).
        """
        return transform.mold_inputs(images, self.image_spec)

    def unmold_detections(self, detections, mrcnn_mask, original_image_shape,
                          image_shape, window):
        """Matterport's method: ``transform.unmold_detections`` (boxes in
        original pixels, padding and zero-area rows dropped, masks pasted).
        Returns boxes [N, 4], class_ids [N], scores [N], masks [H, W, N]."""
        return transform.unmold_detections(detections, mrcnn_mask, original_image_shape,
                                           image_shape, window)

    def _require_inference(self, what):
        if self.mode != "inference":
            raise ValueError(f"{what} needs a model created in inference mode: "
                             f"MaskRCNN(mode='inference', ...).")

    def detect(self, images, verbose=0, batch_size: Optional[int] = None
               ) -> List[Dict[str, np.ndarray]]:
        """Runs the detection pipeline.

        images: List of images, potentially of different sizes. Any number of
            images.
        batch_size: images per network call; None means BATCH_SIZE. Images
            that mold to the same size (all of them in "square" mode; in
            "pad64" and "none" mode those of the same padded size) go through
            the network ``batch_size`` at a time, the last call of each size
            padded with copies to ``batch_size`` images, so the compiled
            network is traced once per batch size (and molded size) whatever
            the number of images. More images per call need the memory of
            that many images' feature maps.

        Returns a list of dicts, one dict per image, in input order. The dict contains:
        rois: [N, (y1, x1, y2, x2)] detection bounding boxes
        class_ids: [N] int class IDs
        scores: [N] float probability scores for the class IDs
        masks: [H, W, N] instance binary masks (``masks.paste_masks``: each
            instance's [H, W] plane is contiguous)
        """
        self._require_inference("detect()")
        if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object:
            raise ValueError("detect() takes a list of images; wrap a single image in a list: "
                             "model.detect([image]).")
        bs = self._batch_size(batch_size, "detect()")
        images = list(images)
        if not images:
            return []
        if verbose:
            log("Processing {} images".format(len(images)))
            for image in images:
                log("image", image)

        # Mold each image, then run the images that share a molded size
        # (all of them in "square" mode) through the network bs at a time.
        molded = [transform.mold_one(image, self.image_spec, f"detect(): image {i}")
                  for i, image in enumerate(images)]
        groups = OrderedDict()
        for i, (m, _, _) in enumerate(molded):
            groups.setdefault(m.shape, []).append(i)
        results = [None] * len(images)
        for ix in groups.values():
            for start in range(0, len(ix), bs):
                batch = ix[start:start + bs]
                detections, mrcnn_mask = self._run_molded(
                    np.stack([molded[i][0] for i in batch]),
                    np.stack([molded[i][1] for i in batch]), verbose, batch_size=bs)
                found = transform.results_dicts(
                    detections, mrcnn_mask, [np.shape(images[i]) for i in batch],
                    [molded[i][0].shape for i in batch], [molded[i][2] for i in batch])
                for i, result in zip(batch, found):
                    results[i] = result
        return results

    def _batch_size(self, batch_size, where):
        """batch_size, or BATCH_SIZE when None; a ValueError naming ``where``
        for anything but a positive int."""
        if batch_size is None:
            return int(self.config.BATCH_SIZE)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"{where}: batch_size must be a positive int (images per network "
                             f"call) or None for config.BATCH_SIZE, got {batch_size!r}.")
        return int(batch_size)

    def _run_molded(self, molded_images, image_metas, verbose=0, batch_size=None):
        """Run the network on a batch of molded images of one size.

        molded_images: [n, h, w, C]; image_metas: [n, IMAGE_META_SIZE].
        batch_size: the batch the network runs (None: BATCH_SIZE); n must not
            exceed it.
        Returns detections [n, N, 6] and mrcnn_mask [n, N, 28, 28, C] (NumPy).
        The batch is padded up to batch_size with copies so the compiled
        function keeps one input signature; the padding rows are dropped.
        """
        n = len(molded_images)
        bs = max(self._batch_size(batch_size, "_run_molded()"), n)
        if n < bs:
            pad = bs - n
            molded_images = np.concatenate([molded_images, np.repeat(molded_images[-1:], pad, 0)])
            image_metas = np.concatenate([image_metas, np.repeat(image_metas[-1:], pad, 0)])
        anchors = self.get_anchors(molded_images[0].shape)
        # Duplicate across the batch dimension because Keras requires it
        anchors = np.broadcast_to(anchors, (bs,) + anchors.shape)
        if verbose:
            log("molded_images", molded_images)
            log("image_metas", image_metas)
            log("anchors", anchors)
        detections, mrcnn_mask = self._predict(molded_images.astype(np.float32),
                                               image_metas.astype(np.float32),
                                               np.ascontiguousarray(anchors, dtype=np.float32))
        return detections[:n], mrcnn_mask[:n]

    def _predict(self, images, metas, anchors):
        """One compiled forward pass returning (detections, mrcnn_mask) as NumPy.

        One tf.function per batch size, so a call with another batch size
        does not relax the traced batch dimension of the others (a trace
        with unknown shapes loses some of Grappler's fusions); within one,
        ``reduce_retracing`` relaxes the image size after a second size
        ("pad64"/"none" modes) instead of tracing every size.
        """
        if self._predict_fn is None:
            self._predict_fn = {}
        bs = len(images)
        if bs not in self._predict_fn:
            model = self.keras_model

            @tf.function(reduce_retracing=True)
            def predict(images, metas, anchors):
                outputs = model([images, metas, anchors], training=False)
                return outputs[0], outputs[3]
            self._predict_fn[bs] = predict
        detections, masks = self._predict_fn[bs](tf.constant(images), tf.constant(metas),
                                                 tf.constant(anchors))
        return detections.numpy(), masks.numpy()

    def detect_molded(self, molded_images, image_metas, verbose=0,
                      batch_size: Optional[int] = None) -> List[Dict[str, np.ndarray]]:
        """Runs the detection pipeline, but expect inputs that are
        molded already. Used mostly for debugging and inspecting
        the model.

        molded_images: List of images loaded using load_image_gt()
        image_metas: image meta data, also returned by load_image_gt()
        batch_size: images per network call (None: BATCH_SIZE), as in detect()

        Returns a list of dicts, one dict per image. The dict contains:
        rois: [N, (y1, x1, y2, x2)] detection bounding boxes
        class_ids: [N] int class IDs
        scores: [N] float probability scores for the class IDs
        masks: [H, W, N] instance binary masks
        """
        self._require_inference("detect_molded()")
        molded_images = np.asarray(molded_images)
        image_metas = np.asarray(image_metas)
        if len(molded_images) != len(image_metas):
            raise ValueError("detect_molded(): molded_images and image_metas differ in length.")
        if verbose:
            log("Processing {} images".format(len(molded_images)))
        results = []
        bs = self._batch_size(batch_size, "detect_molded()")
        for start in range(0, len(molded_images), bs):
            imgs = molded_images[start:start + bs]
            metas = image_metas[start:start + bs]
            detections, mrcnn_mask = self._run_molded(imgs, metas, verbose, batch_size=bs)
            meta = parse_image_meta(metas)
            results += transform.results_dicts(detections, mrcnn_mask,
                                               meta["original_image_shape"],
                                               [img.shape for img in imgs], meta["window"])
        return results

    def export(self, path, **kwargs) -> str:
        """Write this inference model as a self-contained SavedModel at ``path``:
        raw uint8 image in, detect()'s detections out, with resizing, molding,
        anchors and mask pasting in the graph. See ``mrcnn.export.export_model``
        for the signatures and options. Returns ``path``."""
        self._require_inference("export()")
        return export.export_model(self, path, **kwargs)

    def get_anchors(self, image_shape) -> np.ndarray:
        """Returns anchor pyramid for the given image size.

        Returns: [A, (y1, x1, y2, x2)] float32 anchors in normalized coordinates
        (norm_boxes of the pixel anchors with the molded image size), cached per
        size (``anchors.AnchorSpec``; read-only arrays).
        """
        # Keep a copy of the latest anchors in pixel coordinates because
        # it's used in inspect_model notebooks.
        self.anchors = self.anchor_spec.pixel_anchors(image_shape)
        return self.anchor_spec.normalized_anchors(image_shape)

    # ------------------------------------------------------------------
    # Inspection
    # ------------------------------------------------------------------

    def ancestor(self, tensor, name, checked=None):
        """Finds the ancestor of a TF tensor in the computation graph.
        tensor: TensorFlow symbolic tensor.
        name: Name of ancestor tensor to find
        checked: For internal use. A list of tensors that were already
                 searched to avoid loops in traversing the graph.
        """
        checked = checked if checked is not None else []
        # Put a limit on how deep we go to avoid very long loops
        if len(checked) > 500:
            return None
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return None
        layer = history[0] if not hasattr(history, "operation") else history.operation
        if layer.name == name or re.fullmatch(name, layer.name):
            return tensor
        checked.append(tensor)
        for node in getattr(layer, "_inbound_nodes", []):
            for parent in node.input_tensors:
                if any(parent is c for c in checked):
                    continue
                a = self.ancestor(parent, name, checked)
                if a is not None:
                    return a
        return None

    def find_trainable_layer(self, layer):
        """If a layer is encapsulated by another layer, this function
        digs through the encapsulation and returns the layer that holds
        the weights.
        """
        if layer.__class__.__name__ == "TimeDistributed":
            return self.find_trainable_layer(layer.layer)
        return layer

    def get_trainable_layers(self):
        """Returns a list of layers that have weights."""
        layers = []
        # Loop through all layers
        for l in self.keras_model.layers:
            # If layer is a wrapper, find inner trainable layer
            l = self.find_trainable_layer(l)
            # Include layer if it has weights
            if l.get_weights():
                layers.append(l)
        return layers

    def run_graph(self, images, outputs, image_metas=None, verbose=1):
        """Runs a sub-set of the computation graph that computes the given
        outputs.

        verbose: 1 logs each output's shape and range (Matterport's
            behaviour, for notebooks); 0 is quiet.

        image_metas: If provided, the images are assumed to be already
            molded (i.e. resized, padded, and normalized)

        outputs: List of tuples (name, tensor) to compute. The tensors are
            symbolic Keras tensors, e.g. ``model.keras_model.get_layer("ROI").output``,
            or layer names as strings.

        Returns an ordered dict of results. Keys are the names received in the
        input and values are Numpy arrays.
        """
        model = self.keras_model

        # Organize desired outputs into an ordered dict
        outputs = OrderedDict(outputs)
        for name, o in outputs.items():
            if isinstance(o, str):
                outputs[name] = model.get_layer(o).output
            elif isinstance(o, keras.layers.Layer):
                outputs[name] = o.output
        for name, o in outputs.items():
            if o is None:
                raise ValueError(f"run_graph(): output {name!r} is None (layer not in the graph).")

        # Build a Keras function to run parts of the computation graph
        sub_model = keras.Model(model.inputs, list(outputs.values()))

        # Prepare inputs
        if image_metas is None:
            molded_images, image_metas, _ = self.mold_inputs(images)
        else:
            molded_images = np.asarray(images)
        image_shape = molded_images[0].shape
        model_in = [molded_images.astype(np.float32), np.asarray(image_metas, np.float32)]
        if self.mode == "inference":
            # Anchors
            anchors = self.get_anchors(image_shape)
            anchors = np.broadcast_to(anchors, (len(molded_images),) + anchors.shape)
            model_in.append(np.ascontiguousarray(anchors))
        else:
            raise NotImplementedError(
                "run_graph() in training mode: build the model with mode='inference' "
                "to inspect it, as Matterport's notebooks do.")

        # Run inference
        outputs_np = sub_model(model_in, training=False)
        if not isinstance(outputs_np, (list, tuple)):
            outputs_np = [outputs_np]
        # Pack the generated Numpy arrays into a a dict and log the results.
        outputs_np = OrderedDict([(k, np.asarray(v)) for k, v in zip(outputs.keys(), outputs_np)])
        if verbose:
            for k, v in outputs_np.items():
                log(k, v)
        return outputs_np


def _with_dtype_policy(policy, fn, *args):
    """Call fn(*args) with Keras' global dtype policy set to `policy`, then
    restore it. Layers take the policy in force when they are created, so the
    model built here computes in that precision without changing anything
    for models built later."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return fn(*args)
    finally:
        keras.config.set_dtype_policy(previous)
