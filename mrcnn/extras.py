"""Optional dependencies, installed as extras of the package:

=============  ==========================  ===============================================
extra          installs                    needed for
=============  ==========================  ===============================================
video          opencv-python-headless      videos: ``mrcnn predict`` on a video, the
                                           balloon sample's video splash, the synthetic
                                           balloon video
augmentation   albumentations              ready-made augmentation (``train(augmentation=
                                           albumentations.Compose([...]))``, the COCO
                                           sample's flips); any callable with the same
                                           ``image=, masks=`` contract works without it
dev            both, pytest, hypothesis,   the tests and the notebooks
               nbclient, nbformat,
               ipykernel, psutil
=============  ==========================  ===============================================

``require(module, extra, purpose)`` imports an optional module or raises an
ImportError that names the extra to install.
"""
import importlib
from types import ModuleType

__all__ = ["EXTRAS", "require"]

# module -> (extra, pip package)
EXTRAS = {"cv2": ("video", "opencv-python-headless"),
          "albumentations": ("augmentation", "albumentations")}


def require(module: str, purpose: str) -> ModuleType:
    """``import module``, or ImportError saying which extra brings it.

    module: "cv2" or "albumentations" (the keys of EXTRAS).
    purpose: what needs it, for the message (e.g. "reading videos").
    """
    extra, package = EXTRAS[module]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{purpose} needs the optional package {package} (module {module!r}), which is "
            f"not installed: pip install \"mrcnn[{extra}]\" (or pip install {package}). "
            f"({e})") from e
