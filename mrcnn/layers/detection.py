"""DetectionLayer: classified ROIs -> final detections, as a Keras 3 layer."""
import keras

from mrcnn.ops.boxes import norm_boxes_graph
from mrcnn.ops.detection import refine_detections
from mrcnn.ops.image_meta import parse_image_meta_graph

__all__ = ["DetectionLayer"]


@keras.saving.register_keras_serializable(package="mrcnn")
class DetectionLayer(keras.layers.Layer):
    """Turns classified, refined proposals into the final detections of each image.

    Each ROI takes its top class; that class's deltas (times ``bbox_std_dev``)
    refine the box, which is clipped to the image window; background and (if
    ``detection_min_confidence`` is set) low-score ROIs are dropped; per-class
    NMS; the top ``detection_max_instances`` by score are returned. See
    :func:`mrcnn.ops.detection.refine_detections`. Weightless; identical output
    to Matterport's DetectionLayer.

    Args:
        bbox_std_dev: 4 floats the deltas are multiplied by (``BBOX_STD_DEV``).
        detection_min_confidence: minimum class score; 0 disables the filter
            (``DETECTION_MIN_CONFIDENCE``).
        detection_max_instances: detections per image, output rows
            (``DETECTION_MAX_INSTANCES``).
        detection_nms_threshold: per-class NMS IoU threshold
            (``DETECTION_NMS_THRESHOLD``).
        detection_cross_class_nms_threshold: None (Matterport), or the IoU
            threshold of a class-agnostic NMS after the per-class one
            (``DETECTION_CROSS_CLASS_NMS_THRESHOLD``; ops.refine_detections).
        config: accepted only so that Matterport's
            ``DetectionLayer(config, name="mrcnn_detection")`` keeps working
            (a Config passed positionally, in place of ``bbox_std_dev``, is
            recognized too): the four values above are read from it
            (overriding the arguments); the config itself is not kept.

    Inputs: ``[rois, mrcnn_class, mrcnn_bbox, image_meta]``
        rois: [batch, num_rois, (y1, x1, y2, x2)] normalized.
        mrcnn_class: [batch, num_rois, NUM_CLASSES] class probabilities.
        mrcnn_bbox: [batch, num_rois, NUM_CLASSES, (dy, dx, log(dh), log(dw))].
        image_meta: [batch, IMAGE_META_SIZE]; the window of each image is
            normalized with the molded shape of the first (all images in a
            batch have the same size), as Matterport does.

    Output: [batch, detection_max_instances, (y1, x1, y2, x2, class_id, score)]
    float32, normalized coordinates, score descending, zero padded.
    """

    def __init__(
        self,
        bbox_std_dev=(0.1, 0.1, 0.2, 0.2),
        detection_min_confidence=0.7,
        detection_max_instances=100,
        detection_nms_threshold=0.3,
        config=None,
        detection_cross_class_nms_threshold=None,
        **kwargs,
    ):
        # Box arithmetic must stay float32 even under a mixed-precision policy.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if config is None and hasattr(bbox_std_dev, "DETECTION_MAX_INSTANCES"):
            # Matterport's positional form: DetectionLayer(config, name=...).
            config = bbox_std_dev
        if config is not None:
            bbox_std_dev = config.BBOX_STD_DEV
            detection_min_confidence = config.DETECTION_MIN_CONFIDENCE
            detection_max_instances = config.DETECTION_MAX_INSTANCES
            detection_nms_threshold = config.DETECTION_NMS_THRESHOLD
            detection_cross_class_nms_threshold = getattr(
                config, "DETECTION_CROSS_CLASS_NMS_THRESHOLD", None)
        self.bbox_std_dev = tuple(float(v) for v in bbox_std_dev)
        self.detection_min_confidence = float(detection_min_confidence)
        self.detection_max_instances = int(detection_max_instances)
        self.detection_nms_threshold = float(detection_nms_threshold)
        self.detection_cross_class_nms_threshold = (
            None if detection_cross_class_nms_threshold is None
            else float(detection_cross_class_nms_threshold))
        if len(self.bbox_std_dev) != 4:
            raise ValueError(f"bbox_std_dev must have 4 values, got {bbox_std_dev}.")
        if self.detection_max_instances < 1:
            raise ValueError(f"detection_max_instances must be >= 1, got {detection_max_instances}.")
        self.built = True

    def call(self, inputs):
        rois, mrcnn_class, mrcnn_bbox, image_meta = inputs
        meta = parse_image_meta_graph(image_meta)
        image_shape = meta["image_shape"][0]
        window = norm_boxes_graph(meta["window"], image_shape[:2])  # [batch, 4] normalized
        return refine_detections(
            rois,
            mrcnn_class,
            mrcnn_bbox,
            window,
            bbox_std_dev=self.bbox_std_dev,
            min_confidence=self.detection_min_confidence,
            max_instances=self.detection_max_instances,
            nms_threshold=self.detection_nms_threshold,
            cross_class_nms_threshold=self.detection_cross_class_nms_threshold,
        )

    def compute_output_spec(self, inputs):
        rois = inputs[0]
        return keras.KerasTensor((rois.shape[0], self.detection_max_instances, 6), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "bbox_std_dev": list(self.bbox_std_dev),
                "detection_min_confidence": self.detection_min_confidence,
                "detection_max_instances": self.detection_max_instances,
                "detection_nms_threshold": self.detection_nms_threshold,
                "detection_cross_class_nms_threshold": self.detection_cross_class_nms_threshold,
            }
        )
        return config
