#!/usr/bin/env python3
"""Regenerates the bundled sample images (synthetic, deterministic, a few KB each).

They are what scripts/run.sh classifies and what the e2e tests send: one image per supported
encoding, plus a JPEG whose EXIF orientation tag must be applied by the server.

    .venv/bin/python tests/e2e/data/make_samples.py   # needs numpy and Pillow
"""
import pathlib

import numpy as np
from PIL import Image, ImageDraw

HERE = pathlib.Path(__file__).resolve().parent


def sunset_with_sun(width, height):
    """Orange-to-purple vertical gradient with a yellow disc: a 'sunset' scene."""
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    top = np.array([255, 140, 40], dtype=np.float64)
    bottom = np.array([70, 30, 110], dtype=np.float64)
    rows = (1 - y) * top + y * bottom
    image = Image.fromarray(np.broadcast_to(rows, (height, width, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    r = height // 6
    cx, cy = width * 2 // 3, height // 2
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 230, 80))
    return image


def checkerboard_with_shapes(width, height):
    """Grey checkerboard with a red square, green triangle and blue circle."""
    yy, xx = np.mgrid[0:height, 0:width]
    board = (((yy // 25) + (xx // 25)) % 2).astype(np.uint8) * 80 + 100
    image = Image.fromarray(np.stack([board] * 3, axis=-1))
    draw = ImageDraw.Draw(image)
    draw.rectangle([20, 20, 90, 90], fill=(220, 30, 30))
    draw.polygon([(150, 40), (110, 120), (190, 120)], fill=(30, 180, 60))
    draw.ellipse([60, 170, 160, 270], fill=(40, 70, 220))
    return image


def radial_gradient(width, height):
    """Green-to-white radial gradient with a dark ring."""
    yy, xx = np.mgrid[0:height, 0:width]
    d = np.hypot(xx - width / 2, yy - height / 2) / (0.5 * np.hypot(width, height))
    g = np.clip(d, 0, 1)[..., None]
    rgb = (1 - g) * np.array([30, 160, 60]) + g * np.array([250, 250, 250])
    ring = np.abs(d - 0.45) < 0.03
    rgb[ring] = (20, 20, 20)
    return Image.fromarray(rgb.astype(np.uint8))


def main():
    sunset_with_sun(320, 240).save(HERE / "sunset_320x240.jpg", quality=90)
    checkerboard_with_shapes(200, 300).save(HERE / "shapes_200x300.png", optimize=True)
    radial_gradient(256, 192).save(HERE / "radial_gradient_256x192.webp", quality=90)
    # Stored landscape 320x240 with EXIF Orientation 6 ("rotate 90 degrees clockwise"): the
    # upright image the server must see is portrait 240x320, sun at the bottom.
    exif = Image.Exif()
    exif[0x0112] = 6
    sunset_with_sun(320, 240).save(HERE / "sunset_exif_rotated_240x320.jpg", quality=90,
                                   exif=exif.tobytes())


if __name__ == "__main__":
    main()
