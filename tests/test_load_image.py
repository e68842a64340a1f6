"""utils.read_image / Dataset.load_image: every kind of image file becomes a
well-defined uint8 array [H, W, C]. Each test writes a small file with
Pillow (lossless formats) and checks exact pixel values."""
import numpy as np
import pytest
from PIL import Image

from mrcnn import utils

# A 2x3 RGB test pattern: every pixel different.
RGB = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
                [[10, 20, 30], [200, 100, 50], [128, 128, 128]]], np.uint8)


def _save(tmp_path, name, img, **kwargs):
    path = tmp_path / name
    img.save(path, **kwargs)
    return str(path)


def test_rgb_png_exact(tmp_path):
    path = _save(tmp_path, "rgb.png", Image.fromarray(RGB))
    image = utils.read_image(path)
    assert image.dtype == np.uint8 and image.shape == (2, 3, 3)
    np.testing.assert_array_equal(image, RGB)


def test_grayscale_is_repeated_into_rgb(tmp_path):
    gray = np.array([[0, 7, 255], [100, 200, 50]], np.uint8)
    path = _save(tmp_path, "gray.png", Image.fromarray(gray))
    np.testing.assert_array_equal(utils.read_image(path), np.repeat(gray[..., None], 3, 2))
    np.testing.assert_array_equal(utils.read_image(path, channels=1), gray[..., None])


def test_bilevel_is_0_or_255(tmp_path):
    bits = np.array([[True, False, True], [False, False, True]])
    path = _save(tmp_path, "bits.png", Image.fromarray(bits))
    assert Image.open(path).mode == "1"
    np.testing.assert_array_equal(utils.read_image(path)[..., 0], bits * 255)


def test_gray_alpha_drops_alpha(tmp_path):
    la = np.array([[[10, 0], [20, 128], [30, 255]], [[40, 1], [50, 2], [60, 3]]], np.uint8)
    path = _save(tmp_path, "la.png", Image.fromarray(la, mode="LA"))
    image = utils.read_image(path)
    np.testing.assert_array_equal(image, np.repeat(la[..., :1], 3, 2))
    rgba = utils.read_image(path, channels=4)
    np.testing.assert_array_equal(rgba[..., 3], la[..., 1])


def test_rgba_drops_alpha_or_keeps_it(tmp_path):
    alpha = np.array([[0, 50, 255], [255, 1, 128]], np.uint8)
    rgba = np.concatenate([RGB, alpha[..., None]], axis=2)
    path = _save(tmp_path, "rgba.png", Image.fromarray(rgba, mode="RGBA"))
    # colours kept as stored even where fully transparent (not blended)
    np.testing.assert_array_equal(utils.read_image(path), RGB)
    np.testing.assert_array_equal(utils.read_image(path, channels=4), rgba)


def test_rgb_with_channels_4_gets_opaque_alpha(tmp_path):
    path = _save(tmp_path, "rgb.png", Image.fromarray(RGB))
    out = utils.read_image(path, channels=4)
    np.testing.assert_array_equal(out[..., :3], RGB)
    assert (out[..., 3] == 255).all()


def test_rgb_to_one_channel_uses_luma(tmp_path):
    path = _save(tmp_path, "rgb.png", Image.fromarray(RGB))
    gray = utils.read_image(path, channels=1)
    assert gray.shape == (2, 3, 1)
    # ITU-R 601-2, rounded: 0.299 R + 0.587 G + 0.114 B (G: 149.685 -> 150)
    np.testing.assert_array_equal(gray[..., 0], [[76, 150, 29], [18, 124, 128]])


def _palette_image():
    img = Image.new("P", (3, 2))
    palette = [0, 0, 0, 250, 10, 20, 5, 6, 7] + [0] * (256 * 3 - 9)
    img.putpalette(palette)
    img.putdata([1, 2, 0, 0, 1, 2])
    return img


def test_palette_without_transparency(tmp_path):
    path = _save(tmp_path, "p.png", _palette_image())
    assert Image.open(path).mode == "P"
    image = utils.read_image(path)
    np.testing.assert_array_equal(image[0], [[250, 10, 20], [5, 6, 7], [0, 0, 0]])
    np.testing.assert_array_equal(image[1], [[0, 0, 0], [250, 10, 20], [5, 6, 7]])


def test_palette_with_transparency(tmp_path):
    path = _save(tmp_path, "pt.png", _palette_image(), transparency=2)
    with Image.open(path) as img:
        assert img.mode == "P" and "transparency" in img.info
    image = utils.read_image(path)  # no Pillow warning, colours from the palette
    np.testing.assert_array_equal(image[0], [[250, 10, 20], [5, 6, 7], [0, 0, 0]])
    rgba = utils.read_image(path, channels=4)
    np.testing.assert_array_equal(rgba[..., 3], [[255, 0, 255], [255, 255, 0]])


def test_cmyk_is_converted_not_truncated(tmp_path):
    cmyk = np.array([[[10, 20, 30, 40], [0, 0, 0, 255], [200, 100, 50, 100]],
                     [[0, 0, 0, 0], [255, 0, 0, 0], [30, 60, 90, 120]]], np.uint8)
    path = _save(tmp_path, "cmyk.tif", Image.fromarray(cmyk, mode="CMYK"))
    assert Image.open(path).mode == "CMYK"
    image = utils.read_image(path)
    c, k = cmyk[..., :3].astype(int), cmyk[..., 3:].astype(int)
    expected = np.rint((255 - c) * (255 - k) / 255)  # no exact .5: 255 is odd
    np.testing.assert_array_equal(image, expected)
    assert not np.array_equal(image, cmyk[..., :3])


