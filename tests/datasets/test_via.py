"""ViaDataset: VIA 1.x / 2.x exports and project files, every shape, bad input."""
import json
import math
import re
import warnings

import numpy as np
import pytest
from PIL import Image

from mrcnn.datasets.via import ViaDataset, read_image_size, region_mask

H, W = 40, 50


def polygon(xs, ys):
    return {"shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
            "region_attributes": {}}


def write_subset(root, entries, subset="train", version=2, project=False,
                 annotation_file="via_region_data.json", size=(H, W)):
    """entries: {filename: [region, ...]}; writes images and the VIA json."""
    folder = root / subset if subset else root
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for filename, regions in entries.items():
        if not (folder / filename).exists() and ".." not in filename and "/" != filename[0]:
            Image.new("RGB", (size[1], size[0]), (10, 20, 30)).save(folder / filename)
        if version == 1:
            regions = {str(i): r for i, r in enumerate(regions)}
        data[filename + "123"] = {"fileref": "", "size": 123, "filename": filename,
                                  "base64_img_data": "", "file_attributes": {},
                                  "regions": regions}
    if project:
        data = {"_via_settings": {"ui": {}, "core": {}, "project": {"name": "p"}},
                "_via_img_metadata": data, "_via_attributes": {"region": {}, "file": {}},
                "_via_image_id_list": list(data)}
    (folder / annotation_file).write_text(json.dumps(data))
    return folder


def load(root, subset="train", **kwargs):
    dataset = ViaDataset()
    dataset.load_via(root, subset, **kwargs)
    dataset.prepare()
    return dataset


TRIANGLE = polygon([10, 30, 10], [5, 5, 25])


@pytest.mark.parametrize("version,project", [(1, False), (2, False), (2, True)])
def test_formats_give_the_same_masks(tmp_path, version, project):
    square = polygon([20, 29, 29, 20], [10, 10, 19, 19])
    write_subset(tmp_path, {"a.png": [TRIANGLE, square], "b.png": [square]},
                 version=version, project=project)
    dataset = load(tmp_path)
    assert dataset.num_images == 2
    assert dataset.class_names == ["BG", "balloon"]
    assert dataset.image_info[0]["id"] == "a.png"
    assert dataset.image_reference(0) == str(tmp_path / "train" / "a.png")
    mask, class_ids = dataset.load_mask(0)
    assert mask.shape == (H, W, 2) and mask.dtype == bool
    np.testing.assert_array_equal(class_ids, [1, 1])
    assert class_ids.dtype == np.int32
    # skimage.draw.polygon: pixel centres inside; square of corners 20..29.
    assert mask[:, :, 1].sum() == 100 and mask[10:20, 20:30, 1].all()
    # Right triangle with legs 20 and 20: about 200 px plus the edges.
    assert 200 <= mask[:, :, 0].sum() <= 240
    assert mask[6, 11, 0] and not mask[24, 29, 0]
    assert dataset.image_size(0) == (H, W)
    assert dataset.load_image(0).shape == (H, W, 3)


def test_v1_regions_ordered_by_number(tmp_path):
    folder = write_subset(tmp_path, {"a.png": []}, version=1)
    data = json.loads((folder / "via_region_data.json").read_text())
    entry = next(iter(data.values()))
    small = polygon([0, 3, 3, 0], [0, 0, 3, 3])
    entry["regions"] = {"10": small, "2": TRIANGLE}
    (folder / "via_region_data.json").write_text(json.dumps(data))
    mask, _ = load(tmp_path).load_mask(0)
    assert mask[:, :, 0].sum() > mask[:, :, 1].sum() == 16  # "2" first, then "10"


