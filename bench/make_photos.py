#!/usr/bin/env python3
"""Write photo-like test images: smooth gradients, filled ellipses, a slight blur and mild noise,
as cameras produce (white noise decodes several times slower than real photos and is no
realistic load). Deterministic for a seed; the images of one call share one random stream, so
the same sizes in the same order give the same files.

    make_photos.py OUTDIR WxH [WxH ...] [--seed N] [--png]

Writes OUTDIR/photo_<W>x<H>.jpg (quality 90) and, with --png, the same pixels as .png.
Used by bench/serve_sweep.sh and bench/preprocess_parity.sh.
"""
import argparse

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir")
    parser.add_argument("sizes", nargs="+", help="WxH, e.g. 224x224")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", action="store_true", help="also write a lossless .png")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        y, x = np.mgrid[0:h, 0:w] / max(w, h)
        base = np.stack([120 + 100 * np.sin(3 * x + 1), 90 + 80 * np.cos(2 * y),
                         140 + 60 * x * y], -1)
        img = Image.fromarray(base.clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x0, y0 = rng.integers(0, w), rng.integers(0, h)
            r = int(rng.integers(h // 12, h // 4))
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r),
                         fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        img = img.filter(ImageFilter.GaussianBlur(1.2))
        noisy = np.asarray(img).astype(np.int16) + rng.normal(0, 3, (h, w, 3)).astype(np.int16)
        photo = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
        photo.save(f"{args.outdir}/photo_{w}x{h}.jpg", quality=90)
        if args.png:
            photo.save(f"{args.outdir}/photo_{w}x{h}.png")


if __name__ == "__main__":
    main()
