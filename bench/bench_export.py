"""Latency of the exported SavedModel beside detect(), one 1024x1024 image.

    .venv/bin/python bench/bench_export.py [--precision float32 bfloat16] [--runs 5]
                                           [--size 1024] [--keep DIR]

The COCO inference config of bench_detect.py (ResNet-101, NUM_CLASSES=81,
Matterport's defaults, DETECTION_MIN_CONFIDENCE 0 so all 100 masks are
pasted: the worst case), random He-initialised weights. For each precision:
build the model, time ``detect([image])``, export it, then time the export's
``serving_default`` in a fresh process that cannot import mrcnn (what a
serving machine runs: TensorFlow only). Both: the median of --runs calls
after one warm-up call (the warm-up traces/loads; its time is printed too).
The script also checks that the two give the same detections.

Each precision runs in its own process for the export timing, but detect()
of both precisions shares this process (peak memory is not reported here;
bench_detect.py does that).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
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


# Timing of the export in a process without mrcnn: argv = export_dir image.npy runs
SERVING_TIMER = r'''
import json, sys, time
for blocked in ("mrcnn", "keras"):
    sys.modules[blocked] = None
import numpy as np
import tensorflow as tf

path, image_path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
image = tf.constant(np.load(image_path))
t = time.perf_counter()
fn = tf.saved_model.load(path).signatures["serving_default"]
load_s = time.perf_counter() - t
t = time.perf_counter()
out = fn(image=image)
warm_s = time.perf_counter() - t
times = []
for _ in range(runs):
    t = time.perf_counter()
    out = fn(image=image)
    out = {k: v.numpy() for k, v in out.items()}
    times.append(time.perf_counter() - t)
np.savez(image_path + ".out.npz", **out)
print("TIMES " + json.dumps({"load_s": load_s, "warm_s": warm_s, "median_s": float(np.median(times)),
                             "n": int(len(out["rois"]))}))
'''


def bench(precision, image, runs, workdir):
    class C(CocoInferenceConfig):
        INFERENCE_PRECISION = precision

    t = time.perf_counter()
    model = modellib.MaskRCNN("inference", C(), model_dir=os.path.join(workdir, "logs"))
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    model.detect([image])
    detect_warm_s = time.perf_counter() - t
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        ref = model.detect([image])[0]
        times.append(time.perf_counter() - t)
    detect_s = float(np.median(times))

    path = os.path.join(workdir, f"export_{precision}", "1")
    t = time.perf_counter()
    model.export(path, overwrite=True)
    export_s = time.perf_counter() - t
    del model

    script = os.path.join(workdir, "serving_timer.py")
    with open(script, "w") as f:
        f.write(SERVING_TIMER)
    image_path = os.path.join(workdir, "image.npy")
    np.save(image_path, image)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, script, path, image_path, str(runs)],
                          capture_output=True, text=True, env=env, cwd=workdir)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    served = json.loads(proc.stdout.split("TIMES ", 1)[1])
    got = np.load(image_path + ".out.npz")
    same = (len(got["rois"]) == len(ref["rois"])
            and np.array_equal(got["rois"], ref["rois"])
            and np.array_equal(got["class_ids"], ref["class_ids"])
            and float(np.abs(got["scores"] - ref["scores"]).max(initial=0)) <= 1e-4)
    return {"precision": precision, "build_s": build_s, "detect_warm_s": detect_warm_s,
            "detect_s": detect_s, "export_write_s": export_s, "detections": len(ref["rois"]),
            "same_detections": bool(same), **{f"export_{k}": v for k, v in served.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"],
                        choices=["float32", "bfloat16"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--keep", metavar="DIR", help="keep the exports in DIR")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(args.size, args.size, 3), dtype=np.uint8)
    image = (np.cumsum(np.cumsum(image, 0), 1) % 256).astype(np.uint8)   # as bench_detect
    workdir = args.keep or tempfile.mkdtemp(prefix="mrcnn_bench_export_")
    os.makedirs(workdir, exist_ok=True)
    rows = [bench(p, image, args.runs, workdir) for p in args.precision]
    print(f"image {args.size}x{args.size}, ResNet-101, NUM_CLASSES=81, "
          f"median of {args.runs} after one warm-up call")
    print(f"{'precision':10s} {'detect()':>9s} {'export':>9s}   detections  same  "
          f"(export: write / load / first call)")
    for r in rows:
        print(f"{r['precision']:10s} {r['detect_s']:8.2f}s {r['export_median_s']:8.2f}s   "
              f"{r['detections']:10d}  {'yes' if r['same_detections'] else 'NO':4s}  "
              f"({r['export_write_s']:.0f} s / {r['export_load_s']:.1f} s / "
              f"{r['export_warm_s']:.1f} s)")
    print(json.dumps(rows))
    if not args.keep:
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
