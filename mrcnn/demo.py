"""``python -m mrcnn.demo`` (``make demo``): the shapes sample's demo.

Trains Mask R-CNN from scratch on generated shapes, evaluates it (mAP@0.5 on
held-out images) and saves pictures of ground truth and detections side by
side; about 10 minutes on 2 CPU cores. It is ``samples/shapes/shapes.py demo``
with the same options, e.g. ``python -m mrcnn.demo --out pictures --seed 3``;
samples/shapes/README.md describes it.

The samples are not part of the installed package: this module finds them
in the checkout that holds this file.
"""

import os
import sys


def _shapes_sample():
    """The samples.shapes.shapes module of this checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isfile(os.path.join(root, "samples", "shapes", "shapes.py")):
        raise SystemExit(
            f"mrcnn.demo: the shapes sample is not in {root}/samples/shapes/ (mrcnn was "
            f"installed without its checkout). Run samples/shapes/shapes.py demo from a "
            f"clone of the repository instead.")
    if root not in sys.path:
        sys.path.insert(0, root)
    from samples.shapes import shapes
    return shapes


def main(argv=None):
    """Run the demo; ``argv`` are extra options of ``shapes.py demo``.
    Returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return _shapes_sample().main(["demo"] + argv)


if __name__ == "__main__":
    sys.exit(main())
