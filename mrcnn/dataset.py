"""The ``Dataset`` base class (Matterport's ``utils.Dataset``).

Subclass it for your data: register classes and images, override
``load_mask`` (and ``load_image`` / ``image_reference`` if needed), then call
``prepare()``. ``mrcnn.datasets`` has ready ones (shapes, VIA, COCO).
"""
from typing import Optional, Tuple

import numpy as np

from mrcnn import coco_eval
from mrcnn.image_io import ImageReadError, read_image

__all__ = ["Dataset"]


class Dataset(object):
    """The base class for dataset classes.

    To use it, create a new class that adds functions specific to the dataset
    you want to use. For example::

        class CatsAndDogsDataset(Dataset):
            def load_cats_and_dogs(self):
                ...
            def load_mask(self, image_id):
                ...
            def image_reference(self, image_id):
                ...

    See ``mrcnn.datasets`` (shapes, VIA balloons, COCO) for examples.

    Ids: every image and class has an internal integer id (its index in
    ``image_info`` / ``class_info``, class 0 is the background "BG") and a
    source id (``"<source>.<id in that source>"``); ``prepare()`` builds the
    maps between them.

    image_channel_count: channels ``load_image`` returns (3 = RGB, 1 =
        grayscale, 4 = RGBA/RGB-D); pass ``config.IMAGE_CHANNEL_COUNT``:
        ``MyDataset(image_channel_count=config.IMAGE_CHANNEL_COUNT)`` or set
        the attribute. Subclasses that override ``__init__`` without calling
        ``super().__init__`` get the class default 3.
    """

    image_channel_count = 3

    def __init__(self, class_map=None, image_channel_count: Optional[int] = None):
        self._image_ids = []
        self.image_info = []
        # Background is always the first class
        self.class_info = [{"source": "", "id": 0, "name": "BG"}]
        self.source_class_ids = {}
        if image_channel_count is not None:
            self.image_channel_count = int(image_channel_count)

    def add_class(self, source: str, class_id: int, class_name: str) -> None:
        """Registers class ``class_id`` of ``source`` (a source name must not
        contain a dot). Adding the same (source, class_id) twice is a no-op."""
        if "." in source:
            raise ValueError(f"Dataset.add_class: source name {source!r} cannot contain a dot.")
        # Does the class exist already?
        for info in self.class_info:
            if info['source'] == source and info["id"] == class_id:
                # source.class_id combination already available, skip
                return
        # Add the class
        self.class_info.append({
            "source": source,
            "id": class_id,
            "name": class_name,
        })

    def add_image(self, source: str, image_id, path, **kwargs) -> None:
        """Registers an image: ``image_id`` is its id within ``source``,
        ``path`` its file (or URL); extra keyword arguments (e.g. width,
        height, polygons, annotations) are kept in ``image_info``."""
        image_info = {
            "id": image_id,
            "source": source,
            "path": path,
        }
        image_info.update(kwargs)
        self.image_info.append(image_info)

    def image_reference(self, image_id: int) -> str:
        """Return a link to the image in its source Website or details about
        the image that help looking it up or debugging it.

        Override for your dataset, but pass to this function
        if you encounter images not in your dataset.
        """
        return ""

    def prepare(self, class_map=None) -> None:
        """Prepares the Dataset class for use: builds ``num_classes``,
        ``class_ids``, ``class_names`` (text before the first comma),
        ``num_images``, ``image_ids`` and the source maps
        ``class_from_source_map``/``image_from_source_map``
        (``"source.id"`` -> internal id), ``sources`` and ``source_class_ids``
        (source -> internal class ids, BG included in every source).

        class_map: not supported yet (ignored), as in Matterport.
        """

        def clean_name(name):
            """Returns a shorter version of object names for cleaner display."""
            return ",".join(name.split(",")[:1])

        # Build (or rebuild) everything else from the info dicts.
        self.num_classes = len(self.class_info)
        self.class_ids = np.arange(self.num_classes)
        self.class_names = [clean_name(c["name"]) for c in self.class_info]
        self.num_images = len(self.image_info)
        self._image_ids = np.arange(self.num_images)

        # Mapping from source class and image IDs to internal IDs
        self.class_from_source_map = {"{}.{}".format(info['source'], info['id']): id
                                      for info, id in zip(self.class_info, self.class_ids)}
        self.image_from_source_map = {"{}.{}".format(info['source'], info['id']): id
                                      for info, id in zip(self.image_info, self.image_ids)}

        # Map sources to class_ids they support (first-seen order, so it does
        # not change from run to run like Matterport's list(set(...)) did)
        self.sources = list(dict.fromkeys(i['source'] for i in self.class_info))
        self.source_class_ids = {}
        for source in self.sources:
            # Include BG class in all datasets
            self.source_class_ids[source] = [
                i for i, info in enumerate(self.class_info)
                if i == 0 or source == info['source']]

    def map_source_class_id(self, source_class_id: str) -> int:
        """Takes a source class ID and returns the int class ID assigned to it.

        For example:
        dataset.map_source_class_id("coco.12") -> 23
        """
        return self.class_from_source_map[source_class_id]

    def get_source_class_id(self, class_id: int, source: str):
        """Map an internal class ID to the corresponding class ID in the source dataset."""
        info = self.class_info[class_id]
        if info['source'] != source:
            raise ValueError(f"Dataset.get_source_class_id: class {class_id} belongs to "
                             f"source {info['source']!r}, not {source!r}.")
        return info['id']

    @property
    def image_ids(self) -> np.ndarray:
        """Internal image ids, ``np.arange(num_images)`` after ``prepare()``."""
        return self._image_ids

    def source_image_link(self, image_id: int) -> str:
        """Returns the path or URL to the image.
        Override this to return a URL to the image if it's available online for easy
        debugging.
        """
        return self.image_info[image_id]["path"]

    def load_image(self, image_id: int) -> np.ndarray:
        """Load the specified image and return a [H, W, C] uint8 array, C =
        ``self.image_channel_count`` (3: RGB).

        Reads ``image_info[image_id]["path"]`` with ``read_image``, which
        documents the conversions (grayscale, alpha, palette, CMYK, 16-bit,
        EXIF rotation, first frame). A file that cannot be read raises
        FileNotFoundError / ImageReadError naming the file and the image id.
        """
        path = self.image_info[image_id]["path"]
        channels = getattr(self, "image_channel_count", 3)
        try:
            return read_image(path, channels=channels)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"Image id {image_id}: {e}") from e
        except ImageReadError as e:
            raise ImageReadError(f"Image id {image_id}: {e}") from e

    def load_mask(self, image_id: int) -> Tuple[np.ndarray, np.ndarray]:
        """Load instance masks for the given image.

        Different datasets use different ways to store masks. Override this
        method to load instance masks and return them in the form of am
        array of binary masks of shape [height, width, instances].

        Returns:
            masks: A bool array of shape [height, width, instance count] with
                a binary mask per instance.
            class_ids: a 1D array of class IDs of the instance masks.
        """
        # Override this function to load a mask from your dataset.
        # Otherwise, it returns an empty mask.
        mask = np.empty([0, 0, 0])
        class_ids = np.empty([0], np.int32)
        return mask, class_ids

    def to_coco(self, image_ids=None) -> dict:
        """This dataset's ground truth in COCO format: a dict with "images",
        "annotations" (RLE masks, boxes, areas, iscrowd for negative class
        ids) and "categories" (internal class ids 1..num_classes-1), for
        pycocotools' COCOeval (bbox and segm) on any dataset; see
        ``mrcnn.coco_eval`` for the ids. ``json.dump`` writes it to a file.

        image_ids: internal image ids, default all. Call ``prepare()`` first.
        """
        if not hasattr(self, "num_classes"):
            raise ValueError(f"{type(self).__name__}.to_coco(): call prepare() first.")
        return coco_eval.dataset_to_coco(self, image_ids)
