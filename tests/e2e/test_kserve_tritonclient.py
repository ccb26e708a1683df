"""Triton's own Python gRPC client against vitserve's KServe v2 service."""
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import E2E_MODEL


@pytest.fixture(scope="module")
def client(server):
    return grpcclient.InferenceServerClient(url=server.grpc_target)


def test_server_live_ready_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(E2E_MODEL)
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "vitserve"
    assert "model_configuration" in meta["extensions"]
    assert "statistics" in meta["extensions"]


def test_model_metadata_and_config(client):
    meta = client.get_model_metadata(E2E_MODEL, as_json=True)
    assert meta["name"] == E2E_MODEL
    (inp,) = meta["inputs"]
    assert inp["name"] == "input" and inp["datatype"] == "FP32"
    assert [int(d) for d in inp["shape"]] == [-1, 3, 224, 224]
    (out,) = meta["outputs"]
    assert out["name"] == "logits" and [int(d) for d in out["shape"]] == [-1, 1000]

    config = client.get_model_config(E2E_MODEL, as_json=True)["config"]
    assert config["name"] == E2E_MODEL
    assert int(config["max_batch_size"]) >= 1
    assert [int(d) for d in config["input"][0]["dims"]] == [3, 224, 224]


def _infer(client, batch, datatype="FP32"):
    inp = grpcclient.InferInput("input", list(batch.shape), datatype)
    inp.set_data_from_numpy(batch)
    out = grpcclient.InferRequestedOutput("logits")
    return client.infer(E2E_MODEL, [inp], outputs=[out], request_id="req-7")


def test_model_infer_fp32_batch(client):
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((3, 3, 224, 224), dtype=np.float32)
    result = _infer(client, batch)
    logits = result.as_numpy("logits")
    assert logits.shape == (3, 1000)
    assert np.isfinite(logits).all()
    assert result.get_response().id == "req-7"
    # Each row depends only on its own image: the same image alone gives the same row.
    alone = _infer(client, batch[1:2]).as_numpy("logits")
    np.testing.assert_allclose(alone[0], logits[1], rtol=1e-4, atol=1e-4)


def test_model_infer_uint8_pixels(client):
    pixels = np.full((1, 3, 224, 224), 128, dtype=np.uint8)
    logits = _infer(client, pixels, "UINT8").as_numpy("logits")
    assert logits.shape == (1, 1000)


def test_model_infer_bad_shape_is_invalid_argument(client):
    with pytest.raises(InferenceServerException) as err:
        _infer(client, np.zeros((1, 3, 100, 100), dtype=np.float32))
    assert "INVALID_ARGUMENT" in str(err.value.status())
    assert "224" in err.value.message()
    assert client.is_server_live()  # and it keeps serving


def test_unknown_model_is_not_found(client):
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("no_such_model")
    assert "NOT_FOUND" in str(err.value.status())


def test_statistics_count_inferences(client):
    _infer(client, np.zeros((2, 3, 224, 224), dtype=np.float32))
    stats = client.get_inference_statistics(E2E_MODEL, as_json=True)["model_stats"][0]
    assert stats["name"] == E2E_MODEL
    assert int(stats["inference_count"]) >= 2
    assert int(stats["execution_count"]) >= 1
    assert int(stats["inference_stats"]["success"]["count"]) >= 1


def test_stream_infer_answers_each_request_and_survives_errors(server):
    """ModelStreamInfer: tritonclient's stream API gets one result per request, matched by id;
    a failed request is answered in-band and the stream goes on serving."""
    import queue

    stream_client = grpcclient.InferenceServerClient(url=server.grpc_target)
    answers = queue.Queue()
    stream_client.start_stream(callback=lambda result, error: answers.put((result, error)))
    rng = np.random.default_rng(3)
    images = rng.standard_normal((2, 3, 224, 224), dtype=np.float32)

    def send(model, batch, request_id):
        inp = grpcclient.InferInput("input", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        stream_client.async_stream_infer(model, [inp], request_id=request_id,
                                         outputs=[grpcclient.InferRequestedOutput("logits")])

    try:
        send(E2E_MODEL, images[0:1], "a")
        send("no_such_model", images[0:1], "bad-model")
        bad_shape = np.zeros((1, 3, 7, 7), dtype=np.float32)
        send(E2E_MODEL, bad_shape, "bad-shape")
        send(E2E_MODEL, images[1:2], "b")  # After the errors: the stream still serves.
        results, errors = {}, []
        for _ in range(4):
            result, error = answers.get(timeout=120)
            if error is not None:
                errors.append(str(error))
            else:
                results[result.get_response().id] = result.as_numpy("logits")
    finally:
        stream_client.stop_stream()
        stream_client.close()

    assert sorted(results) == ["a", "b"]
    assert len(errors) == 2
    assert any("NOT_FOUND" in e and "no_such_model" in e for e in errors), errors
    assert any("INVALID_ARGUMENT" in e for e in errors), errors
    # Each streamed answer equals the unary answer for the same image.
    unary_client = grpcclient.InferenceServerClient(url=server.grpc_target)
    for request_id, row in (("a", 0), ("b", 1)):
        unary = _infer(unary_client, images[row:row + 1]).as_numpy("logits")
        np.testing.assert_allclose(results[request_id], unary, rtol=1e-4, atol=1e-4)
