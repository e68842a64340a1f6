"""Crash safety with real processes (issue 14, item 3): a training process
is killed with SIGKILL during an epoch and during a checkpoint write, and a
damaged newest checkpoint is met; each time find_last() + load_weights +
train() resume at the right epoch, at the same point of the learning-rate
schedule, with losses that continue. tests/crash_train.py is the training
process (about 17 s each on 2 cores: TensorFlow import, build, trace)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mrcnn import checkpoints
from tests import crash_train

HERE = os.path.dirname(os.path.abspath(__file__))

NAME = "cpu_shapes"
EPOCHS = 3
STEPS = crash_train.STEPS


def read_progress(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def start(logs, progress, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, os.path.join(HERE, "crash_train.py"), str(logs), str(progress),
         "--epochs", str(EPOCHS), *args],
        cwd=os.path.dirname(HERE), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def kill_when_stalled(proc, progress, timeout=150):
    """SIGKILL the process once it reports it is stalled where asked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = [e for e in read_progress(progress) if e["pid"] == proc.pid]
        stalled = [e for e in events if e["event"] == "stalled"]
        if stalled:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            assert proc.returncode == -signal.SIGKILL
            return stalled[0], events
        if proc.poll() is not None:
            pytest.fail(f"the training process ended before stalling:\n{proc.stdout.read()}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail("the training process did not reach the stall point in time")


def expected_rate(step):
    import keras  # noqa: F401 (the schedule is a Keras object)
    from mrcnn import demo
    from mrcnn.recipes import CpuShapesConfig, learning_rate_schedule
    config = demo.make_config(CpuShapesConfig, **crash_train.TINY)
    total, peak = crash_train.schedule_args(EPOCHS)
    return float(learning_rate_schedule(config, total_steps=total, peak=peak)(step))


@pytest.mark.slow
def test_kill_during_an_epoch_and_during_a_write_then_resume(tmp_path):
    logs, progress = tmp_path / "logs", tmp_path / "progress.jsonl"
    timings = {}

    # 1. Killed in the middle of epoch 2 (its second step).
    t = time.monotonic()
    first = start(logs, progress, "--stall-batch", "2:1")
    stalled, events = kill_when_stalled(first, progress)
    timings["killed during epoch 2"] = time.monotonic() - t
    assert stalled["where"] == "batch:2:1"
    fresh_loss = [e["loss"] for e in events if e["event"] == "batch"][0]
    (run,) = [d for d in os.listdir(logs) if d.startswith(NAME)]
    run = logs / run
    assert [e for e, _ in checkpoints.run_checkpoints(run, NAME)] == [1]
    last = checkpoints.find_last(str(logs), NAME)
    assert last.endswith("mask_rcnn_cpu_shapes_0001.h5")

    # 2. Resumed from epoch 1; killed halfway through writing checkpoint 3.
    t = time.monotonic()
    second = start(logs, progress, "--resume", "--stall-write", "3")
    stalled, events = kill_when_stalled(second, progress)
    timings["resumed, killed during write 3"] = time.monotonic() - t
    resumed = [e for e in events if e["event"] == "resumed"][0]
    assert resumed["path"] == last and resumed["epoch"] == 1
    begin = [e for e in events if e["event"] == "start"][0]
    assert begin["epoch"] == 1 and begin["iterations"] == 1 * STEPS
    batches = [e for e in events if e["event"] == "batch"]
    assert [(e["epoch"], e["batch"], e["iterations"]) for e in batches] == [
        (2, 0, 3), (2, 1, 4), (2, 2, 5), (3, 0, 6), (3, 1, 7), (3, 2, 8)]
    # the schedule continues where it was: step 3 of 9, not step 0
    assert [e["lr"] for e in batches] == pytest.approx(
        [expected_rate(s) for s in range(3, 9)], rel=1e-5)
    assert all(np.isfinite(e["loss"]) for e in batches)
    # the losses continue from the trained weights, not from fresh ones
    assert batches[0]["loss"] < 0.85 * fresh_loss, (batches[0]["loss"], fresh_loss)
    temp = stalled["where"].split("write:", 1)[1]
    assert os.path.basename(temp).startswith(".mask_rcnn_cpu_shapes_0003.h5.")
    assert os.path.exists(temp) and os.path.getsize(temp) > 0        # left half-written
    assert [e for e, _ in checkpoints.run_checkpoints(run, NAME)] == [1, 2]
    assert checkpoints.find_last(str(logs), NAME).endswith("_0002.h5")

    # 3. The newest checkpoint damaged (a copy cut short by another tool):
    #    find_last() skips it with a warning and resumes from epoch 2.
    damaged = run / "mask_rcnn_cpu_shapes_0003.h5"
    shutil.copy(run / "mask_rcnn_cpu_shapes_0002.h5", damaged)
    with open(damaged, "r+b") as f:
        f.truncate(os.path.getsize(damaged) // 3)
    assert "truncated" in checkpoints.checkpoint_problem(damaged)
    t = time.monotonic()
    third = start(logs, progress, "--resume")
    output, _ = third.communicate(timeout=180)
    timings["resumed to the end"] = time.monotonic() - t
    assert third.returncode == 0, output
    assert "find_last: skipping" in output and "mask_rcnn_cpu_shapes_0003.h5" in output
    events = [e for e in read_progress(progress) if e["pid"] == third.pid]
    resumed = [e for e in events if e["event"] == "resumed"][0]
    assert resumed["path"].endswith("_0002.h5") and resumed["epoch"] == 2
    batches = [e for e in events if e["event"] == "batch"]
    assert [e["iterations"] for e in batches] == [6, 7, 8]
    assert [e["lr"] for e in batches] == pytest.approx(
        [expected_rate(s) for s in (6, 7, 8)], rel=1e-5)
    assert all(np.isfinite(e["loss"]) for e in batches)
    assert batches[0]["loss"] < 0.85 * fresh_loss
    assert events[-1] == dict(events[-1], event="done", epoch=3)
    # checkpoint 3 written whole over the damaged one; the killed writer's
    # temporary file removed; the default policy keeps the last three
    assert checkpoints.checkpoint_problem(damaged) is None
    assert not os.path.exists(temp)
    assert sorted(f for f in os.listdir(run) if f.endswith(".h5") or f.endswith(".tmp")) == [
        f"mask_rcnn_cpu_shapes_000{e}.h5" for e in (1, 2, 3)]
    assert checkpoints.find_last(str(logs), NAME) == str(damaged)
    print("crash-test timings (s):", {k: round(v, 1) for k, v in timings.items()})
