"""Packaging and dependencies (issue 14, item 7): pyproject.toml (PEP 621)
builds the package metadata, the installed TensorFlow / Keras are inside the
declared bounds, each guarded Keras internal falls back (with a logged
reason) when missing, and an optional part names its extra when missing."""
import importlib.metadata
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")
from packaging.requirements import Requirement

from mrcnn import extras, keras_compat
from mrcnn.optimizers import ClippedMomentumSGD

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(project):
    return {Requirement(r).name: Requirement(r) for r in project["dependencies"]}


def test_pyproject_declares_the_package(project):
    assert project["name"] == "mrcnn" and project["requires-python"] == ">=3.10"
    reqs = _requirements(project)
    assert str(reqs["tensorflow"].specifier) == "<2.22,>=2.16"
    assert str(reqs["keras"].specifier) == "<3.16,>=3.12"
    # optional parts are extras, not requirements
    assert "opencv-python-headless" not in reqs and "albumentations" not in reqs
    extras_ = project["optional-dependencies"]
    assert extras_["video"] == ["opencv-python-headless"]
    assert extras_["augmentation"] == ["albumentations"]
    assert {"mrcnn[video,augmentation]", "pytest", "hypothesis"} <= set(extras_["dev"])
    assert project["scripts"] == {"mrcnn": "mrcnn.predict:main"}
    # setup.py carries no metadata of its own (one source of truth)
    setup_py = (ROOT / "setup.py").read_text()
    assert re.search(r"^setup\(\)$", setup_py, re.M) and "install_requires" not in setup_py
    # make venv reinstalls when pyproject.toml changes, with the same command
    makefile = (ROOT / "Makefile").read_text()
    assert "$(VENV)/.installed: pyproject.toml setup.py" in makefile
    assert '-m pip install --quiet -e ".[dev]"' in makefile


@pytest.mark.parametrize("name", ["tensorflow", "keras", "numpy", "h5py", "hypothesis"])
def test_installed_versions_are_inside_the_declared_bounds(project, name):
    declared = _requirements(project).get(name) or next(
        Requirement(r) for r in project["optional-dependencies"]["dev"]
        if Requirement(r).name == name)
    installed = importlib.metadata.version(name)
    assert declared.specifier.contains(installed, prereleases=True), (name, installed,
                                                                      str(declared))


