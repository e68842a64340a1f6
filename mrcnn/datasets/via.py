"""
Mask R-CNN
Datasets annotated with the VGG Image Annotator (VIA), like Matterport's
balloon sample.

``ViaDataset.load_via(dataset_dir, subset)`` reads ``dataset_dir/subset/``
holding the images and ``via_region_data.json``, the layout of Matterport's
balloon data set. It generalises Matterport's ``BalloonDataset.load_balloon``:

Annotation files
    * VIA 1.x exports: ``{key: {"filename", "regions": {"0": region, ...}}}``
      (the balloon data set).
    * VIA 2.x exports: the same with ``"regions": [region, ...]``.
    * VIA 2 project files (``{"_via_img_metadata": {...}, ...}``).
    VIA 3 projects and COCO files are recognised and refused with a message
    saying what to use instead.

Region shapes (``shape_attributes["name"]``), rasterised in ``load_mask``
    * ``polygon``: ``all_points_x``/``all_points_y``; pixel (r, c) is inside
      when its centre is, as ``skimage.draw.polygon`` decides (Matterport's
      rule). Points outside the image are fine: the mask is clipped to the
      image (Matterport raised IndexError). Fewer than 3 points: skipped with
      a warning. A NaN or infinite number (any shape): skipped with a warning.
    * ``polyline``: closed and filled like a polygon. Mask R-CNN only learns
      regions, and in practice a polyline around an object is a polygon drawn
      with the neighbouring tool; an open line has no area to learn.
    * ``rect``: ``x, y, width, height``: rows ``y .. y+height-1``, columns
      ``x .. x+width-1`` (rounded), clipped.
    * ``circle`` (``cx, cy, r``) and ``ellipse`` (``cx, cy, rx, ry`` and
      optional ``theta``, radians, turning the x radius towards +y as VIA's
      canvas does): pixels whose centre lies inside, clipped.
    * ``point`` and unknown shapes: skipped with a warning (no area).
    A region whose mask ends up empty (entirely outside the image) gives no
    instance.

Classes
    ``class_names`` is a sequence (names get source ids 1, 2, ... in order) or
    a mapping ``{name: source id}`` (several names may share an id). With one
    class every region belongs to it. With several, ``class_attribute`` names
    the VIA region attribute holding the class: a text/dropdown/radio value
    (a string) or a checkbox (a dict with exactly one ticked option). Regions
    without a known class are skipped with one summary warning.

Images
    Images without usable regions are skipped, as Matterport's balloon loader
    did, unless ``keep_empty=True``: then they are kept with no instances
    (``load_mask`` returns ``[H, W, 0]``), useful as negative examples. File
    names that leave the data set folder (absolute paths, ``..``) or are URLs
    raise ValueError. Every listed image must exist (FileNotFoundError names
    the path). The image size is read from the file header when first needed
    (``image_size()``, ``load_mask()``), not by decoding every image at load
    time as Matterport did; EXIF rotation is taken into account.

Licensed under the MIT License (Matterport's original is MIT as well).
"""

import json
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Mapping

import numpy as np
import skimage.draw

from mrcnn import utils
from mrcnn.image_io import read_image_size

__all__ = ["ViaDataset", "read_via_annotations", "region_mask", "read_image_size"]

# Region shapes that become masks; "point" has no area.
AREA_SHAPES = ("polygon", "polyline", "rect", "circle", "ellipse")

# How many skipped-region details one summary warning lists.
_MAX_WARNING_DETAILS = 5

_EXPECTED_VIA = ("a VIA 1.x/2.x JSON export (Annotation > Export Annotations as json) "
                 "or a VIA 2 project file")


