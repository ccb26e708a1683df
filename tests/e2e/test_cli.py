"""vitserve-client against the real server: the commands users script against."""
import json
import subprocess

from conftest import E2E_MODEL, binary, sample_images


def run_client(*args, timeout=120):
    return subprocess.run([str(binary("vitserve-client")), *args], capture_output=True,
                          text=True, timeout=timeout)


def test_classify_json_one_line_per_image(server):
    images = sample_images()
    result = run_client("classify", "--server", server.grpc_target, "--model", E2E_MODEL,
                        "--top-k", "3", "--json", *map(str, images))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(images)
    for line, image in zip(lines, images):
        obj = json.loads(line)
        assert obj["image"].endswith(image.name)
        assert obj["model"] == E2E_MODEL
        scores = [c["score"] for c in obj["classes"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert all(isinstance(c["label"], str) and 0 <= c["index"] < 1000 for c in obj["classes"])


def test_classify_error_prints_code_name_and_fails(server, tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image")
    result = run_client("classify", "--server", server.grpc_target, "--model", E2E_MODEL, str(junk))
    assert result.returncode != 0
    assert "INVALID_ARGUMENT" in result.stderr

    result = run_client("classify", "--server", server.grpc_target, "--model", "nope",
                        str(sample_images()[0]))
    assert result.returncode != 0
    assert "NOT_FOUND" in result.stderr


def test_models_and_health(server):
    result = run_client("models", "--server", server.grpc_target, "--json")
    assert result.returncode == 0, result.stderr
    models = [json.loads(line) for line in result.stdout.strip().splitlines()]
    (model,) = [m for m in models if m["name"] == E2E_MODEL]
    assert model["ready"] is True
    assert model["input_size"] == 224
    result = run_client("health", "--server", server.grpc_target)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("SERVING\n"), result.stdout
    # Read through our own grpc.health.v1 stubs from gRPC's default health service.
    assert "grpc.health.v1 SERVING" in result.stdout, result.stdout
    result = run_client("health", "--server", server.grpc_target, "--json")
    assert json.loads(result.stdout)["grpc_health"] == "SERVING", result.stdout


def test_bench_closed_loop_reports_percentiles(server):
    result = run_client("bench", "--server", server.grpc_target, "--model", E2E_MODEL,
                        "--concurrency", "2", "--duration", "2", "--image",
                        str(sample_images()[0]), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["requests"] > 0
    assert report["throughput_img_s"] > 0
    assert 0 < report["p50_ms"] <= report["p90_ms"] <= report["p99_ms"] <= report["max_ms"]


def test_help_explains(server):
    for exe in ("vitserve", "vitserve-client"):
        result = subprocess.run([str(binary(exe)), "--help"], capture_output=True, text=True,
                                timeout=30)
        text = result.stdout + result.stderr
        assert "--model" in text, text
