"""Training runs on disk: run folders, checkpoint names, finding the last one.

Matterport's layout, so its tools and ours read each other's runs::

    <model_dir>/<name><YYYYMMDDTHHMM>/mask_rcnn_<name>_<epoch:04d>.h5

``name`` is ``Config.NAME`` lower-cased; ``epoch`` is 1-based (the file
written after the first epoch ends in ``_0001.h5``). ``MaskRCNN.find_last()``
and ``MaskRCNN.set_log_dir()`` call :func:`find_last` and
:func:`log_dir_for`; ``training.Checkpoint`` writes the files. No TensorFlow
here: the samples' command lines resolve ``--weights=last`` before loading it.

Nothing lost under faults (issue 14):

* :func:`find_last` opens the newest checkpoint (HDF5 signature, the
  Keras 2 root attribute ``layer_names``, every listed layer group and
  weight) before returning it (:func:`checkpoint_problem`); a truncated or
  half-written file (another writer, a copy cut short, a disk error) is
  skipped with a warning and the one before is returned, so a run resumes at
  that file's epoch. Our own writes are atomic (``weight_files.save_weights``).
* :func:`prune_checkpoints` is the retention policy of ``training.Checkpoint``
  (keep the last N, and the best): it runs only after the new file is safely
  in place, and never touches files of other names or of later epochs.
* :func:`remove_stale_temp_files` deletes the temporary files of writers
  that were killed mid-write (their process id is in the name).
"""
import datetime
import json
import logging
import os
import re
from typing import Dict, Iterable, List, Optional, Tuple

import h5py
import numpy as np

__all__ = ["run_folder_pattern", "find_last", "log_dir_for", "parse_checkpoint_path",
           "checkpoint_problem", "run_checkpoints", "prune_checkpoints",
           "remove_stale_temp_files", "checkpoint_metrics", "read_str_list", "KEEP_LAST"]

# How many checkpoints train() keeps by default (the newest ones; keep_last=None
# keeps every one, as Matterport did).
KEEP_LAST = 3

logger = logging.getLogger(__name__)

# A checkpoint path: .../<name><date>T<time>/mask_rcnn_<name>_<epoch>.h5
# Any NAME without a path separator (Matterport's "[\w-]+" missed names such
# as "Experiment 3", whose runs then restarted at epoch 0).
_CHECKPOINT_PATH = re.compile(
    r".*[/\\][^/\\]*?(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})[/\\]"
    r"mask_rcnn_[^/\\]*?(\d{4})\.h5$")


def _checked_name(name) -> str:
    """Config.NAME lower-cased, or ValueError saying what to set."""
    if name is None:
        raise ValueError(
            "Config.NAME is None: give your Config subclass a NAME (e.g. NAME = \"balloon\"); "
            "it names the run folder <model_dir>/<name><YYYYMMDDTHHMM> and the checkpoints "
            "mask_rcnn_<name>_<epoch>.h5.")
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "/\\\0"):
        raise ValueError(f"Config.NAME must be a non-empty string without path separators "
                         f"(it names the run folder and the checkpoints), got {name!r}.")
    return name.lower()


def run_folder_pattern(name: str) -> "re.Pattern":
    """The run folders of a config NAME: exactly ``<name><YYYYMMDDTHHMM>``,
    so the runs of "shapes" and "cpu_shapes" (or "shapes2") never mix."""
    return re.compile(re.escape(_checked_name(name)) + r"\d{8}T\d{4}$")


