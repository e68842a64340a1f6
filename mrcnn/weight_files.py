"""
Mask R-CNN
The HDF5 weight-file layouts: reading their structure, writing checkpoints.

``mrcnn.weights`` (``load_weights``) plans and checks what goes where; this
module knows the files.

Two layouts are read:

* **Keras 2 HDF5** (what Matterport's ``save_weights("x.h5")`` and its
  ``ModelCheckpoint`` wrote, e.g. ``mask_rcnn_coco.h5``)::

      /                         attrs: layer_names [every layer, in model order],
                                       backend, keras_version
      /<layer>/                 attrs: weight_names ["<layer>/kernel:0", ...]
      /<layer>/<layer>/kernel:0 dataset, e.g. /conv1/conv1/kernel:0 [7, 7, 3, 64]
      /rpn_model/rpn_conv_shared/kernel:0   nested model: ONE group whose
                                            weights carry the inner layer names
      /mrcnn_class_conv1/mrcnn_class_conv1/kernel:0
                                TimeDistributed: the wrapper's name

  Attributes may be fixed-length byte strings (what Keras 2 wrote),
  variable-length ``str``, or split into ``layer_names0``, ``layer_names1``...
  when too large for one HDF5 object header. A file written by
  ``model.save()`` keeps all of this under a ``model_weights`` group.
* **Keras 3** ``.weights.h5`` (``keras_model.save_weights("x.weights.h5")``):
  ``/layers/<snake_case class name>[_k]/vars/<i>``, the layer's name in the
  ``name`` attribute of its ``vars`` group; ``TimeDistributed`` keeps its inner
  layer under ``.../layer/``, a nested model its layers under ``.../layers/``.

Files are written in the Keras 2 layout with Matterport's names, so that
Matterport (Keras 2) can read our checkpoints; ``weight_manifest()`` lists
what is written, in the columns of
``tests/golden/matterport_r101_coco_weights.tsv``. Groups come in
``keras_model.layers`` order (Keras 3 orders a functional model's layers as
Keras 2 did: by decreasing depth, then discovery order).

Weight order inside a layer: Conv2D, Dense, Conv2DTranspose -> kernel, bias;
BatchNormalization -> gamma, beta, moving_mean, moving_variance; a nested
model -> its layers in order. Keras 2 stored ``trainable_weights +
non_trainable_weights``; for every layer of Mask R-CNN, trainable or frozen,
that is Keras 3's ``layer.weights`` order, which we write (it does not change
with ``trainable``). It would differ only for a nested model holding a
BatchNormalization, which Mask R-CNN does not have. When reading, a layer's
weights are paired by name (``<inner layer>/<kind>``) when the file's names
and ours agree, and by position otherwise (Keras 2 behaviour), so a file
listing a layer's weights in another order still loads correctly.
"""
import errno
import os
import tempfile
from typing import NamedTuple

import h5py
import keras
import numpy as np

from mrcnn.checkpoints import read_str_list

__all__ = ["WeightFileError", "ManifestEntry", "weight_manifest", "save_weights"]

# HDF5 refuses attributes larger than its 64 kB object header; Keras splits
# longer lists into `<name>0`, `<name>1`, ... Same limit and scheme as Keras.
_HDF5_OBJECT_HEADER_LIMIT = 64512


class WeightFileError(OSError, ValueError):
    """A weight file that is missing, not HDF5, truncated or of an unknown layout.

    Subclasses both ``OSError`` (what h5py raises for unreadable files) and
    ``ValueError`` (what Keras raises for bad weight files), as
    ``io.UnsupportedOperation`` does, so either ``except`` catches it.
    """


class ManifestEntry(NamedTuple):
    """One weight as stored in a Keras 2 HDF5 file.

    ``str(shape)`` is the text of the shape column of
    ``tests/golden/matterport_r101_coco_weights.tsv``, e.g. ``(7, 7, 3, 64)``.
    """
    group: str          # HDF5 group = top-level layer name, e.g. "rpn_model"
    weight_name: str    # e.g. "rpn_conv_shared/kernel:0"
    shape: tuple        # e.g. (3, 3, 256, 512)


############################################################
#  Which weights a layer stores, under which names
############################################################

def _owner_names(layer):
    """Maps id(variable) -> name of the innermost non-model layer owning it.

    Keras 2 named a nested model's weights after its inner layers
    (``rpn_conv_shared/kernel:0``); a TimeDistributed inside a nested model
    keeps the wrapper's name, like at the top level.
    """
    names = {}
    for sub in layer.layers:
        if isinstance(sub, keras.Model):
            for key, name in _owner_names(sub).items():
                names.setdefault(key, name)
        else:
            for w in sub.weights:
                names.setdefault(id(w), sub.name)
    return names


def _layer_entries(layer):
    """[(variable, Keras 2 weight name)] of one top-level layer, in file order."""
    weights = list(layer.weights)
    if isinstance(layer, keras.Model):
        owners = _owner_names(layer)
        entries = [(w, f"{owners.get(id(w), layer.name)}/{w.name}:0") for w in weights]
    else:
        # TimeDistributed and other wrappers: the wrapper's name, as in Keras 2.
        entries = [(w, f"{layer.name}/{w.name}:0") for w in weights]
    names = [n for _, n in entries]
    if len(set(names)) != len(names):
        raise ValueError(
            f"Layer '{layer.name}' has two weights with the same Keras 2 name "
            f"({sorted(n for n in names if names.count(n) > 1)}); give its inner "
            "layers distinct names so the weights can be stored.")
    return entries


