"""Limits a client cannot exceed (issue 14): the request deadline ceiling
(--max-request-seconds) over gRPC, KServe and REST, and the concurrent-stream limit per
connection (--max-concurrent-streams)."""
import subprocess
import threading

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import binary, sample_images

MODEL = "shvit_s1"


def test_the_deadline_ceiling_ends_requests_whatever_the_client_asked(start_server):
    # A ceiling of 1 ms, and one image per batch: a request of several images is split into
    # tasks of one, and those queued behind the first (a CPU forward pass takes well over 1 ms)
    # reach the executor after their capped deadline, though the clients set none or 60 s.
    server = start_server(f"--model={MODEL}", "--max-request-seconds=0.001",
                          "--max-batch-size=1")
    images = [str(p) for p in sample_images()[:3]]
    assert len(images) == 3
    result = subprocess.run([str(binary("vitserve-client")), "classify", "--server",
                             server.grpc_target, "--model", MODEL, "--timeout", "60", *images],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "DEADLINE_EXCEEDED" in result.stderr, result.stderr

    # KServe: four calls at once, one image each; those queued behind the first run out.
    client = grpcclient.InferenceServerClient(server.grpc_target)
    tensor = grpcclient.InferInput("input", [1, 3, 224, 224], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 224, 224), np.float32))
    errors = []

    def infer():
        try:
            grpcclient.InferenceServerClient(server.grpc_target).infer(MODEL, [tensor],
                                                                       client_timeout=60)
        except InferenceServerException as error:
            errors.append(str(error))

    calls = [threading.Thread(target=infer) for _ in range(4)]
    for call in calls:
        call.start()
    for call in calls:
        call.join()
    assert errors and all("DEADLINE_EXCEEDED" in e for e in errors), errors

    parts = []
    for image in images:
        parts += ["-F", f"image=@{image}"]
    rest = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *parts,
                           f"http://{server.rest_url}/v1/models/{MODEL}:classify"],
                          capture_output=True, text=True, timeout=60)
    assert rest.stdout == "504", rest.stdout + rest.stderr
    # Calls that need no model still answer.
    assert client.is_server_live()


def _health_check(channel, timeout):
    check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                request_serializer=lambda r: r,
                                response_deserializer=lambda r: r)
    return check(b"", timeout=timeout)


def test_a_connection_gets_at_most_max_concurrent_streams(start_server):
    server = start_server(f"--model={MODEL}", "--max-concurrent-streams=2")
    channel = grpc.insecure_channel(server.grpc_target)
    open_stream = channel.stream_stream("/vitserve.v1.Vision/ClassifyStream",
                                        request_serializer=lambda r: r,
                                        response_deserializer=lambda r: r)
    release = threading.Event()

    def idle_requests():  # Keeps its stream open, sending nothing, until released.
        release.wait()
        return
        yield  # noqa: unreachable - makes this a generator

    assert _health_check(channel, timeout=10) is not None  # one call at a time: fine
    streams = [open_stream(idle_requests()) for _ in range(2)]
    try:
        # Both streams hold the connection's two slots: a third call waits for one.
        with pytest.raises(grpc.RpcError) as waited:
            _health_check(channel, timeout=2)
        assert waited.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # Another connection is not limited by this one's streams.
        other = grpc.insecure_channel(server.grpc_target,
                                      options=[("grpc.use_local_subchannel_pool", 1)])
        assert _health_check(other, timeout=10) is not None
        other.close()
    finally:
        release.set()
        for stream in streams:
            for _ in stream:  # The streams end once their requests do.
                pass
    assert _health_check(channel, timeout=10) is not None
    channel.close()
