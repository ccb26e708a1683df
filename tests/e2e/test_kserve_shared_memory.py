"""Triton's system shared-memory extension (--allow-client-shm): tritonclient, perf_analyzer
--shared-memory system and vitserve-client bench --shared-memory system against vitserve."""
import os
import pathlib
import queue
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from conftest import E2E_MODEL, binary, serving
from test_perf_analyzer import _perf_analyzer_env

IMAGE_BYTES = 3 * 224 * 224 * 4
LOGITS_BYTES = 1000 * 4


@pytest.fixture(scope="module")
def shm_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("shm_server") / "vitserve.log"
    with serving([f"--model={E2E_MODEL}", "--max-batch-size=8", "--allow-client-shm"], log) as proc:
        yield proc


@pytest.fixture
def regions(request):
    """Creates system shared memory regions (tritonclient's helpers) and destroys them after."""
    made = []

    def make(byte_size):
        name = f"vitserve_e2e_{os.getpid()}_{request.node.name}_{len(made)}"
        handle = shm.create_shared_memory_region(name, "/" + name, byte_size)
        made.append(handle)
        return name, handle

    yield make
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def _status_code(call):
    with pytest.raises(InferenceServerException) as err:
        call()
    return str(err.value.status())


def _request_in_shm(input_region, input_bytes, output_region, output_bytes, batch):
    inp = grpcclient.InferInput("input", [batch, 3, 224, 224], "FP32")
    inp.set_shared_memory(input_region, input_bytes)
    out = grpcclient.InferRequestedOutput("logits")
    out.set_shared_memory(output_region, output_bytes)
    return [inp], [out]


def _infer(client, request):
    inputs, outputs = request
    return client.infer(E2E_MODEL, inputs, outputs=outputs)


def test_the_extension_is_listed_only_when_allowed(shm_server, server):
    allowed = grpcclient.InferenceServerClient(shm_server.grpc_target)
    assert "system_shared_memory" in allowed.get_server_metadata(as_json=True)["extensions"]
    default = grpcclient.InferenceServerClient(server.grpc_target)
    assert "system_shared_memory" not in default.get_server_metadata(as_json=True)["extensions"]


def test_inputs_and_outputs_in_shared_memory_match_the_same_request_in_bytes(shm_server,
                                                                              regions):
    client = grpcclient.InferenceServerClient(shm_server.grpc_target)
    batch = np.random.default_rng(3).standard_normal((2, 3, 224, 224), dtype=np.float32)
    in_name, in_handle = regions(batch.nbytes)
    out_name, out_handle = regions(2 * LOGITS_BYTES + 64)
    shm.set_shared_memory_region(in_handle, [batch])
    client.register_system_shared_memory(in_name, "/" + in_name, batch.nbytes)
    client.register_system_shared_memory(out_name, "/" + out_name, 2 * LOGITS_BYTES + 64)
    status = client.get_system_shared_memory_status(as_json=True)["regions"]
    assert status[in_name]["key"] == "/" + in_name
    assert int(status[out_name]["byte_size"]) == 2 * LOGITS_BYTES + 64

    inputs, outputs = _request_in_shm(in_name, batch.nbytes, out_name, 2 * LOGITS_BYTES, 2)
    result = client.infer(E2E_MODEL, inputs, outputs=outputs)
    response = result.get_response()
    assert [o.name for o in response.outputs] == ["logits"]
    assert [int(d) for d in response.outputs[0].shape] == [2, 1000]
    assert response.raw_output_contents[0] == b""  # The logits went to shared memory.
    in_shm = shm.get_contents_as_numpy(out_handle, np.float32, [2, 1000])

    plain = grpcclient.InferInput("input", list(batch.shape), "FP32")
    plain.set_data_from_numpy(batch)
    in_bytes = client.infer(E2E_MODEL, [plain]).as_numpy("logits")
    np.testing.assert_allclose(in_shm, in_bytes, rtol=1e-4, atol=1e-4)
    assert np.abs(in_shm).max() > 0

    client.unregister_system_shared_memory(in_name)
    assert in_name not in client.get_system_shared_memory_status(as_json=True).get("regions", {})
    client.unregister_system_shared_memory()


