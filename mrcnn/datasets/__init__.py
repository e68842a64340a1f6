"""Ready-made ``utils.Dataset`` classes for the samples.

* ``shapes``: ``ShapesConfig``, ``ShapesDataset`` (synthetic squares, circles,
  triangles; reproducible with a seed).
* ``via``: ``ViaDataset`` for VGG Image Annotator files (VIA 1.x/2.x exports,
  VIA 2 projects), e.g. Matterport's balloon data set.
* ``coco``: ``CocoConfig``, ``CocoDataset`` (MS COCO or any COCO-format
  JSON), ``build_coco_results``, ``evaluate_coco_results``.
* ``synthetic_balloon``: ``make_balloon_dataset`` writes a small balloon-like
  data set in the balloon sample's VIA layout
  (``python -m mrcnn.datasets.synthetic_balloon OUT_DIR``).

The names below are imported on first use, so ``import mrcnn.datasets`` stays
cheap and ``python -m mrcnn.datasets.synthetic_balloon`` runs cleanly.
"""
import importlib

_EXPORTS = {
    "ShapesConfig": "shapes", "ShapesDataset": "shapes",
    "ViaDataset": "via",
    "CocoConfig": "coco", "CocoDataset": "coco",
    "build_coco_results": "coco", "evaluate_coco_results": "coco",
    "make_balloon_dataset": "synthetic_balloon", "make_balloon_video": "synthetic_balloon",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
