"""
Mask R-CNN
Reading and writing HDF5 weight files.

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

Why not Keras' own loader: Keras 3's ``load_weights(by_name=True)`` for legacy
files has no ``exclude``, stops at the first mismatch with a message that does
not say how to fix it, and assigns layer by layer, so an error leaves a
half-loaded model. Here every weight is read and checked first, every
mismatch is reported at once with the ``exclude=[...]`` that fixes it, and
only then is anything assigned.
"""

import dataclasses
import errno
import os
import re
import tempfile
from typing import NamedTuple

import h5py
import keras
import numpy as np

__all__ = [
    "HEAD_LAYERS",
    "LoadReport",
    "ManifestEntry",
    "WeightFileError",
    "WeightMismatchError",
    "load_weights",
    "save_weights",
    "weight_manifest",
]

# The layers whose shapes follow NUM_CLASSES. Matterport's balloon and shapes
# samples exclude exactly these when starting from the 81-class COCO file
# (mrcnn_bbox is a weightless Reshape; listing it is harmless and familiar).
HEAD_LAYERS = ("mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask")

# HDF5 refuses attributes larger than its 64 kB object header; Keras splits
# longer lists into `<name>0`, `<name>1`, ... Same limit and scheme as Keras.
_HDF5_OBJECT_HEADER_LIMIT = 64512

# Mismatch errors list at most this many weights (the full model has 690).
_MAX_LISTED = 12


class WeightFileError(OSError, ValueError):
    """A weight file that is missing, not HDF5, truncated or of an unknown layout.

    Subclasses both ``OSError`` (what h5py raises for unreadable files) and
    ``ValueError`` (what Keras raises for bad weight files), as
    ``io.UnsupportedOperation`` does, so either ``except`` catches it.
    """


class WeightMismatchError(ValueError):
    """The file's weights do not fit the model (shape or count)."""


class ManifestEntry(NamedTuple):
    """One weight as stored in a Keras 2 HDF5 file.

    ``str(shape)`` is the text of the shape column of
    ``tests/golden/matterport_r101_coco_weights.tsv``, e.g. ``(7, 7, 3, 64)``.
    """
    group: str          # HDF5 group = top-level layer name, e.g. "rpn_model"
    weight_name: str    # e.g. "rpn_conv_shared/kernel:0"
    shape: tuple        # e.g. (3, 3, 256, 512)


@dataclasses.dataclass
class LoadReport:
    """What ``load_weights`` did, for logging.

    loaded: model layers whose weights were all assigned.
    skipped: (model layer, reason) for excluded layers and, with
        ``skip_mismatch=True``, layers whose file weights did not fit.
    missing: model layers with weights that the file has no weights for
        (left untouched).
    unused: file layers with weights that no model layer took.
    """
    filepath: str
    format: str         # "keras2" or "keras3"
    by_name: bool
    loaded: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    missing: list = dataclasses.field(default_factory=list)
    unused: list = dataclasses.field(default_factory=list)

    def summary(self):
        return (f"Loaded weights of {len(self.loaded)} layers from {self.filepath} "
                f"({self.format} layout, {'by name' if self.by_name else 'in order'}); "
                f"{len(self.skipped)} skipped, {len(self.missing)} not in the file, "
                f"{len(self.unused)} file layers unused")


############################################################
#  Naming: the Keras 2 view of a Keras 3 model
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
#  Reading HDF5 attributes
############################################################

