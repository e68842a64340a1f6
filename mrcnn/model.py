"""
Mask R-CNN
The main Mask R-CNN model implementation: the ``MaskRCNN`` front door.

Matterport kept the whole network in this one file. Here the pieces live in
their own modules and this file puts them together for the user, re-exporting
Matterport's public names so ``from mrcnn import model as modellib`` code keeps
working:

    ops/       pure TensorFlow functions (boxes, proposals, ROI align, detection
               refinement, detection targets), callable eagerly on NumPy arrays
    layers/    the Keras layers over them (ProposalLayer, PyramidROIAlign,
               DetectionTargetLayer, DetectionLayer)
    graph/     ResNet + FPN backbone, RPN, heads; graph/build.py turns a Config
               into the Keras model
    meta.py    image meta, mold/unmold
    data.py    ground truth loading, RPN targets, the training data pipeline
    weights.py Keras-2 HDF5 weight files (Matterport's layout) and Keras 3 files
    training.py  layer presets, callbacks, train()

Shape shorthand used in docstrings:
    B   batch size          N   detections per image (DETECTION_MAX_INSTANCES)
    A   anchors per image   C   NUM_CLASSES (background included)
"""

import datetime
import logging
import os
import re
from collections import OrderedDict

import numpy as np

from mrcnn import utils
from mrcnn.config import Config
# Matterport's public names, re-exported so `modellib.<name>` keeps working.
from mrcnn.data import (build_detection_targets, build_rpn_targets, data_generator,  # noqa: F401
                        generate_random_rois, load_image_gt)
from mrcnn.graph.backbone import BatchNorm, conv_block, identity_block, resnet_graph  # noqa: F401
from mrcnn.graph.build import compute_backbone_shapes  # noqa: F401
from mrcnn.graph.fpn import fpn_graph  # noqa: F401
from mrcnn.graph.heads import build_fpn_mask_graph, fpn_classifier_graph  # noqa: F401
from mrcnn.graph.rpn import build_rpn_model, rpn_graph  # noqa: F401
from mrcnn.layers import (DetectionLayer, DetectionTargetLayer, ProposalLayer,  # noqa: F401
                          PyramidROIAlign)
from mrcnn.losses import (mrcnn_bbox_loss_graph, mrcnn_class_loss_graph,  # noqa: F401
                          mrcnn_mask_loss_graph, rpn_bbox_loss_graph, rpn_class_loss_graph,
                          smooth_l1_loss)
from mrcnn.meta import compose_image_meta, mold_image, parse_image_meta, unmold_image
from mrcnn.ops import (apply_box_deltas_graph, box_refinement_graph,  # noqa: F401
                       clip_boxes_graph, denorm_boxes_graph, norm_boxes_graph,
                       overlaps_graph, parse_image_meta_graph)
from mrcnn.ops.targets import detection_targets  # noqa: F401

