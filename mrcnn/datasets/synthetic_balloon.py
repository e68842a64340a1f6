"""
Mask R-CNN
A synthetic stand-in for Matterport's balloon data set, in its exact layout.

``make_balloon_dataset(root)`` writes::

    root/train/<name>.jpg ...    root/train/via_region_data.json
    root/val/<name>.jpg ...      root/val/via_region_data.json

Each image is a textured background (a sky-like vertical gradient with soft
noise) with one to three non-overlapping coloured ellipses ("balloons"), each
with a highlight and a string. Each balloon is annotated as a VIA polygon of
points on its outline, as people annotated the real balloons; regions are a
list (``via_version=2``) or a dict keyed "0", "1", ... (``via_version=1``,
the real data set's format). Same seed, same files.

Use it to try the balloon sample and its notebooks without downloading the
real data (``--video`` also writes ``balloons.avi`` for the video splash)::

    python -m mrcnn.datasets.synthetic_balloon /tmp/balloon --n-train 8 --n-val 4 --video

Licensed under the MIT License.
"""

import argparse
import json
import math
import os

import numpy as np

from mrcnn import extras

__all__ = ["make_balloon_dataset", "make_balloon_video", "render_balloon_image", "ellipse_polygon",
           "ellipse_mask"]

# Points per balloon outline; the real annotations have 15-40.
POLYGON_POINTS = 24
# Balloons per image.
MIN_BALLOONS, MAX_BALLOONS = 1, 3
JPEG_QUALITY = 92


def ellipse_polygon(cx, cy, rx, ry, theta, n=POLYGON_POINTS):
    """Points on an ellipse outline.

    cx, cy: centre (x right, y down), pixels. rx, ry: radii along the
    ellipse's own axes. theta: rotation of the rx axis towards +y, radians.
    Returns: (xs, ys), each [n] float64.
    """
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    cos, sin = math.cos(theta), math.sin(theta)
    xs = cx + rx * np.cos(t) * cos - ry * np.sin(t) * sin
    ys = cy + rx * np.cos(t) * sin + ry * np.sin(t) * cos
    return xs, ys


def ellipse_mask(ellipse, height, width):
    """Pixels whose centre lies inside an ellipse (cx, cy, rx, ry, theta).

    Returns: [height, width] bool.
    """
    cx, cy, rx, ry, theta = ellipse
    dy = np.arange(height, dtype=np.float64)[:, None] - cy
    dx = np.arange(width, dtype=np.float64)[None, :] - cx
    cos, sin = math.cos(theta), math.sin(theta)
    u = (dx * cos + dy * sin) / rx
    v = (-dx * sin + dy * cos) / ry
    return u * u + v * v <= 1.0


def _smooth_noise(rng, height, width, cell):
    """Value noise in [0, 1]: a coarse random grid, bilinearly upsampled."""
    gh, gw = height // cell + 2, width // cell + 2
    grid = rng.random((gh, gw))
    ys = np.arange(height) / cell
    xs = np.arange(width) / cell
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _random_ellipses(rng, height, width):
    """1-3 ellipses (cx, cy, rx, ry, theta) inside the image, not touching."""
    count = int(rng.integers(MIN_BALLOONS, MAX_BALLOONS + 1))
    short = min(height, width)
    ellipses = []
    for _ in range(50 * count):  # rejection sampling; gives up quietly
        if len(ellipses) == count:
            break
        rx = rng.uniform(0.08, 0.18) * short
        ry = rx * rng.uniform(1.1, 1.4)  # balloons are taller than wide
        theta = rng.uniform(-0.4, 0.4)  # tilt; ry stays roughly vertical
        reach = max(rx, ry) + 2
        if 2 * reach >= short:
            continue
        cx = rng.uniform(reach, width - reach)
        cy = rng.uniform(reach, height - reach)
        if all(math.hypot(cx - e[0], cy - e[1]) > reach + max(e[2], e[3]) + 4
               for e in ellipses):
            ellipses.append((cx, cy, rx, ry, theta))
    return ellipses


