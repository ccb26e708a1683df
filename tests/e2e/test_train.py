"""vitserve-train end to end (issue 10): a tiny run writes a folder that vitserve serves as it
is, and tools/score_shapes.py scores it from Segment's answers on held-out scenes."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, binary


def train(out, *args):
    return subprocess.run([str(binary("vitserve-train")), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=600)


def test_trained_folder_serves_and_scores(tmp_path, start_server):
    result = train(tmp_path / "repo" / "shapes_seg", "--steps", "8", "--batch-size", "4",
                   "--input-size", "64", "--eval-scenes", "4", "--checkpoint-every", "4")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["finished"] and summary["steps_run"] == 8
    assert 0 <= summary["heldout_miou"] <= 1
    assert "[train] step 8/8" in result.stderr  # Progress lines.
    assert (tmp_path / "repo" / "shapes_seg" / "train_state" / "optimizer.pt").exists()

    heldout = tmp_path / "heldout"
    made = subprocess.run([str(binary("vitserve-shapes")), "--out", str(heldout), "--count", "4",
                           "--seed", "99"], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    server = start_server(f"--model-repository={tmp_path / 'repo'}", "--device=cpu")
    scored = subprocess.run([sys.executable, str(ROOT / "tools" / "score_shapes.py"), "--server",
                             server.grpc_target, "--model", "shapes_seg", "--data", str(heldout),
                             "--client", str(binary("vitserve-client"))],
                            capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["images"] == 4
    assert 0 <= report["miou"] <= 1 and 0 < report["pixel_accuracy"] <= 1
    assert "background" in report["iou"]


def test_stop_after_and_resume(tmp_path):
    out = tmp_path / "seg"
    first = train(out, "--steps", "4", "--batch-size", "2", "--input-size", "32",
                  "--eval-scenes", "2", "--stop-after", "2")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"steps_run": 2, "finished": False}
    assert "continue with --resume" in first.stderr
    assert not (out / "model.safetensors").exists()
    rest = train(out, "--steps", "4", "--batch-size", "2", "--input-size", "32",
                 "--eval-scenes", "2", "--resume")
    assert rest.returncode == 0, rest.stderr
    assert json.loads(rest.stdout)["steps_run"] == 2
    assert (out / "model.safetensors").exists()


@pytest.mark.parametrize("args, message", [
    ([], "--out is required"),
    (["--out", "X", "--task", "classify"], "--task must be segmentation, detection or classification"),
    (["--out", "X", "--device", "tpu"], "--device must be cpu, cuda or cuda:N"),
    (["--out", "X", "--architecture", "vim_tiny", "--steps", "1"],
     "supports: classification"),
    (["--out", "X", "--steps", "0"], "batch size, steps"),
])
def test_bad_flags(tmp_path, args, message):
    args = [str(tmp_path / "x") if a == "X" else a for a in args]
    result = subprocess.run([str(binary("vitserve-train")), *args], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert message in result.stderr


def test_help():
    result = subprocess.run([str(binary("vitserve-train")), "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    for flag in ("--out", "--steps", "--resume", "--stop-after", "--device", "model.safetensors"):
        assert flag in result.stdout


def test_trained_detector_serves_and_scores_with_cocoeval(tmp_path, start_server):
    result = train(tmp_path / "repo" / "shapes_det", "--task", "detection", "--steps", "6",
                   "--batch-size", "2", "--input-size", "64", "--eval-scenes", "2")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["finished"] and 0 <= summary["heldout_recall"] <= 1
    heldout = tmp_path / "heldout"
    made = subprocess.run([str(binary("vitserve-shapes")), "--out", str(heldout), "--count", "3",
                           "--seed", "98"], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    server = start_server(f"--model-repository={tmp_path / 'repo'}", "--device=cpu")
    scored = subprocess.run([sys.executable, str(ROOT / "tools" / "score_shapes.py"), "--task",
                             "detection", "--server", server.grpc_target, "--model", "shapes_det",
                             "--data", str(heldout), "--client", str(binary("vitserve-client"))],
                            capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["images"] == 3
    assert 0 <= report["map50"] <= 1 and 0 <= report["map"] <= 1


def test_trained_classifier_serves_and_scores_single_shape_crops(tmp_path, start_server):
    result = train(tmp_path / "repo" / "shapes_cls", "--task", "classification", "--steps", "6",
                   "--batch-size", "4", "--input-size", "64", "--eval-scenes", "4")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["finished"] and summary["heldout_accuracy"] in (0, 0.25, 0.5, 0.75, 1)
    assert "held-out accuracy" in result.stderr
    heldout = tmp_path / "heldout"
    made = subprocess.run([str(binary("vitserve-shapes")), "--out", str(heldout), "--count", "3",
                           "--seed", "97"], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    annotations = len(json.loads((heldout / "instances.json").read_text())["annotations"])
    server = start_server(f"--model-repository={tmp_path / 'repo'}", "--device=cpu")
    scored = subprocess.run([sys.executable, str(ROOT / "tools" / "score_shapes.py"), "--task",
                             "classification", "--server", server.grpc_target, "--model",
                             "shapes_cls", "--data", str(heldout), "--client",
                             str(binary("vitserve-client"))],
                            capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["images"] == 3 and report["crops"] == annotations > 0
    assert 0 <= report["accuracy"] <= 1


def test_vit_detector_and_segmenter_train_and_serve(tmp_path, start_server):
    """The plain-ViT family (deit_tiny, ViTDet's simple feature pyramid) trains and serves both
    dense tasks; it takes only its position embedding's 224 px."""
    for task, name in (("segmentation", "vit_seg"), ("detection", "vit_det")):
        result = train(tmp_path / "repo" / name, "--architecture", "deit_tiny_patch16_224",
                       "--task", task, "--steps", "2", "--batch-size", "2", "--input-size", "224",
                       "--eval-scenes", "2")
        assert result.returncode == 0, result.stderr
    wrong = train(tmp_path / "other", "--architecture", "deit_tiny_patch16_224", "--steps", "1",
                  "--input-size", "128")
    assert wrong.returncode == 1
    assert "cannot take 128 x 128 input (--input-size)" in wrong.stderr

    scenes = tmp_path / "scenes"
    made = subprocess.run([str(binary("vitserve-shapes")), "--out", str(scenes), "--count", "2",
                           "--seed", "96"], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    images = sorted(str(p) for p in (scenes / "images").glob("*.jpg"))
    server = start_server(f"--model-repository={tmp_path / 'repo'}", "--device=cpu")
    client = str(binary("vitserve-client"))
    segmented = subprocess.run([client, "segment", "--server", server.grpc_target, "--model",
                                "vit_seg", "--json", *images], capture_output=True, text=True,
                               timeout=120)
    assert segmented.returncode == 0, segmented.stderr
    truth = json.loads((scenes / "instances.json").read_text())["images"]
    sizes = {image["file_name"]: (image["width"], image["height"]) for image in truth}
    for line in segmented.stdout.splitlines():
        answer = json.loads(line)
        name = answer["image"].split("/")[-1]
        assert (answer["width"], answer["height"]) == sizes[name], answer
    detected = subprocess.run([client, "detect", "--server", server.grpc_target, "--model",
                               "vit_det", "--json", "--score-threshold", "1e-6", "--max-detections",
                               "5", *images], capture_output=True, text=True, timeout=120)
    assert detected.returncode == 0, detected.stderr
    for line in detected.stdout.splitlines():
        answer = json.loads(line)
        width, height = sizes[answer["image"].split("/")[-1]]
        assert len(answer["boxes"]) == 5  # A threshold near 0: every slot filled.
        for box in answer["boxes"]:
            assert 0 <= box["x1"] <= box["x2"] <= width and 0 <= box["y1"] <= box["y2"] <= height
