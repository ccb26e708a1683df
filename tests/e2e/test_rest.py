"""HTTP/REST end to end (issue 13): Triton's own HTTP client (tritonclient.http) against the
KServe v2 REST routes, perf_analyzer -i http, curl against the plain /v1 endpoint for each task,
and every error status, with the server serving on afterwards."""
import base64
import io
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from conftest import E2E_MODEL, add_model, binary, sample_images

CLASSIFIER = "cls"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    result = subprocess.run([str(binary("vitserve-shapes")), "--out", str(out), "--count", "2",
                             "--seed", "11"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return sorted((out / "images").glob("*.jpg"))


@pytest.fixture(scope="module")
def rest_server(tmp_path_factory):
    """A repository with a classifier, a segmenter and a detector (random weights, CPU), and a
    model whose weights are missing (never ready)."""
    from conftest import ServerProcess  # noqa: PLC0415
    repo = tmp_path_factory.mktemp("repo")
    configs = {
        CLASSIFIER: f'architecture: "{E2E_MODEL}" allow_random_weights: true',
        "seg": 'architecture: "shvit_s1" task: SEGMENTATION num_classes: 6 '
               'allow_random_weights: true input { size: 128 }',
        "det": 'architecture: "shvit_s1" task: DETECTION num_classes: 5 '
               'allow_random_weights: true input { size: 128 } detection { max_detections: 3 }',
        "broken": 'architecture: "shvit_s1" weights: "missing.safetensors"',
    }
    for name, config in configs.items():
        add_model(repo, name, config)
    proc = ServerProcess([f"--model-repository={repo}", "--device=cpu", "--max-batch-size=8",
                          "--max-image-pixels=4000000"],
                         tmp_path_factory.mktemp("rest") / "vitserve.log")
    try:
        # Not every model loads ("broken"), so /v2/health/ready stays 503: wait for the port.
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if httpclient.InferenceServerClient(proc.rest_url).is_model_ready(CLASSIFIER):
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            assert proc.proc.poll() is None, pathlib.Path(proc.log_path).read_text()
            time.sleep(0.5)
        else:
            pytest.fail("the REST server did not get ready: " +
                        pathlib.Path(proc.log_path).read_text())
        yield proc
    finally:
        proc.stop()


def _curl(url, *args):
    result = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *args, url],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    body, _, code = result.stdout.rpartition("\n")
    return int(code), (json.loads(body) if body.strip() else None)


def _plain(server, model, task, *args, query=""):
    return _curl(f"http://{server.rest_url}/v1/models/{model}:{task}{query}", "-X", "POST", *args)


# --- KServe v2 REST through tritonclient.http -------------------------------------------------

def test_server_and_model_metadata_config_and_repository(rest_server):
    client = httpclient.InferenceServerClient(rest_server.rest_url)
    assert client.is_server_live()
    assert not client.is_server_ready()  # "broken" never loads
    assert client.is_model_ready(CLASSIFIER)
    assert not client.is_model_ready("broken")
    meta = client.get_server_metadata()
    assert meta["name"] == "vitserve"
    assert {"model_configuration", "statistics", "model_repository"} <= set(meta["extensions"])

    model = client.get_model_metadata(CLASSIFIER)
    assert model["name"] == CLASSIFIER and model["versions"] == ["1"]
    (inp,) = model["inputs"]
    assert inp == {"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}
    (out,) = model["outputs"]
    assert out["name"] == "logits" and out["shape"] == [-1, 1000]
    assert client.get_model_metadata(CLASSIFIER, model_version="1")["name"] == CLASSIFIER

    config = client.get_model_config(CLASSIFIER)
    assert config["name"] == CLASSIFIER and config["max_batch_size"] == 8
    assert config["input"][0]["dims"] == [3, 224, 224]
    assert config["parameters"]["architecture"]["string_value"] == E2E_MODEL

    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index[CLASSIFIER]["state"] == "READY"
    assert index["broken"]["state"] == "UNAVAILABLE" and index["broken"]["reason"]
    grpc = grpcclient.InferenceServerClient(rest_server.grpc_target)
    grpc_index = grpc.get_model_repository_index(as_json=True)["models"]
    assert sorted(m["name"] for m in grpc_index) == sorted(index)


def _batch(seed, n=2):
    return np.random.default_rng(seed).standard_normal((n, 3, 224, 224)).astype(np.float32)


@pytest.mark.parametrize("binary_data", [False, True], ids=["json", "binary"])
def test_infer_equals_the_grpc_path(rest_server, binary_data):
    batch = _batch(1)
    http = httpclient.InferenceServerClient(rest_server.rest_url)
    inp = httpclient.InferInput("input", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch, binary_data=binary_data)
    out = httpclient.InferRequestedOutput("logits", binary_data=binary_data)
    result = http.infer(CLASSIFIER, [inp], outputs=[out], request_id="r-7")
    logits = result.as_numpy("logits")
    assert logits.shape == (2, 1000) and logits.dtype == np.float32
    assert result.get_response()["id"] == "r-7"

    grpc = grpcclient.InferenceServerClient(rest_server.grpc_target)
    ginp = grpcclient.InferInput("input", list(batch.shape), "FP32")
    ginp.set_data_from_numpy(batch)
    expected = grpc.infer(CLASSIFIER, [ginp]).as_numpy("logits")
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_uint8_pixels_and_statistics(rest_server):
    pixels = np.random.default_rng(2).integers(0, 256, (1, 3, 224, 224), dtype=np.uint8)
    http = httpclient.InferenceServerClient(rest_server.rest_url)
    before = http.get_inference_statistics(CLASSIFIER)["model_stats"][0]
    inp = httpclient.InferInput("input", list(pixels.shape), "UINT8")
    inp.set_data_from_numpy(pixels, binary_data=False)  # UINT8 as JSON numbers
    assert http.infer(CLASSIFIER, [inp]).as_numpy("logits").shape == (1, 1000)
    after = http.get_inference_statistics(CLASSIFIER)["model_stats"][0]
    assert after["name"] == CLASSIFIER and after["version"] == "1"
    assert after["inference_count"] == before["inference_count"] + 1
    assert after["inference_stats"]["success"]["count"] == \
        before["inference_stats"]["success"]["count"] + 1
    every = http.get_inference_statistics()["model_stats"]
    assert CLASSIFIER in {m["name"] for m in every}


@pytest.mark.parametrize("binary_data", [False, True], ids=["json", "binary"])
def test_detection_and_segmentation_outputs_over_http_equal_grpc(rest_server, binary_data):
    """KServe ModelInfer on the detector and the segmenter: tritonclient reads the documented
    outputs (INT32 ones too, as JSON or binary), and HTTP answers what gRPC does."""
    pixels = np.random.default_rng(3).integers(0, 256, (2, 3, 128, 128), dtype=np.uint8)
    http = httpclient.InferenceServerClient(rest_server.rest_url)
    grpc = grpcclient.InferenceServerClient(rest_server.grpc_target)
    for model, names in (("det", ["boxes", "scores", "classes", "num_detections"]),
                         ("seg", ["label_map"])):
        inp = httpclient.InferInput("input", list(pixels.shape), "UINT8")
        inp.set_data_from_numpy(pixels, binary_data=binary_data)
        outputs = [httpclient.InferRequestedOutput(n, binary_data=binary_data) for n in names]
        result = http.infer(model, [inp], outputs=outputs)
        ginp = grpcclient.InferInput("input", list(pixels.shape), "UINT8")
        ginp.set_data_from_numpy(pixels)
        expected = grpc.infer(model, [ginp])
        for name in names:
            got, want = result.as_numpy(name), expected.as_numpy(name)
            assert got.shape == want.shape and got.dtype == want.dtype, name
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)
    det = grpc.infer("det", [ginp])
    # max_detections 3 (the config's default): every image has 3 slots, classes -1 when unused.
    assert det.as_numpy("boxes").shape == (2, 3, 4)
    assert det.as_numpy("classes").dtype == np.int32
    counts = det.as_numpy("num_detections")
    assert counts.shape == (2,) and ((0 <= counts) & (counts <= 3)).all()
    for i, count in enumerate(counts):
        assert (det.as_numpy("classes")[i, count:] == -1).all()
    label_map = grpc.infer("seg", [ginp]).as_numpy("label_map")
    assert label_map.shape == (2, 128, 128) and ((0 <= label_map) & (label_map < 6)).all()
    metadata = http.get_model_metadata("det")
    assert [o["name"] for o in metadata["outputs"]] == \
        ["boxes", "scores", "classes", "num_detections"]


def test_kserve_errors_have_their_status_and_the_server_serves_on(rest_server, tmp_path):
    base = f"http://{rest_server.rest_url}"
    code, body = _curl(f"{base}/v2/models/nope")
    assert code == 404 and "nope" in body["error"]
    code, body = _curl(f"{base}/v2/models/{CLASSIFIER}/versions/2")
    assert code == 404 and "only version is '1'" in body["error"]
    code, body = _curl(f"{base}/v2/models/{CLASSIFIER}/infer", "-d", "{not json")
    assert code == 400 and "not valid JSON" in body["error"]
    wrong_shape = {"inputs": [{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32",
                               "data": [0.0] * 192}]}
    code, body = _curl(f"{base}/v2/models/{CLASSIFIER}/infer", "-d", json.dumps(wrong_shape))
    assert code == 400 and "224" in body["error"]
    too_few = {"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                           "data": [1.0, 2.0]}]}
    code, body = _curl(f"{base}/v2/models/{CLASSIFIER}/infer", "-d", json.dumps(too_few))
    assert code == 400 and "needs 150528" in body["error"]
    code, body = _curl(f"{base}/v2/models/broken/infer", "-d", json.dumps(too_few))
    assert code == 503, body
    code, body = _curl(f"{base}/v2/models/broken/ready")
    assert code == 503
    code, body = _curl(f"{base}/v2/no/such/route")
    assert code == 404 and "no route" in body["error"]
    # A deadline that has passed: 504.
    timed = dict(too_few, parameters={"timeout": 0})
    timed["inputs"] = [dict(timed["inputs"][0], data=[0.0] * 150528)]
    request = tmp_path / "timed.json"
    request.write_text(json.dumps(timed))
    code, body = _curl(f"{base}/v2/models/{CLASSIFIER}/infer", "--data-binary", f"@{request}")
    assert code == 504, body
    # Quick-mode-only operations and repository load of an unknown model fail with the reason.
    code, body = _curl(f"{base}/v2/repository/models/unknown_model/load", "-X", "POST")
    assert code in (400, 404) and body["error"]
    assert httpclient.InferenceServerClient(rest_server.rest_url).is_model_ready(CLASSIFIER)


def test_repository_unload_and_load(rest_server):
    http = httpclient.InferenceServerClient(rest_server.rest_url)
    http.unload_model("det")
    assert not http.is_model_ready("det")
    states = {m["name"]: m["state"] for m in http.get_model_repository_index()}
    assert states["det"] == "UNAVAILABLE"
    http.load_model("det")
    assert http.is_model_ready("det")


def test_perf_analyzer_over_http(rest_server):
    exe = shutil.which("perf_analyzer", path=str(pathlib.Path(sys.executable).parent))
    assert exe, "perf_analyzer is missing from .venv (scripts/setup.sh installs it)"
    import nvidia.cuda_runtime  # noqa: PLC0415
    env = dict(os.environ)
    libdir = pathlib.Path(list(nvidia.cuda_runtime.__path__)[0]) / "lib"
    env["LD_LIBRARY_PATH"] = f"{libdir}:{env.get('LD_LIBRARY_PATH', '')}"
    result = subprocess.run(
        [exe, "-m", CLASSIFIER, "-i", "http", "-u", rest_server.rest_url, "-b", "1",
         "--concurrency-range", "2", "--measurement-interval", "1500",
         "--measurement-mode", "time_windows", "--max-trials", "3",
         "--stability-percentage", "999"],
        capture_output=True, text=True, timeout=240, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Throughput" in output and "infer/sec" in output, output


# --- the plain endpoint with curl -------------------------------------------------------------

def test_classify_one_image_as_the_body_matches_the_grpc_client(rest_server):
    image = sample_images()[0]
    code, body = _plain(rest_server, CLASSIFIER, "classify", "--data-binary", f"@{image}",
                        "-H", "Content-Type: image/jpeg", query=f"?top_k=3&name={image.name}")
    assert code == 200, body
    assert body["model"] == CLASSIFIER
    (result,) = body["results"]
    assert result["image"] == image.name and len(result["classes"]) == 3

    grpc = subprocess.run([str(binary("vitserve-client")), "classify", "--server",
                           rest_server.grpc_target, "--model", CLASSIFIER, "--top-k", "3",
                           "--json", str(image)], capture_output=True, text=True, timeout=60)
    assert grpc.returncode == 0, grpc.stderr
    expected = json.loads(grpc.stdout)
    assert set(result) == set(expected)  # the same field names as vitserve-client --json
    assert [c["index"] for c in result["classes"]] == [c["index"] for c in expected["classes"]]
    for got, want in zip(result["classes"], expected["classes"]):
        assert set(got) == {"index", "label", "score"}
        assert got["score"] == pytest.approx(want["score"], abs=1e-4)


def test_classify_several_images_as_multipart_parts(rest_server):
    images = sample_images()[:3]
    parts = []
    for image in images:
        parts += ["-F", f"image=@{image}"]
    code, body = _plain(rest_server, CLASSIFIER, "classify", *parts)
    assert code == 200, body
    assert [r["image"] for r in body["results"]] == [i.name for i in images]
    assert all(len(r["classes"]) == 5 for r in body["results"])  # the default top_k


def test_detect_and_segment_with_curl(rest_server, scenes):
    code, body = _plain(rest_server, "det", "detect", "-F", f"a=@{scenes[0]}", "-F",
                        f"b=@{scenes[1]}", query="?score_threshold=0.0001&max_detections=2")
    assert code == 200, body
    assert len(body["results"]) == 2
    for result, path in zip(body["results"], scenes):
        width, height = Image.open(path).size
        assert len(result["boxes"]) <= 2
        for box in result["boxes"]:
            assert set(box) == {"x1", "y1", "x2", "y2", "score", "index", "label"}
            assert 0 <= box["x1"] <= box["x2"] <= width and 0 <= box["y1"] <= box["y2"] <= height

    code, body = _plain(rest_server, "seg", "segment", "--data-binary", f"@{scenes[0]}",
                        "-H", "Content-Type: image/jpeg")
    assert code == 200, body
    (result,) = body["results"]
    mask = Image.open(io.BytesIO(base64.b64decode(result["mask_png_base64"])))
    assert mask.size == Image.open(scenes[0]).size == (result["width"], result["height"])
    assert result["mask_png_bytes"] == len(base64.b64decode(result["mask_png_base64"]))
    assert np.array(mask).max() <= 5 and len(body["labels"]) == 6


def test_plain_endpoint_errors(rest_server, tmp_path):
    image = sample_images()[0]
    jpeg = ["--data-binary", f"@{image}", "-H", "Content-Type: image/jpeg"]
    code, body = _plain(rest_server, "nope", "classify", *jpeg)
    assert code == 404 and "nope" in body["error"]
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    code, body = _plain(rest_server, CLASSIFIER, "classify", "--data-binary", f"@{junk}")
    assert code == 400 and body["error"]
    code, body = _plain(rest_server, CLASSIFIER, "classify", "-d", "")
    assert code == 400 and "no image" in body["error"]
    code, body = _plain(rest_server, CLASSIFIER, "classify", *jpeg, query="?top_k=many")
    assert code == 400 and "top_k" in body["error"]
    code, body = _plain(rest_server, CLASSIFIER, "detect", *jpeg)
    assert code == 400 and "detection" in body["error"]
    code, body = _plain(rest_server, CLASSIFIER, "classify", *jpeg, query="?timeout_ms=0")
    assert code == 504, body
    code, body = _plain(rest_server, "broken", "classify", *jpeg)
    assert code == 503, body
    # 3,000 x 2,000 pixels is over this server's --max-image-pixels=4000000? No: 6 M is.
    big = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000)).save(big)
    code, body = _plain(rest_server, CLASSIFIER, "classify", "--data-binary", f"@{big}",
                        "-H", "Content-Type: image/png")
    assert code == 413 and "pixels" in body["error"], body
    code, _ = _plain(rest_server, CLASSIFIER, "classify", *jpeg)
    assert code == 200  # still serving


def test_queue_full_is_429_and_a_large_body_413(start_server, tmp_path):
    server = start_server(f"--model={E2E_MODEL}", "--max-batch-size=1", "--max-queue-size=1",
                          "--max-queue-delay-us=0", "--max-request-bytes=1048576")
    image = sample_images()[0]
    codes = []

    def call():
        codes.append(_plain(server, E2E_MODEL, "classify", "--data-binary", f"@{image}")[0])

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 429 in codes and 200 in codes, codes
    assert set(codes) <= {200, 429}, codes

    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (2 << 20))
    code, body = _plain(server, E2E_MODEL, "classify", "--data-binary", f"@{big}")
    assert code == 413 and "larger than" in body["error"], body


def test_a_half_sent_request_does_not_hold_a_worker(start_server):
    server = start_server(f"--model={E2E_MODEL}", "--rest-threads=1")
    slow = socket.create_connection(("127.0.0.1", server.rest_port))
    slow.sendall(b"POST /v1/models/x:classify HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nab")
    # The only worker is held by the half-sent request until its read timeout (10 s) ends it.
    slow.settimeout(30)
    started = time.time()
    reply = slow.recv(4096)
    waited = time.time() - started
    slow.close()
    assert waited < 25, waited
    assert reply == b"" or b"400" in reply.split(b"\r\n")[0] or b"408" in reply, reply
    code, body = _curl(f"http://{server.rest_url}/v2/health/ready")
    assert code == 200, body
