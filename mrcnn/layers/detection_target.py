"""DetectionTargetLayer: Matterport's training-target sampler as a Keras 3 layer."""
import keras

from mrcnn.ops.targets import detection_targets

__all__ = ["DetectionTargetLayer"]

# Constructor argument -> Matterport Config field, for DetectionTargetLayer(config).
_CONFIG_FIELDS = {
    "train_rois_per_image": "TRAIN_ROIS_PER_IMAGE",
    "roi_positive_ratio": "ROI_POSITIVE_RATIO",
    "mask_shape": "MASK_SHAPE",
    "use_mini_mask": "USE_MINI_MASK",
    "bbox_std_dev": "BBOX_STD_DEV",
}


@keras.saving.register_keras_serializable(package="mrcnn")
class DetectionTargetLayer(keras.layers.Layer):
    """Subsamples proposals and generates the heads' targets (training only).

    For each image: positives are proposals with IoU >= 0.5 with a gt box (at
    most ``int(train_rois_per_image * roi_positive_ratio)``, random subset),
    negatives have IoU < 0.5 and do not touch a crowd box (as many as keep the
    positive ratio), the rest is zero padding. See
    :func:`mrcnn.ops.targets.detection_targets` for the exact rules.
    Weightless; its outputs are targets, so no gradient flows through them.

    Args:
        train_rois_per_image: T, rows per image of every output
            (``Config.TRAIN_ROIS_PER_IMAGE``).
        roi_positive_ratio: fraction of positives (``ROI_POSITIVE_RATIO``).
        mask_shape: (height, width) of the mask targets (``MASK_SHAPE``).
        use_mini_mask: whether gt masks are mini-masks (``USE_MINI_MASK``).
        bbox_std_dev: 4 floats dividing the deltas (``BBOX_STD_DEV``).
        config: Matterport compatibility only: ``DetectionTargetLayer(config)``
            reads the five values above from a Config (explicit arguments win).
            The Config itself is not kept.
        seed: optional int seed of the random subsampling.

    Inputs: ``[proposals, gt_class_ids, gt_boxes, gt_masks]``
        proposals: [batch, num_proposals, (y1, x1, y2, x2)] float32,
            normalized, zero padded.
        gt_class_ids: [batch, MAX_GT_INSTANCES] int32; 0 padding, < 0 crowd.
        gt_boxes: [batch, MAX_GT_INSTANCES, (y1, x1, y2, x2)] float32,
            normalized, zero padded.
        gt_masks: [batch, height, width, MAX_GT_INSTANCES] bool (full size, or
            MINI_MASK_SHAPE with mini-masks).

    Outputs: ``[rois, target_class_ids, target_deltas, target_masks]``
        rois: [batch, T, (y1, x1, y2, x2)] float32, normalized, zero padded.
        target_class_ids: [batch, T] int32, 0 for negatives and padding.
        target_deltas: [batch, T, (dy, dx, log(dh), log(dw))] float32,
            divided by ``bbox_std_dev``.
        target_masks: [batch, T, mask_height, mask_width] float32 0/1.
    Rows are positives first, then negatives, then padding.
    """

    def __init__(self, train_rois_per_image=None, roi_positive_ratio=None,
                 mask_shape=None, use_mini_mask=None, bbox_std_dev=None,
                 config=None, seed=None, **kwargs):
        # Matterport: DetectionTargetLayer(config, name="proposal_targets").
        if config is None and hasattr(train_rois_per_image, "TRAIN_ROIS_PER_IMAGE"):
            config, train_rois_per_image = train_rois_per_image, None
        # Boxes must stay float32 (IoU thresholds, crop positions).
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        values = {
            "train_rois_per_image": train_rois_per_image,
            "roi_positive_ratio": roi_positive_ratio,
            "mask_shape": mask_shape,
            "use_mini_mask": use_mini_mask,
            "bbox_std_dev": bbox_std_dev,
        }
        for arg, field in _CONFIG_FIELDS.items():
            if values[arg] is None and config is not None:
                values[arg] = getattr(config, field)
            if values[arg] is None:
                raise ValueError(
                    f"DetectionTargetLayer: `{arg}` is required (Config field {field}); "
                    f"pass it explicitly or pass config=.")
        self.train_rois_per_image = int(values["train_rois_per_image"])
        self.roi_positive_ratio = float(values["roi_positive_ratio"])
        self.mask_shape = tuple(int(s) for s in values["mask_shape"])
        self.use_mini_mask = bool(values["use_mini_mask"])
        self.bbox_std_dev = tuple(float(s) for s in values["bbox_std_dev"])
        self.seed = None if seed is None else int(seed)
        if self.train_rois_per_image < 1:
            raise ValueError(f"train_rois_per_image must be >= 1, got {self.train_rois_per_image}.")
        if not 0.0 < self.roi_positive_ratio <= 1.0:
            raise ValueError(f"roi_positive_ratio must be in (0, 1], got {self.roi_positive_ratio}.")
        if len(self.mask_shape) != 2 or min(self.mask_shape) < 1:
            raise ValueError(f"mask_shape must be (height, width), got {self.mask_shape}.")
        if len(self.bbox_std_dev) != 4:
            raise ValueError(f"bbox_std_dev must have 4 values, got {self.bbox_std_dev}.")
        self.built = True

    def call(self, inputs):
        proposals, gt_class_ids, gt_boxes, gt_masks = inputs
        return list(detection_targets(
            proposals, gt_class_ids, gt_boxes, gt_masks,
            self.train_rois_per_image, self.roi_positive_ratio, self.mask_shape,
            self.use_mini_mask, self.bbox_std_dev, seed=self.seed))

    def compute_output_spec(self, inputs):
        batch = inputs[0].shape[0]
        t = self.train_rois_per_image
        return [
            keras.KerasTensor((batch, t, 4), dtype="float32"),
            keras.KerasTensor((batch, t), dtype="int32"),
            keras.KerasTensor((batch, t, 4), dtype="float32"),
            keras.KerasTensor((batch, t) + self.mask_shape, dtype="float32"),
        ]

    def compute_mask(self, inputs, mask=None):
        return [None, None, None, None]

    def get_config(self):
        config = super().get_config()
        config.update({
            "train_rois_per_image": self.train_rois_per_image,
            "roi_positive_ratio": self.roi_positive_ratio,
            "mask_shape": list(self.mask_shape),
            "use_mini_mask": self.use_mini_mask,
            "bbox_std_dev": list(self.bbox_std_dev),
            "seed": self.seed,
        })
        return config
