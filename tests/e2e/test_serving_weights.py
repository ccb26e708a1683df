"""A timm checkpoint served by vitserve unchanged: `vitserve --model shvit_s1 --weights FILE`
answers ModelInfer with timm's logits, and Classify with timm's top-1 for a real image."""
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

from model_helpers import make_reference, save_state_dict


@pytest.mark.parametrize("model_name", ["shvit_s1"])
def test_weights_file_is_served_with_timm_logits(start_server, tmp_path, model_name):
    reference = make_reference(model_name, seed=3)
    weights = tmp_path / f"{model_name}.safetensors"
    save_state_dict(reference, weights)
    server = start_server(f"--model={model_name}", f"--weights={weights}")
    assert "RANDOM" not in server.log()

    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = reference(images).numpy()
    client = grpcclient.InferenceServerClient(url=server.grpc_target)
    inp = grpcclient.InferInput("input", list(images.shape), "FP32")
    inp.set_data_from_numpy(images.numpy())
    logits = client.infer(model_name, [inp]).as_numpy("logits")
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    assert (logits.argmax(1) == expected.argmax(1)).all()


def test_wrong_weights_file_fails_to_start_with_the_tensor_named(start_server, tmp_path):
    weights = tmp_path / "deit.safetensors"
    save_state_dict(make_reference("deit_tiny_patch16_224"), weights)
    server = start_server("--model=shvit_s1", f"--weights={weights}", wait=False)
    assert server.proc.wait(timeout=120) != 0
    log = server.log()
    assert "patch_embed" in log or "blocks." in log, log
