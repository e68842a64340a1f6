"""ProposalLayer: RPN outputs -> region proposals, as a Keras 3 layer."""
import keras

from mrcnn.ops.proposals import generate_proposals

__all__ = ["ProposalLayer"]


@keras.saving.register_keras_serializable(package="mrcnn")
class ProposalLayer(keras.layers.Layer):
    """Selects the top-scoring refined anchors as proposals for the second stage.

    Ranks anchors by RPN foreground probability, keeps the top
    ``pre_nms_limit``, applies the RPN deltas (times ``rpn_bbox_std_dev``),
    clips to the image and runs NMS; see
    :func:`mrcnn.ops.proposals.generate_proposals`. Weightless; identical
    output to Matterport's ProposalLayer.

    Args:
        proposal_count: number of proposals per image (``POST_NMS_ROIS_*``);
            the output is zero padded to this size.
        nms_threshold: NMS IoU threshold (``RPN_NMS_THRESHOLD``).
        pre_nms_limit: anchors kept before NMS (``PRE_NMS_LIMIT``).
        rpn_bbox_std_dev: 4 floats the deltas are multiplied by
            (``RPN_BBOX_STD_DEV``).
        config: accepted only so that Matterport's
            ``ProposalLayer(proposal_count=..., nms_threshold=..., config=config)``
            keeps working. ``PRE_NMS_LIMIT`` and ``RPN_BBOX_STD_DEV`` are read
            from it (overriding the two arguments above); the config itself
            is not kept.

    Inputs: ``[rpn_probs, rpn_bbox, anchors]``
        rpn_probs: [batch, anchors, (bg prob, fg prob)] float32.
        rpn_bbox: [batch, anchors, (dy, dx, log(dh), log(dw))] float32.
        anchors: [batch, anchors, (y1, x1, y2, x2)] normalized float32
            (or [anchors, 4], shared by the batch).

    Output: [batch, proposal_count, (y1, x1, y2, x2)] float32 normalized,
    score descending, zero padded.
    """

    def __init__(
        self,
        proposal_count,
        nms_threshold,
        pre_nms_limit=6000,
        rpn_bbox_std_dev=(0.1, 0.1, 0.2, 0.2),
        config=None,
        **kwargs,
    ):
        # Box arithmetic must stay float32 even under a mixed-precision policy.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if config is not None:
            pre_nms_limit = config.PRE_NMS_LIMIT
            rpn_bbox_std_dev = config.RPN_BBOX_STD_DEV
        self.proposal_count = int(proposal_count)
        self.nms_threshold = float(nms_threshold)
        self.pre_nms_limit = int(pre_nms_limit)
        self.rpn_bbox_std_dev = tuple(float(v) for v in rpn_bbox_std_dev)
        if self.proposal_count < 1:
            raise ValueError(f"proposal_count must be >= 1, got {proposal_count}.")
        if self.pre_nms_limit < 1:
            raise ValueError(f"pre_nms_limit must be >= 1, got {pre_nms_limit}.")
        if len(self.rpn_bbox_std_dev) != 4:
            raise ValueError(f"rpn_bbox_std_dev must have 4 values, got {rpn_bbox_std_dev}.")
        self.built = True

    def call(self, inputs):
        rpn_probs, rpn_bbox, anchors = inputs
        return generate_proposals(
            rpn_probs,
            rpn_bbox,
            anchors,
            proposal_count=self.proposal_count,
            nms_threshold=self.nms_threshold,
            pre_nms_limit=self.pre_nms_limit,
            rpn_bbox_std_dev=self.rpn_bbox_std_dev,
        )

    def compute_output_spec(self, inputs):
        rpn_probs = inputs[0]
        return keras.KerasTensor((rpn_probs.shape[0], self.proposal_count, 4), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "proposal_count": self.proposal_count,
                "nms_threshold": self.nms_threshold,
                "pre_nms_limit": self.pre_nms_limit,
                "rpn_bbox_std_dev": list(self.rpn_bbox_std_dev),
            }
        )
        return config
