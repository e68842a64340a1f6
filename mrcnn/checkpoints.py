"""Training runs on disk: run folders, checkpoint names, finding the last one.

Matterport's layout, so its tools and ours read each other's runs::

    <model_dir>/<name><YYYYMMDDTHHMM>/mask_rcnn_<name>_<epoch:04d>.h5

``name`` is ``Config.NAME`` lower-cased; ``epoch`` is 1-based (the file
written after the first epoch ends in ``_0001.h5``). ``MaskRCNN.find_last()``
and ``MaskRCNN.set_log_dir()`` call :func:`find_last` and
:func:`log_dir_for`; ``training.Checkpoint`` writes the files. No TensorFlow
here: the samples' command lines resolve ``--weights=last`` before loading it.
"""
import datetime
import logging
import os
import re
from typing import Optional, Tuple


__all__ = ["run_folder_pattern", "find_last", "log_dir_for", "parse_checkpoint_path"]

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
    for run in reversed(runs):
        folder = os.path.join(model_dir, run)
        checkpoints = sorted(f for f in os.listdir(folder)
                             if f.startswith(prefix) and f.endswith(".h5"))
        if checkpoints:
            return os.path.join(folder, checkpoints[-1])
    raise FileNotFoundError(
        f"No {key} checkpoint under {model_dir}: no {prefix}*.h5 file in any "
        f"{key}<YYYYMMDDTHHMM> folder (the newest is {runs[-1]}); train first, or pass "
        f"the weights path explicitly.")


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
