"""The shipped demo models (examples/model_repository, issue 10), scored from what vitserve
answers on held-out vitserve-shapes scenes (a seed vitserve-train never used: training uses
seed 1 and its held-out set HeldOutSeed(1))."""
import json
import subprocess
import sys

from conftest import ROOT, binary

REPOSITORY = ROOT / "examples" / "model_repository"


def test_shipped_classifier_is_right_on_at_least_95_percent_of_held_out_crops(tmp_path,
                                                                              start_server):
    heldout = tmp_path / "heldout"
    made = subprocess.run([str(binary("vitserve-shapes")), "--out", str(heldout), "--count", "50",
                           "--seed", "424242"], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    server = start_server(f"--model-repository={REPOSITORY}", "--device=cpu")
    scored = subprocess.run([sys.executable, str(ROOT / "tools" / "score_shapes.py"), "--task",
                             "classification", "--server", server.grpc_target, "--model",
                             "shapes_cls", "--data", str(heldout), "--client",
                             str(binary("vitserve-client"))],
                            capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["crops"] >= 100, report
    assert report["accuracy"] >= 0.95, report
