"""Checkpoint policy (keep the last N, the best, every K epochs), a full
disk, and find_last() on damaged files (issue 14, items 3 and 4). A small
Keras model stands in for Mask R-CNN: the files are the same Keras 2 layout."""
import errno
import logging
import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest

from mrcnn import checkpoints, training, weight_files, weights


def small_model():
    x = keras.Input((4,))
    y = keras.layers.Dense(3, name="dense_a")(x)
    y = keras.layers.Dense(2, name="dense_b")(y)
    return keras.Model(x, y)


@pytest.fixture()
def run(tmp_path):
    """A run folder in Matterport's layout and a Checkpoint factory for it."""
    log_dir, path, _ = checkpoints.log_dir_for(str(tmp_path), "tiny")
    model = small_model()

    def make(epochs=10, **kwargs):
        cb = training.Checkpoint(path, **kwargs)
        cb.set_model(model)
        cb.set_params({"epochs": epochs})
        cb.on_train_begin()
        return cb
    return log_dir, path, model, make


def epochs_on_disk(log_dir):
    return [e for e, _ in checkpoints.run_checkpoints(log_dir, "tiny")]


def test_default_keeps_the_last_three(run):
    log_dir, _, _, make = run
    assert checkpoints.KEEP_LAST == 3
    cb = make()
    for epoch in range(10):
        cb.on_epoch_end(epoch, {"loss": 1.0})
        assert epochs_on_disk(log_dir) == list(range(max(1, epoch - 1), epoch + 2))
    assert len(cb.saved) == 10 and len(cb.deleted) == 7
    assert sorted(os.listdir(log_dir)) == [f"mask_rcnn_tiny_{e:04d}.h5" for e in (8, 9, 10)]


def test_keep_all_as_matterport(run):
    log_dir, _, _, make = run
    cb = make(keep_last=None)
    for epoch in range(5):
        cb.on_epoch_end(epoch, {})
    assert epochs_on_disk(log_dir) == [1, 2, 3, 4, 5]


def test_keep_best_by_validation_loss_also_across_calls(run):
    log_dir, _, _, make = run
    val = [5.0, 3.0, 4.0, 2.5, 2.6, 2.7, 2.8, 9.0]
    cb = make(epochs=8, keep_last=2, keep_best=True)
    for epoch, v in enumerate(val):
        cb.on_epoch_end(epoch, {"loss": 1.0, "val_loss": v})
    assert cb.best == 2.5 and cb.best_path.endswith("mask_rcnn_tiny_0004.h5")
    assert epochs_on_disk(log_dir) == [4, 7, 8]
    assert checkpoints.checkpoint_metrics(cb.best_path) == {"loss": 1.0, "val_loss": 2.5}
    with h5py.File(cb.best_path, "r") as f:
        assert int(f.attrs["mrcnn_epoch"]) == 4
    # A later train() into the same run folder knows the best so far
    again = make(epochs=10, keep_last=2, keep_best=True)
    assert again.best == 2.5 and again.best_path == cb.best_path
    again.on_epoch_end(8, {"val_loss": 3.0})
    assert epochs_on_disk(log_dir) == [4, 8, 9]
    again.on_epoch_end(9, {"val_loss": 1.0})    # a new best: the old one may go
    assert epochs_on_disk(log_dir) == [9, 10] and again.best_path.endswith("_0010.h5")


def test_save_every_k_epochs_and_the_last(run):
    log_dir, _, _, make = run
    cb = make(epochs=10, save_every=4, keep_last=None)
    for epoch in range(10):
        cb.on_epoch_end(epoch, {"val_loss": 1.0})
    assert epochs_on_disk(log_dir) == [4, 8, 10]
    # with keep_best, an improving epoch is written even when not due
    log = make(epochs=14, save_every=4, keep_last=1, keep_best=True)
    assert log.best == 1.0
    for epoch, v in zip(range(10, 14), (2.0, 0.5, 3.0, 4.0)):
        log.on_epoch_end(epoch, {"val_loss": v})
    assert epochs_on_disk(log_dir) == [12, 14]


@pytest.mark.parametrize("kwargs, match", [
    (dict(keep_last=0), "keep_last must be None"), (dict(keep_last=2.5), "keep_last"),
    (dict(save_every=0), "save_every must be an integer >= 1")])
def test_bad_policy_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        training.Checkpoint("x/mask_rcnn_t_{epoch:04d}.h5", **kwargs)


def test_a_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint(run, monkeypatch):
    log_dir, path, _, make = run
    cb = make(keep_last=1)
    cb.on_epoch_end(0, {"loss": 1.0})
    first = path.format(epoch=1)
    before = open(first, "rb").read()

    def full(f, keras_model):
        f.create_group("dense_a")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(weight_files, "_write_keras2", full)
    with pytest.raises(training.CheckpointWriteError) as info:
        cb.on_epoch_end(1, {"loss": 0.5})
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert f"Could not write the checkpoint of epoch 2 to {log_dir} (the disk is full" in message
    assert f"The previous checkpoint {first} is intact" in message
    assert "MB free" in message and "keep_last=1" in message
    # nothing deleted, nothing half-written left
    assert os.listdir(log_dir) == [os.path.basename(first)]
    assert open(first, "rb").read() == before


