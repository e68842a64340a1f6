"""Execute the notebooks of this folder top to bottom.

    python notebooks/run_notebooks.py                 # full mode, outputs stored in place
    python notebooks/run_notebooks.py --mode small    # quick check, outputs to a temp folder
    python notebooks/run_notebooks.py demo inspect_model --mode small

``--mode full`` (``make notebooks``) re-runs every notebook with the sizes of
``MRCNN_NOTEBOOK_MODE=full`` and writes the executed notebooks, figures
included, back over the committed ones, so a reader on a code host sees the
pictures without running anything. ``--mode small`` is what the test suite
runs (tests/test_notebooks.py): tiny images and a few training steps; the
executed copies go to ``--output-dir`` (a temporary folder by default) and the
committed notebooks are left alone.

The kernel is the "python3" kernelspec started with *this* interpreter
(jupyter_client substitutes ``sys.executable`` for the spec's ``python``);
``MRCNN_NOTEBOOK_PYTHON`` tells the notebook which interpreter to expect, and
its first cell fails if the kernel runs another one. Models are trained to and
looked for in ``--logs`` (``MRCNN_NOTEBOOK_LOGS``): ``<repo>/logs`` in full
mode, a temporary folder in small mode so that the small run never picks up
(or leaves) checkpoints in the checkout. ``train_shapes`` runs first: the
notebooks after it reuse its checkpoint instead of training their own.

Exit status 1 and the failing cell's traceback when a cell raises.
"""
import argparse
import contextlib
import os
import re
import sys
import tempfile
import time
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent
ROOT_DIR = NOTEBOOK_DIR.parent

# Execution order: train_shapes writes the shapes checkpoint the others load.
NOTEBOOKS = (
    "train_shapes",
    "demo",
    "inspect_data",
    "inspect_model",
    "inspect_weights",
    "inspect_balloon_data",
    "inspect_balloon_model",
)

# Per-cell limit (seconds): a full-mode training cell takes minutes.
CELL_TIMEOUT = {"small": 600, "full": 3600}


def kernel_env(mode, logs_dir, data_dir):
    """Environment of the kernel: ours plus the notebook settings.

    MPLBACKEND is dropped so the kernel's inline backend is used (the test
    suite sets Agg for itself).
    """
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)
    env.update({
        "MRCNN_NOTEBOOK_MODE": mode,
        "MRCNN_NOTEBOOK_PYTHON": sys.executable,
        "MRCNN_NOTEBOOK_LOGS": str(logs_dir),
        "MRCNN_NOTEBOOK_DATA": str(data_dir),
        "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        "NO_ALBUMENTATIONS_UPDATE": "1",
        # The checkout's mrcnn even when the venv has another install.
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT_DIR), env.get("PYTHONPATH")) if p),
    })
    return env


# TensorFlow's C++ start-up lines (CUDA probing, oneDNN notices) that the kernel
# forwards from its stderr: noise in a stored notebook.
_NOISE = re.compile(r"^(?:[IWE]\d{4} [\d:.]+ +\d+ \S+\] .*"
                    r"|WARNING: All log messages before absl::InitializeLog\(\) .*)\n?", re.M)


def clean_outputs(nb):
    """Drop TensorFlow's C++ log lines from stream outputs and write paths
    inside the checkout relative to it (no machine's folders in the files)."""
    root = str(ROOT_DIR) + os.sep
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                out["text"] = _NOISE.sub("", out["text"]).replace(root, "")
                if not out["text"]:
                    continue
            kept.append(out)
        cell["outputs"] = kept


def execute(name, mode, logs_dir, data_dir, output_path):
    """Run notebook ``name`` and write the executed copy to ``output_path``.

    Returns the wall time in seconds. Raises nbclient's CellExecutionError
    (with the cell's traceback) when a cell fails.
    """
    import nbformat
    from nbclient import NotebookClient

    path = NOTEBOOK_DIR / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT[mode],
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},  # cwd: `import _setup` works
        record_timing=False,  # no per-cell timestamps in the committed files
    )
    start = time.time()
    try:
        client.execute(env=kernel_env(mode, logs_dir, data_dir))
    finally:
        # Keep what ran, also on failure: the error is in the saved notebook.
        clean_outputs(nb)
        output_path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, output_path)
    return time.time() - start


def run(names=NOTEBOOKS, mode="small", logs_dir=None, data_dir=None, output_dir=None,
        verbose=True):
    """Execute notebooks in order; returns {name: seconds}.

    logs_dir, data_dir: model and data folders (defaults: see the module
        docstring). output_dir: where executed copies go; None means in place
        (full mode) or a temporary folder (small mode).
    """
    if mode not in CELL_TIMEOUT:
        raise ValueError(f"mode must be 'small' or 'full', got {mode!r}")
    unknown = [n for n in names if n not in NOTEBOOKS]
    if unknown:
        raise ValueError(f"Unknown notebook(s) {unknown}; choose from {list(NOTEBOOKS)}.")
    with contextlib.ExitStack() as stack:
        def scratch():
            return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mrcnn-nb-")))
        if logs_dir is None:
            logs_dir = ROOT_DIR / "logs" if mode == "full" else scratch() / "logs"
        if data_dir is None:
            data_dir = ROOT_DIR / "output" / "notebook_data" if mode == "full" else scratch() / "data"
        if output_dir is None:
            output_dir = NOTEBOOK_DIR if mode == "full" else scratch() / "executed"
        # Kernels run in notebooks/: relative folders mean the caller's cwd.
        logs_dir, data_dir, output_dir = (Path(p).resolve() for p in (logs_dir, data_dir, output_dir))
        times = {}
        for name in names:
            if verbose:
                print(f"{name} ({mode}) ...", flush=True)
            times[name] = execute(name, mode, logs_dir, data_dir, output_dir / f"{name}.ipynb")
            if verbose:
                print(f"{name}: {times[name]:.0f} s", flush=True)
        if verbose:
            print(f"total: {sum(times.values()):.0f} s")
        return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=list(NOTEBOOKS),
                        help=f"notebooks to run, in this order (default: {' '.join(NOTEBOOKS)})")
    parser.add_argument("--mode", choices=sorted(CELL_TIMEOUT), default="full")
    parser.add_argument("--logs", help="model folder (MRCNN_NOTEBOOK_LOGS)")
    parser.add_argument("--data", help="synthetic data folder (MRCNN_NOTEBOOK_DATA)")
    parser.add_argument("--output-dir", help="write executed notebooks here instead of "
                        "in place (full) or a temporary folder (small)")
    args = parser.parse_args(argv)
    from nbclient.exceptions import CellExecutionError
    try:
        run(args.names, args.mode, args.logs, args.data, args.output_dir)
    except CellExecutionError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
