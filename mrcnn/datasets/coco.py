"""
Mask R-CNN
MS COCO (and any COCO-format data set): loading and official evaluation.

Same API as Matterport's ``samples/coco/coco.py``: ``CocoConfig``,
``CocoDataset.load_coco(dataset_dir, subset, year, class_ids, class_map,
return_coco, auto_download)``, ``load_mask``, ``annToRLE``/``annToMask``,
``build_coco_results``. What this version adds or fixes:

* ``annotation_file=...`` loads any COCO-format JSON (your own data exported
  from CVAT, Label Studio, ...), images in ``image_dir`` or
  ``dataset_dir/<subset><year>`` or ``dataset_dir``.
* ``keep_empty=True`` keeps images without annotations of the selected
  classes (Matterport, and the default here, leaves them out);
  ``load_mask`` returns the base class's empty arrays for them.
* Every segmentation is checked before pycocotools sees it
  (``mrcnn.datasets.coco_masks``: NaN, infinite or huge coordinates crashed
  or exhausted the memory of the process): polygons with fewer than 3
  points, odd or non-finite coordinates are dropped with one warning per
  annotation (pycocotools reads a list of 4 numbers as a box), the rest
  clipped to the image; an annotation without segmentation is masked by its
  ``bbox``; an annotation whose RLE size differs from the image raises
  ValueError naming the annotation (checked before decoding), except crowds
  (Matterport's fallback: the whole image); broken RLE counts raise
  ValueError naming the annotation.
* ``auto_download`` keeps Matterport's URLs and unzip steps, downloads to a
  ``.part`` file first (Matterport left a broken zip and an empty folder
  that stopped later retries), and offline raises ConnectionError naming the
  URL and where to put the file by hand.
* Annotation ids that are 0, negative or repeated (several annotation tools
  write them) are renumbered when the file is read, and image or category
  ids 0 are scored under ids of our own by ``evaluate_coco_results``, with
  one warning: pycocotools reads id 0 as "no match", so perfect detections
  scored below AP 1.0. Results keep the file's image and category ids.
* ``evaluate_coco_results(dataset, coco, results)`` runs COCOeval on
  detections already converted with ``build_coco_results``, for "bbox" and
  "segm", prints the standard table and returns the stats; the model-running
  ``evaluate_coco(model, ...)`` wraps it.

Crowd annotations get negative class ids, masks under 1 pixel are skipped,
and COCO category ids map to contiguous class ids and back
(``map_source_class_id("coco.<category id>")``,
``get_source_class_id(class_id, "coco")``), as in Matterport.

Licensed under the MIT License (Matterport's original is MIT as well).
"""

import contextlib
import copy
import io
import json
import logging
import os
import shutil
import urllib.error
import urllib.request
import warnings
import zipfile

import numpy as np

from mrcnn import coco_eval as coco_ids  # (a local "coco_eval" is COCOeval below)
from mrcnn import utils
from mrcnn.config import Config
from mrcnn.datasets.coco_masks import RleSizeError, segmentation_rle
from mrcnn.image_io import read_image_size

__all__ = ["CocoConfig", "CocoDataset", "build_coco_results", "evaluate_coco_results",
           "DEFAULT_DATASET_YEAR", "COCO_STATS_NAMES"]

logger = logging.getLogger(__name__)

DEFAULT_DATASET_YEAR = "2014"

