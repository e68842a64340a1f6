"""Speed and memory of detect() on one 1024x1024 image, COCO inference config.

    .venv/bin/python bench/bench_detect.py [--precision float32|bfloat16] [--runs 5]

ResNet-101, NUM_CLASSES=81, Matterport's defaults otherwise (the config of
mask_rcnn_coco.h5), random He-initialised weights (timing does not depend on
the values; the number of detections does, so DETECTION_MIN_CONFIDENCE is 0
to paste the full DETECTION_MAX_INSTANCES=100 masks, the worst case).

Prints the median of --runs timed calls after one warm-up call, per stage:
mold (resize + normalize), network (the compiled forward pass), unmold (boxes
and mask pasting), and the peak resident memory of the process. Run one
precision per process: peak RSS is per process.
"""
import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mrcnn import model as modellib  # noqa: E402
from mrcnn.config import Config  # noqa: E402


class CocoInferenceConfig(Config):
    NAME = "coco"
    GPU_COUNT = 1
    IMAGES_PER_GPU = 1
    NUM_CLASSES = 1 + 80
    DETECTION_MIN_CONFIDENCE = 0.0


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--stages", action="store_true",
                        help="also time the network stage by stage (sub-models)")
    args = parser.parse_args(argv)

    class C(CocoInferenceConfig):
        INFERENCE_PRECISION = args.precision

    config = C()
    t0 = time.perf_counter()
    model = modellib.MaskRCNN("inference", config, model_dir="/tmp/mrcnn_bench")
    build_s = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(args.size, args.size, 3), dtype=np.uint8)
    # A smooth image gives the RPN something other than noise.
    image = np.cumsum(np.cumsum(image, 0), 1) % 256
    image = image.astype(np.uint8)

    def timed_detect():
        stages = {}
        t = time.perf_counter()
        molded, metas, windows = model.mold_inputs([image])
        stages["mold"] = time.perf_counter() - t
        t = time.perf_counter()
        detections, masks = model._run_molded(molded, metas)
        stages["network"] = time.perf_counter() - t
        t = time.perf_counter()
        r = model.unmold_detections(detections[0], masks[0], image.shape, molded[0].shape,
                                    windows[0])
        stages["unmold"] = time.perf_counter() - t
        n = len(r[0])
        del detections, masks, r  # peak RSS is of one detect(), not of kept results
        t = time.perf_counter()
        model.detect([image])
        stages["detect"] = time.perf_counter() - t
        return stages, n

    t = time.perf_counter()
    timed_detect()
    warm_s = time.perf_counter() - t
    runs = [timed_detect() for _ in range(args.runs)]
    med = {k: float(np.median([r[0][k] for r in runs])) for k in runs[0][0]}
    n = runs[-1][1]
    print(f"precision={args.precision} image={args.size}x{args.size} ResNet-101 NUM_CLASSES=81 "
          f"detections={n}")
    print(f"build {build_s:.1f} s, first call (trace + run) {warm_s:.1f} s")
    print(f"median of {args.runs}: detect() {med['detect']:.2f} s = mold {med['mold']:.3f} s "
          f"+ network {med['network']:.2f} s + unmold/paste {med['unmold']:.3f} s")
    print(f"peak RSS {peak_rss_gb():.2f} GB")
    if args.stages:
        stage_breakdown(model, image, args.runs)


def stage_breakdown(model, image, runs):
    """Time sub-models of the inference graph that end at successive stages;
    the difference between two is the cost of the stage in between."""
    import keras
    import tensorflow as tf

    km = model.keras_model
    ends = [
        ("backbone (C2..C5)", ["res5c_out"]),
        ("+ FPN (P2..P6)", ["fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5", "fpn_p6"]),
        ("+ RPN", ["rpn_class", "rpn_bbox"]),
        ("+ proposals", ["ROI"]),
        ("+ classifier head", ["mrcnn_class", "mrcnn_bbox"]),
        ("+ detection layer", ["mrcnn_detection"]),
        ("+ mask head (all)", ["mrcnn_detection", "mrcnn_mask"]),
    ]
    molded, metas, _ = model.mold_inputs([image])
    anchors = model.get_anchors(molded[0].shape)[None]
    inputs = [tf.constant(molded, tf.float32), tf.constant(metas, tf.float32),
              tf.constant(anchors)]
    previous = 0.0
    print("network stages (median of %d, cumulative -> stage cost):" % runs)
    for label, names in ends:
        sub = keras.Model(km.inputs, [km.get_layer(n).output for n in names])
        fn = tf.function(lambda x, sub=sub: sub(x, training=False))
        fn(inputs)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            out = fn(inputs)
            [np.asarray(o) for o in tf.nest.flatten(out)]
            times.append(time.perf_counter() - t)
        med = float(np.median(times))
        print(f"  {label:22s} {med:6.2f} s  -> {med - previous:5.2f} s")
        previous = med


if __name__ == "__main__":
    main()
