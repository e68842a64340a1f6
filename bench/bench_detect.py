"""Speed and memory of detect() at 1024x1024 against a bare ResNet-101, COCO config.

    .venv/bin/python bench/bench_detect.py --precision float32        # ratio, RSS, stages
    .venv/bin/python bench/bench_detect.py --precision float32_exact  # today's unfolded path
    .venv/bin/python bench/bench_detect.py --precision bfloat16
    .venv/bin/python bench/bench_detect.py --batch 8                  # 8 images, images/s

The model: ResNet-101, NUM_CLASSES=81, Matterport's defaults otherwise (the
config of mask_rcnn_coco.h5), random He-initialised weights. Timing does not
depend on the values, but the number of detections does, so
DETECTION_MIN_CONFIDENCE is 0: DETECTION_MAX_INSTANCES=100 masks are pasted
(the worst case).

Default mode, in one process and in this order:

1. detect() alone: build, one warm-up call, --runs timed calls; the peak
   resident memory (ru_maxrss) is read here, before anything else is built,
   so it is the memory of detect() and not of the reference model.
2. The reference: ``keras.applications.ResNet101(weights=None,
   include_top=False, input_shape=(S, S, 3))`` run through a tf.function
   with ``training=False`` on a [1, S, S, 3] float32 input (always float32,
   also when detect() runs in bfloat16: the ratio says what bfloat16 buys
   against the float32 backbone). One warm-up call, then --runs pairs of
   (reference, detect()) calls, interleaved so that a change of machine
   load hits both. Prints the two medians and detect()/reference.
3. The stage table: every stage of the inference graph as its own
   tf.function on the real intermediate values (sub-models of the Keras
   model between named layers), median of --runs after a warm-up call, plus
   the NumPy stages (mold, unmold + mask paste). The stages are timed
   apart, so their sum differs a little from one detect() (no overlap, no
   optimization across stage borders). A last row pastes the 100 masks into
   random boxes of 16-512 px (some past the image edge), right after a
   network call as in detect(): the random-weight model's own detections
   are small boxes, real ones are not.

--batch N: N images of different sizes (from 375x500 to 1024x1024), detect()
with one image per network call (BATCH_SIZE 1), then with batch_size=2 and
batch_size=N (one call per molded size and batch: in "square" mode all
images mold to 1024x1024), median of --runs after a warm-up; prints
images/s and the peak RSS so far (which includes the N results' full-size
masks). Memory is per process: run one mode per process.
"""
import argparse
import inspect
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from mrcnn import model as modellib  # noqa: E402
from mrcnn.config import Config  # noqa: E402
from mrcnn.model import paste_masks  # noqa: E402

PRECISIONS = ("float32", "float32_exact", "bfloat16")
BATCH_SIZES = [(480, 640), (640, 480), (600, 800), (768, 1024), (1024, 768), (375, 500),
               (1024, 1024), (720, 960)]