def _background(rng, height, width):
    """A vertical sky gradient with soft texture and grain: [H, W, 3] float64."""
    top = rng.uniform([60, 110, 170], [140, 180, 240])
    bottom = rng.uniform([150, 160, 150], [230, 230, 220])
    frac = np.linspace(0.0, 1.0, height)[:, None, None]
    image = top * (1 - frac) + bottom * frac
    image = image + (_smooth_noise(rng, height, width, 24)[..., None] - 0.5) * 40
    image = image + rng.normal(0.0, 4.0, (height, width, 1))
    return np.broadcast_to(image, (height, width, 3)).copy()


def _balloon_colors(rng, count):
    """[count] saturated RGB colours (one channel low)."""
    colors = []
    for _ in range(count):
        color = rng.uniform(120, 255, 3)
        color[rng.integers(3)] *= 0.3
        colors.append(color)
    return colors


def _draw_balloons(image, ellipses, colors):
    """Draw balloons (strings first, so that no string crosses a balloon)
    on a float [H, W, 3] background; returns the uint8 image."""
    height, width = image.shape[:2]
    image = image.copy()
    yy = np.arange(height, dtype=np.float64)[:, None]
    xx = np.arange(width, dtype=np.float64)[None, :]
    # A dark thin line hanging from each balloon's lowest point.
    for cx, cy, rx, ry, theta in ellipses:
        bottom_y = cy + math.hypot(rx * math.sin(theta), ry * math.cos(theta))
        string = (np.abs(xx - cx - 0.05 * (yy - bottom_y)) < 1.0) & (yy > bottom_y)
        image[string] = image[string] * 0.4
    for (cx, cy, rx, ry, theta), color in zip(ellipses, colors):
        inside = ellipse_mask((cx, cy, rx, ry, theta), height, width)
        # Shading: brighter towards a highlight up-left of the centre.
        hx, hy = cx - 0.35 * rx, cy - 0.35 * ry
        dist = np.sqrt((xx - hx) ** 2 + (yy - hy) ** 2) / max(rx, ry)
        shade = np.clip(1.25 - 0.45 * dist, 0.55, 1.25)[..., None]
        image = np.where(inside[..., None], np.clip(color * shade, 0, 255), image)
    return np.clip(image, 0, 255).astype(np.uint8)


def render_balloon_image(rng, height, width):
    """Draw one synthetic balloon image.

    rng: numpy.random.Generator.
    Returns:
    image: [height, width, 3] uint8 RGB.
    ellipses: list of (cx, cy, rx, ry, theta) in pixels, drawing order, with
        rx turned by theta (radians) towards +y (theta 0: rx horizontal, ry
        vertical; balloons have ry > rx).
    """
    background = _background(rng, height, width)
    ellipses = _random_ellipses(rng, height, width)
    image = _draw_balloons(background, ellipses, _balloon_colors(rng, len(ellipses)))
    return image, ellipses


def make_balloon_video(path, frames=48, size=(256, 320), seed=0, fps=12.0):
    """Write a short synthetic video of balloons drifting up and sideways over
    a sky (an MJPG .avi, which OpenCV writes in every build), for the balloon
    sample's video splash.

    path: the .avi file to write (its folder is created).
    frames, fps: length and frame rate; size: (height, width) pixels.
    Returns path, as a str.
    """
    cv2 = extras.require("cv2", "Writing the synthetic balloon video")

    height, width = (int(v) for v in size)
    rng = np.random.default_rng([seed, 2])
    background = _background(rng, height, width)
    ellipses = _random_ellipses(rng, height, width)
    colors = _balloon_colors(rng, len(ellipses))
    # Each balloon drifts by (vx, vy) pixels per frame, upwards.
    velocity = [(rng.uniform(-0.6, 0.6), -rng.uniform(0.5, 1.5)) for _ in ellipses]
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), float(fps), (width, height))
    if not writer.isOpened():
        raise OSError(f"Cannot write the video {path} (MJPG codec): check that the folder "
                      f"is writable.")
    try:
        for t in range(int(frames)):
            moved = [(cx + vx * t, cy + vy * t, rx, ry, theta)
                     for (cx, cy, rx, ry, theta), (vx, vy) in zip(ellipses, velocity)]
            frame = _draw_balloons(background, moved, colors)
            writer.write(np.ascontiguousarray(frame[..., ::-1]))  # RGB -> BGR
    finally:
        writer.release()
    return path


