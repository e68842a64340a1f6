"""Shared test fixtures: paths to the golden reference data shipped in tests/golden."""
import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# albumentations otherwise checks the network for a newer version at import
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

GOLDEN_DIR = pathlib.Path(__file__).parent / "golden"


@pytest.fixture(scope="session")
def golden_dir():
    return GOLDEN_DIR