def test_rect_circle_ellipse_polyline(tmp_path):
    regions = [
        {"shape_attributes": {"name": "rect", "x": 5, "y": 6, "width": 10, "height": 4}},
        {"shape_attributes": {"name": "circle", "cx": 30, "cy": 20, "r": 5}},
        {"shape_attributes": {"name": "ellipse", "cx": 25, "cy": 20, "rx": 12, "ry": 3}},
        {"shape_attributes": {"name": "ellipse", "cx": 25, "cy": 20, "rx": 12, "ry": 3,
                              "theta": math.pi / 2}},
        {"shape_attributes": {"name": "polyline", "all_points_x": [0, 9, 9, 0],
                              "all_points_y": [30, 30, 39, 39]}},
    ]
    write_subset(tmp_path, {"a.png": [dict(r, region_attributes={}) for r in regions]})
    mask, class_ids = load(tmp_path).load_mask(0)
    assert mask.shape == (H, W, 5)
    rect, circle, ellipse, turned, polyline = (mask[:, :, i] for i in range(5))
    # rect: rows 6..9, columns 5..14.
    expected = np.zeros((H, W), bool)
    expected[6:10, 5:15] = True
    np.testing.assert_array_equal(rect, expected)
    # circle: pixel centres within distance 5 (81 lattice points).
    yy, xx = np.mgrid[:H, :W]
    np.testing.assert_array_equal(circle, (yy - 20) ** 2 + (xx - 30) ** 2 <= 25)
    # ellipse: 12 wide, 3 high; theta = pi/2 turns it upright.
    assert ellipse[20, 13] and ellipse[20, 37] and not ellipse[24, 25]
    assert turned[8, 25] and turned[32, 25] and not turned[20, 29]
    assert abs(ellipse.sum() - math.pi * 12 * 3) < 12
    assert ellipse.sum() == turned.sum()
    # polyline: closed and filled like a polygon (10 x 10 block).
    assert polyline.sum() == 100 and polyline[30:40, 0:10].all()


def test_region_mask_ellipse_rotation_direction():
    # theta turns the x radius towards +y (down): a 45 degree ellipse runs
    # from top-left to bottom-right.
    m = region_mask({"name": "ellipse", "cx": 20.0, "cy": 20.0, "rx": 15.0, "ry": 2.0,
                     "theta": math.pi / 4}, 41, 41)
    assert m[30, 30] and m[10, 10] and not m[10, 30] and not m[30, 10]


def test_points_short_polygons_and_unknown_shapes_are_skipped_with_a_warning(tmp_path):
    regions = [
        TRIANGLE,
        {"shape_attributes": {"name": "point", "cx": 3, "cy": 4}, "region_attributes": {}},
        polygon([1, 5], [1, 5]),
        {"shape_attributes": {"name": "blob"}, "region_attributes": {}},
    ]
    write_subset(tmp_path, {"a.png": regions})
    with pytest.warns(UserWarning) as record:
        dataset = load(tmp_path)
    message = str(record[0].message)
    assert "skipped 3 region(s)" in message
    assert "point" in message and "polygon with 2 point(s)" in message and "'blob'" in message
    assert "via_region_data.json" in message and "'a.png'" in message
    mask, class_ids = dataset.load_mask(0)
    assert mask.shape == (H, W, 1)


def test_polygon_past_the_edge_is_clipped(tmp_path):
    # Matterport's loader raised IndexError here.
    write_subset(tmp_path, {"a.png": [polygon([-10, 60, 60, -10], [30, 30, 70, 70]),
                                      polygon([100, 120, 110], [100, 100, 120])]})
    mask, class_ids = load(tmp_path).load_mask(0)
    # Rows 30..39 (clipped at 40), all 50 columns; the polygon entirely
    # outside the image gives no instance.
    assert mask.shape == (H, W, 1)
    assert mask[:, :, 0].sum() == 10 * W and mask[30:, :, 0].all()


def test_empty_images_skipped_or_kept(tmp_path):
    write_subset(tmp_path, {"a.png": [TRIANGLE], "empty.png": []})
    assert load(tmp_path).num_images == 1
    dataset = load(tmp_path, keep_empty=True)
    assert dataset.num_images == 2
    mask, class_ids = dataset.load_mask(1)
    assert mask.shape == (H, W, 0) and class_ids.shape == (0,)


@pytest.mark.parametrize("bad", ["../outside.png", "/etc/passwd", "sub/../../x.png",
                                 "..\\x.png", "C:\\images\\x.png", "http://host/x.png"])
def test_file_names_leaving_the_folder_are_refused(tmp_path, bad):
    write_subset(tmp_path, {"a.png": [TRIANGLE]})
    ann = tmp_path / "train" / "via_region_data.json"
    data = json.loads(ann.read_text())
    data["x"] = {"filename": bad, "regions": [TRIANGLE]}
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="leaves the data set folder|URL"):
        load(tmp_path)


