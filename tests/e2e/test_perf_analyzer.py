"""Triton's perf_analyzer (pip `perf-analyzer`) drives vitserve over gRPC unchanged."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import E2E_MODEL


def _perf_analyzer_env():
    env = dict(os.environ)
    # The PyPI build links libcudart.so.12; nvidia-cuda-runtime-cu12 (requirements-dev.txt)
    # provides it. No GPU is used: inputs travel in the request body.
    import nvidia.cuda_runtime  # noqa: PLC0415
    libdir = pathlib.Path(list(nvidia.cuda_runtime.__path__)[0]) / "lib"
    env["LD_LIBRARY_PATH"] = f"{libdir}:{env.get('LD_LIBRARY_PATH', '')}"
    return env


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "streaming"])
def test_perf_analyzer_runs_against_vitserve(server, streaming):
    exe = shutil.which("perf_analyzer", path=str(pathlib.Path(sys.executable).parent))
    assert exe, "perf_analyzer is missing from .venv (scripts/setup.sh installs it)"
    # --streaming sends every request over one ModelStreamInfer stream per client thread.
    result = subprocess.run(
        [exe, "-m", E2E_MODEL, "-i", "grpc", "-u", server.grpc_target, "-b", "1",
         "--concurrency-range", "2", "--measurement-interval", "1500",
         "--measurement-mode", "time_windows", "--max-trials", "3", "--stability-percentage", "999"]
        + (["--streaming"] if streaming else []),
        capture_output=True, text=True, timeout=240, env=_perf_analyzer_env())
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Throughput" in output, output
    assert "infer/sec" in output, output


def test_perf_analyzer_sends_uint8_pixels_when_the_metadata_declares_them(start_server):
    """--kserve-input-datatype UINT8: the metadata declares UINT8 and perf_analyzer, which sends
    what the metadata declares, drives the model with raw pixels (a quarter of FP32's bytes)."""
    import tritonclient.grpc as grpcclient  # noqa: PLC0415
    server = start_server(f"--model={E2E_MODEL}", "--max-batch-size=8",
                          "--kserve-input-datatype=UINT8")
    client = grpcclient.InferenceServerClient(server.grpc_target)
    metadata = client.get_model_metadata(E2E_MODEL, as_json=True)
    assert metadata["inputs"][0]["datatype"] == "UINT8", metadata
    config = client.get_model_config(E2E_MODEL, as_json=True)["config"]
    assert config["input"][0]["data_type"] == "TYPE_UINT8", config
    exe = shutil.which("perf_analyzer", path=str(pathlib.Path(sys.executable).parent))
    assert exe, "perf_analyzer is missing from .venv (scripts/setup.sh installs it)"
    result = subprocess.run(
        [exe, "-m", E2E_MODEL, "-i", "grpc", "-u", server.grpc_target, "-b", "1",
         "--concurrency-range", "2", "--measurement-interval", "1500",
         "--measurement-mode", "time_windows", "--max-trials", "3", "--stability-percentage", "999"],
        capture_output=True, text=True, timeout=240, env=_perf_analyzer_env())
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "infer/sec" in output, output
    stats = client.get_inference_statistics(E2E_MODEL, as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) > 0, stats


def test_a_bad_kserve_input_datatype_stops_the_server(start_server):
    server = start_server(f"--model={E2E_MODEL}", "--kserve-input-datatype=FP64", wait=False)
    assert server.proc.wait(timeout=60) != 0
    assert "--kserve-input-datatype is 'FP64'" in server.log()