def read_via_annotations(path):
    """Read a VIA annotation file into one list, whatever its version.

    path: a VIA 1.x or 2.x JSON export, or a VIA 2 project file.
    Returns: list of dicts ``{"filename": str, "regions": [region, ...],
        "file_attributes": dict}`` in file order, each region a dict with
        ``shape_attributes`` and ``region_attributes``; VIA 1.x region dicts
        keyed "0", "1", ... become lists in numeric key order.
    Raises FileNotFoundError / ValueError naming the file and what was expected.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"VIA annotation file not found: {path}. Expected {_EXPECTED_VIA} "
            "in the folder with the images.")
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.strip():
        raise ValueError(f"VIA annotation file {path} is empty; expected {_EXPECTED_VIA}.")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        csv_hint = (" VIA CSV exports are not supported: export the annotations as json."
                    if path.lower().endswith(".csv") else "")
        raise ValueError(f"VIA annotation file {path} is not valid JSON ({e}); "
                         f"expected {_EXPECTED_VIA}.{csv_hint}") from None
    if not isinstance(data, dict):
        raise ValueError(f"VIA annotation file {path}: the top level is a "
                         f"{type(data).__name__}, expected an object; expected {_EXPECTED_VIA}.")
    if "_via_img_metadata" in data:  # VIA 2 project file
        data = data["_via_img_metadata"]
        if not isinstance(data, dict):
            raise ValueError(f"VIA project file {path}: '_via_img_metadata' is not an object.")
    elif {"project", "file", "metadata"} <= data.keys():
        raise ValueError(f"{path} is a VIA 3 project, which is not supported; open the "
                         "images in VIA 2 and export the annotations as json.")
    elif {"images", "annotations"} <= data.keys():
        raise ValueError(f"{path} looks like a COCO annotation file; load it with "
                         "mrcnn.datasets.coco.CocoDataset.load_coco(annotation_file=...).")

    entries = []
    for key, entry in data.items():
        where = f"VIA annotation file {path}, entry {key!r}"
        if not isinstance(entry, dict) or "filename" not in entry:
            raise ValueError(f"{where}: expected an object with 'filename' and 'regions'; "
                             f"is this {_EXPECTED_VIA}?")
        regions = entry.get("regions") or []
        if isinstance(regions, dict):
            # VIA 1.x: {"0": region, "1": region, ...}; order by number.
            keys = list(regions)
            if all(re.fullmatch(r"\d+", str(k)) for k in keys):
                keys.sort(key=int)
            regions = [regions[k] for k in keys]
        elif not isinstance(regions, list):
            raise ValueError(f"{where}: 'regions' is a {type(regions).__name__}, "
                             "expected a list (VIA 2) or an object (VIA 1)")
        for i, region in enumerate(regions):
            if not isinstance(region, dict) or not isinstance(
                    region.get("shape_attributes"), dict):
                raise ValueError(f"{where}, region {i}: expected an object with "
                                 "'shape_attributes'")
        entries.append({"filename": entry["filename"], "regions": regions,
                        "file_attributes": entry.get("file_attributes") or {}})
    return entries


def _check_filename(filename, where):
    """Refuse file names that would read outside the data set folder."""
    if not isinstance(filename, str) or not filename.strip():
        raise ValueError(f"{where}: 'filename' must be a non-empty string, got {filename!r}")
    if "://" in filename:
        raise ValueError(f"{where}: file name {filename!r} is a URL; download the image "
                         "into the data set folder and use its file name.")
    parts = re.split(r"[\\/]", filename)
    if (os.path.isabs(filename) or filename[0] in "/\\"
            or re.match(r"[A-Za-z]:", filename) or ".." in parts):
        raise ValueError(f"{where}: file name {filename!r} leaves the data set folder; "
                         "image file names must be relative, without '..'.")


def _numbers(shape, key, where):
    try:
        return [float(v) for v in shape[key]]
    except KeyError:
        raise ValueError(f"{where}: {shape.get('name')} lacks {key!r}") from None
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {key!r} must be a list of numbers, "
                         f"got {shape[key]!r}") from None


def _number(shape, key, where, default=None):
    if key not in shape and default is not None:
        return default
    try:
        return float(shape[key])
    except KeyError:
        raise ValueError(f"{where}: {shape.get('name')} lacks {key!r}") from None
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {key!r} must be a number, got {shape[key]!r}") from None


def _normalize_shape(shape, where):
    """Check a region's shape_attributes and make its numbers floats.

    Returns (shape dict, None) when usable, (None, reason) when it has no area.
    Raises ValueError for malformed shapes (missing or non-numeric fields).
    """
    out, reason = _normalize_numbers(shape, where)
    if out is not None:
        numbers = []
        for key, value in out.items():
            if key != "name":
                numbers.extend(value if isinstance(value, list) else [value])
        if not all(math.isfinite(v) for v in numbers):
            return None, f"{out['name']} with NaN or infinite coordinates"
    return out, reason


def _normalize_numbers(shape, where):
    name = shape.get("name")
    if name in ("polygon", "polyline"):
        xs = _numbers(shape, "all_points_x", where)
        ys = _numbers(shape, "all_points_y", where)
        if len(xs) != len(ys):
            raise ValueError(f"{where}: {name} has {len(xs)} x and {len(ys)} y coordinates")
        if len(xs) < 3:
            return None, f"{name} with {len(xs)} point(s)"
        return {"name": name, "all_points_x": xs, "all_points_y": ys}, None
    if name == "rect":
        out = {"name": name}
        for key in ("x", "y", "width", "height"):
            out[key] = _number(shape, key, where)
        if out["width"] <= 0 or out["height"] <= 0:
            return None, "rect of zero area"
        return out, None
    if name == "circle":
        out = {"name": name, "cx": _number(shape, "cx", where),
               "cy": _number(shape, "cy", where), "r": _number(shape, "r", where)}
        if out["r"] <= 0:
            return None, "circle of zero radius"
        return out, None
    if name == "ellipse":
        out = {"name": name}
        for key in ("cx", "cy", "rx", "ry"):
            out[key] = _number(shape, key, where)
        out["theta"] = _number(shape, "theta", where, default=0.0)
        if out["rx"] <= 0 or out["ry"] <= 0:
            return None, "ellipse of zero radius"
        return out, None
    if name == "point":
        return None, "point (no area)"
    return None, f"unknown shape {name!r}"


def region_mask(shape, height, width):
    """Rasterise one normalised VIA shape.

    shape: shape_attributes with float numbers (see the module docstring for
        each shape's pixel rule).
    height, width: image size in pixels.
    Returns: mask [height, width] bool, clipped to the image.
    """
    mask = np.zeros([height, width], dtype=bool)
    name = shape["name"]
    if name in ("polygon", "polyline"):
        rr, cc = skimage.draw.polygon(shape["all_points_y"], shape["all_points_x"],
                                      shape=(height, width))
        mask[rr, cc] = True
    elif name == "rect":
        y1, x1 = round(shape["y"]), round(shape["x"])
        y2, x2 = round(shape["y"] + shape["height"]), round(shape["x"] + shape["width"])
        mask[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
    elif name in ("circle", "ellipse"):
        if name == "circle":
            cx, cy, rx, ry, theta = shape["cx"], shape["cy"], shape["r"], shape["r"], 0.0
        else:
            cx, cy, rx, ry, theta = (shape[k] for k in ("cx", "cy", "rx", "ry", "theta"))
        # Only pixels within the bounding circle can be inside.
        reach = max(rx, ry)
        r0, r1 = max(int(math.floor(cy - reach)), 0), min(int(math.ceil(cy + reach)) + 1, height)
        c0, c1 = max(int(math.floor(cx - reach)), 0), min(int(math.ceil(cx + reach)) + 1, width)
        if r0 < r1 and c0 < c1:
            dy = np.arange(r0, r1, dtype=np.float64)[:, None] - cy
            dx = np.arange(c0, c1, dtype=np.float64)[None, :] - cx
            cos, sin = math.cos(theta), math.sin(theta)
            # Coordinates along the ellipse's own axes (x axis turned by theta
            # towards +y, image rows growing downwards as on VIA's canvas).
            u = (dx * cos + dy * sin) / rx
            v = (-dx * sin + dy * cos) / ry
            mask[r0:r1, c0:c1] = u * u + v * v <= 1.0
    else:
        raise ValueError(f"region_mask: shape {name!r} has no area; expected one of {AREA_SHAPES}")
    return mask


class ViaDataset(utils.Dataset):
    """Instances annotated as VIA regions, one folder per subset.

    ``image_info`` of each image holds ``path``, ``polygons`` (the regions'
    shape_attributes, numbers as floats, as Matterport's balloon loader
    stored them), ``region_class_ids`` (source class id per region) and,
    once known, ``height`` and ``width``.
    """

    def load_via(self, dataset_dir, subset, class_names=("balloon",), source="balloon",
                 class_attribute=None, annotation_file="via_region_data.json",
                 keep_empty=False):
        """Load one subset of a VIA-annotated data set.

        dataset_dir: root folder of the data set.
        subset: sub-folder to load ("train", "val", ...), or None to read
            dataset_dir itself.
        class_names: sequence of class names (source ids 1, 2, ...) or a
            mapping {name: source id >= 1}.
        source: source name of the classes and images (no dots).
        class_attribute: name of the region attribute holding the class
            name; required when there is more than one class.
        annotation_file: file name inside the subset folder (or an absolute
            path).
        keep_empty: keep images without usable regions (no instances)
            instead of skipping them.
        Returns: the number of images added.
        """
        folder = os.fspath(dataset_dir) if subset is None else os.path.join(dataset_dir, subset)
        ann_path = os.path.join(folder, annotation_file)
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"VIA data set folder not found: {folder} (dataset_dir={os.fspath(dataset_dir)!r}, "
                f"subset={subset!r}). Expected a folder holding the images and "
                f"{annotation_file}.")

        name_to_id = self._class_table(class_names)
        ids = sorted(set(name_to_id.values()))
        if class_attribute is None and len(ids) > 1:
            raise ValueError(
                f"load_via: {len(ids)} classes {list(name_to_id)} but class_attribute is "
                "None; pass class_attribute=<the VIA region attribute holding the class name>.")
        for class_id in ids:
            first_name = next(n for n, i in name_to_id.items() if i == class_id)
            self.add_class(source, class_id, first_name)
        if not hasattr(self, "_via_sources"):
            self._via_sources = set()
        self._via_sources.add(source)

        skipped = Counter()  # reason -> count
        details = []
        added = 0
        for entry in read_via_annotations(ann_path):
            filename = entry["filename"]
            where = f"{ann_path}, image {filename!r}"
            _check_filename(filename, where)
            image_path = os.path.join(folder, filename)
            if not os.path.isfile(image_path):
                raise FileNotFoundError(
                    f"Image listed in {ann_path} not found: {image_path}. Put the image "
                    f"file there or remove its entry from the annotation file.")
            polygons, region_class_ids = [], []
            for i, region in enumerate(entry["regions"]):
                rwhere = f"{where}, region {i}"
                shape, reason = _normalize_shape(region["shape_attributes"], rwhere)
                if shape is not None:
                    class_id, reason = self._region_class(
                        region.get("region_attributes") or {}, class_attribute,
                        name_to_id, ids)
                if reason is not None:
                    skipped[reason] += 1
                    if len(details) < _MAX_WARNING_DETAILS:
                        details.append(f"{rwhere}: {reason}")
                    continue
                polygons.append(shape)
                region_class_ids.append(class_id)
            if not polygons and not keep_empty:
                continue
            self.add_image(source, image_id=filename, path=image_path,
                           polygons=polygons, region_class_ids=region_class_ids)
            added += 1
        if skipped:
            summary = ", ".join(f"{n} x {reason}" for reason, n in skipped.most_common())
            warnings.warn(f"{ann_path}: skipped {sum(skipped.values())} region(s) without a "
                          f"usable mask or class: {summary}. First ones: " + "; ".join(details),
                          stacklevel=2)
        return added

    @staticmethod
    def _class_table(class_names):
        """{name: source id} from a sequence or mapping, checked."""
        if isinstance(class_names, str):
            class_names = (class_names,)
        if isinstance(class_names, Mapping):
            table = dict(class_names)
        else:
            table = {name: i for i, name in enumerate(class_names, start=1)}
        if not table:
            raise ValueError("load_via: class_names is empty; give at least one class name.")
        for name, class_id in table.items():
            if not isinstance(class_id, (int, np.integer)) or isinstance(class_id, bool) \
                    or class_id < 1:
                raise ValueError(f"load_via: class {name!r} has id {class_id!r}; class ids "
                                 "must be ints >= 1 (0 is the background).")
        return {str(n): int(i) for n, i in table.items()}

    @staticmethod
    def _region_class(attributes, class_attribute, name_to_id, ids):
        """(source class id, None) for a region, or (None, reason to skip it)."""
        if class_attribute is None:
            return ids[0], None
        value = attributes.get(class_attribute) if isinstance(attributes, dict) else None
        if isinstance(value, dict):  # checkbox attribute: {option: true, ...}
            ticked = [k for k, v in value.items() if v]
            if len(ticked) != 1:
                return None, f"{class_attribute!r} has {len(ticked)} options ticked"
            value = ticked[0]
        if value is None or value == "":
            return None, f"no {class_attribute!r} attribute"
        value = str(value)
        for candidate in (value, value.strip()):
            if candidate in name_to_id:
                return name_to_id[candidate], None
        return None, f"class {value!r} not in class_names"

    def image_size(self, image_id):
        """(height, width) of an image, read from its header once and cached
        in ``image_info``."""
        info = self.image_info[image_id]
        if info.get("height") is None or info.get("width") is None:
            info["height"], info["width"] = read_image_size(info["path"])
        return info["height"], info["width"]

    def load_mask(self, image_id):
        """Instance masks of an image's regions.

        Returns:
        masks: [height, width, instances] bool, one mask per region with a
            non-empty mask, in annotation order.
        class_ids: [instances] int32, dataset class ids (needs prepare()).
        """
        info = self.image_info[image_id]
        if info["source"] not in getattr(self, "_via_sources", ()):
            return super().load_mask(image_id)
        height, width = self.image_size(image_id)
        masks = [region_mask(shape, height, width) for shape in info["polygons"]]
        keep = [i for i, m in enumerate(masks) if m.any()]
        mask = np.zeros([height, width, len(keep)], dtype=bool)
        for j, i in enumerate(keep):
            mask[:, :, j] = masks[i]
        source_map = getattr(self, "class_from_source_map", None) or {}
        class_ids = []
        for i in keep:
            key = "{}.{}".format(info["source"], info["region_class_ids"][i])
            if key not in source_map:
                raise RuntimeError("ViaDataset.load_mask: call dataset.prepare() after "
                                   "load_via() and before loading masks")
            class_ids.append(source_map[key])
        return mask, np.array(class_ids, dtype=np.int32)

    def image_reference(self, image_id):
        """Return the path of the image."""
        info = self.image_info[image_id]
        if info["source"] in getattr(self, "_via_sources", ()):
            return info["path"]
        return super().image_reference(image_id)