def test_16bit_gray_keeps_top_8_bits(tmp_path):
    values = np.array([[0, 257, 65535], [1000, 40000, 255 * 257]], np.uint16)
    for ext in ("png", "tif"):
        path = _save(tmp_path, f"g16.{ext}", Image.fromarray(values))
        assert Image.open(path).mode.startswith("I;16")
        image = utils.read_image(path)
        np.testing.assert_array_equal(image[..., 0], [[0, 1, 255], [3, 156, 255]])
        np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_16bit_colour_tiff_agrees_with_gray_rule(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    values = np.array([[[0, 257, 65535], [300, 40000, 65280]]], np.uint16)
    path = str(tmp_path / "rgb16.tif")
    tifffile.imwrite(path, values, photometric="rgb")
    np.testing.assert_array_equal(utils.read_image(path), values >> 8)


def test_32bit_integer_images(tmp_path):
    small = np.array([[0, 256, 65535]], np.int32)           # fits 16 bits: 16-bit rule
    path = _save(tmp_path, "i32s.tif", Image.fromarray(small))
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(utils.read_image(path)[0, :, 0], [0, 1, 255])
    big = np.array([[-5, 2 ** 23, 2 ** 30, 2 ** 31 - 1]], np.int32)
    path = _save(tmp_path, "i32b.tif", Image.fromarray(big))
    np.testing.assert_array_equal(utils.read_image(path)[0, :, 0], [0, 1, 128, 255])


def test_float_tiff(tmp_path):
    unit = np.array([[0.0, 0.5, 1.0, 0.2]], np.float32)
    path = _save(tmp_path, "f01.tif", Image.fromarray(unit))
    assert Image.open(path).mode == "F"
    # [0, 1] -> x 255, rounded half to even: 127.5 -> 128, 51.0 -> 51
    np.testing.assert_array_equal(utils.read_image(path)[0, :, 0], [0, 128, 255, 51])
    wide = np.array([[0.0, 100.4, 300.0, -3.0, np.nan]], np.float32)
    path = _save(tmp_path, "fwide.tif", Image.fromarray(wide))
    np.testing.assert_array_equal(utils.read_image(path)[0, :, 0], [0, 100, 255, 0, 0])


def test_multi_frame_gives_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((4, 5, 3), v, np.uint8)) for v in (11, 22, 33)]
    for ext in ("tif", "gif"):
        path = str(tmp_path / f"multi.{ext}")
        frames[0].save(path, save_all=True, append_images=frames[1:])
        with Image.open(path) as img:
            assert getattr(img, "n_frames", 1) == 3
        image = utils.read_image(path)
        assert image.shape == (4, 5, 3)
        assert (image == 11).all()


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_exif_orientation_is_applied(tmp_path, ext):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(tmp_path, f"rot.{ext}", Image.fromarray(RGB), exif=exif)
    image = utils.read_image(path)
    assert image.shape == (3, 2, 3)
    np.testing.assert_array_equal(image, np.rot90(RGB, k=-1))


def test_truncated_png_raises_naming_file(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = _save(tmp_path, "full.png", Image.fromarray(noise))
    data = open(path, "rb").read()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(utils.ImageReadError, match="cut.png") as info:
        utils.read_image(str(cut))
    assert isinstance(info.value, OSError) and "truncated" in str(info.value)


def test_truncated_jpeg_raises(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = _save(tmp_path, "full.jpg", Image.fromarray(noise), quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(open(path, "rb").read()[:600])
    with pytest.raises(utils.ImageReadError, match="cut.jpg"):
        utils.read_image(str(cut))


def test_not_an_image_raises(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(utils.ImageReadError, match="junk.jpg"):
        utils.read_image(str(junk))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        utils.read_image(str(tmp_path / "nope.png"))


def test_n_channel_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    bands = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    path = str(tmp_path / "bands.tif")
    tifffile.imwrite(path, bands, photometric="minisblack", planarconfig="contig")
    np.testing.assert_array_equal(utils.read_image(path, channels=5), bands)
    with pytest.raises(utils.ImageReadError, match="5 channels|channels were requested"):
        utils.read_image(path, channels=3)


class _FileDataset(utils.Dataset):
    def __init__(self, paths, **kwargs):
        super().__init__(**kwargs)
        self.add_class("files", 1, "thing")
        for i, p in enumerate(paths):
            self.add_image("files", i, p)
        self.prepare()


def test_dataset_load_image_honours_channel_count(tmp_path):
    gray = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    paths = [_save(tmp_path, "a.png", Image.fromarray(RGB)),
             _save(tmp_path, "b.png", Image.fromarray(gray))]
    rgb = _FileDataset(paths)
    np.testing.assert_array_equal(rgb.load_image(0), RGB)
    assert rgb.load_image(1).shape == (2, 3, 3)

    class FakeConfig:
        IMAGE_CHANNEL_COUNT = 1

    mono = _FileDataset(paths, image_channel_count=FakeConfig.IMAGE_CHANNEL_COUNT)
    np.testing.assert_array_equal(mono.load_image(1), gray[..., None])
    rgba = _FileDataset(paths)
    rgba.image_channel_count = 4
    assert rgba.load_image(0).shape == (2, 3, 4)


def test_dataset_load_image_error_names_image_id(tmp_path):
    junk = tmp_path / "bad.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    ds = _FileDataset([str(tmp_path / "missing.png"), str(junk)])
    with pytest.raises(FileNotFoundError, match="Image id 0.*missing.png"):
        ds.load_image(0)
    with pytest.raises(utils.ImageReadError, match="Image id 1.*bad.png"):
        ds.load_image(1)