# What COCOeval.stats holds, in order (bbox and segm).
COCO_STATS_NAMES = (
    "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def _pycocotools():
    """Import pycocotools with an install hint instead of a bare ImportError."""
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise ImportError("COCO support needs pycocotools: pip install pycocotools") from e
    return COCO, COCOeval, mask_utils


class CocoConfig(Config):
    """Configuration for training on MS COCO.
    Derives from the base Config class and overrides values specific
    to the COCO dataset.
    """
    # Give the configuration a recognizable name
    NAME = "coco"

    # We use a GPU with 12GB memory, which can fit two images.
    # Adjust down if you use a smaller GPU.
    IMAGES_PER_GPU = 2

    # Uncomment to train on 8 GPUs (default is 1)
    # GPU_COUNT = 8

    # Number of classes (including background)
    NUM_CLASSES = 1 + 80  # COCO has 80 classes


class CocoDataset(utils.Dataset):
    """Images and instance masks from a COCO-format annotation file.

    ``image_info`` of each image: ``id`` (the COCO image id), ``path``,
    ``width``, ``height``, ``annotations`` (the COCO annotation dicts of the
    selected classes, crowds included).
    """

    def load_coco(self, dataset_dir, subset, year=DEFAULT_DATASET_YEAR, class_ids=None,
                  class_map=None, return_coco=False, auto_download=False,
                  annotation_file=None, image_dir=None, keep_empty=False):
        """Load a subset of the COCO dataset, or any COCO-format file.

        dataset_dir: The root directory of the COCO dataset.
        subset: What to load (train, val, minival, valminusminival), or None
            with annotation_file when the images are in dataset_dir itself.
        year: What dataset year to load (2014, 2017), str or int; None when
            the image folder has no year suffix.
        class_ids: If provided, only loads images that have the given
            classes (COCO category ids).
        class_map: Accepted for compatibility and not used, as in Matterport.
        return_coco: If True, returns the pycocotools COCO object.
        auto_download: Download and unzip the official MS-COCO images and
            annotations if missing (official files only).
        annotation_file: path of a COCO-format JSON to read instead of
            ``dataset_dir/annotations/instances_<subset><year>.json``;
            relative paths are tried as given, then inside dataset_dir.
        image_dir: folder of the images; default
            ``dataset_dir/<subset><year>`` ("val" for minival and
            valminusminival), or dataset_dir when subset is None.
        keep_empty: also keep images without annotations of the selected
            classes (they get no instances).
        """
        COCO, _, _ = _pycocotools()
        dataset_dir = os.fspath(dataset_dir)
        year = "" if year is None else str(year)

        if annotation_file is None:
            if subset is None or not year:
                raise ValueError("load_coco: give subset and year for the official COCO "
                                 "layout, or annotation_file=<path to a COCO json>.")
            if auto_download is True:
                self.auto_download(dataset_dir, subset, year)
            ann_path = os.path.join(dataset_dir, "annotations",
                                    "instances_{}{}.json".format(subset, year))
            tried = [ann_path]
        else:
            if auto_download:
                raise ValueError("load_coco: auto_download fetches the official COCO files "
                                 "only; it cannot be combined with annotation_file.")
            annotation_file = os.fspath(annotation_file)
            tried = [annotation_file]
            if not os.path.isabs(annotation_file):
                tried.append(os.path.join(dataset_dir, annotation_file))
            ann_path = next((p for p in tried if os.path.isfile(p)), tried[-1])
        if not os.path.isfile(ann_path):
            hint = ("pass auto_download=True to fetch it, or annotation_file=<path>"
                    if annotation_file is None else "check the path")
            raise FileNotFoundError("COCO annotation file not found: {}; {}.".format(
                " or ".join(tried), hint))

        if image_dir is None:
            if subset is None:
                image_dir = dataset_dir
            else:
                if subset in ("minival", "valminusminival"):
                    subset = "val"
                image_dir = os.path.join(dataset_dir, "{}{}".format(subset, year))
        image_dir = os.fspath(image_dir)
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(
                f"COCO image folder not found: {image_dir}. Put the images of {ann_path} "
                "there, or pass image_dir=<folder of the images>.")

        coco = _read_coco(COCO, ann_path)

        # Load all classes or a subset?
        if not class_ids:
            # All classes
            class_ids = sorted(coco.getCatIds())
        unknown = [c for c in class_ids if c not in coco.cats]
        if unknown:
            raise ValueError(f"load_coco: class_ids {unknown} are not category ids of "
                             f"{ann_path}; it has {sorted(coco.cats)}.")

        # All images, or only those with instances of the selected classes?
        if keep_empty:
            image_ids = sorted(coco.imgs)
        else:
            image_ids = sorted({i for c in class_ids for i in coco.getImgIds(catIds=[c])})

        # Add classes
        for i in class_ids:
            self.add_class("coco", i, coco.loadCats(i)[0]["name"])

        # Add images
        for i in image_ids:
            img = coco.imgs[i]
            path = os.path.join(image_dir, img["file_name"])
            height, width = img.get("height"), img.get("width")
            if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                       for v in (height, width)):
                # Some exporters leave the size out; the file header has it.
                height, width = read_image_size(path)
            self.add_image(
                "coco", image_id=i, path=path, width=width, height=height,
                annotations=coco.loadAnns(coco.getAnnIds(
                    imgIds=[i], catIds=class_ids, iscrowd=None)))
        if return_coco:
            return coco

    def auto_download(self, dataDir, dataType, dataYear):
        """Download the COCO dataset/annotations if requested.
        dataDir: The root directory of the COCO dataset.
        dataType: What to load (train, val, minival, valminusminival)
        dataYear: What dataset year to load (2014, 2017) as a string, not an integer
        Note:
            For 2014, use "train", "val", "minival", or "valminusminival"
            For 2017, only "train" and "val" annotations are available
        """
        dataYear = str(dataYear)
        if dataType in ("minival", "valminusminival") and dataYear != "2014":
            raise ValueError(f"COCO {dataType} annotations exist for 2014 only, "
                             f"not {dataYear}.")

        # Setup paths and file names
        image_type = "val" if dataType in ("minival", "valminusminival") else dataType
        imgDir = "{}/{}{}".format(dataDir, image_type, dataYear)
        imgZipFile = "{}/{}{}.zip".format(dataDir, image_type, dataYear)
        imgURL = "http://images.cocodataset.org/zips/{}{}.zip".format(image_type, dataYear)

        # Create main folder if it doesn't exist yet
        os.makedirs(dataDir, exist_ok=True)

        # Download images if not available locally. The folder appears only
        # once unzipped, so an interrupted download is retried next time.
        if not os.path.isdir(imgDir) or not os.listdir(imgDir):
            if not os.path.exists(imgZipFile):
                _download(imgURL, imgZipFile, unpacks_to=imgDir)
            _unzip(imgZipFile, dataDir)
        logger.info("Will use images in %s", imgDir)

        # Setup annotations data paths
        annDir = "{}/annotations".format(dataDir)
        if dataType == "minival":
            annZipFile = "{}/instances_minival2014.json.zip".format(dataDir)
            annFile = "{}/instances_minival2014.json".format(annDir)
            annURL = "https://dl.dropboxusercontent.com/s/o43o90bna78omob/instances_minival2014.json.zip?dl=0"
            unZipDir = annDir
        elif dataType == "valminusminival":
            annZipFile = "{}/instances_valminusminival2014.json.zip".format(dataDir)
            annFile = "{}/instances_valminusminival2014.json".format(annDir)
            annURL = "https://dl.dropboxusercontent.com/s/s3tw5zcg7395368/instances_valminusminival2014.json.zip?dl=0"
            unZipDir = annDir
        else:
            annZipFile = "{}/annotations_trainval{}.zip".format(dataDir, dataYear)
            annFile = "{}/instances_{}{}.json".format(annDir, dataType, dataYear)
            annURL = "http://images.cocodataset.org/annotations/annotations_trainval{}.zip".format(dataYear)
            unZipDir = dataDir

        # Download annotations if not available locally
        os.makedirs(annDir, exist_ok=True)
        if not os.path.exists(annFile):
            if not os.path.exists(annZipFile):
                _download(annURL, annZipFile, unpacks_to=annFile)
            _unzip(annZipFile, unZipDir)
        logger.info("Will use annotations in %s", annFile)

    def load_mask(self, image_id):
        """Load instance masks for the given image.

        Different datasets use different ways to store masks. This
        function converts the different mask format to one format
        in the form of a bitmap [height, width, instances].

        Returns:
        masks: A bool array of shape [height, width, instance count] with
            one mask per instance.
        class_ids: a 1D array of class IDs of the instance masks, int32;
            negative for crowd annotations.
        """
        # If not a COCO image, delegate to parent class.
        image_info = self.image_info[image_id]
        if image_info["source"] != "coco":
            return super().load_mask(image_id)

        source_map = getattr(self, "class_from_source_map", None)
        if not source_map:
            raise RuntimeError("CocoDataset.load_mask: call dataset.prepare() after "
                               "load_coco() and before loading masks")
        height, width = image_info["height"], image_info["width"]
        instance_masks = []
        class_ids = []
        # Build mask of shape [height, width, instance_count] and list
        # of class IDs that correspond to each channel of the mask.
        for annotation in image_info["annotations"]:
            class_id = source_map.get("coco.{}".format(annotation.get("category_id")))
            if not class_id:
                continue  # a category not loaded (or unknown to the file)
            where = "COCO annotation {} of image {} ({})".format(
                annotation.get("id"), image_info["id"], image_info["path"])
            try:
                m = self._annotation_mask(annotation, height, width, where)
            except RleSizeError as e:
                # For crowd masks, the RLE is sometimes not of the image's
                # size: Matterport's fallback, the whole image.
                if not annotation.get("iscrowd"):
                    raise ValueError(f"{e}; fix the annotation's 'size' or the image's "
                                     f"width/height.") from None
                m = np.ones([height, width], dtype=bool)
            # Some objects are so small that they're less than 1 pixel area
            # and end up rounded out. Skip those objects.
            if m.max(initial=0) < 1:
                continue
            # Is it a crowd? If so, use a negative class ID.
            if annotation.get("iscrowd"):
                class_id *= -1
            instance_masks.append(m)
            class_ids.append(class_id)

        # Pack instance masks into an array
        if class_ids:
            mask = np.stack(instance_masks, axis=2).astype(bool)
            class_ids = np.array(class_ids, dtype=np.int32)
            return mask, class_ids
        else:
            # Call super class to return an empty mask
            return super().load_mask(image_id)

    def image_reference(self, image_id):
        """Return a link to the image in the COCO Website."""
        info = self.image_info[image_id]
        if info["source"] == "coco":
            return "http://cocodataset.org/#explore?id={}".format(info["id"])
        return super().image_reference(image_id)

    # The following two functions are from pycocotools with a few changes.

    def annToRLE(self, ann, height, width):
        """
        Convert annotation which can be polygons, uncompressed RLE to RLE.
        Every segmentation is checked first (``coco_masks.segmentation_rle``:
        polygon parts with fewer than 3 points, NaN or infinite coordinates
        are dropped, the rest clipped to the image; an annotation without
        a usable segmentation becomes its bbox rectangle; RLEs of another
        size or with broken counts raise ValueError).
        :return: RLE dict (or None when nothing is left)
        """
        _, _, mask_utils = _pycocotools()
        rle, _ = segmentation_rle(ann, height, width, mask_utils,
                                  f"COCO annotation {ann.get('id')}")
        return rle

    def annToMask(self, ann, height, width):
        """
        Convert annotation which can be polygons, uncompressed RLE, or RLE to binary mask.
        :return: binary mask [height, width] uint8
        """
        _, _, mask_utils = _pycocotools()
        rle = self.annToRLE(ann, height, width)
        if rle is None:
            return np.zeros([height, width], dtype=np.uint8)
        return mask_utils.decode(rle)

    def _annotation_mask(self, ann, height, width, where):
        """annToMask with the dropped parts logged once per annotation."""
        _, _, mask_utils = _pycocotools()
        rle, problems = segmentation_rle(ann, height, width, mask_utils, where)
        if problems:
            warned = self.__dict__.setdefault("_warned_annotations", set())
            if where not in warned:
                warned.add(where)
                logger.warning("%s: dropped %s.", where, ", ".join(problems))
        if rle is None:
            return np.zeros([height, width], dtype=np.uint8)
        return mask_utils.decode(rle)


