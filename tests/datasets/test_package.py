"""mrcnn.datasets exports its classes lazily."""
import mrcnn.datasets as datasets
from mrcnn import utils


def test_exports_resolve_to_the_modules_classes():
    from mrcnn.datasets.coco import CocoDataset, evaluate_coco_results
    from mrcnn.datasets.shapes import ShapesDataset
    from mrcnn.datasets.via import ViaDataset
    assert datasets.CocoDataset is CocoDataset
    assert datasets.evaluate_coco_results is evaluate_coco_results
    assert datasets.ShapesDataset is ShapesDataset
    assert datasets.ViaDataset is ViaDataset
    for cls in (CocoDataset, ShapesDataset, ViaDataset):
        assert issubclass(cls, utils.Dataset)
    assert callable(datasets.make_balloon_dataset)
    assert set(datasets.__all__) <= set(dir(datasets))


def test_unknown_name():
    import pytest
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        datasets.Nope