logger = logging.getLogger("mrcnn")


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

    def __init__(self, mode, config, model_dir):
        """
        mode: Either "training" or "inference"
        config: A Sub-class of the Config class
        model_dir: Directory to save training logs and trained weights
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
        self._anchor_cache = {}
        self._predict_fn = None
        self.set_log_dir()
        self.keras_model = self.build(mode=mode, config=config)

    def build(self, mode, config):
        """Build Mask R-CNN architecture.
            mode: Either "training" or "inference". The inputs and
                outputs of the model differ accordingly.
        """
        if mode == "training":
            from mrcnn.graph.training_graph import build_training_model
            return build_training_model(config)
        from mrcnn.graph.build import build_inference_model
        if config.INFERENCE_PRECISION == "bfloat16":
            # Pure bfloat16 layers: weights stored in bfloat16 (half the
            # memory, and no float32 -> bfloat16 copy of every weight at
            # each call; loading rounds them exactly as that copy would).
            # BatchNorm keeps float32 weights (see backbone.BatchNorm) and
            # the output layers are float32 throughout.
            return _with_dtype_policy("bfloat16", build_inference_model, config)
        return build_inference_model(config)

    # ------------------------------------------------------------------
    # Checkpoints and weights
    # ------------------------------------------------------------------

    def find_last(self):
        """Finds the last checkpoint file of the last trained model in the
        model directory.
        Returns:
            The path of the last checkpoint file
        """
        # Get directory names. Each directory corresponds to a model
        key = self.config.NAME.lower()
        dir_names = []
        if os.path.isdir(self.model_dir):
            dir_names = sorted(d for d in next(os.walk(self.model_dir))[1] if d.startswith(key))
        if not dir_names:
            raise FileNotFoundError(
                f"Could not find model directory under {self.model_dir}: no folder starting "
                f"with {key!r}. Train first, or pass the weights path explicitly.")
        # Pick last directory that holds a checkpoint
        for dir_name in reversed(dir_names):
            path = os.path.join(self.model_dir, dir_name)
            checkpoints = sorted(f for f in next(os.walk(path))[2]
                                 if f.startswith("mask_rcnn") and f.endswith(".h5"))
            if checkpoints:
                return os.path.join(path, checkpoints[-1])
        raise FileNotFoundError(
            f"Could not find weight files in {os.path.join(self.model_dir, dir_names[-1])}: "
            f"no mask_rcnn_*.h5 checkpoint in any {key}* folder.")

    def load_weights(self, filepath, by_name=False, exclude=None):
        """Load weights from a Matterport/Keras-2 HDF5 file or a Keras 3
        ``.weights.h5`` file.

        exclude: list of layer names to exclude (e.g. the heads when the file
            has another NUM_CLASSES:
            ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]).
        """
        from mrcnn import weights
        if exclude:
            by_name = True
        report = weights.load_weights(self.keras_model, filepath, by_name=by_name,
                                      exclude=exclude)
        # Update the log directory (a checkpoint path resumes its run and epoch)
        self.set_log_dir(filepath)
        self._predict_fn = None
        return report

    def save_weights(self, filepath):
        """Save the weights in Matterport's Keras-2 HDF5 layout (atomic write)."""
        from mrcnn import weights
        weights.save_weights(self.keras_model, filepath)

    def get_imagenet_weights(self):
        """Downloads ImageNet trained weights from Keras (ResNet-50, no top).
        Returns path to weights file.
        """
        import keras
        TF_WEIGHTS_PATH_NO_TOP = ("https://github.com/fchollet/deep-learning-models/"
                                  "releases/download/v0.2/"
                                  "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
        name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
        try:
            return keras.utils.get_file(name, TF_WEIGHTS_PATH_NO_TOP, cache_subdir="models",
                                        md5_hash="a268eb855778b3df3c7506639542a6af")
        except Exception as e:  # offline
            cache = os.path.join(os.path.expanduser("~"), ".keras", "models", name)
            raise OSError(
                f"Could not download the ImageNet ResNet-50 weights ({e}). Download "
                f"{TF_WEIGHTS_PATH_NO_TOP} by hand and put it at {cache}.") from e

    def set_log_dir(self, model_path=None):
        """Sets the model log directory and epoch counter.

        model_path: If None, or a format different from what this code uses
            then set a new log directory and start epochs from 0. Otherwise,
            extract the log directory and the epoch counter from the file
            name.
        """
        # Set date and epoch counter as if starting a new model
        self.epoch = 0
        now = datetime.datetime.now()

        # If we have a model path with date and epochs use them
        if model_path:
            # Continue from we left of. Get epoch and date from the file name
            # A sample model path might look like:
            # \path\to\logs\coco20171029T2315\mask_rcnn_coco_0001.h5 (Windows)
            # /path/to/logs/coco20171029T2315/mask_rcnn_coco_0001.h5 (Linux)
            regex = r".*[/\\][\w-]+(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})[/\\]mask\_rcnn\_[\w-]+(\d{4})\.h5"
            m = re.match(regex, str(model_path))
            if m:
                now = datetime.datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)),
                                        int(m.group(4)), int(m.group(5)))
                # Epoch number in file is 1-based, and in Keras code it's 0-based.
                # So, adjust for that then increment by one to start from the next epoch
                self.epoch = int(m.group(6)) - 1 + 1
                logger.info("Re-starting from epoch %d", self.epoch)

        # Directory for training logs
        self.log_dir = os.path.join(self.model_dir, "{}{:%Y%m%dT%H%M}".format(
            self.config.NAME.lower(), now))

        # Path to save after each epoch. Include placeholders that get filled by Keras.
        self.checkpoint_path = os.path.join(self.log_dir, "mask_rcnn_{}_*epoch*.h5".format(
            self.config.NAME.lower()))
        self.checkpoint_path = self.checkpoint_path.replace("*epoch*", "{epoch:04d}")

    # ------------------------------------------------------------------
    # Training (mrcnn/training.py does the work)
    # ------------------------------------------------------------------

    def compile(self, learning_rate, momentum):
        """Gets the model ready for training: SGD with momentum and
        GRADIENT_CLIP_NORM; the losses and L2 weight decay are added by the
        training model's train_step."""
        from mrcnn import training
        training.compile_model(self.keras_model, learning_rate, momentum,
                               self.config.GRADIENT_CLIP_NORM)

    def set_trainable(self, layer_regex, keras_model=None, indent=0, verbose=1):
        """Sets model layers as trainable if their names match
        the given regular expression."""
        from mrcnn import training
        training.set_trainable(keras_model or self.keras_model, layer_regex,
                               verbose=verbose, indent=indent)

    def train(self, train_dataset, val_dataset, learning_rate, epochs, layers,
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
        from mrcnn import training
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
        molded = [self._mold_one(image, i) for i, image in enumerate(images)]
        shapes = {m[0].shape for m in molded}
        if len(shapes) > 1:
            raise ValueError(
                f"mold_inputs(): the images mold to different sizes {sorted(shapes)} "
                f"(IMAGE_RESIZE_MODE={self.config.IMAGE_RESIZE_MODE!r}); mold them in "
                f"separate calls. detect() does this for you.")
        # Pack into arrays
        molded_images = np.stack([m[0] for m in molded])
        image_metas = np.stack([m[1] for m in molded])
        windows = np.stack([m[2] for m in molded])
        return molded_images, image_metas, windows

    def _mold_one(self, image, index):
        """Resize and normalize one image. Returns (molded [h, w, C] float64,
        image_meta [IMAGE_META_SIZE], window (y1, x1, y2, x2))."""
        image = self._check_image(image, index)
        molded_image, window, scale, padding, crop = utils.resize_image(
            image,
            min_dim=self.config.IMAGE_MIN_DIM,
            min_scale=self.config.IMAGE_MIN_SCALE,
            max_dim=self.config.IMAGE_MAX_DIM,
            mode=self.config.IMAGE_RESIZE_MODE)
        molded_image = mold_image(molded_image, self.config)
        image_meta = compose_image_meta(
            0, image.shape, molded_image.shape, window, scale,
            np.zeros([self.config.NUM_CLASSES], dtype=np.int32))
        return molded_image, image_meta, np.asarray(window)

    def _check_image(self, image, index):
        """Turn one detect() input into [H, W, IMAGE_CHANNEL_COUNT] with values
        in [0, 255], or raise a ValueError that says what was wrong."""
        channels = self.config.IMAGE_CHANNEL_COUNT
        image = np.asarray(image)
        where = f"detect(): image {index}"
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3:
            raise ValueError(f"{where} has shape {image.shape}; expected [height, width] or "
                             f"[height, width, channels].")
        if image.shape[0] < 2 or image.shape[1] < 2:
            raise ValueError(f"{where} has size {image.shape[:2]}; it needs at least 2x2 pixels.")
        c = image.shape[2]
        if c != channels:
            if channels == 3 and c == 1:      # grayscale -> RGB
                image = np.repeat(image, 3, axis=2)
            elif channels == 3 and c == 4:    # RGBA -> RGB (alpha dropped)
                image = image[..., :3]
            elif channels == 3 and c == 2:    # gray + alpha -> RGB
                image = np.repeat(image[..., :1], 3, axis=2)
            else:
                raise ValueError(
                    f"{where} has {c} channels but config.IMAGE_CHANNEL_COUNT is {channels}; "
                    f"convert the image (utils.read_image does) or change the config.")
        if image.dtype == bool:
            raise ValueError(f"{where} is boolean; pass pixel values in [0, 255].")
        if np.issubdtype(image.dtype, np.floating):
            if not np.all(np.isfinite(image)):
                raise ValueError(f"{where} contains NaN or infinite values.")
            lo, hi = float(image.min()), float(image.max())
            if lo < 0 or hi > 255:
                raise ValueError(
                    f"{where} is {image.dtype} with values in [{lo:g}, {hi:g}]; expected "
                    f"pixel values in [0, 255] (multiply images in [0, 1] by 255).")
        elif image.dtype != np.uint8:
            if image.min() < 0 or image.max() > 255:
                raise ValueError(
                    f"{where} is {image.dtype} with values outside [0, 255]; scale it to "
                    f"8 bits first (utils.read_image does this for 16-bit files).")
        if self.config.IMAGE_RESIZE_MODE == "none":
            h, w = image.shape[:2]
            if h % 64 or w % 64:
                raise ValueError(
                    f"{where} is {h}x{w}, but IMAGE_RESIZE_MODE='none' feeds images "
                    f"unchanged and the FPN needs sides divisible by 64; use 'pad64' or "
                    f"'square', or resize the image.")
        return image

    def unmold_detections(self, detections, mrcnn_mask, original_image_shape,
                          image_shape, window):
        """Reformats the detections of one image from the format of the neural
        network output to a format suitable for use in the rest of the
        application.

        detections: [N, (y1, x1, y2, x2, class_id, score)] in normalized coordinates
        mrcnn_mask: [N, height, width, num_classes]
        original_image_shape: [H, W, C] Original image shape before resizing
        image_shape: [H, W, C] Shape of the image after resizing and padding
        window: [y1, x1, y2, x2] Pixel coordinates of box in the image where the real
                image is excluding the padding.

        Returns:
        boxes: [N, (y1, x1, y2, x2)] Bounding boxes in pixels
        class_ids: [N] Integer class IDs for each bounding box
        scores: [N] Float probability scores of the class_id
        masks: [height, width, num_instances] Instance masks
        """
        # How many detections do we have?
        # Detections array is padded with zeros. Find the first class_id == 0.
        zero_ix = np.where(detections[:, 4] == 0)[0]
        N = zero_ix[0] if zero_ix.shape[0] > 0 else detections.shape[0]

        # Extract boxes, class_ids, scores, and class-specific masks
        boxes = detections[:N, :4]
        class_ids = detections[:N, 4].astype(np.int32)
        scores = detections[:N, 5]
        masks = mrcnn_mask[np.arange(N), :, :, class_ids]

        # Translate normalized coordinates in the resized image to pixel
        # coordinates in the original image before resizing
        window = utils.norm_boxes(window, image_shape[:2])
        wy1, wx1, wy2, wx2 = window
        shift = np.array([wy1, wx1, wy1, wx1])
        wh = wy2 - wy1  # window height
        ww = wx2 - wx1  # window width
        scale = np.array([wh, ww, wh, ww])
        # Convert boxes to normalized coordinates on the window
        boxes = np.divide(boxes - shift, scale)
        # Convert boxes to pixel coordinates on the original image
        boxes = utils.denorm_boxes(boxes, original_image_shape[:2])

        # Filter out detections with zero area. Happens in early training when
        # network weights are still random
        exclude_ix = np.where(
            (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) <= 0)[0]
        if exclude_ix.shape[0] > 0:
            boxes = np.delete(boxes, exclude_ix, axis=0)
            class_ids = np.delete(class_ids, exclude_ix, axis=0)
            scores = np.delete(scores, exclude_ix, axis=0)
            masks = np.delete(masks, exclude_ix, axis=0)
            N = class_ids.shape[0]

        # Resize masks to original image size and set boundary threshold.
        full_masks = paste_masks(masks, boxes, original_image_shape[:2])
        return boxes, class_ids, scores, full_masks

    def detect(self, images, verbose=0):
        """Runs the detection pipeline.

        images: List of images, potentially of different sizes. Any number of
            images: they go through the network in batches of BATCH_SIZE.

        Returns a list of dicts, one dict per image. The dict contains:
        rois: [N, (y1, x1, y2, x2)] detection bounding boxes
        class_ids: [N] int class IDs
        scores: [N] float probability scores for the class IDs
        masks: [H, W, N] instance binary masks
        """
        assert self.mode == "inference", "Create model in inference mode."
        if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object:
            raise ValueError("detect() takes a list of images; wrap a single image in a list: "
                             "model.detect([image]).")
        images = list(images)
        if not images:
            return []
        if verbose:
            log("Processing {} images".format(len(images)))
            for image in images:
                log("image", image)

        # Mold each image, then run the images that share a molded size
        # (all of them in "square" mode) through the network BATCH_SIZE at a time.
        molded = [self._mold_one(image, i) for i, image in enumerate(images)]
        groups = OrderedDict()
        for i, (m, _, _) in enumerate(molded):
            groups.setdefault(m.shape, []).append(i)
        results = [None] * len(images)
        bs = self.config.BATCH_SIZE
        for ix in groups.values():
            for start in range(0, len(ix), bs):
                batch = ix[start:start + bs]
                detections, mrcnn_mask = self._run_molded(
                    np.stack([molded[i][0] for i in batch]),
                    np.stack([molded[i][1] for i in batch]), verbose)
                for k, i in enumerate(batch):
                    rois, class_ids, scores, masks = self.unmold_detections(
                        detections[k], mrcnn_mask[k], np.shape(images[i]),
                        molded[i][0].shape, molded[i][2])
                    results[i] = {"rois": rois, "class_ids": class_ids,
                                  "scores": scores, "masks": masks}
        return results

    def _run_molded(self, molded_images, image_metas, verbose=0):
        """Run the network on a batch of molded images of one size.

        Returns detections [B, N, 6] and mrcnn_mask [B, N, 28, 28, C] (NumPy).
        The batch is padded up to BATCH_SIZE with copies so the compiled
        function keeps one input signature; the padding rows are dropped.
        """
        n = len(molded_images)
        bs = max(self.config.BATCH_SIZE, n)
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
        """One compiled forward pass returning (detections, mrcnn_mask) as NumPy."""
        import tensorflow as tf
        if self._predict_fn is None:
            model = self.keras_model

            @tf.function(reduce_retracing=True)
            def predict(images, metas, anchors):
                outputs = model([images, metas, anchors], training=False)
                return outputs[0], outputs[3]
            self._predict_fn = predict
        detections, masks = self._predict_fn(tf.constant(images), tf.constant(metas),
                                             tf.constant(anchors))
        return detections.numpy(), masks.numpy()

    def detect_molded(self, molded_images, image_metas, verbose=0):
        """Runs the detection pipeline, but expect inputs that are
        molded already. Used mostly for debugging and inspecting
        the model.

        molded_images: List of images loaded using load_image_gt()
        image_metas: image meta data, also returned by load_image_gt()

        Returns a list of dicts, one dict per image. The dict contains:
        rois: [N, (y1, x1, y2, x2)] detection bounding boxes
        class_ids: [N] int class IDs
        scores: [N] float probability scores for the class IDs
        masks: [H, W, N] instance binary masks
        """
        assert self.mode == "inference", "Create model in inference mode."
        molded_images = np.asarray(molded_images)
        image_metas = np.asarray(image_metas)
        if len(molded_images) != len(image_metas):
            raise ValueError("detect_molded(): molded_images and image_metas differ in length.")
        if verbose:
            log("Processing {} images".format(len(molded_images)))
        results = []
        bs = self.config.BATCH_SIZE
        for start in range(0, len(molded_images), bs):
            imgs = molded_images[start:start + bs]
            metas = image_metas[start:start + bs]
            detections, mrcnn_mask = self._run_molded(imgs, metas, verbose)
            for i in range(len(imgs)):
                meta = parse_image_meta(metas[i:i + 1])
                original_image_shape = meta["original_image_shape"][0]
                window = meta["window"][0]
                rois, class_ids, scores, masks = self.unmold_detections(
                    detections[i], mrcnn_mask[i], original_image_shape,
                    imgs[i].shape, window)
                results.append({"rois": rois, "class_ids": class_ids,
                                "scores": scores, "masks": masks})
        return results

    # --- export hook (issue 12): the work is in mrcnn/export.py ---
    def export(self, path, **kwargs):
        """Write this inference model as a self-contained SavedModel at ``path``:
        raw uint8 image in, detect()'s detections out, with resizing, molding,
        anchors and mask pasting in the graph. See ``mrcnn.export.export_model``
        for the signatures and options. Returns ``path``."""
        from mrcnn import export
        return export.export_model(self, path, **kwargs)
    # --- end export hook ---

    def get_anchors(self, image_shape):
        """Returns anchor pyramid for the given image size.

        Returns: [A, (y1, x1, y2, x2)] float32 anchors in normalized coordinates
        (norm_boxes of the pixel anchors with the molded image size), cached per size.
        """
        key = tuple(int(s) for s in image_shape[:2])
        if key not in self._anchor_cache:
            backbone_shapes = compute_backbone_shapes(self.config, image_shape)
            # Generate Anchors
            a = utils.generate_pyramid_anchors(
                self.config.RPN_ANCHOR_SCALES,
                self.config.RPN_ANCHOR_RATIOS,
                backbone_shapes,
                self.config.BACKBONE_STRIDES,
                self.config.RPN_ANCHOR_STRIDE)
            # Normalize coordinates
            self._anchor_cache[key] = (a, utils.norm_boxes(a, image_shape[:2]).astype(np.float32))
        pixels, normalized = self._anchor_cache[key]
        # Keep a copy of the latest anchors in pixel coordinates because
        # it's used in inspect_model notebooks.
        self.anchors = pixels
        return normalized

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

    def run_graph(self, images, outputs, image_metas=None):
        """Runs a sub-set of the computation graph that computes the given
        outputs.

        image_metas: If provided, the images are assumed to be already
            molded (i.e. resized, padded, and normalized)

        outputs: List of tuples (name, tensor) to compute. The tensors are
            symbolic Keras tensors, e.g. ``model.keras_model.get_layer("ROI").output``,
            or layer names as strings.

        Returns an ordered dict of results. Keys are the names received in the
        input and values are Numpy arrays.
        """
        import keras
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
        for k, v in outputs_np.items():
            log(k, v)
        return outputs_np


def _with_dtype_policy(policy, fn, *args):
    """Call fn(*args) with Keras' global dtype policy set to `policy`, then
    restore it. Layers take the policy in force when they are created, so the
    model built here computes in that precision without changing anything
    for models built later."""
    import keras
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return fn(*args)
    finally:
        keras.config.set_dtype_policy(previous)


############################################################
#  Mask pasting
############################################################

def _bilinear_matrix(out_size, in_size):
    """[out_size, in_size] float64 weights of a pixel-centre aligned bilinear
    resize with zero padding outside the input (skimage.transform.resize
    with order=1, mode="constant", cval=0, anti_aliasing=False)."""
    # Source coordinate of each output pixel centre, in input pixels.
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    i0 = np.floor(src).astype(np.int64)
    frac = src - i0
    m = np.zeros((out_size, in_size + 2), dtype=np.float64)   # +1 zero border each side
    rows = np.arange(out_size)
    m[rows, i0 + 1] += 1.0 - frac
    m[rows, i0 + 2] += frac
    return m[:, 1:-1]


def paste_masks(masks, boxes, image_shape, threshold=0.5):
    """Resize small mask-head outputs to their boxes and paste them into full
    image masks.

    masks: [N, mh, mw] float in [0, 1], one mask per box (its class already chosen).
    boxes: [N, (y1, x1, y2, x2)] int pixel boxes in the image, y2/x2 exclusive.
    image_shape: (H, W) of the image.

    Returns [H, W, N] bool. Same result as ``utils.unmold_mask`` per mask
    (skimage bilinear resize of the mask to the box, threshold >= 0.5), done as
    two small matrix products per mask instead of an skimage call.
    """
    H, W = int(image_shape[0]), int(image_shape[1])
    n = len(masks)
    full = np.zeros((H, W, n), dtype=bool)
    for i in range(n):
        y1, x1, y2, x2 = (int(v) for v in boxes[i])
        h, w = y2 - y1, x2 - x1
        if h <= 0 or w <= 0:
            continue
        m = masks[i].astype(np.float64)
        wy = _bilinear_matrix(h, m.shape[0])
        wx = _bilinear_matrix(w, m.shape[1])
        resized = wy @ m @ wx.T
        # skimage clips to the input's range after resizing
        resized = np.clip(resized, m.min(), m.max())
        mask = resized >= threshold
        # The box may reach past the image (Matterport would fail there): clip.
        cy1, cx1, cy2, cx2 = max(y1, 0), max(x1, 0), min(y2, H), min(x2, W)
        if cy2 > cy1 and cx2 > cx1:
            full[cy1:cy2, cx1:cx2, i] = mask[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
    return full