class CocoInferenceConfig(Config):
    NAME = "coco"
    GPU_COUNT = 1
    IMAGES_PER_GPU = 1
    NUM_CLASSES = 1 + 80
    DETECTION_MIN_CONFIDENCE = 0.0


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def make_image(height, width, seed=0):
    """A smooth random uint8 image [height, width, 3] (gives the RPN
    something other than noise)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return (np.cumsum(np.cumsum(image, 0), 1) % 256).astype(np.uint8)


def median_time(fn, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def build_model(precision, resize_mode="square"):
    class C(CocoInferenceConfig):
        INFERENCE_PRECISION = precision
        IMAGE_RESIZE_MODE = resize_mode
    return modellib.MaskRCNN("inference", C(), model_dir="/tmp/mrcnn_bench")


def bare_resnet(size):
    """The float32 reference: keras.applications' ResNet-101 forward as a
    tf.function. Returns (a callable that runs it once on [1, size, size, 3],
    its multiply-accumulates)."""
    net = keras.applications.ResNet101(weights=None, include_top=False,
                                       input_shape=(size, size, 3))
    fn = tf.function(lambda x: net(x, training=False))
    x = tf.constant(np.random.default_rng(1).normal(size=(1, size, size, 3)).astype("f4"))
    return (lambda: fn(x).numpy()), graph_macs(fn.get_concrete_function(x))


def graph_macs(concrete_function):
    """Multiply-accumulates of the convolutions and matrix products of a
    traced function (static shapes): Conv2D output size * kh * kw * C_in,
    MatMul M * N * K, the mask head's transposed conv input size * kh * kw *
    C_out. Everything else (normalization, pooling, NMS) is not counted."""
    macs = 0
    for op in concrete_function.graph.get_operations():
        if op.type == "Conv2D":
            kh, kw, c_in = op.inputs[1].shape[:3]
            macs += int(np.prod(op.outputs[0].shape)) * kh * kw * c_in
        elif op.type in ("MatMul", "BatchMatMulV2"):
            macs += int(np.prod(op.inputs[0].shape)) * op.inputs[1].shape[-1]
        elif op.type == "Conv2DBackpropInput":
            kh, kw, c_out = op.inputs[1].shape[:3]
            macs += int(np.prod(op.inputs[2].shape)) * kh * kw * c_out
    return macs


# ---------------------------------------------------------------------------
# The stage table
# ---------------------------------------------------------------------------

def _c4_name(km):
    return "res4w_out" if "res4w_out" in [layer.name for layer in km.layers] else "res4f_out"


def stage_graphs(km):
    """[(label, input layer names, output layer names)] of the inference graph,
    in execution order. A name "x" means ``km.get_layer(x).output``."""
    c = ["res2c_out", "res3d_out", _c4_name(km), "res5c_out"]
    p = ["fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5"]
    return [
        ("backbone (C2..C5)", ["input_image"], c),
        ("FPN (P2..P6)", c, p + ["fpn_p6"]),
        ("RPN (5 levels)", p + ["fpn_p6"], ["rpn_class", "rpn_bbox"]),
        ("proposals (ROI)", ["rpn_class", "rpn_bbox", "input_anchors"], ["ROI"]),
        ("ROIAlign classifier", ["ROI", "input_image_meta"] + p, ["roi_align_classifier"]),
        ("classifier head", ["roi_align_classifier"], ["mrcnn_class", "mrcnn_bbox"]),
        ("detection layer", ["ROI", "mrcnn_class", "mrcnn_bbox", "input_image_meta"],
         ["mrcnn_detection"]),
        ("ROIAlign mask", ["mrcnn_detection", "input_image_meta"] + p, ["roi_align_mask"]),
        ("mask head", ["roi_align_mask"], ["mrcnn_mask"]),
    ]


def stage_table(model, image, runs):
    """Time each stage on its real inputs. Returns ([(label, seconds)] of
    the stages of detect(), [(label, seconds)] of the synthetic paste)."""
    km = model.keras_model
    molded, metas, windows = model.mold_inputs([image])
    anchors = model.get_anchors(molded[0].shape)[None]
    values = {"input_image": tf.constant(molded, tf.float32),
              "input_image_meta": tf.constant(metas, tf.float32),
              "input_anchors": tf.constant(anchors, tf.float32)}
    rows = [("mold (NumPy)", median_time(lambda: model.mold_inputs([image]), runs), 0)]
    for label, ins, outs in stage_graphs(km):
        in_tensors = [km.get_layer(n).output for n in ins]
        if ins[0] == "mrcnn_detection":
            # the mask ROIAlign pools the detection boxes
            in_tensors[0] = km.get_layer("mrcnn_detection_boxes").output
            ins = ["mrcnn_detection_boxes"] + ins[1:]
            values["mrcnn_detection_boxes"] = values["mrcnn_detection"][..., :4]
        sub = keras.Model(in_tensors, [km.get_layer(n).output for n in outs])
        fn = tf.function(lambda xs, sub=sub: sub(xs, training=False))
        xs = [values[n] for n in ins]
        out = fn(xs)
        out = out if isinstance(out, (list, tuple)) else [out]
        values.update(zip(outs, out))
        rows.append((label, median_time(
            lambda: [np.asarray(o) for o in tf.nest.flatten(fn(xs))], runs),
            graph_macs(fn.get_concrete_function(xs))))
    detections = values["mrcnn_detection"].numpy()[0]
    masks = values["mrcnn_mask"].numpy()[0]
    rows.append(("unmold + mask paste", median_time(lambda: model.unmold_detections(
        detections, masks, image.shape, molded[0].shape, windows[0]), runs), 0))
    # Random-weight detections are small boxes; time the paste of real-sized
    # ones too: these 100 masks into boxes of 16-512 px, some past the edge.
    # Right after a network call, as in detect() (TensorFlow's threads still spin).
    rng = np.random.default_rng(0)
    n = len(masks)
    hw = rng.integers(16, 512, (n, 2))
    y1x1 = rng.integers(-20, image.shape[0] - 10, (n, 2))
    boxes = np.concatenate([y1x1, y1x1 + hw], axis=1)
    chosen = masks[np.arange(n), :, :, rng.integers(1, masks.shape[-1], n)]
    fn = tf.function(lambda xs, sub=sub: sub(xs, training=False))

    def paste_after_network():
        [np.asarray(o) for o in tf.nest.flatten(fn(xs))]
        t = time.perf_counter()
        paste_masks(chosen, boxes, image.shape[:2])
        return time.perf_counter() - t

    paste_after_network()
    times = [paste_after_network() for _ in range(runs)]
    return rows, [(f"mask paste, {n} boxes 16-512px", float(np.median(times)), 0)]


def print_stage_table(rows, extra, detect_s, bare_s, bare_macs):
    """The stage table: median seconds, share, seconds / bare forward, and the
    stage's GMAC (convolutions and matrix products) and GMAC/s."""
    print(f"\n{'stage':30s}median s  share   / bare   GMAC  GMAC/s")
    total = sum(t for _, t, _ in rows)
    macs = sum(m for _, _, m in rows)

    def line(label, t, m, share):
        rate = f"{m / t / 1e9:7.0f}" if m else ""
        gmac = f"{m / 1e9:6.1f}" if m else ""
        print(f"  {label:28s}{t:8.3f}  {share:>6s}  {t / bare_s:6.3f} {gmac:>6s} {rate}")

    for label, t, m in rows:
        line(label, t, m, f"{100 * t / total:5.1f}%")
    line("sum of stages", total, macs, "")
    for label, t, m in extra:
        line(label, t, m, "extra")
    print(f"  one detect(): {detect_s:.3f} s; bare ResNet-101: {bare_s:.3f} s, "
          f"{bare_macs / 1e9:.1f} GMAC, {bare_macs / bare_s / 1e9:.0f} GMAC/s")
    print(f"  GMAC of detect() / GMAC of the bare ResNet-101 = {macs / bare_macs:.2f} "
          f"(the ratio at equal GMAC/s)")