def test_bad_regions_and_windows_get_clear_errors_and_the_server_keeps_serving(shm_server,
                                                                               regions):
    client = grpcclient.InferenceServerClient(shm_server.grpc_target)
    in_name, _ = regions(IMAGE_BYTES)
    out_name, _ = regions(LOGITS_BYTES)
    client.register_system_shared_memory(in_name, "/" + in_name, IMAGE_BYTES)
    client.register_system_shared_memory(out_name, "/" + out_name, LOGITS_BYTES)
    try:
        assert "ALREADY_EXISTS" in _status_code(
            lambda: client.register_system_shared_memory(in_name, "/" + in_name, IMAGE_BYTES))
        assert "NOT_FOUND" in _status_code(
            lambda: client.register_system_shared_memory("x", "/vitserve_e2e_missing", 64))
        assert "INVALID_ARGUMENT" in _status_code(  # Larger than the object.
            lambda: client.register_system_shared_memory("y", "/" + in_name, IMAGE_BYTES + 1))
        assert "NOT_FOUND" in _status_code(
            lambda: client.get_system_shared_memory_status(region_name="never"))

        unknown = _request_in_shm("never", IMAGE_BYTES, out_name, LOGITS_BYTES, 1)
        assert "NOT_FOUND" in _status_code(lambda: _infer(client, unknown))
        short = _request_in_shm(in_name, IMAGE_BYTES - 4, out_name, LOGITS_BYTES, 1)
        assert "INVALID_ARGUMENT" in _status_code(lambda: _infer(client, short))
        outside = _request_in_shm(in_name, IMAGE_BYTES + 4, out_name, LOGITS_BYTES, 1)
        assert "INVALID_ARGUMENT" in _status_code(lambda: _infer(client, outside))
        small_output = _request_in_shm(in_name, IMAGE_BYTES, out_name, LOGITS_BYTES - 4, 1)
        assert "INVALID_ARGUMENT" in _status_code(lambda: _infer(client, small_output))
        assert "UNIMPLEMENTED" in _status_code(
            lambda: client.register_cuda_shared_memory("c", b"\0" * 64, 0, 64))

        fine = _request_in_shm(in_name, IMAGE_BYTES, out_name, LOGITS_BYTES, 1)
        result = _infer(client, fine)
        assert [int(d) for d in result.get_response().outputs[0].shape] == [1, 1000]
    finally:
        client.unregister_system_shared_memory()


def test_without_the_flag_shared_memory_is_refused(server, regions):
    client = grpcclient.InferenceServerClient(server.grpc_target)
    name, _ = regions(IMAGE_BYTES)
    code = _status_code(lambda: client.register_system_shared_memory(name, "/" + name, 64))
    assert "FAILED_PRECONDITION" in code
    inputs, _ = _request_in_shm(name, IMAGE_BYTES, name, LOGITS_BYTES, 1)
    assert "FAILED_PRECONDITION" in _status_code(lambda: client.infer(E2E_MODEL, inputs))
    client.unregister_system_shared_memory()  # Answers for none, as perf_analyzer expects.
    client.unregister_cuda_shared_memory()
    assert client.get_system_shared_memory_status(as_json=True).get("regions", {}) == {}


