"""The notebooks in notebooks/: they run top to bottom (small mode), and the
committed copies carry the outputs of a full run.

The execution tests are slow (a kernel per notebook, two tiny trainings): in
total a few minutes on 2 cores. They run in notebooks/run_notebooks.py's order
and share one logs folder, so train_shapes' checkpoint is what demo,
inspect_model and inspect_weights load (as with `make notebooks`).
"""
import importlib.util
import json
import pathlib
import re

import pytest

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parents[1] / "notebooks"


def _load_runner():
    spec = importlib.util.spec_from_file_location("run_notebooks", NOTEBOOK_DIR / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_notebooks = _load_runner()
NOTEBOOKS = run_notebooks.NOTEBOOKS


def _read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _text(nb):
    """All stream, text/plain and text/html output of a notebook, in order."""
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream":
                parts.append("".join(out["text"]))
            else:
                for kind in ("text/plain", "text/html"):
                    if kind in out.get("data", {}):
                        parts.append("".join(out["data"][kind]))
    return "\n".join(parts)


def _errors(nb):
    return [(i, out.get("ename"), out.get("evalue"))
            for i, cell in enumerate(nb["cells"])
            for out in cell.get("outputs", []) if out["output_type"] == "error"]


# ----------------------------------------------------------------------------
# Fast checks of the committed files
# ----------------------------------------------------------------------------

def test_every_notebook_is_listed_and_valid():
    import nbformat
    on_disk = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert on_disk == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert "%matplotlib inline" in first_code.source, name
        assert "import _setup as nb" in first_code.source, name


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_outputs_are_from_a_full_run(name):
    nb = _read(NOTEBOOK_DIR / f"{name}.ipynb")
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    # Every code cell ran, in order, without errors.
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), name
    assert _errors(nb) == []
    text = _text(nb)
    assert "mode=full" in text, f"{name}.ipynb was not stored from a full run (make notebooks)"
    # Pictures are stored (a reader on a code host sees them)...
    pngs = sum("image/png" in out.get("data", {}) for c in code for out in c["outputs"])
    assert pngs >= 1, name
    # ...and no machine-specific paths or TensorFlow C++ log lines.
    assert not re.search(r"/(?:work|tmp|home|root)/", text), name
    assert not re.search(r"^[IWE]\d{4} ", text, re.M), name


# What the committed (full-run) notebooks must show: a model that works.
# "<figure>: 0.xx" lines, each at least the bar (issue 10).
# The bars a committed full run must clear: a working model, well above the
# barely trained ones the notebooks showed before the recipe (shapes mAP@0.5
# about 0.3). Measured in full runs: shapes 0.85 and 0.96 (run-to-run
# variance of training on 2 threads; 0.85 with the recipe's cross-class NMS,
# 0.88 without it on the same model), RPN recall 0.99-1.00, balloons 1.00.
FULL_RUN_FIGURES = {
    "train_shapes": {"mAP@0.5": 0.8},
    "inspect_model": {"mAP@0.5": 0.8, "RPN recall": 0.9},
    "inspect_balloon_model": {"mAP@0.5": 0.75},
}


@pytest.mark.parametrize("name", sorted(FULL_RUN_FIGURES))
def test_committed_outputs_show_a_working_model(name):
    text = _text(_read(NOTEBOOK_DIR / f"{name}.ipynb"))
    for figure, bar in FULL_RUN_FIGURES[name].items():
        values = re.findall(rf"^{re.escape(figure)}: ([01]\.\d\d)$", text, re.M)
        assert len(values) == 1, f"{name}: no single '{figure}: 0.xx' line"
        assert float(values[0]) >= bar, f"{name}: {figure} {values[0]} < {bar}"
    if name in ("train_shapes", "inspect_model"):
        count = re.findall(r"^Evaluated on (\d+) held-out images", text, re.M)
        assert count and int(count[0]) >= 50, name


def test_committed_demo_finds_shapes_without_duplicates():
    text = _text(_read(NOTEBOOK_DIR / "demo.ipynb"))
    counts = re.findall(r"^Detections per image: \[([\d, ]+)\]$", text, re.M)
    assert counts and all(int(n) > 0 for n in counts[0].split(","))
    assert re.search(r"^Duplicate boxes: 0$", text, re.M)


