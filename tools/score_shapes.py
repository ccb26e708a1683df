#!/usr/bin/env python3
"""Scores a served segmentation, detection or classification model on a vitserve-shapes set,
from what vitserve answers.

    .venv/bin/python tools/score_shapes.py --server localhost:8001 --model shapes_seg \
        --data DIR [--task segmentation|detection|classification]
        [--client build/bin/vitserve-client] [--limit N]

Segmentation: every image of DIR/images through `vitserve-client segment` (label maps written as
PNGs at the original size), compared with DIR/semantic/*.png: per-class IoU (classes present in
the ground truth or the predictions), their mean (mIoU) and the pixel accuracy.
Detection: `vitserve-client detect --json --score-threshold 0.01 --max-detections 100`, scored by
pycocotools' COCOeval against DIR/instances.json (box class index + 1 = category id): mAP@0.5
and mAP@[.5:.95]. Classification: every shape of DIR/instances.json cut out of its image as
vitserve-train cuts its training crops (the box grown to a square of 1.5 times its longer side
around its centre, clipped to the image; tools/train/internal/targets.h ClassificationCrop),
through `vitserve-client classify --json --top-k 1`: the share whose best class is the shape's
(class index + 1 = category id). Prints one JSON object. Make DIR with a seed the model never trained on
(vitserve-train uses its --seed).
"""
import argparse
import json
import math
import pathlib
import subprocess
import sys
import tempfile

import contextlib
import io

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


def run_client(args, command, images, extra):
    """Yields vitserve-client's stdout for the images, 64 per call (bounded command lines)."""
    for start in range(0, len(images), 64):
        chunk = images[start:start + 64]
        done = subprocess.run([args.client, command, "--server", args.server, "--model",
                               args.model, *extra, *map(str, chunk)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            raise SystemExit(f"vitserve-client {command} failed ({done.returncode})")
        yield done.stdout


def score_detection(args, images):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(args.data / "instances.json"))
    ids = {entry["file_name"]: entry["id"] for entry in truth.dataset["images"]}
    results = []
    for stdout in run_client(args, "detect", images,
                             ["--json", "--score-threshold", "0.01", "--max-detections", "100"]):
        for line in stdout.splitlines():
            answer = json.loads(line)
            image_id = ids[pathlib.Path(answer["image"]).name]
            for box in answer["boxes"]:
                results.append({"image_id": image_id, "category_id": box["index"] + 1,
                                "bbox": [box["x1"], box["y1"], box["x2"] - box["x1"],
                                         box["y2"] - box["y1"]],
                                "score": box["score"]})
    scored_ids = [ids[image.name] for image in images]
    if not results:
        return {"images": len(images), "map50": 0.0, "map": 0.0, "detections": 0}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.params.imgIds = scored_ids
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {"images": len(images), "map50": float(evaluation.stats[1]),
            "map": float(evaluation.stats[0]), "detections": len(results)}


def classification_crop(box, width, height):
    """The crop around a COCO box [x, y, w, h] that vitserve-train trains classifiers on."""
    x, y, w, h = box
    side = max(w, h) * 1.5
    cx, cy = x + w / 2, y + h / 2
    x1, y1 = max(0, math.floor(cx - side / 2)), max(0, math.floor(cy - side / 2))
    x2, y2 = min(width, math.ceil(cx + side / 2)), min(height, math.ceil(cy + side / 2))
    return x1, y1, max(x1 + 1, x2), max(y1 + 1, y2)


def score_classification(args, images):
    instances = json.loads((args.data / "instances.json").read_text())
    by_image = {entry["id"]: entry for entry in instances["images"]}
    wanted = {image.name for image in images}
    with tempfile.TemporaryDirectory() as crops_dir:
        crops, truth = [], {}
        for annotation in instances["annotations"]:
            entry = by_image[annotation["image_id"]]
            if entry["file_name"] not in wanted:
                continue
            with Image.open(args.data / "images" / entry["file_name"]) as image:
                crop = image.convert("RGB").crop(
                    classification_crop(annotation["bbox"], image.width, image.height))
            path = pathlib.Path(crops_dir) / f"crop{annotation['id']}.png"
            crop.save(path)
            crops.append(path)
            truth[path.name] = annotation["category_id"] - 1
        correct = 0
        for stdout in run_client(args, "classify", crops, ["--json", "--top-k", "1"]):
            for line in stdout.splitlines():
                answer = json.loads(line)
                best = answer["classes"][0]["index"]
                correct += best == truth[pathlib.Path(answer["image"]).name]
    return {"images": len(images), "crops": len(crops),
            "accuracy": correct / len(crops) if crops else 0.0}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, type=pathlib.Path)
    parser.add_argument("--client", default=str(pathlib.Path(__file__).resolve().parent.parent
                                                 / "build" / "bin" / "vitserve-client"))
    parser.add_argument("--limit", type=int, default=0, help="score only the first N images")
    parser.add_argument("--task", choices=["segmentation", "detection", "classification"],
                        default="segmentation")
    args = parser.parse_args()
    images = sorted((args.data / "images").glob("*.jpg"))
    if args.limit:
        images = images[:args.limit]
    if not images:
        raise SystemExit(f"no images in {args.data / 'images'}")
    if args.task == "detection":
        print(json.dumps(score_detection(args, images)))
        return
    if args.task == "classification":
        print(json.dumps(score_classification(args, images)))
        return
    with tempfile.TemporaryDirectory() as masks:
        for _ in run_client(args, "segment", images, ["--output-dir", masks]):
            pass
        print(json.dumps(score(args.data, pathlib.Path(masks), images)))

if __name__ == "__main__":
    main()
