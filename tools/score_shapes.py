#!/usr/bin/env python3
"""Scores a served segmentation model on a vitserve-shapes set, from what vitserve answers.

    .venv/bin/python tools/score_shapes.py --server localhost:8001 --model shapes_seg \
        --data DIR [--client build/bin/vitserve-client] [--limit N]

Sends every image of DIR/images through `vitserve-client segment` (label maps written as PNGs at
the original size), compares them with DIR/semantic/*.png and prints one JSON object: per-class
IoU (classes present in the ground truth or the predictions), their mean (mIoU) and the pixel
accuracy. Make DIR with a seed the model never trained on (vitserve-train uses its --seed).
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

CLASSES = ["background", "circle", "square", "triangle", "star", "hexagon"]


def score(data: pathlib.Path, masks: pathlib.Path, images):
    confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=np.int64)
    for image in images:
        truth = np.array(Image.open(data / "semantic" / (image.stem + ".png")), dtype=np.int64)
        predicted = np.array(Image.open(masks / (image.stem + ".mask.png")), dtype=np.int64)
        if truth.shape != predicted.shape:
            raise SystemExit(f"{image.name}: map {predicted.shape} but ground truth {truth.shape}")
        predicted = np.clip(predicted, 0, len(CLASSES) - 1)
        confusion += np.bincount(truth.ravel() * len(CLASSES) + predicted.ravel(),
                                 minlength=len(CLASSES) ** 2).reshape(len(CLASSES), len(CLASSES))
    hits = np.diag(confusion).astype(np.float64)
    unions = confusion.sum(0) + confusion.sum(1) - hits
    iou = {CLASSES[c]: hits[c] / unions[c] for c in range(len(CLASSES)) if unions[c] > 0}
    return {"images": len(images), "miou": float(np.mean(list(iou.values()))),
            "pixel_accuracy": float(hits.sum() / confusion.sum()),
            "iou": {k: round(float(v), 4) for k, v in iou.items()}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, type=pathlib.Path)
    parser.add_argument("--client", default=str(pathlib.Path(__file__).resolve().parent.parent
                                                 / "build" / "bin" / "vitserve-client"))
    parser.add_argument("--limit", type=int, default=0, help="score only the first N images")
    args = parser.parse_args()
    images = sorted((args.data / "images").glob("*.jpg"))
    if args.limit:
        images = images[:args.limit]
    if not images:
        raise SystemExit(f"no images in {args.data / 'images'}")
    with tempfile.TemporaryDirectory() as masks:
        for start in range(0, len(images), 64):  # Bounded command lines.
            chunk = images[start:start + 64]
            done = subprocess.run([args.client, "segment", "--server", args.server, "--model",
                                   args.model, "--output-dir", masks, *map(str, chunk)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                sys.stderr.write(done.stderr)
                raise SystemExit(f"vitserve-client segment failed ({done.returncode})")
        print(json.dumps(score(args.data, pathlib.Path(masks), images)))


if __name__ == "__main__":
    main()