def _read_coco(COCO, ann_path):
    """pycocotools' COCO object of a file, its annotation ids made unique
    and >= 1 (``coco_eval.safe_coco_ids``; one warning lists every id
    problem of the file, image and category ids 0 included, which
    evaluate_coco_results handles)."""
    try:
        with open(ann_path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # json errors are ValueErrors
        raise ValueError(f"{ann_path} is not a valid COCO annotation file: {e}") from None
    if not isinstance(data, dict) or not all(
            isinstance(data.get(k, []), list) for k in ("images", "annotations", "categories")):
        raise ValueError(f"{ann_path} is not in COCO format (expected an object with "
                         f"'images', 'annotations', 'categories' lists).")
    _, _, problems = coco_ids.safe_coco_ids(data, where=ann_path)
    data, _, _ = coco_ids.safe_coco_ids(data, where=ann_path, images_and_categories=False)
    coco = COCO()
    coco.dataset = data
    try:
        coco.createIndex()
    except (AssertionError, TypeError, KeyError) as e:
        raise ValueError(f"{ann_path} is not in COCO format (expected an object with "
                         f"'images', 'annotations', 'categories'): {e!r}") from None
    coco_ids.warn_id_problems(ann_path, problems)
    coco.mrcnn_ids_warned = bool(problems)
    return coco


class _DownloadError(ConnectionError):
    pass


def _download(url, path, unpacks_to):
    """Fetch url into path via path + '.part', with a clear offline error."""
    logger.info("Downloading %s to %s ...", url, path)
    part = path + ".part"
    try:
        with urllib.request.urlopen(url) as resp, open(part, "wb") as out:
            shutil.copyfileobj(resp, out)
    except (urllib.error.URLError, OSError) as e:
        if os.path.exists(part):
            os.remove(part)
        raise _DownloadError(
            f"Could not download {url} ({e}). If this machine is offline, download it "
            f"elsewhere and put it at {path} (or unpack it so that {unpacks_to} exists), "
            "then run again.") from e
    os.replace(part, path)
    logger.info("... done downloading.")


def _unzip(zip_path, out_dir):
    logger.info("Unzipping %s", zip_path)
    try:
        with zipfile.ZipFile(zip_path, "r") as zip_ref:
            zip_ref.extractall(out_dir)
    except zipfile.BadZipFile as e:
        raise ValueError(f"{zip_path} is not a valid zip file ({e}); delete it and "
                         "download it again.") from None
    logger.info("... done unzipping")


############################################################
#  COCO Evaluation
############################################################

def build_coco_results(dataset, image_ids, rois, class_ids, scores, masks):
    """Arrange detections of one image as COCO results
    (http://cocodataset.org/#format-results).

    dataset: the CocoDataset the class ids belong to.
    image_ids: list with the COCO image id (image_info["id"]) the
        detections belong to; Matterport passes one id at a time.
    rois: [N, (y1, x1, y2, x2)] boxes in image pixels, or None.
    class_ids: [N] int, dataset class ids.
    scores: [N] float.
    masks: [height, width, N] bool or uint8, image pixels.
    Returns: list of dicts with image_id, category_id (COCO category id),
        bbox [x, y, width, height], score (float) and segmentation (RLE with
        a str "counts", so the list goes through json.dumps).
    """
    _, _, mask_utils = _pycocotools()
    # If no results, return an empty list
    if rois is None:
        return []
    rois = np.asarray(rois)
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[-1] != rois.shape[0]:
        raise ValueError(f"build_coco_results: masks must be [height, width, N] with N = "
                         f"{rois.shape[0]} boxes, got shape {masks.shape}")
    results = []
    for image_id in image_ids:
        # Loop through detections
        for i in range(rois.shape[0]):
            bbox = np.around(rois[i].astype(np.float64), 1)
            # COCO tools need a Fortran-ordered uint8 mask.
            rle = mask_utils.encode(np.asfortranarray(masks[:, :, i].astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            results.append({
                "image_id": int(image_id),
                "category_id": int(dataset.get_source_class_id(int(class_ids[i]), "coco")),
                "bbox": [float(bbox[1]), float(bbox[0]),
                         float(bbox[3] - bbox[1]), float(bbox[2] - bbox[0])],
                "score": float(scores[i]),
                "segmentation": rle,
            })
    return results


def evaluate_coco_results(dataset, coco, results, eval_types=("bbox", "segm"), image_ids=None):
    """Run the official COCO evaluation on detections in COCO result format.

    dataset: the CocoDataset evaluated on.
    coco: its pycocotools COCO object (load_coco(..., return_coco=True)).
    results: list of result dicts (build_coco_results), for the images in
        image_ids; not modified.
    eval_types: any of "bbox", "segm".
    image_ids: dataset image ids (indices into dataset.image_info) to
        evaluate on; default all of dataset.image_ids.
    Returns: {eval_type: stats [12] float64} in COCO_STATS_NAMES order
        (AP, AP50, AP75, ...); -1 where COCO has no ground truth to score.
        The standard table is printed for each type.
    """
    COCO, COCOeval, _ = _pycocotools()
    if isinstance(eval_types, str):
        eval_types = (eval_types,)
    for t in eval_types:
        if t not in ("bbox", "segm"):
            raise ValueError(f"evaluate_coco_results: eval type {t!r} is not 'bbox' or 'segm'")
    if image_ids is None:
        image_ids = dataset.image_ids
    coco_image_ids = [dataset.image_info[i]["id"] for i in image_ids]
    stray = sorted({r["image_id"] for r in results} - set(coco.getImgIds()))
    if stray:
        raise ValueError(f"evaluate_coco_results: results for image ids {stray[:10]} that "
                         "the COCO ground truth does not have")
    # Ids 0 (or repeated annotation ids): scored under ids of our own, the
    # results translated; see coco_eval.safe_coco_ids.
    safe, maps, problems = coco_ids.safe_coco_ids(coco.dataset, "evaluate_coco_results")
    if problems and not getattr(coco, "mrcnn_ids_warned", False):
        coco_ids.warn_id_problems("evaluate_coco_results", problems)
        coco.mrcnn_ids_warned = True
    if safe is not coco.dataset:
        coco = COCO()
        coco.dataset = safe
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' progress prints
            coco.createIndex()
        results = coco_ids.results_to_safe_ids(results, maps)
        coco_image_ids = [maps.get("image", {}).get(i, i) for i in coco_image_ids]

    stats = {}
    for eval_type in eval_types:
        # loadRes adds fields to the dicts it gets, so give it copies.
        if results:
            coco_results = coco.loadRes(copy.deepcopy(list(results)))
        else:
            # loadRes cannot take an empty list; an empty result set scores 0.
            coco_results = COCO()
            coco_results.dataset = {"images": copy.deepcopy(coco.dataset.get("images", [])),
                                    "categories": copy.deepcopy(
                                        coco.dataset.get("categories", [])),
                                    "annotations": []}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                coco_results.createIndex()
        print(f"Evaluating {eval_type} on {len(coco_image_ids)} images, "
              f"{len(results)} detections")
        coco_eval = COCOeval(coco, coco_results, eval_type)
        coco_eval.params.imgIds = coco_image_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        stats[eval_type] = np.array(coco_eval.stats, dtype=np.float64)
    return stats

