"""Matterport's ``ParallelModel`` (multi-GPU towers), kept as an import path.

Matterport split each batch over GPU_COUNT towers by hand; that code was its
most fragile part and does not exist here. TensorFlow's ``tf.distribute``
does the job: build and train the model under a strategy's scope (the README
section "Training on several GPUs or machines" shows how). Creating a
``ParallelModel`` raises an error that says so.
"""

__all__ = ["ParallelModel"]


class ParallelModel:
    """Not available: use ``tf.distribute`` (see the module docstring)."""

    def __init__(self, keras_model=None, gpu_count=None):
        raise NotImplementedError(
            "mrcnn.parallel_model.ParallelModel is not provided: train on several GPUs "
            "with tf.distribute (build MaskRCNN and call train() under "
            "`with tf.distribute.MirroredStrategy().scope():`); see the README.")