def _via_entry(filename, size, polygons, via_version):
    regions = [{"shape_attributes": {"name": "polygon",
                                     "all_points_x": [int(round(x)) for x in xs],
                                     "all_points_y": [int(round(y)) for y in ys]},
                "region_attributes": {}}
               for xs, ys in polygons]
    if via_version == 1:
        regions = {str(i): r for i, r in enumerate(regions)}
    # Keys and fields as VIA writes them (file name + file size).
    return filename + str(size), {"fileref": "", "size": size, "filename": filename,
                                  "base64_img_data": "", "file_attributes": {},
                                  "regions": regions}


def make_balloon_dataset(root, n_train=8, n_val=4, size=(256, 320), seed=0, via_version=2):
    """Write a synthetic balloon data set in the real one's VIA layout.

    root: output folder (created; existing files with the same names are
        overwritten).
    n_train, n_val: images in root/train and root/val.
    size: (height, width) of every image, pixels.
    seed: int; image i of subset s is drawn from
        ``numpy.random.default_rng([seed, s_index, i])`` (train 0, val 1).
    via_version: 1 (regions as dicts, like the real balloon files) or 2
        (regions as lists).
    Returns: root, as a str.
    """
    from PIL import Image

    if via_version not in (1, 2):
        raise ValueError(f"make_balloon_dataset: via_version must be 1 or 2, got {via_version!r}")
    height, width = (int(v) for v in size)
    if min(height, width) < 32:
        raise ValueError(f"make_balloon_dataset: size {size} too small; use at least 32x32")
    root = os.fspath(root)
    for subset_index, (subset, count) in enumerate((("train", n_train), ("val", n_val))):
        folder = os.path.join(root, subset)
        os.makedirs(folder, exist_ok=True)
        annotations = {}
        for i in range(count):
            rng = np.random.default_rng([seed, subset_index, i])
            image, ellipses = render_balloon_image(rng, height, width)
            filename = f"balloon_{subset}_{i:04d}.jpg"
            path = os.path.join(folder, filename)
            Image.fromarray(image).save(path, quality=JPEG_QUALITY)
            polygons = [ellipse_polygon(*e) for e in ellipses]
            key, entry = _via_entry(filename, os.path.getsize(path), polygons, via_version)
            annotations[key] = entry
        with open(os.path.join(folder, "via_region_data.json"), "w") as f:
            json.dump(annotations, f)
    return root


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m mrcnn.datasets.synthetic_balloon",
        description="Write a synthetic balloon data set in the VIA layout of "
                    "Matterport's balloon sample (OUT_DIR/train, OUT_DIR/val).")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write")
    parser.add_argument("--n-train", type=int, default=8, help="training images (default 8)")
    parser.add_argument("--n-val", type=int, default=4, help="validation images (default 4)")
    parser.add_argument("--height", type=int, default=256, help="image height (default 256)")
    parser.add_argument("--width", type=int, default=320, help="image width (default 320)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--via-version", type=int, choices=(1, 2), default=2,
                        help="1: regions as dicts (real balloon files), 2: lists (default)")
    parser.add_argument("--video", action="store_true",
                        help="also write OUT_DIR/balloons.avi, 48 frames of drifting "
                             "balloons, for the video splash")
    args = parser.parse_args(argv)
    root = make_balloon_dataset(args.out_dir, n_train=args.n_train, n_val=args.n_val,
                                size=(args.height, args.width), seed=args.seed,
                                via_version=args.via_version)
    print(f"Wrote {args.n_train} training and {args.n_val} validation images to {root}")
    if args.video:
        video = make_balloon_video(os.path.join(root, "balloons.avi"),
                                   size=(args.height, args.width), seed=args.seed)
        print(f"Wrote {video}")


if __name__ == "__main__":
    main()