def test_setuptools_builds_the_metadata_from_pyproject(tmp_path):
    """The PEP 517 metadata hook on a copy of the project: what pip installs."""
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "mrcnn", tmp_path / "mrcnn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "meta").mkdir()
    code = ("import sys; from setuptools import build_meta as b; "
            "print(b.prepare_metadata_for_build_wheel(sys.argv[1]))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "meta")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    dist = tmp_path / "meta" / out.stdout.strip().splitlines()[-1]
    metadata = (dist / "METADATA").read_text()
    assert "Name: mrcnn" in metadata and "Version: 3.0.0.dev0" in metadata
    requires = re.findall(r"^Requires-Dist: (.*)$", metadata, re.M)
    assert any(r.replace(" ", "").startswith("keras<3.16,>=3.12") for r in requires), requires
    assert any(r.replace(" ", "").startswith("tensorflow<2.22,>=2.16") for r in requires)
    assert set(re.findall(r"^Provides-Extra: (.*)$", metadata, re.M)) == {
        "video", "augmentation", "dev"}
    assert any(r.startswith("opencv-python-headless") and 'extra == "video"' in r
               for r in requires)
    assert "mrcnn = mrcnn.predict:main" in (dist / "entry_points.txt").read_text()


# ---------------------------------------------------------------------------
# Guarded Keras internals
# ---------------------------------------------------------------------------

@pytest.fixture()
def fresh_fallbacks(monkeypatch):
    monkeypatch.setattr(keras_compat, "_FALLBACKS", {})


def _sgd_steps(optimizer, steps=3):
    rng = np.random.default_rng(1)
    init = rng.normal(size=(4, 3)).astype("f4")
    v = keras.Variable(init)
    for _ in range(steps):
        optimizer.apply([tf.constant(rng.normal(size=(4, 3)).astype("f4") * 8)], [v])
    return v.numpy()


def test_the_fused_sgd_falls_back_to_keras_when_the_internal_is_missing(
        monkeypatch, fresh_fallbacks, caplog):
    reference = _sgd_steps(keras.optimizers.SGD(0.1, momentum=0.9, clipnorm=5.0))
    fused = _sgd_steps(ClippedMomentumSGD(0.1, 0.9, clip_norm=5.0))
    assert keras_compat.fallback_reasons() == {}     # the internals exist here
    # as if a Keras release renamed it (Keras' own SGD keeps working)
    monkeypatch.setattr(keras_compat, "VARIABLE_INDEX", "_renamed_get_variable_index")
    with caplog.at_level(logging.WARNING, logger="mrcnn.keras_compat"):
        fallback = _sgd_steps(ClippedMomentumSGD(0.1, 0.9, clip_norm=5.0))
    np.testing.assert_allclose(fused, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fallback, reference, rtol=1e-5, atol=1e-6)
    assert list(keras_compat.fallback_reasons()) == ["optimizer._get_variable_index"]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "uses Keras' own SGD update" in messages[0]


def test_a_momentum_buffer_without_a_handle_falls_back(monkeypatch, fresh_fallbacks):
    optimizer = ClippedMomentumSGD(0.1, 0.9)
    v = keras.Variable(np.ones((2,), "f4"))
    optimizer.build([v])
    assert keras_compat.momentum_slot_handle(optimizer, v) is not None
    monkeypatch.setattr(optimizer, "momentums", [types.SimpleNamespace()])
    assert keras_compat.momentum_slot_handle(optimizer, v) is None
    assert "AttributeError" in keras_compat.fallback_reasons()["variable.value.handle"]


def test_output_names_fall_back_to_the_public_output_names(monkeypatch, fresh_fallbacks,
                                                           caplog):
    x = keras.Input((3,))
    a = keras.layers.Dense(2, name="first")(x)
    b = keras.layers.Dense(2, name="second")(a)
    model = keras.Model(x, [b, a])
    assert keras_compat.output_layer_names(model) == ["second", "first"]
    assert list(model.output_names) == ["second", "first"]   # the fallback agrees
    monkeypatch.setattr(keras_compat, "KERAS_HISTORY", "_renamed_keras_history")
    with caplog.at_level(logging.WARNING, logger="mrcnn.keras_compat"):
        assert keras_compat.output_layer_names(model) == ["second", "first"]
    assert "_keras_history is gone" in caplog.records[0].getMessage()


def test_training_argument_falls_back_to_the_signature(monkeypatch, fresh_fallbacks):
    layers = (keras.layers.Dropout(0.1), keras.layers.Dense(2),
              keras.layers.BatchNormalization())
    for layer in layers:
        assert keras_compat.call_has_training_arg(layer) is layer._call_has_training_arg
    assert keras_compat.fallback_reasons() == {}
    monkeypatch.setattr(keras_compat, "CALL_HAS_TRAINING_ARG", "_renamed")
    assert [keras_compat.call_has_training_arg(layer) for layer in layers] == [
        layer._call_has_training_arg for layer in layers]

    class NoInternal:
        def __init__(self, call):
            self.call = call
    assert keras_compat.call_has_training_arg(NoInternal(lambda x, training=None: x)) is True
    assert keras_compat.call_has_training_arg(NoInternal(lambda x: x)) is False
    assert keras_compat.call_has_training_arg(NoInternal(lambda x, **kw: x)) is True
    assert "layer._call_has_training_arg" in keras_compat.fallback_reasons()


def test_no_private_keras_attribute_outside_keras_compat():
    """Every use of a Keras internal goes through keras_compat."""
    private = re.compile(r"\._(keras_history|get_variable_index|call_has_training_arg|"
                         r"learning_rate|inbound_nodes)\b")
    found = []
    for path in (ROOT / "mrcnn").rglob("*.py"):
        if path.name == "keras_compat.py":
            continue
        for k, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if private.search(code) and "getattr(" not in code:
                found.append(f"{path.relative_to(ROOT)}:{k}: {line.strip()}")
    assert found == []


# ---------------------------------------------------------------------------
# Extras
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("module, extra, package", [
    ("cv2", "video", "opencv-python-headless"),
    ("albumentations", "augmentation", "albumentations")])
def test_a_missing_extra_is_named(monkeypatch, module, extra, package):
    assert extras.require(module, "x").__name__ == module     # installed here
    monkeypatch.setitem(sys.modules, module, None)             # as if it were not
    with pytest.raises(ImportError, match=re.escape(
            f'needs the optional package {package} (module {module!r}), which is not '
            f'installed: pip install "mrcnn[{extra}]"')):
        extras.require(module, "Something")


def test_the_video_paths_name_the_video_extra(monkeypatch, tmp_path):
    from mrcnn import predict
    from mrcnn.datasets import synthetic_balloon
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match=r'Writing the synthetic balloon video needs .*'
                                          r'mrcnn\[video\]'):
        synthetic_balloon.make_balloon_video(str(tmp_path / "v.avi"), frames=2)
    with pytest.raises(ImportError, match=r"Reading videos needs .*mrcnn\[video\]"):
        predict._video_frames(str(tmp_path / "v.avi"))
    assert not os.path.exists(tmp_path / "v.avi")