def weight_manifest(keras_model):
    """Every weight of a model as ``save_weights`` stores it, in file order.

    Returns: list of ``ManifestEntry(group, weight_name, shape)``, the columns
    of ``tests/golden/matterport_r101_coco_weights.tsv`` (without dtype), e.g.
    ``("conv1", "conv1/kernel:0", (7, 7, 3, 64))``. Weightless layers have no
    entries.
    """
    return [ManifestEntry(layer.name, name, tuple(int(d) for d in w.shape))
            for layer in keras_model.layers
            for w, name in _layer_entries(layer)]


############################################################
#  HDF5 attributes
############################################################

def _decode(value):
    return value.decode("utf8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _write_str_list(group, name, values):
    """Writes a list of strings as Keras 2 did: fixed-length byte strings, chunked."""
    data = np.asarray([v.encode("utf8") for v in values]) if values else np.asarray([])
    num_chunks = 1
    chunks = [data]
    while any(c.nbytes > _HDF5_OBJECT_HEADER_LIMIT for c in chunks):
        num_chunks += 1
        chunks = np.array_split(data, num_chunks)
    if num_chunks == 1:
        group.attrs[name] = data
    else:
        for k, chunk in enumerate(chunks):
            group.attrs[f"{name}{k}"] = chunk


############################################################
#  Reading the two layouts
############################################################

def _keras2_root(f):
    """The group holding ``layer_names`` (root, or ``model_weights``), else None."""
    for group in (f, f.get("model_weights")):
        if isinstance(group, h5py.Group) and (
                "layer_names" in group.attrs or "layer_names0" in group.attrs):
            return group
    return None


def _read_keras2(root):
    """Reads a Keras 2 layout into an ordered {layer: [(weight name, array)]}.

    Layers listed in ``layer_names`` without weights are left out.
    """
    layers = {}
    for layer_name in read_str_list(root, "layer_names"):
        if layer_name not in root:
            raise KeyError(f"layer '{layer_name}' is listed in layer_names but has no group")
        group = root[layer_name]
        weights = [(w, np.asarray(group[w])) for w in read_str_list(group, "weight_names")]
        if weights:
            layers[layer_name] = weights
    return layers


def _keras3_vars(group):
    """[(name, array)] of the ``vars`` of one Keras 3 saveable, in index order."""
    if "vars" not in group:
        return []
    vars_group = group["vars"]
    return [(f"vars/{i}", np.asarray(vars_group[str(i)])) for i in range(len(vars_group))]


def _keras3_name(group):
    return _decode(group["vars"].attrs.get("name", "")) if "vars" in group else ""


def _check_readable(filepath):
    if not os.path.exists(filepath):
        raise FileNotFoundError(
            errno.ENOENT, f"Weight file not found: '{filepath}'. Check the path "
            "(Matterport's COCO weights are mask_rcnn_coco.h5 from the project's "
            "releases page)", filepath)
    if os.path.isdir(filepath):
        raise WeightFileError(f"'{filepath}' is a directory, not a weight file; pass "
                              "the path of an .h5 file (e.g. model.find_last()).")
    if not h5py.is_hdf5(filepath):
        raise WeightFileError(
            f"'{filepath}' is not an HDF5 file (no HDF5 signature). Weight files are "
            "Keras HDF5 files (.h5 / .weights.h5); was it downloaded completely, "
            "and is it not an HTML error page or a TensorFlow checkpoint?")


############################################################
#  Writing
############################################################

def save_weights(keras_model, filepath, attrs=None):
    """Writes a model's weights in the Keras 2 HDF5 layout, atomically.

    The layout is the one Matterport's files use (see the module docstring):
    root ``layer_names`` (every top-level layer in model order), ``backend``
    ``"tensorflow"``, ``keras_version``; one group per layer with
    ``weight_names`` (fixed-length byte strings, as Keras 2 wrote them) and
    datasets ``/<layer>/<weight name>`` with names from ``weight_manifest``.

    attrs: optional extra root attributes (str -> number or str), e.g. the
        epoch and losses of a checkpoint; Keras 2 readers ignore them.

    The file is written to a temporary file in the same directory
    (``.<name>.<pid>.<random>.tmp``: the writer's process id lets
    ``checkpoints.remove_stale_temp_files`` delete what a killed writer left)
    and moved over ``filepath`` with ``os.replace`` after an ``fsync``, so a
    crash or a full disk during the write leaves any previous file at
    ``filepath`` intact.
    """
    filepath = os.fspath(filepath)
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(
        prefix=f".{os.path.basename(filepath)}.{os.getpid()}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        with h5py.File(tmp_path, "w") as f:
            _write_keras2(f, keras_model)
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())   # data on disk before the rename makes it visible
        # mkstemp creates the file 0600; give it the mode a plain open() would
        # (or the mode of the file it replaces), so others can read checkpoints.
        os.chmod(tmp_path, _target_mode(filepath))
        os.replace(tmp_path, filepath)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def _target_mode(filepath):
    if os.path.exists(filepath):
        return os.stat(filepath).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_keras2(f, keras_model):
    _write_str_list(f, "layer_names", [layer.name for layer in keras_model.layers])
    f.attrs["backend"] = b"tensorflow"
    f.attrs["keras_version"] = str(keras.__version__).encode("utf8")
    for layer in keras_model.layers:
        group = f.create_group(layer.name)
        entries = _layer_entries(layer)
        _write_str_list(group, "weight_names", [name for _, name in entries])
        for variable, name in entries:
            value = keras.ops.convert_to_numpy(variable)
            if value.dtype.name == "bfloat16":
                # A bfloat16 inference model stores its conv weights in
                # bfloat16; files are float32, as Matterport's (exact).
                value = value.astype(np.float32)
            group.create_dataset(name, data=value, dtype=value.dtype)