# ---------------------------------------------------------------------------
# Modes
# ---------------------------------------------------------------------------

def single(args):
    model = build_model(args.precision)
    image = make_image(args.size, args.size)
    detect = lambda: model.detect([image])  # noqa: E731
    t = time.perf_counter()
    n = len(detect()[0]["class_ids"])
    warm_s = time.perf_counter() - t
    for _ in range(2):   # peak memory of steady-state calls
        detect()
    rss = peak_rss_gb()
    print(f"precision={args.precision} image={args.size}x{args.size} ResNet-101 "
          f"NUM_CLASSES=81 detections pasted={n}")
    print(f"first detect() (trace + run) {warm_s:.1f} s; peak RSS of detect() alone "
          f"{rss:.2f} GB")

    bare, bare_macs = bare_resnet(args.size)
    bare()
    bare_times, detect_times = [], []
    for _ in range(args.runs):
        bare_times.append(median_time(bare, 1))
        detect_times.append(median_time(detect, 1))
    bare_s, detect_s = float(np.median(bare_times)), float(np.median(detect_times))
    print(f"median of {args.runs} interleaved: bare ResNet-101 float32 {bare_s:.3f} s, "
          f"detect() {detect_s:.3f} s")
    print(f"RATIO detect()/bare ResNet-101 = {detect_s / bare_s:.3f}  "
          f"(precision {args.precision}, peak RSS {rss:.2f} GB)")
    if args.stages:
        print_stage_table(*stage_table(model, image, args.runs), detect_s, bare_s, bare_macs)


def batched(args):
    images = [make_image(h, w, seed=i) for i, (h, w) in enumerate(BATCH_SIZES[:args.batch])]
    while len(images) < args.batch:
        images.append(make_image(800, 600, seed=len(images)))
    model = build_model(args.precision, args.resize_mode)
    has_batch_size = "batch_size" in inspect.signature(model.detect).parameters
    print(f"precision={args.precision} {len(images)} images of sizes "
          f"{[im.shape[:2] for im in images]} (IMAGE_RESIZE_MODE "
          f"{model.config.IMAGE_RESIZE_MODE!r}), BATCH_SIZE {model.config.BATCH_SIZE}")
    modes = [("one image per network call", {})]
    if has_batch_size:
        modes += [(f"detect(images, batch_size={k})", {"batch_size": k})
                  for k in sorted({2, args.batch}) if k > 1]
    for label, kwargs in modes:
        def run():
            return model.detect(images, **kwargs)
        found = run()
        s = median_time(run, args.runs)
        print(f"  {label:34s} {s:7.2f} s for {len(images)} images = "
              f"{len(images) / s:5.3f} images/s  "
              f"({sum(len(r['class_ids']) for r in found)} detections), "
              f"peak RSS so far {peak_rss_gb():.2f} GB")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precision", default="float32", choices=PRECISIONS)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--no-stages", dest="stages", action="store_false",
                        help="skip the per-stage table")
    parser.add_argument("--batch", type=int, default=0,
                        help="time detect() on this many images of different sizes")
    parser.add_argument("--resize-mode", default="square", choices=["square", "pad64"],
                        help="IMAGE_RESIZE_MODE of the --batch mode (pad64: every size "
                             "its own molded shape, so no two images share a call)")
    args = parser.parse_args(argv)
    if args.batch:
        batched(args)
    else:
        single(args)


if __name__ == "__main__":
    main()
