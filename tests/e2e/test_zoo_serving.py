"""Each model of zoo II (Vim) and zoo III (ViTTM, TokenLearner, Fibottention) serves through
the real vitserve binary: ModelMetadata and ModelInfer via Triton's own gRPC client, random
weights, CPU. (Zoo I's ViT/DeiT/SHViT are served by test_serving_weights.py and the KServe tests.)
"""
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

ZOO_MODELS = [
    "vim_tiny",
    "vim_small",
    "vittm_small",
    "vittm_base",
    "vittm_base_28",
    "vit_small_tokenlearner",
    "vit_base_tokenlearner",
    "deit_small_fibottention",
    "vit_base_fibottention",
]


def _infer(client, model, batch):
    inp = grpcclient.InferInput("input", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch)
    out = grpcclient.InferRequestedOutput("logits")
    return client.infer(model, [inp], outputs=[out]).as_numpy("logits")


@pytest.mark.parametrize("model", ZOO_MODELS)
def test_model_serves_model_infer(start_server, model):
    server = start_server(f"--model={model}", "--max-batch-size=2")
    client = grpcclient.InferenceServerClient(url=server.grpc_target)
    assert client.is_model_ready(model)
    meta = client.get_model_metadata(model, as_json=True)
    (inp,) = meta["inputs"]
    assert [int(d) for d in inp["shape"]] == [-1, 3, 224, 224]
    (out,) = meta["outputs"]
    assert [int(d) for d in out["shape"]] == [-1, 1000]

    rng = np.random.default_rng(0)
    batch = rng.standard_normal((2, 3, 224, 224), dtype=np.float32)
    logits = _infer(client, model, batch)
    assert logits.shape == (2, 1000)
    assert np.isfinite(logits).all()
    assert not np.allclose(logits[0], logits[1])  # Rows depend on their images.
    alone = _infer(client, model, batch[1:2])
    np.testing.assert_allclose(alone[0], logits[1], rtol=1e-4, atol=1e-4)