def _decode(value):
    return value.decode("utf8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _read_str_list(group, name):
    """A list-of-strings attribute, whichever way it was stored.

    Byte or str, fixed or variable length, a scalar or an array, or chunked
    into ``<name>0``, ``<name>1``... Absent -> []. Keras 2 stored an empty
    list as an empty float64 array, which also gives [].
    """
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks, k = [], 0
        while f"{name}{k}" in group.attrs:
            chunks.append(group.attrs[f"{name}{k}"])
            k += 1
    out = []
    for chunk in chunks:
        if isinstance(chunk, h5py.Empty):   # an attribute with no data space
            continue
        out.extend(_decode(v) for v in np.atleast_1d(np.asarray(chunk, dtype=object)).ravel())
    return out


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
#  Reading files: {layer name: [(weight name, array)]}
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
    for layer_name in _read_str_list(root, "layer_names"):
        if layer_name not in root:
            raise KeyError(f"layer '{layer_name}' is listed in layer_names but has no group")
        group = root[layer_name]
        weights = [(w, np.asarray(group[w])) for w in _read_str_list(group, "weight_names")]
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


def _read_keras3_layer(group, layer):
    """Pairs a Keras 3 layer group with ``layer``'s variables.

    Returns: [(variable, path in file, array)] covering all of ``layer.weights``.
    Raises KeyError if the layer's structure does not match the group's.
    """
    if isinstance(layer, keras.Model):
        children = list(layer.layers)
        by_name = {_keras3_name(g): g for g in group.get("layers", {}).values()}
        child_groups = []
        for child in children:
            if child.weights and child.name not in by_name:
                raise KeyError(f"no group for inner layer '{child.name}'")
            child_groups.append(by_name.get(child.name))
    elif isinstance(getattr(layer, "layer", None), keras.layers.Layer):
        children, child_groups = [layer.layer], [group.get("layer")]  # Wrapper
    else:
        children, child_groups = [], []
    inner = {id(w) for c in children for w in c.weights}
    own = [w for w in layer.weights if id(w) not in inner]
    file_vars = _keras3_vars(group)
    if len(file_vars) != len(own):
        raise KeyError(f"'{group.name}' holds {len(file_vars)} variables, "
                       f"layer '{layer.name}' has {len(own)}")
    pairs = [(w, f"{group.name}/{p}", a) for w, (p, a) in zip(own, file_vars)]
    for child, child_group in zip(children, child_groups):
        if child.weights:
            if child_group is None:
                raise KeyError(f"no group for inner layer '{child.name}'")
            pairs.extend(_read_keras3_layer(child_group, child))
    return pairs


############################################################
#  Loading
############################################################

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


def _pair_keras2(layer, file_layer, file_weights):
    """Pairs a Keras 2 file layer's weights with a model layer's variables.

    file_weights: [(weight name, array)] in the order of ``weight_names``.
    Pairs by ``<inner layer>/<kind>`` (e.g. ``rpn_class_raw/bias``) when both
    sides have the same set of names, which is robust to a file listing
    weights in another order; otherwise by position, as Keras 2 did.

    Returns: (layer, file_layer, pairs) with pairs
    [(variable, our weight name, file weight name, array)], or a message
    instead of pairs if the weight counts differ.
    """
    entries = _layer_entries(layer)
    if len(entries) != len(file_weights):
        return layer, file_layer, (
            f"the file has {len(file_weights)} weights "
            f"({', '.join(n for n, _ in file_weights)}), the model expects "
            f"{len(entries)} ({', '.join(n for _, n in entries)})")

    def key(name):
        return "/".join(name.rsplit(":", 1)[0].split("/")[-2:])

    ours = [key(n) for _, n in entries]
    theirs = {key(n): (n, a) for n, a in file_weights}
    if len(set(ours)) == len(ours) == len(theirs) and set(ours) == set(theirs):
        ordered = [theirs[k] for k in ours]
    else:
        ordered = list(file_weights)
    return layer, file_layer, [(w, n, fn, a) for (w, n), (fn, a) in zip(entries, ordered)]


def _suggest_exclude(layer_names):
    names = list(layer_names)
    if any(n in HEAD_LAYERS for n in names):
        names = list(HEAD_LAYERS) + [n for n in names if n not in HEAD_LAYERS]
    return "exclude=[" + ", ".join(f'"{n}"' for n in names) + "]"


def load_weights(keras_model, filepath, by_name=False, exclude=None,
                 skip_mismatch=False, verbose=1):
    """Loads a Keras 2 (Matterport) or Keras 3 HDF5 weight file into a model.

    keras_model: a built ``keras.Model``; its top-level layers are matched.
    filepath: path of a ``.h5`` file in the Keras 2 layout (also under a
        ``model_weights`` group) or a Keras 3 ``.weights.h5`` file.
    by_name: True: each file layer loads into the model layer of the same
        name; model layers with no weights in the file stay untouched (listed
        in the report's ``missing``). False: the file's layers that carry
        weights load into the model's weight-carrying layers in order (Keras 2
        semantics for Keras 2 files). Keras 3 files name their layers; when
        those names are the model's, in order means by name, otherwise
        Keras 3's own structural loader is used.
    exclude: names of model layers not to load. Like Matterport, a non-empty
        ``exclude`` implies ``by_name=True``.
    skip_mismatch: skip layers whose weight count or shapes differ instead of
        raising.
    verbose: 0 silent, 1 a summary line and the layers left untouched,
        2 also every loaded layer.

    Returns: ``LoadReport``.
    Raises: ``FileNotFoundError`` for a missing file, ``WeightFileError``
        (``OSError`` and ``ValueError``) for a file that is not HDF5, is
        truncated or has neither layout, ``WeightMismatchError``
        (``ValueError``) naming every layer, weight and both shapes that do
        not fit, and the ``exclude=[...]`` that would skip them. Nothing is
        assigned unless the whole file fits.
    """
    filepath = os.fspath(filepath)
    exclude = set(exclude or ())
    plan = report = None
    if exclude:
        by_name = True
    _check_readable(filepath)
    try:
        with h5py.File(filepath, "r") as f:
            root = _keras2_root(f)
            if root is not None:
                file_format = "keras2"
                file_layers = _read_keras2(root)
            elif "layers" in f or "vars" in f:
                file_format = "keras3"
                plan = None
                try:
                    plan, report = _plan_keras3_by_name(f, keras_model, exclude, filepath)
                except WeightMismatchError:
                    if by_name:
                        raise
                if not by_name and plan is not None and (report.missing or report.unused):
                    plan = None
            else:
                raise WeightFileError(
                    f"'{filepath}' is HDF5 but neither a Keras 2 weight file (no "
                    "'layer_names' attribute at its root or under 'model_weights') "
                    "nor a Keras 3 .weights.h5 file (no 'layers' group).")
    except (WeightFileError, WeightMismatchError):
        raise
    except (OSError, KeyError, RuntimeError, TypeError) as e:
        raise WeightFileError(
            f"Could not read weights from '{filepath}': {e}. The file may be "
            "truncated or corrupt; download or copy it again.") from e

    if file_format == "keras3":
        # Keras 3 files name every layer, so when the file's layers and the
        # model's carry the same names, pairing by name IS pairing in order,
        # with our checks and messages. Otherwise Keras' structural loader.
        if plan is None:
            return _load_keras3_in_order(keras_model, filepath, skip_mismatch, verbose)
        report.by_name = by_name
    if file_format == "keras2":
        if by_name:
            plan, report = _plan_keras2_by_name(file_layers, keras_model, exclude, filepath)
        else:
            plan, report = _plan_keras2_in_order(file_layers, keras_model, filepath)
    _check_plan(plan, report, filepath, skip_mismatch)

    skipped = {name for name, _ in report.skipped}
    for layer, _, pairs in plan:
        if layer.name in skipped:
            continue
        for variable, _, _, array in pairs:
            variable.assign(array)
        report.loaded.append(layer.name)
    _print_report(report, verbose)
    return report


def _plan_keras2_by_name(file_layers, keras_model, exclude, filepath):
    report = LoadReport(filepath, "keras2", by_name=True)
    plan = []
    model_names = {layer.name for layer in keras_model.layers}
    for layer in keras_model.layers:
        if not layer.weights:
            continue
        if layer.name in exclude:
            report.skipped.append((layer.name, "excluded"))
        elif layer.name not in file_layers:
            report.missing.append(layer.name)
        else:
            plan.append(_pair_keras2(layer, layer.name, file_layers[layer.name]))
    report.unused = [n for n in file_layers if n not in model_names]
    return plan, report


def _plan_keras2_in_order(file_layers, keras_model, filepath):
    report = LoadReport(filepath, "keras2", by_name=False)
    model_layers = [layer for layer in keras_model.layers if layer.weights]
    if len(model_layers) != len(file_layers):
        raise WeightMismatchError(
            f"Cannot load '{filepath}' in order: the file has {len(file_layers)} layers "
            f"with weights, the model {len(model_layers)}. Load by name instead: "
            "load_weights(..., by_name=True), with exclude=[...] for layers that differ.")
    return [_pair_keras2(layer, name, weights)
            for layer, (name, weights) in zip(model_layers, file_layers.items())], report


def _check_plan(plan, report, filepath, skip_mismatch):
    """Raises (or, with skip_mismatch, records skips) for weights that do not fit.

    plan: [(model layer, file layer name, pairs or a count-mismatch message)],
    pairs = [(variable, our weight name, file weight name, array)].
    """
    problems = []   # (model layer name, message)
    for k, (layer, file_layer, pairs) in enumerate(plan):
        where = f"layer '{layer.name}'"
        if file_layer != layer.name:
            where += f" (file layer #{k}, '{file_layer}')"
        if isinstance(pairs, str):
            problems.append((layer.name, f"{where}: {pairs}"))
            continue
        for variable, name, file_name, array in pairs:
            if tuple(array.shape) != tuple(variable.shape):
                stored_as = "" if file_name == name else f" (stored as '{file_name}')"
                problems.append((layer.name, (
                    f"{where}, weight '{name}': the file has shape {tuple(array.shape)}"
                    f"{stored_as}, the model expects {tuple(variable.shape)}")))
    if not problems:
        return
    bad = list(dict.fromkeys(n for n, _ in problems))
    if skip_mismatch:
        report.skipped.extend((n, "shape or weight count mismatch") for n in bad)
        return
    misaligned = [(layer.name, file_layer) for layer, file_layer, _ in plan
                  if file_layer != layer.name]
    if misaligned:
        # In-order loading of a file whose layers come in another order: an
        # exclude list would be wrong advice.
        fix = (f"Loading in order paired model layer '{misaligned[0][0]}' with file layer "
               f"'{misaligned[0][1]}'. Load by name instead: load_weights(..., "
               "by_name=True), which is what Matterport's files need.")
    else:
        fix = (f"If these layers are meant to differ (e.g. another NUM_CLASSES), load "
               f"with load_weights(..., by_name=True, {_suggest_exclude(bad)}).")
    lines = [m for _, m in problems]
    if len(lines) > _MAX_LISTED:
        lines = lines[:_MAX_LISTED] + [f"... and {len(lines) - _MAX_LISTED} more"]
    raise WeightMismatchError(
        f"Weights in '{filepath}' do not fit the model:\n  " + "\n  ".join(lines)
        + "\n" + fix)


def _plan_keras3_by_name(f, keras_model, exclude, filepath):
    report = LoadReport(filepath, "keras3", by_name=True)
    groups = {}
    for group in f.get("layers", {}).values():
        if isinstance(group, h5py.Group):
            groups.setdefault(_keras3_name(group), group)
    plan = []
    for layer in keras_model.layers:
        if not layer.weights:
            continue
        if layer.name in exclude:
            report.skipped.append((layer.name, "excluded"))
        elif layer.name not in groups:
            report.missing.append(layer.name)
        else:
            try:
                triples = _read_keras3_layer(groups[layer.name], layer)
            except KeyError as e:
                raise WeightMismatchError(
                    f"Layer '{layer.name}' does not match its group in '{filepath}': {e}. "
                    f"Skip it with {_suggest_exclude([layer.name])}.") from e
            names = {id(w): n for w, n in _layer_entries(layer)}
            plan.append((layer, layer.name,
                         [(w, names[id(w)], path, a) for w, path, a in triples]))
    model_names = {layer.name for layer in keras_model.layers}
    report.unused = [n for n, g in groups.items()
                     if n not in model_names and _group_has_vars(g)]
    return plan, report


def _group_has_vars(group):
    found = []
    group.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return bool(found)


def _load_keras3_in_order(keras_model, filepath, skip_mismatch, verbose):
    """Keras 3 files in order: Keras' own structural loader."""
    if not filepath.endswith(".weights.h5"):
        raise WeightFileError(
            f"'{filepath}' is a Keras 3 weight file; Keras loads those in order only "
            "under a name ending in '.weights.h5'. Rename it, or pass by_name=True.")
    try:
        keras_model.load_weights(filepath, skip_mismatch=skip_mismatch)
    except ValueError as e:
        # Drop the variables' values Keras prints in its message.
        message = re.sub(r"value=\[.*?\]>", "...>", str(e), flags=re.S)
        raise WeightMismatchError(
            f"Keras could not load '{filepath}' into the model: {message}\nTry "
            "load_weights(..., by_name=True, exclude=[...]) to skip the layers "
            "that differ.") from e
    report = LoadReport(filepath, "keras3", by_name=False,
                        loaded=[layer.name for layer in keras_model.layers if layer.weights])
    _print_report(report, verbose)
    return report


def _print_report(report, verbose):
    if verbose <= 0:
        return
    print(report.summary())
    if verbose > 1:
        print("  loaded:", ", ".join(report.loaded))
    if report.skipped:
        print("  skipped:", ", ".join(f"{n} ({r})" for n, r in report.skipped))
    if report.missing:
        print("  not in the file, left as they were:", ", ".join(report.missing))


############################################################
#  Saving
############################################################

def save_weights(keras_model, filepath):
    """Writes a model's weights in the Keras 2 HDF5 layout, atomically.

    The layout is the one Matterport's files use (see the module docstring):
    root ``layer_names`` (every top-level layer in model order), ``backend``
    ``"tensorflow"``, ``keras_version``; one group per layer with
    ``weight_names`` (fixed-length byte strings, as Keras 2 wrote them) and
    datasets ``/<layer>/<weight name>`` with names from ``weight_manifest``.

    The file is written to a temporary file in the same directory and moved
    over ``filepath`` with ``os.replace``, so a crash or a full disk during
    the write leaves any previous file at ``filepath`` intact.
    """
    filepath = os.fspath(filepath)
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(
        prefix="." + os.path.basename(filepath) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        with h5py.File(tmp_path, "w") as f:
            _write_keras2(f, keras_model)
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
