"""Install mrcnn: Mask R-CNN for TensorFlow 2 / Keras 3, Matterport-compatible.

The package metadata lives in pyproject.toml (PEP 621); this file only lets
tools that still run ``python setup.py ...`` reach setuptools.

    pip install -e ".[dev]"     # the library plus what the tests and notebooks need
"""
from setuptools import setup

setup()
