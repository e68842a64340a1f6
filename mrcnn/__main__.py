"""``python -m mrcnn <command>``: the ``mrcnn`` command line (mrcnn/predict.py).

    python -m mrcnn predict --weights W.h5 --config coco --input photos/ --output out/
    python -m mrcnn export  --weights W.h5 --config coco --output export/mrcnn/1
"""
import sys

from mrcnn.predict import main

if __name__ == "__main__":
    sys.exit(main())
