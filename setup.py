"""Install mrcnn: Mask R-CNN for TensorFlow 2 / Keras 3, Matterport-compatible.

    pip install -e ".[dev]"     # the library plus what the tests and notebooks need
"""
from setuptools import find_packages, setup

setup(
    name="mrcnn",
    version="3.0.0.dev0",
    description="Mask R-CNN instance segmentation for TensorFlow 2 / Keras 3, "
                "compatible with Matterport's Mask_RCNN API and weight files",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["mrcnn", "mrcnn.*"]),
    package_data={"mrcnn": ["py.typed", "README.md"]},  # type hints (PEP 561), the notes
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",      # 2.16 is the first release on Keras 3
        "keras>=3.0",
        "numpy",
        "scipy",
        "scikit-image",
        "pillow",
        "pycocotools",
        "matplotlib",
        "h5py",
        "albumentations",
        "tqdm",
        "tensorboard",             # train() writes TensorBoard logs next to the checkpoints
        "opencv-python-headless",  # video color splash (samples/balloon); albumentations needs it too
    ],
    extras_require={
        "dev": [
            "pytest",
            "nbclient",
            "nbformat",
            "ipykernel",
            "psutil",
        ],
    },
    # issue 12: the `mrcnn` command (predict, export); mrcnn/predict.py
    entry_points={"console_scripts": ["mrcnn = mrcnn.predict:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
