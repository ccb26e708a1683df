"""Process-level behaviour: model repository, config errors, SIGTERM drain."""
import json
import subprocess
import threading
import time

from conftest import binary, sample_images


def _models(server):
    listing = subprocess.run([str(binary("vitserve-client")), "models", "--server",
                              server.grpc_target, "--json"], capture_output=True, text=True,
                             timeout=60)
    if listing.returncode != 0:
        return {}
    models = [json.loads(line) for line in listing.stdout.splitlines() if line.strip()]
    return {m["name"]: m for m in models}


def test_repository_serves_models_and_reports_config_errors(start_server, tmp_path):
    repo = tmp_path / "repo"
    good = repo / "tiny"
    good.mkdir(parents=True)
    (good / "config.pbtxt").write_text(
        'architecture: "deit_tiny_patch16_224"\n'
        "allow_random_weights: true\n"
        "batching { max_batch_size: 4 max_queue_delay_us: 500 }\n")
    bad = repo / "broken"
    bad.mkdir()
    (bad / "config.pbtxt").write_text('architecture: "deit_tiny_patch16_224"\nmax_batch: 4\n')

    server = start_server(f"--model-repository={repo}", wait=False)
    # Not every configured model loads, so /v2/health/ready stays 503: poll the catalogue.
    deadline = time.monotonic() + 120
    models = {}
    while time.monotonic() < deadline and server.proc.poll() is None:
        models = _models(server)
        if models.get("tiny", {}).get("ready"):
            break
        time.sleep(0.3)
    assert models.get("tiny", {}).get("ready"), server.log()
    # The broken model must not stop the good one from serving; it is listed as failed.
    assert "broken" in models and not models["broken"]["ready"], models
    assert server.http_get("/v2/health/ready")[0] == 503
    log = server.log()
    assert "broken" in log and "config.pbtxt:2" in log and "max_batch" in log, log
    result = subprocess.run([str(binary("vitserve-client")), "classify", "--server",
                             server.grpc_target, "--model", "tiny", str(sample_images()[0])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_sigterm_drains_accepted_requests_then_exits_zero(start_server):
    server = start_server("--model=deit_tiny_patch16_224", "--max-batch-size=2")
    image = str(sample_images()[0])
    results = []

    def classify():
        results.append(subprocess.run(
            [str(binary("vitserve-client")), "classify", "--server", server.grpc_target,
             "--model", "deit_tiny_patch16_224", image, image, image, image],
            capture_output=True, text=True, timeout=120))

    threads = [threading.Thread(target=classify) for _ in range(4)]
    for t in threads:
        t.start()
    # Give the requests time to be accepted, then ask the server to stop.
    time.sleep(1.5)
    code = server.stop()
    for t in threads:
        t.join()
    assert code == 0, server.log()
    accepted = [r for r in results if "UNAVAILABLE" not in r.stderr]
    assert accepted, [r.stderr for r in results]
    for r in accepted:
        assert r.returncode == 0, r.stderr


def test_bad_flags_exit_nonzero_with_message():
    result = subprocess.run([str(binary("vitserve")), "--model=shvit_s1",
                             "--model-repository=/nonexistent"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "model-repository" in (result.stdout + result.stderr)
    result = subprocess.run([str(binary("vitserve")), "--model=not_a_model", "--grpc-port=0",
                             "--http-port=0"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "not_a_model" in (result.stdout + result.stderr)
