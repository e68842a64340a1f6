"""
Mask R-CNN
Loading weight files into a model: Matterport's HDF5 files by name, Keras 3
``.weights.h5`` files, with ``exclude`` and clear errors.

The file layouts (and writing checkpoints: ``save_weights``) are in
``mrcnn.weight_files``; ``save_weights``, ``weight_manifest`` and
``WeightFileError`` are re-exported here.

Why not Keras' own loader: Keras 3's ``load_weights(by_name=True)`` for legacy
files has no ``exclude``, stops at the first mismatch with a message that does
not say how to fix it, and assigns layer by layer, so an error leaves a
half-loaded model. Here every weight is read and checked first, every
mismatch is reported at once with the ``exclude=[...]`` that fixes it, and
only then is anything assigned.
"""

import dataclasses
import os
import re

import h5py
import keras

from mrcnn.config import HEAD_LAYERS  # the layers whose shapes follow NUM_CLASSES
from mrcnn.download import get_imagenet_weights  # noqa: F401 (old place)
from mrcnn.weight_files import (ManifestEntry, WeightFileError, _check_readable,  # noqa: F401
                                _keras2_root, _keras3_name, _keras3_vars, _layer_entries,
                                _read_keras2, save_weights, weight_manifest)

__all__ = [
    "HEAD_LAYERS",
    "LoadReport",
    "ManifestEntry",
    "WeightFileError",
    "WeightMismatchError",
    "load_weights",
    "save_weights",
    "weight_manifest",
    "get_imagenet_weights",
]


# Mismatch errors list at most this many weights (the full model has 690).
_MAX_LISTED = 12


class WeightMismatchError(ValueError):
    """The file's weights do not fit the model (shape or count)."""


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


############################################################
#  Reading HDF5 attributes
############################################################


############################################################
#  Reading files: {layer name: [(weight name, array)]}
############################################################


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


def load_weights(keras_model, filepath, by_name: bool = False, exclude=None,
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