def test_subfolder_file_names_are_fine(tmp_path):
    (tmp_path / "train" / "sub").mkdir(parents=True)
    Image.new("RGB", (W, H)).save(tmp_path / "train" / "sub" / "a.png")
    write_subset(tmp_path, {"sub/a.png": [TRIANGLE]})
    assert load(tmp_path).image_info[0]["path"] == str(tmp_path / "train" / "sub" / "a.png")


def test_missing_folder_and_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nothere" / "val"))):
        load(tmp_path / "nothere", "val")
    (tmp_path / "train").mkdir()
    ann = tmp_path / "train" / "via_region_data.json"
    with pytest.raises(FileNotFoundError, match=re.escape(str(ann))):
        load(tmp_path)
    ann.write_text("")
    with pytest.raises(ValueError, match=re.escape(f"{ann} is empty")):
        load(tmp_path)
    ann.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load(tmp_path)
    csv = tmp_path / "train" / "via.csv"
    csv.write_text("filename,file_size,file_attributes,region_count\n")
    with pytest.raises(ValueError, match="CSV exports are not supported"):
        load(tmp_path, annotation_file="via.csv")
    ann.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected an object"):
        load(tmp_path)
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(ValueError, match="COCO"):
        load(tmp_path)
    ann.write_text(json.dumps({"k": {"filename": "gone.png", "regions": []}}))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "train" / "gone.png"))):
        load(tmp_path)
    ann.write_text(json.dumps({"k": {"filename": "gone.png", "regions": [
        {"shape_attributes": {"name": "polygon", "all_points_x": [1, 2, 3]}}]}}))
    Image.new("RGB", (W, H)).save(tmp_path / "train" / "gone.png")
    with pytest.raises(ValueError, match="region 0: polygon lacks 'all_points_y'"):
        load(tmp_path)


def test_multi_class_attribute(tmp_path):
    def region(name_value):
        r = dict(TRIANGLE)
        r["region_attributes"] = {"kind": name_value}
        return r

    regions = [region("cat"), region(" dog "), region({"dog": True, "cat": False}),
               region("bird"), {"shape_attributes": TRIANGLE["shape_attributes"],
                                "region_attributes": {}}]
    write_subset(tmp_path, {"a.png": regions})
    with pytest.raises(ValueError, match="class_attribute"):
        load(tmp_path, class_names=("cat", "dog"))
    with pytest.warns(UserWarning, match="2 region"):
        dataset = load(tmp_path, class_names=("cat", "dog"), source="pets",
                       class_attribute="kind")
    assert dataset.class_names == ["BG", "cat", "dog"]
    _, class_ids = dataset.load_mask(0)
    np.testing.assert_array_equal(class_ids, [1, 2, 2])
    # A mapping may give several names the same id.
    with pytest.warns(UserWarning, match="1 region"):
        dataset = load(tmp_path, class_names={"dog": 4, "cat": 4, "bird": 7},
                       class_attribute="kind")
    assert dataset.class_names == ["BG", "dog", "bird"]
    _, class_ids = dataset.load_mask(0)
    np.testing.assert_array_equal(class_ids, [1, 1, 1, 2])
    assert dataset.get_source_class_id(2, "balloon") == 7
    with pytest.raises(ValueError, match="ids must be ints >= 1"):
        load(tmp_path, class_names={"dog": 0})


def test_exif_rotation_swaps_the_size(tmp_path):
    image = Image.new("RGB", (W, H))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    image.save(tmp_path / "r.jpg", exif=exif)
    assert read_image_size(tmp_path / "r.jpg") == (W, H)
    image.save(tmp_path / "n.jpg")
    assert read_image_size(tmp_path / "n.jpg") == (H, W)


def test_two_sources_in_one_dataset(tmp_path):
    write_subset(tmp_path, {"a.png": [TRIANGLE]}, subset="one")
    write_subset(tmp_path, {"b.png": [TRIANGLE, TRIANGLE]}, subset="two")
    dataset = ViaDataset()
    dataset.load_via(tmp_path, "one", class_names=("balloon",), source="balloon")
    dataset.load_via(tmp_path, "two", class_names=("kite",), source="kites")
    dataset.prepare()
    np.testing.assert_array_equal(dataset.load_mask(0)[1], [1])
    np.testing.assert_array_equal(dataset.load_mask(1)[1], [2, 2])


def test_no_warning_for_clean_files(tmp_path):
    write_subset(tmp_path, {"a.png": [TRIANGLE]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(tmp_path)