def test_clean_outputs_drops_tensorflow_noise_and_absolute_paths():
    import nbformat
    root = str(run_notebooks.ROOT_DIR)
    noise = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
             "I0000 00:00:1795396917.890256   20096 port.cc:153] oneDNN custom operations are on.\n"
             "E0000 00:00:1795396924.124604   20096 cuda_platform.cc:52] failed call to cuInit\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x")])
    nb.cells[0].outputs = [
        nbformat.v4.new_output("stream", name="stderr", text=noise),
        nbformat.v4.new_output("stream", name="stdout",
                               text=f"Loaded {root}/logs/shapes1/mask_rcnn_shapes_0001.h5\nok\n"),
    ]
    run_notebooks.clean_outputs(nb)
    assert len(nb.cells[0].outputs) == 1  # the all-noise stream is gone
    assert nb.cells[0].outputs[0]["text"] == "Loaded logs/shapes1/mask_rcnn_shapes_0001.h5\nok\n"


def test_unknown_mode_or_notebook_is_refused():
    with pytest.raises(ValueError, match="small' or 'full"):
        run_notebooks.run(["demo"], mode="tiny")
    with pytest.raises(ValueError, match="Unknown notebook"):
        run_notebooks.run(["nope"], mode="small")


def test_relative_folders_mean_the_callers_cwd(tmp_path, monkeypatch):
    # Kernels start in notebooks/, so `make notebooks --logs output/...` must
    # reach them as absolute paths under the caller's folder.
    seen = []
    monkeypatch.setattr(run_notebooks, "execute", lambda *args: seen.append(args) or 0.0)
    monkeypatch.chdir(tmp_path)
    run_notebooks.run(["demo"], mode="small", logs_dir="out/logs", data_dir="out/data",
                      output_dir="out/nb", verbose=False)
    (_, _, logs, data, out), = seen
    assert (logs, data, out) == (tmp_path / "out/logs", tmp_path / "out/data", tmp_path / "out/nb/demo.ipynb")


# ----------------------------------------------------------------------------
# Execution, small mode (slow)
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("notebooks")
    return {"logs_dir": root / "logs", "data_dir": root / "data", "output_dir": root / "executed"}


# What each notebook must print beyond running cleanly: the step-by-step cells
# redo a layer's work with mrcnn.ops and must agree with the layer.
EXPECTED = {
    "train_shapes": ["Classes: ['BG', 'square', 'circle', 'triangle']",
                     "Evaluated on 2 held-out images", "mAP@0.5: "],
    "demo": ["mask_rcnn_cpu_shapes_0001.h5", "Duplicate boxes: "],
    # the recipe's anchors: every second cell of the 16x16 map, 3 ratios
    "inspect_data": ["Anchors in Level 0 (P2, stride 4, feature map 16x16): 192",
                     "Unique ROIs: 16 out of 16"],
    "inspect_model": ["mask_rcnn_cpu_shapes_0001.h5", "RPN recall: ",
                      "generate_proposals == ROI layer: True",
                      "step by step == ROI layer: True",
                      "pyramid_roi_align == roi_align_classifier layer: True",
                      "Same boxes as the mrcnn_detection layer: True",
                      "refine_detections == mrcnn_detection layer: True"],
    "inspect_weights": ["mask_rcnn_cpu_shapes_0001.h5", "WEIGHT NAME"],
    "inspect_balloon_data": ["Class Count: 2", "Image shapes: [(64, 128, 3)]"],
    "inspect_balloon_model": ["training the model now", "mAP@0.5: ",
                              "refine_detections == mrcnn_detection layer: True"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_small_mode(name, shared_dirs):
    pytest.importorskip("nbclient")
    times = run_notebooks.run([name], mode="small", verbose=False, **shared_dirs)
    nb = _read(shared_dirs["output_dir"] / f"{name}.ipynb")
    assert _errors(nb) == []
    text = _text(nb)
    assert "mode=small" in text
    for expected in EXPECTED[name]:
        assert expected in text, f"{name}: {expected!r} not in the output"
    assert times[name] < 300