def find_last(model_dir: str, name: str) -> str:
    """The newest checkpoint of the newest run of ``name`` under ``model_dir``.

    Run folders are matched by their exact name (``run_folder_pattern``);
    the newest folder holding a ``mask_rcnn_<name>_*.h5`` file wins.
    Raises FileNotFoundError saying what to do when there is none.
    """
    key = _checked_name(name)
    pattern = run_folder_pattern(key)
    runs = []
    if os.path.isdir(model_dir):
        runs = sorted(d for d in os.listdir(model_dir)
                      if pattern.match(d) and os.path.isdir(os.path.join(model_dir, d)))
    if not runs:
        raise FileNotFoundError(
            f"No {key} checkpoint under {model_dir}: no run folder named "
            f"{key}<YYYYMMDDTHHMM> there; train first, or pass the weights path "
            f"explicitly (and --logs if you trained with another logs folder).")
    prefix = f"mask_rcnn_{key}_"
    broken = []
    for run in reversed(runs):
        folder = os.path.join(model_dir, run)
        checkpoints = sorted(f for f in os.listdir(folder)
                             if f.startswith(prefix) and f.endswith(".h5"))
        for name_ in reversed(checkpoints):
            path = os.path.join(folder, name_)
            problem = checkpoint_problem(path)
            if problem is None:
                return path
            broken.append(path)
            logger.warning("find_last: skipping %s: %s. Using the checkpoint before it.",
                           path, problem)
    if broken:
        raise FileNotFoundError(
            f"No usable {key} checkpoint under {model_dir}: every {prefix}*.h5 file is "
            f"unreadable ({', '.join(broken[:3])}{', ...' if len(broken) > 3 else ''}; see "
            f"the warnings); train from the start or pass a weights path explicitly.")
    raise FileNotFoundError(
        f"No {key} checkpoint under {model_dir}: no {prefix}*.h5 file in any "
        f"{key}<YYYYMMDDTHHMM> folder (the newest is {runs[-1]}); train first, or pass "
        f"the weights path explicitly.")


def read_str_list(group, name) -> List[str]:
    """A list-of-strings attribute, whichever way it was stored.

    Byte or str, fixed or variable length, a scalar or an array, or chunked
    into ``<name>0``, ``<name>1``... Absent -> []. Keras 2 stored an empty
    list as an empty float64 array, which also gives [].
    """
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks, k = [], 0
        while f"{name}{k}" in group.attrs:
            chunks.append(group.attrs[f"{name}{k}"])
            k += 1
    out = []
    for chunk in chunks:
        if isinstance(chunk, h5py.Empty):   # an attribute with no data space
            continue
        for v in np.atleast_1d(np.asarray(chunk, dtype=object)).ravel():
            out.append(v.decode("utf8") if isinstance(v, (bytes, np.bytes_)) else str(v))
    return out


def _str_list(group, name) -> Optional[List[str]]:
    """A list-of-strings attribute (possibly chunked as name0, name1...), or
    None when the group has no such attribute."""
    if name not in group.attrs and f"{name}0" not in group.attrs:
        return None
    return read_str_list(group, name)


def checkpoint_problem(path) -> Optional[str]:
    """Why the weight file at ``path`` cannot be loaded, or None when it looks whole.

    Checks, without reading the weights: the HDF5 signature, that the file
    opens (a truncated HDF5 file does not), the Keras 2 root attribute
    ``layer_names`` (at the root or under ``model_weights``), and that every
    listed layer has its group and every weight in its ``weight_names`` its
    dataset (a half-written file misses some). Keras 3 ``.weights.h5`` files
    (a ``layers`` group) pass after opening.
    """
    path = os.fspath(path)
    try:
        if os.path.getsize(path) == 0:
            return "the file is empty"
        if not h5py.is_hdf5(path):
            return "not an HDF5 file (no HDF5 signature)"
        with h5py.File(path, "r") as f:
            root = f
            if "model_weights" in f and isinstance(f["model_weights"], h5py.Group):
                root = f["model_weights"]
            layers = _str_list(root, "layer_names")
            if layers is None:
                if "layers" in f or "vars" in f:
                    return None
                return "no 'layer_names' root attribute (not a Keras weight file)"
            for layer in layers:
                if layer not in root:
                    return f"layer '{layer}' is listed but has no group (half-written file)"
                group = root[layer]
                for weight in _str_list(group, "weight_names") or []:
                    if weight not in group:
                        return (f"weight '{layer}/{weight}' is listed but missing "
                                f"(half-written file)")
    except OSError as e:
        return f"HDF5 cannot open it ({e}); the file is truncated or corrupt"
    except (KeyError, RuntimeError, ValueError) as e:
        return f"HDF5 cannot read it ({e}); the file is truncated or corrupt"
    return None


def run_checkpoints(folder, name: str) -> List[Tuple[int, str]]:
    """[(epoch, path)] of the ``mask_rcnn_<name>_<epoch>.h5`` files in a run
    folder, by epoch (temporary files and other names are left out)."""
    key = _checked_name(name)
    pattern = re.compile(r"mask_rcnn_" + re.escape(key) + r"_(\d{4,})\.h5$")
    out = []
    if os.path.isdir(folder):
        for f in os.listdir(folder):
            m = pattern.match(f)
            if m:
                out.append((int(m.group(1)), os.path.join(folder, f)))
    return sorted(out)


