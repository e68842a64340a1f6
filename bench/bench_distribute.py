"""Training throughput over CPU replicas and precisions: steps/s, images/s,
peak RSS.

    # one configuration per process (peak RSS is per process)
    .venv/bin/python bench/bench_distribute.py --case shapes --replicas 2 --precision mixed_bfloat16
    # every combination, each in its own process, then a table
    .venv/bin/python bench/bench_distribute.py --all --case shapes --case 1024

Cases (the models of bench/bench_train.py):

* ``shapes``: Matterport's shapes sample config, 128x128, IMAGES_PER_GPU 8,
  ResNet-101, TRAIN_ROIS_PER_IMAGE 32, layers="all".
* ``1024``: Matterport's default Config at 1024x1024, IMAGES_PER_GPU 1,
  ResNet-101, 81 classes, layers="all".
* ``tiny``: the 64x64 test config of tests/distribute_helpers.py (a smoke
  run of this script, seconds per step).

``--replicas 1``: no strategy (the single-device path). ``--replicas N``:
``MirroredStrategy`` over N logical CPU devices
(``tf.config.set_logical_device_configuration``), which share the machine's
cores: on one CPU this measures the overhead of the strategy (per-replica
graphs, all-reduces, the data split), not a speed-up; on N GPUs the same
code runs one replica per GPU. Weak scaling by default: IMAGES_PER_GPU
images per replica, so the global batch is N times bigger
(``--global-batch B`` fixes the global batch instead).

``--precision``: TRAIN_PRECISION. ``mixed_bfloat16`` is fast on CPUs with
AVX-512 BF16 / AMX; ``mixed_float16`` has no fast CPU kernels (it is for
GPUs) and is much slower here: expect minutes per 1024 step.

The global batch is built once by the real pipeline (``DataSequence``) and
fed again at every step, so the time is the train step alone; the median of
--steps steps after --warmup warm-up steps (the first one traces) is
reported, with the peak RSS of the process. Random weights.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
CASES = ("shapes", "1024", "tiny")


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def make_case(case, precision, images_per_replica=None):
    """(config, dataset) of a case, with TRAIN_PRECISION ``precision``."""
    import bench_train
    from mrcnn.datasets.shapes import ShapesDataset
    if case == "shapes":
        base, dataset = bench_train.ShapesBenchConfig, ShapesDataset()
        dataset.load_shapes(64, 128, 128, seed=0)
        dataset.prepare()
    elif case == "1024":
        base, dataset = bench_train.BigConfig, bench_train.BlobsDataset(8)
    else:
        from tests import distribute_helpers as H
        base, dataset = H.TinyShapesConfig, H.shapes(16, seed=0)
    fields = {"TRAIN_PRECISION": precision, "GPU_COUNT": 1}
    if images_per_replica is not None:
        fields["IMAGES_PER_GPU"] = int(images_per_replica)
    return type(base.__name__, (base,), fields)(), dataset


def run_one(args):
    """One configuration in this process; prints one JSON line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    if args.replicas > 1:
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0],
            [tf.config.LogicalDeviceConfiguration()] * args.replicas)
    import bench_train
    from mrcnn import distribute, precision, training
    from mrcnn import model as modellib

    per_replica = None
    if args.global_batch:
        if args.global_batch % args.replicas:
            raise SystemExit(f"--global-batch {args.global_batch} does not divide among "
                             f"{args.replicas} replicas.")
        per_replica = args.global_batch // args.replicas
    config, dataset = make_case(args.case, args.precision, per_replica)
    strategy = None
    if args.replicas > 1:
        strategy = tf.distribute.MirroredStrategy(
            [f"/cpu:{i}" for i in range(args.replicas)])
    global_batch = distribute.global_batch_size(config, strategy)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as logs:
        model = modellib.MaskRCNN("training", config, model_dir=logs, strategy=strategy)
    build_s = time.perf_counter() - t0
    seq = training.DataSequence(dataset, config, steps=1, batch_size=global_batch, seed=0)
    (batch,) = seq[0]
    training.set_trainable(model.keras_model, "all", verbose=0)
    training.compile_model(model.keras_model, config.LEARNING_RATE, config.LEARNING_MOMENTUM,
                           config.GRADIENT_CLIP_NORM)
    timer = bench_train.StepTimer()
    history = model.keras_model.fit(bench_train.Repeat(batch, args.warmup + args.steps),
                                    epochs=1, verbose=0, shuffle=False, callbacks=[timer])
    times = np.array(timer.times)
    step = float(np.median(times[args.warmup:]))
    result = {
        "case": args.case, "replicas": args.replicas, "precision": args.precision,
        "global_batch": global_batch, "images_per_replica": int(config.IMAGES_PER_GPU),
        "build_s": round(build_s, 2), "first_step_s": round(float(times[0]), 2),
        "step_s": round(step, 3), "steps_per_s": round(1.0 / step, 4),
        "images_per_s": round(global_batch / step, 3), "peak_rss_gb": round(peak_rss_gb(), 2),
        "steps": args.steps, "loss": round(float(history.history["loss"][-1]), 4),
        "loss_scale": precision.loss_scale(model.keras_model.optimizer),
    }
    print("RESULT " + json.dumps(result), flush=True)
    return result


def run_all(args):
    """Every (case, replicas, precision) in its own process, then a table."""
    rows = []
    for case in args.case:
        for replicas in args.replicas_list:
            for prec in args.precision_list:
                cmd = [sys.executable, os.path.abspath(__file__), "--case", case,
                       "--replicas", str(replicas), "--precision", prec,
                       "--steps", str(args.steps), "--warmup", str(args.warmup)]
                if args.global_batch:
                    cmd += ["--global-batch", str(args.global_batch)]
                print("$ " + " ".join(cmd[1:]), flush=True)
                out = subprocess.run(cmd, capture_output=True, text=True)
                lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
                if out.returncode or not lines:
                    print(out.stdout[-2000:] + out.stderr[-2000:])
                    rows.append({"case": case, "replicas": replicas, "precision": prec,
                                 "error": f"exit {out.returncode}"})
                    continue
                rows.append(json.loads(lines[-1][len("RESULT "):]))
    header = ("case", "replicas", "precision", "global_batch", "step_s", "steps_per_s",
              "images_per_s", "first_step_s", "peak_rss_gb")
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        if "error" in row:
            print(f"| {row['case']} | {row['replicas']} | {row['precision']} | "
                  f"{row['error']} |" + " |" * (len(header) - 4))
        else:
            print("| " + " | ".join(str(row[h]) for h in header) + " |")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", action="append", choices=CASES,
                        help="shapes, 1024 or tiny (repeat with --all)")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--global-batch", type=int, default=None,
                        help="fix the global batch (strong scaling) instead of "
                             "IMAGES_PER_GPU per replica")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--all", action="store_true",
                        help="every case given x replicas 1, 2 x every precision, one "
                             "process each")
    parser.add_argument("--replicas-list", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precision-list", nargs="+", choices=PRECISIONS,
                        default=list(PRECISIONS))
    args = parser.parse_args(argv)
    args.case = args.case or ["shapes"]
    if args.all:
        return run_all(args)
    if len(args.case) != 1:
        parser.error("one --case per run without --all")
    args.case = args.case[0]
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be >= 1 (the first step traces)")
    return run_one(args)


if __name__ == "__main__":
    main()
