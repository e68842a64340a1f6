"""A minimal weight file that find_last() accepts (issue 14: it opens the
newest checkpoint and skips empty or broken ones, so placeholders must be
real Keras 2 HDF5 files)."""
import h5py
import numpy as np


def write_minimal_checkpoint(path):
    """An HDF5 file in the Keras 2 layout with one weightless layer."""
    with h5py.File(str(path), "w") as f:
        f.attrs["layer_names"] = np.array([b"input_image"])
        f.attrs["backend"] = b"tensorflow"
        f.create_group("input_image").attrs["weight_names"] = np.array([], dtype="S1")
    return path
