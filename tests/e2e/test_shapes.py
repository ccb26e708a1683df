"""vitserve-shapes (issue 10's data): its COCO file, label maps and images, read the way the
training and scoring code will read them (pycocotools, PIL)."""
import json
import subprocess

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import binary

CLASSES = ["background", "circle", "square", "triangle", "star", "hexagon"]


def make_set(out, *args):
    return subprocess.run([str(binary("vitserve-shapes")), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def shapes_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    result = make_set(out, "--count", "12", "--seed", "7")
    assert result.returncode == 0, result.stderr
    assert "[shapes] 12/12 scenes" in result.stderr  # Progress on stderr.
    return out


def test_coco_file_loads_and_matches_the_label_maps(shapes_set):
    coco = COCO(str(shapes_set / "instances.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == CLASSES[1:]
    assert coco.getCatIds() == [1, 2, 3, 4, 5]
    assert sorted(coco.getImgIds()) == list(range(1, 13))
    assert (shapes_set / "labels.txt").read_text().split() == CLASSES
    annotations = coco.loadAnns(coco.getAnnIds())
    assert len(annotations) >= 12
    assert len({a["id"] for a in annotations}) == len(annotations)
    for image_info in coco.loadImgs(coco.getImgIds()):
        image = Image.open(shapes_set / "images" / image_info["file_name"])
        assert image.mode == "RGB"
        assert image.size == (image_info["width"], image_info["height"])
        label_map = np.array(Image.open(
            shapes_set / "semantic" / image_info["file_name"].replace(".jpg", ".png")))
        assert label_map.dtype == np.uint8
        assert label_map.shape == (image_info["height"], image_info["width"])
        assert label_map.max() <= 5
        union = np.zeros_like(label_map, dtype=bool)
        for a in coco.loadAnns(coco.getAnnIds(imgIds=image_info["id"])):
            mask = coco.annToMask(a).astype(bool)  # pycocotools rasterises the polygon.
            x, y, w, h = a["bbox"]
            assert 0 <= x and 0 <= y and x + w <= image_info["width"] and y + h <= image_info["height"]
            # At least 70% of a shape is visible (later shapes cover at most 30%), and where
            # the polygon is, the map holds its class (edges rasterise slightly differently).
            share = (label_map[mask] == a["category_id"]).mean()
            assert share >= 0.6, (image_info["id"], a["id"], share)
            # area: the shape's visible pixels, 70..100% of its polygon's.
            assert 0.65 * mask.sum() <= a["area"] <= 1.1 * mask.sum() + 50
            union |= mask
        # Every labelled pixel belongs to some shape's polygon, within a pixel at the edges
        # (our rasteriser keeps a few more pixels at sharp star tips than pycocotools').
        dilated = np.zeros_like(union)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                dilated |= np.roll(np.roll(union, dy, 0), dx, 1)
        assert ((label_map > 0) & ~dilated).sum() <= max(3, 1e-3 * (label_map > 0).sum())


def test_ground_truth_scores_perfectly_in_cocoeval(shapes_set):
    """The file works with COCOeval, which will score the detector: the ground truth itself,
    given as detections, gets mAP 1."""
    coco = COCO(str(shapes_set / "instances.json"))
    detections = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                   "score": 1.0} for a in coco.loadAnns(coco.getAnnIds())]
    evaluation = COCOeval(coco, coco.loadRes(detections), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)  # mAP@[.5:.95]
    assert evaluation.stats[1] == pytest.approx(1.0)  # mAP@.5


def test_same_seed_same_files_and_count_is_a_prefix(shapes_set, tmp_path):
    again = tmp_path / "again"
    assert make_set(again, "--count", "12", "--seed", "7").returncode == 0
    assert (again / "instances.json").read_bytes() == (shapes_set / "instances.json").read_bytes()
    for name in ("images/000005.jpg", "semantic/000012.png"):
        assert (again / name).read_bytes() == (shapes_set / name).read_bytes()
    prefix = tmp_path / "prefix"
    assert make_set(prefix, "--count", "5", "--seed", "7").returncode == 0
    for i in range(1, 6):
        name = f"images/{i:06d}.jpg"
        assert (prefix / name).read_bytes() == (shapes_set / name).read_bytes()
    full = json.loads((shapes_set / "instances.json").read_text())
    part = json.loads((prefix / "instances.json").read_text())
    assert part["annotations"] == [a for a in full["annotations"] if a["image_id"] <= 5]
    other = tmp_path / "other"
    assert make_set(other, "--count", "5", "--seed", "8").returncode == 0
    assert (other / "images/000001.jpg").read_bytes() != (shapes_set / "images/000001.jpg").read_bytes()


def test_fixed_size_and_shape_limit(tmp_path):
    result = make_set(tmp_path, "--count", "4", "--seed", "3", "--size", "320x240",
                      "--max-shapes", "2")
    assert result.returncode == 0, result.stderr
    coco = json.loads((tmp_path / "instances.json").read_text())
    assert all((i["width"], i["height"]) == (320, 240) for i in coco["images"])
    for image_id in range(1, 5):
        assert 1 <= sum(a["image_id"] == image_id for a in coco["annotations"]) <= 2


@pytest.mark.parametrize("args, message", [
    ([], "--out is required"),
    (["--out", "X", "--count", "0"], "--count must be 1..10000000"),
    (["--out", "X", "--size", "10x10"], "--size must be WxH"),
    (["--out", "X", "--size", "320"], "--size must be WxH"),
    (["--out", "X", "--max-shapes", "0"], "--max-shapes must be 1..64"),
    (["--out", "X", "--quality", "101"], "--quality must be 1..100"),
])
def test_bad_flags_fail_with_a_reason(tmp_path, args, message):
    args = [str(tmp_path / "x") if a == "X" else a for a in args]
    result = subprocess.run([str(binary("vitserve-shapes")), *args], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert message in result.stderr
    assert not (tmp_path / "x").exists()


def test_help_explains_the_outputs():
    result = subprocess.run([str(binary("vitserve-shapes")), "--help"], capture_output=True,
                            text=True, timeout=60)
    text = result.stdout + result.stderr
    for expected in ("--out", "--count", "--seed", "--size", "instances.json", "semantic",
                     "1 circle"):
        assert expected in text