def _save(model, path):
    weights.save_weights(model, path)
    return path


def test_find_last_skips_damaged_newest_files_with_a_warning(run, caplog):
    log_dir, path, model, _ = run
    for epoch in (1, 2, 3, 4):
        _save(model, path.format(epoch=epoch))
    assert checkpoints.checkpoint_problem(path.format(epoch=4)) is None
    # 4: truncated (a copy cut short), 3: half-written (a layer group
    # missing), 2: empty; 1 is whole.
    size = os.path.getsize(path.format(epoch=4))
    with open(path.format(epoch=4), "r+b") as f:
        f.truncate(size // 2)
    with h5py.File(path.format(epoch=3), "a") as f:
        del f["dense_b"]
    open(path.format(epoch=2), "wb").close()
    problems = [checkpoints.checkpoint_problem(path.format(epoch=e)) for e in (4, 3, 2)]
    assert "truncated" in problems[0]
    assert problems[1] == "layer 'dense_b' is listed but has no group (half-written file)"
    assert problems[2] == "the file is empty"
    with caplog.at_level(logging.WARNING, logger="mrcnn.checkpoints"):
        last = checkpoints.find_last(str(os.path.dirname(log_dir)), "tiny")
    assert last == path.format(epoch=1)
    skipped = [r.getMessage() for r in caplog.records]
    assert len(skipped) == 3 and all("find_last: skipping" in m for m in skipped)
    assert path.format(epoch=4) in skipped[0]
    # the epoch of the file it returns is where training resumes
    assert checkpoints.log_dir_for(os.path.dirname(log_dir), "tiny", last) == (log_dir, path, 1)
    # loading the damaged file itself is a clear error too
    with pytest.raises(weights.WeightFileError, match="truncated or corrupt"):
        weights.load_weights(small_model(), path.format(epoch=4), by_name=True)
    os.remove(path.format(epoch=1))
    with pytest.raises(FileNotFoundError, match="No usable tiny checkpoint.*unreadable"):
        checkpoints.find_last(str(os.path.dirname(log_dir)), "tiny")


def test_find_last_falls_back_to_an_older_run(run, tmp_path):
    log_dir, path, model, _ = run
    older = os.path.join(str(tmp_path), "tiny20000101T0000")
    good = _save(model, os.path.join(older, "mask_rcnn_tiny_0007.h5"))
    bad = path.format(epoch=1)
    os.makedirs(log_dir, exist_ok=True)
    with open(bad, "wb") as f:
        f.write(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    assert checkpoints.checkpoint_problem(bad) is not None
    assert checkpoints.find_last(str(tmp_path), "tiny") == good


def test_prune_leaves_later_epochs_and_other_names(run):
    log_dir, path, model, _ = run
    for epoch in (1, 2, 3, 9):
        _save(model, path.format(epoch=epoch))
    other = _save(model, os.path.join(log_dir, "mask_rcnn_tiny2_0001.h5"))
    open(os.path.join(log_dir, "notes.txt"), "w").close()
    deleted = checkpoints.prune_checkpoints(log_dir, "tiny", 3, keep_last=1)
    assert deleted == [path.format(epoch=1), path.format(epoch=2)]
    assert epochs_on_disk(log_dir) == [3, 9] and os.path.exists(other)
    assert checkpoints.prune_checkpoints(log_dir, "tiny", 3, keep_last=None) == []


def test_temp_files_of_killed_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".mask_rcnn_tiny_0003.h5.{dead_pid}.k2j4x.tmp"
    live = tmp_path / f".mask_rcnn_tiny_0004.h5.{os.getpid()}.a8f3e.tmp"
    unrelated = tmp_path / ".something.tmp"
    for p in (stale, live, unrelated):
        p.write_bytes(b"x")
    assert checkpoints.remove_stale_temp_files(str(tmp_path)) == [str(stale)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, unrelated.name])


def test_the_temp_file_carries_the_writers_pid(tmp_path, monkeypatch):
    seen = []

    def spy(f, keras_model):
        seen.append(os.path.basename(f.filename))
        raise OSError(errno.EIO, "stop")
    monkeypatch.setattr(weight_files, "_write_keras2", spy)
    with pytest.raises(OSError):
        weights.save_weights(small_model(), str(tmp_path / "mask_rcnn_tiny_0001.h5"))
    assert seen[0].startswith(f".mask_rcnn_tiny_0001.h5.{os.getpid()}.")
    assert checkpoints._TEMP_FILE.match(seen[0])
    assert list(tmp_path.iterdir()) == []
