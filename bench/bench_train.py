"""Speed and memory of training: one train step, and the data pipeline.

    .venv/bin/python bench/bench_train.py --case a   # shapes 128x128, batch 8, R101, all layers
    .venv/bin/python bench/bench_train.py --case b   # 1024x1024, batch 1, default config
    .venv/bin/python bench/bench_train.py --case c   # data pipeline, 1024 px, 10 instances

Run one case per process: peak RSS is per process.

(a) Matterport's shapes sample config (128x128 images, IMAGES_PER_GPU 8,
    ResNet-101 as in its default, TRAIN_ROIS_PER_IMAGE 32), layers="all".
(b) Matterport's default Config at 1024x1024 (IMAGES_PER_GPU 1, ResNet-101,
    TRAIN_ROIS_PER_IMAGE 200, POST_NMS_ROIS_TRAINING 2000) with 81 classes (COCO),
    layers="all".
    For (a) and (b) the batch is built once by the real pipeline and fed
    again at every step, so the time is the train step alone (forward,
    backward, SGD update), measured by a Keras callback around each batch;
    the median of --steps steps after --warmup warm-up steps (the first
    includes tracing) is printed with the peak RSS of the process.
(c) ``DataSequence`` throughput: 1024x1024 images with 10 instances each
    (ellipses and rectangles), a horizontal flip + rotation (albumentations),
    mini-masks, RPN targets; images per second of one thread (``seq[i]``
    in a loop), then of the threaded PyDataset enqueuer with --workers.

Random He-initialised weights: the timing does not depend on the values.
Reference (README of the reference folder, same 2-core CPU, Matterport on
Keras 2): (a) 5.9 s and 5.0 GB, (b) 14.8 s and 8.7 GB. Targets: (a) <= 3.0 s,
(b) <= 11 s and <= 6 GB.
"""
import argparse
import os
import resource
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

from mrcnn import model as modellib  # noqa: E402
from mrcnn import training, utils  # noqa: E402
from mrcnn.config import Config  # noqa: E402
from mrcnn.datasets.shapes import ShapesConfig, ShapesDataset  # noqa: E402


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


class ShapesBenchConfig(ShapesConfig):
    """Matterport's samples/shapes config: 128x128, batch 8, ResNet-101."""
    BACKBONE = "resnet101"
    IMAGES_PER_GPU = 8
    TRAIN_ROIS_PER_IMAGE = 32


class BigConfig(Config):
    """Matterport's defaults (1024x1024 square, ResNet-101), COCO's classes."""
    NAME = "big"
    IMAGES_PER_GPU = 1
    NUM_CLASSES = 1 + 80


class BlobsDataset(utils.Dataset):
    """Synthetic 1024x1024 images with ``instances`` ellipses and rectangles."""

    def __init__(self, count, size=1024, instances=10, num_classes=81, seed=0):
        super().__init__()
        for c in range(1, num_classes):
            self.add_class("blobs", c, f"class{c}")
        self.size, self.instances = size, instances
        for i in range(count):
            self.add_image("blobs", image_id=i, path=None, seed=(seed, i))
        self.prepare()

    def load_image(self, image_id):
        rng = np.random.default_rng(self.image_info[image_id]["seed"])
        image = rng.integers(0, 256, (self.size // 8, self.size // 8, 3), dtype=np.uint8)
        return np.kron(image, np.ones((8, 8, 1), np.uint8))  # blocky, 1024 px

    def load_mask(self, image_id):
        rng = np.random.default_rng(self.image_info[image_id]["seed"] + (1,))
        n, s = self.instances, self.size
        yy, xx = np.mgrid[:s, :s]
        masks = np.zeros((s, s, n), bool)
        for k in range(n):
            cy, cx = rng.integers(100, s - 100, 2)
            ry, rx = rng.integers(20, 100, 2)
            if k % 2:
                masks[cy - ry:cy + ry, cx - rx:cx + rx, k] = True
            else:
                masks[..., k] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        return masks, rng.integers(1, self.num_classes, n).astype(np.int32)


class StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._t)


class Repeat(keras.utils.PyDataset):
    """The same batch ``steps`` times (the train step alone is timed)."""

    def __init__(self, batch, steps):
        super().__init__()
        self.batch, self.steps = batch, steps

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        return (self.batch,)


def bench_step(config, dataset, warmup, steps, layers="all"):
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as logs:
        model = modellib.MaskRCNN("training", config, model_dir=logs)
    build_s = time.perf_counter() - t0
    seq = training.DataSequence(dataset, config, steps=1, seed=0)
    (batch,) = seq[0]
    training.set_trainable(model.keras_model, layers, verbose=0)
    training.compile_model(model.keras_model, config.LEARNING_RATE, config.LEARNING_MOMENTUM,
                           config.GRADIENT_CLIP_NORM)
    timer = StepTimer()
    history = model.keras_model.fit(Repeat(batch, warmup + steps), epochs=1, verbose=0,
                                    callbacks=[timer])
    times = np.array(timer.times)
    losses = {k: round(float(v[-1]), 4) for k, v in history.history.items()}
    print(f"build {build_s:.1f} s; first step (tracing) {times[0]:.1f} s")
    print(f"train step: median {np.median(times[warmup:]):.2f} s, min {times[warmup:].min():.2f} s "
          f"over {steps} steps (batch {config.BATCH_SIZE}, {config.BACKBONE}, layers={layers})")
    print(f"peak RSS {peak_rss_gb():.2f} GB; last losses {losses}")


def bench_pipeline(batches, workers):
    import albumentations as A

    config = BigConfig()
    dataset = BlobsDataset(16)
    augmentation = A.Compose([A.HorizontalFlip(p=0.5), A.Rotate(limit=20, p=1.0)])
    seq = training.DataSequence(dataset, config, augmentation=augmentation, steps=batches,
                                batch_size=2, seed=0)
    seq[0]  # warm-up (imports, anchors)
    t = time.perf_counter()
    for i in range(batches):
        seq[i]
    one = 2 * batches / (time.perf_counter() - t)
    print(f"data pipeline, one thread: {one:.2f} images/s (1024x1024, 10 instances, "
          f"flip + rotate, mini-masks, RPN targets)")

    threaded = training.DataSequence(dataset, config, augmentation=augmentation,
                                     steps=batches, batch_size=2, seed=1, workers=workers)
    from keras.src.trainers.data_adapters.py_dataset_adapter import OrderedEnqueuer
    enqueuer = OrderedEnqueuer(threaded, workers=workers, use_multiprocessing=False,
                               max_queue_size=4)
    t = time.perf_counter()
    enqueuer.start()
    for n, _ in enumerate(enqueuer.get()):
        if n + 1 >= batches:
            break
    enqueuer.stop()
    many = 2 * batches / (time.perf_counter() - t)
    print(f"data pipeline, {workers} worker threads: {many:.2f} images/s")
    print(f"peak RSS {peak_rss_gb():.2f} GB")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=["a", "b", "c"], required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.case == "a":
        ds = ShapesDataset()
        ds.load_shapes(64, 128, 128, seed=0)
        ds.prepare()
        bench_step(ShapesBenchConfig(), ds, args.warmup, args.steps)
    elif args.case == "b":
        bench_step(BigConfig(), BlobsDataset(4), args.warmup, args.steps)
    else:
        bench_pipeline(max(args.steps, 4), args.workers)


if __name__ == "__main__":
    main()