def checkpoint_metrics(path) -> Dict[str, float]:
    """The losses stored in a checkpoint by ``training.Checkpoint`` (root
    attribute ``mrcnn_metrics``, JSON), or {} (other writers, unreadable)."""
    try:
        with h5py.File(os.fspath(path), "r") as f:
            raw = f.attrs.get("mrcnn_metrics")
        if raw is None:
            return {}
        return {k: float(v) for k, v in json.loads(
            raw.decode("utf8") if isinstance(raw, bytes) else str(raw)).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def prune_checkpoints(folder, name: str, epoch: int, keep_last: Optional[int],
                      protect: Iterable[str] = ()) -> List[str]:
    """Delete the checkpoints of a run folder that the retention policy drops.

    Kept: the file of ``epoch`` (just written), the ``keep_last - 1`` newest
    files of earlier epochs, the paths in ``protect`` (the best one) and every
    file of a later epoch (a run resumed from an older checkpoint leaves
    those alone). ``keep_last`` None keeps everything.
    Returns the deleted paths. Call it only after the new file is in place.
    """
    if keep_last is None:
        return []
    protect = {os.path.abspath(p) for p in protect if p}
    older = [p for e, p in run_checkpoints(folder, name) if e < int(epoch)]
    drop = older[:max(0, len(older) - (int(keep_last) - 1))]
    deleted = []
    for path in drop:
        if os.path.abspath(path) in protect:
            continue
        try:
            os.remove(path)
            deleted.append(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            logger.warning("Could not delete the old checkpoint %s: %s", path, e)
    if deleted:
        logger.info("Deleted %d old checkpoint(s) (keep_last=%d): %s", len(deleted),
                    keep_last, ", ".join(os.path.basename(p) for p in deleted))
    return deleted


# .<checkpoint name>.<pid>.<random>.tmp, as weight_files.save_weights names them
_TEMP_FILE = re.compile(r"^\..+\.h5\.(\d+)\.[^.]+\.tmp$")


def _alive(pid: int) -> bool:
    if os.name == "nt":
        return True  # os.kill(pid, 0) would terminate it there; leave the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temp_files(folder) -> List[str]:
    """Delete the temporary checkpoint files in ``folder`` whose writer
    process no longer runs (killed mid-write); returns their paths. Files
    of a live process (or of an unknown one) are left alone."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for f in os.listdir(folder):
        m = _TEMP_FILE.match(f)
        if not m or _alive(int(m.group(1))):
            continue
        path = os.path.join(folder, f)
        try:
            os.remove(path)
            removed.append(path)
        except OSError:
            pass
    if removed:
        logger.warning("Removed %d temporary checkpoint file(s) left by a process that was "
                       "stopped while writing: %s", len(removed),
                       ", ".join(os.path.basename(p) for p in removed))
    return removed


def parse_checkpoint_path(path) -> Optional[Tuple[datetime.datetime, int]]:
    """(run start time, epoch) of a path in our layout, or None.

    E.g. ``logs/coco20171029T2315/mask_rcnn_coco_0001.h5`` (Windows
    separators too) -> (2017-10-29 23:15, 1).
    """
    m = _CHECKPOINT_PATH.match(str(path))
    if not m:
        return None
    start = datetime.datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)),
                              int(m.group(4)), int(m.group(5)))
    return start, int(m.group(6))


def log_dir_for(model_dir: str, name: str, model_path=None):
    """The run folder, checkpoint path template and first epoch of a run.

    model_path: None (a new run, started now, epoch 0) or a checkpoint in
        our layout (continue its run folder at the epoch after it); another
        path also starts a new run.
    Returns (log_dir, checkpoint_path with an ``{epoch:04d}`` placeholder,
    epoch): ``epoch`` is the number of epochs already done, Keras' 0-based
    index of the next one.
    """
    now, epoch = datetime.datetime.now(), 0
    parsed = parse_checkpoint_path(model_path) if model_path else None
    if parsed is not None:
        # The file's epoch is 1-based, Keras' 0-based: the next epoch to train
        # has index (file epoch - 1) + 1.
        now, epoch = parsed
        logger.info("Re-starting from epoch %d", epoch)
    key = _checked_name(name)
    log_dir = os.path.join(model_dir, "{}{:%Y%m%dT%H%M}".format(key, now))
    checkpoint_path = os.path.join(log_dir, f"mask_rcnn_{key}_{{epoch:04d}}.h5")
    return log_dir, checkpoint_path, epoch