def test_perf_analyzer_runs_with_system_shared_memory(shm_server):
    exe = shutil.which("perf_analyzer", path=str(pathlib.Path(sys.executable).parent))
    assert exe, "perf_analyzer is missing from .venv (scripts/setup.sh installs it)"
    client = grpcclient.InferenceServerClient(shm_server.grpc_target)
    before = int(client.get_inference_statistics(E2E_MODEL, as_json=True)["model_stats"][0]
                 .get("inference_count", 0))
    result = subprocess.run(
        [exe, "-m", E2E_MODEL, "-i", "grpc", "-u", shm_server.grpc_target, "-b", "1",
         "--shared-memory", "system", "--concurrency-range", "2", "--measurement-interval",
         "1500", "--measurement-mode", "time_windows", "--max-trials", "3",
         "--stability-percentage", "999"],
        capture_output=True, text=True, timeout=240, env=_perf_analyzer_env())
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "infer/sec" in output, output
    after = int(client.get_inference_statistics(E2E_MODEL, as_json=True)["model_stats"][0]
                ["inference_count"])
    assert after > before
    # perf_analyzer unregisters what it registered when it exits.
    assert client.get_system_shared_memory_status(as_json=True).get("regions", {}) == {}


def _bench(target, *args):
    return subprocess.run(
        [str(binary("vitserve-client")), "bench", "--server", target, "--model", E2E_MODEL,
         "--input", "tensor", "--duration", "1.5", "--concurrency", "2", "--json", *args],
        capture_output=True, text=True, timeout=120)


def test_vitserve_client_bench_sends_tensors_in_shared_memory(shm_server, server):
    result = _bench(shm_server.grpc_target, "--shared-memory", "system", "--channels", "2")
    assert result.returncode == 0, result.stderr
    assert '"errors":0' in result.stdout.replace(" ", ""), result.stdout
    client = grpcclient.InferenceServerClient(shm_server.grpc_target)
    assert client.get_system_shared_memory_status(as_json=True).get("regions", {}) == {}
    leftovers = [p for p in os.listdir("/dev/shm") if p.startswith("vitserve_bench_")]
    assert leftovers == [], leftovers

    refused = _bench(server.grpc_target, "--shared-memory", "system")
    assert refused.returncode == 1, refused.stderr
    assert "--allow-client-shm" in refused.stderr, refused.stderr
    usage = _bench(shm_server.grpc_target, "--shared-memory", "cuda")
    assert usage.returncode == 2, usage.stderr
    assert "--shared-memory must be none or system" in usage.stderr, usage.stderr


def test_a_stream_reads_and_writes_shared_memory_and_answers_its_errors_in_band(shm_server,
                                                                                 regions):
    client = grpcclient.InferenceServerClient(shm_server.grpc_target)
    image = np.random.default_rng(5).standard_normal((1, 3, 224, 224), dtype=np.float32)
    in_name, in_handle = regions(IMAGE_BYTES)
    out_name, out_handle = regions(LOGITS_BYTES)
    shm.set_shared_memory_region(in_handle, [image])
    client.register_system_shared_memory(in_name, "/" + in_name, IMAGE_BYTES)
    client.register_system_shared_memory(out_name, "/" + out_name, LOGITS_BYTES)
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        inputs, outputs = _request_in_shm("never", IMAGE_BYTES, out_name, LOGITS_BYTES, 1)
        client.async_stream_infer(E2E_MODEL, inputs, outputs=outputs, request_id="bad")
        _, error = answers.get(timeout=120)
        assert error is not None and "NOT_FOUND" in str(error), error
        inputs, outputs = _request_in_shm(in_name, IMAGE_BYTES, out_name, LOGITS_BYTES, 1)
        client.async_stream_infer(E2E_MODEL, inputs, outputs=outputs, request_id="good")
        result, error = answers.get(timeout=120)
        assert error is None, error
        assert result.get_response().id == "good"
    finally:
        client.stop_stream()
        client.unregister_system_shared_memory()
    plain = grpcclient.InferInput("input", list(image.shape), "FP32")
    plain.set_data_from_numpy(image)
    expected = client.infer(E2E_MODEL, [plain]).as_numpy("logits")
    np.testing.assert_allclose(shm.get_contents_as_numpy(out_handle, np.float32, [1, 1000]),
                               expected, rtol=1e-4, atol=1e-4)
