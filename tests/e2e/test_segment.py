"""Segment end to end (issue 10): vitserve serves shvit_s1 with the segmentation decoder from a
model repository config alone (random weights), and `vitserve-client segment` writes each label
map as a PNG at its image's original size."""
import json
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import add_model, binary


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    result = subprocess.run([str(binary("vitserve-shapes")), "--out", str(out), "--count", "3",
                             "--seed", "5"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return out


def test_segment_writes_label_maps_at_the_original_size(scenes, tmp_path, start_server):
    model_dir = tmp_path / "repo" / "shapes_seg"
    add_model(model_dir.parent, model_dir.name,
              'architecture: "shvit_s1" task: SEGMENTATION num_classes: 6 '
              'allow_random_weights: true input { size: 128 }')
    (model_dir / "labels.txt").write_text((scenes / "labels.txt").read_text())
    server = start_server(f"--model-repository={tmp_path / 'repo'}", "--device=cpu")

    images = sorted((scenes / "images").glob("*.jpg"))
    masks = tmp_path / "masks"
    annotated = tmp_path / "annotated"
    result = subprocess.run(
        [str(binary("vitserve-client")), "segment", "--server", server.grpc_target,
         "--model", "shapes_seg", "--output-dir", str(masks), "--annotate", str(annotated),
         "--json", *map(str, images)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == len(images)
    for line, image_path in zip(lines, images):
        width, height = Image.open(image_path).size
        assert (line["width"], line["height"]) == (width, height)
        assert line["model"] == "shapes_seg"
        mask = Image.open(line["mask_file"])
        assert line["mask_file"] == str(masks / (image_path.stem + ".mask.png"))
        assert mask.mode == "L"  # 8-bit: six classes.
        assert mask.size == (width, height)
        assert np.array(mask).max() <= 5
        drawn = Image.open(annotated / (image_path.stem + ".annotated.png"))
        assert drawn.size == (width, height) and drawn.mode == "RGB"

    # The model describes itself as what it serves.
    models = subprocess.run([str(binary("vitserve-client")), "models", "--server",
                             server.grpc_target, "--json"], capture_output=True, text=True,
                            timeout=60)
    assert models.returncode == 0, models.stderr
    described = [json.loads(line) for line in models.stdout.splitlines()]
    seg = next(m for m in described if m["name"] == "shapes_seg")
    assert seg["task"].lower() == "segmentation"
    assert seg["num_classes"] == 6

    # Classify on it is refused with the reason; the server goes on serving.
    wrong = subprocess.run([str(binary("vitserve-client")), "classify", "--server",
                            server.grpc_target, "--model", "shapes_seg", str(images[0])],
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode != 0
    assert "INVALID_ARGUMENT" in wrong.stderr and "Classify needs a classification" in wrong.stderr


def test_detect_answers_boxes_inside_each_image(scenes, tmp_path, start_server):
    """Detect through vitserve-client on shvit_s1 with the CenterNet head, from a config alone
    (untrained: the boxes are arbitrary, but they are the image's own and inside it)."""
    model_dir = tmp_path / "repo" / "shapes_det"
    add_model(model_dir.parent, model_dir.name,
              'architecture: "shvit_s1" task: DETECTION num_classes: 5 '
              'allow_random_weights: true input { size: 128 } detection { max_detections: 4 }')
    (model_dir / "labels.txt").write_text("circle\nsquare\ntriangle\nstar\nhexagon\n")
    server = start_server(f"--model-repository={tmp_path / 'repo'}", "--device=cpu")
    images = sorted((scenes / "images").glob("*.jpg"))
    annotated = tmp_path / "annotated"
    result = subprocess.run(
        [str(binary("vitserve-client")), "detect", "--server", server.grpc_target, "--model",
         "shapes_det", "--score-threshold", "0.01", "--annotate", str(annotated), "--json",
         *map(str, images)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == len(images)
    for line, image_path in zip(lines, images):
        width, height = Image.open(image_path).size
        assert line["image"] == str(image_path)
        assert len(line["boxes"]) <= 4  # The config's max_detections.
        drawn = np.array(Image.open(annotated / (image_path.stem + ".annotated.png")))
        assert drawn.shape[:2] == (height, width)
        if line["boxes"]:  # Drawn boxes change the picture.
            assert np.any(drawn != np.array(Image.open(image_path).convert("RGB")))
        for box in line["boxes"]:
            assert 0 <= box["x1"] <= box["x2"] <= width
            assert 0 <= box["y1"] <= box["y2"] <= height
            assert box["label"] in ("circle", "square", "triangle", "star", "hexagon")
            assert 0.01 <= box["score"] <= 1
