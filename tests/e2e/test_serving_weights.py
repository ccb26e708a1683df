"""A timm checkpoint served by vitserve unchanged: `vitserve --model shvit_s1 --weights FILE`
answers ModelInfer with timm's logits, and Classify with timm's top-1 (and nearly its
probability) for a real image, preprocessed by each side in its own way."""
import json
import subprocess

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

from conftest import DATA_DIR, binary
from model_helpers import make_reference, save_state_dict


def _timm_probabilities(model, image_path, swap_channels=False):
    """timm's own eval preprocessing (resize, centre crop, normalise) of a real image, and the
    model's softmax over it; with swap_channels, of the image with R and B exchanged (what a
    server that mixed up BGR and RGB would compute)."""
    import timm.data  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config)
    with Image.open(image_path) as image:
        rgb = image.convert("RGB")
        if swap_channels:
            r, g, b = rgb.split()
            rgb = Image.merge("RGB", (b, g, r))
        batch = transform(rgb).unsqueeze(0)
    with torch.no_grad():
        return model(batch).softmax(1)[0].numpy()


@pytest.mark.parametrize("model_name", ["shvit_s1", "deit_tiny_patch16_224"])
def test_weights_file_is_served_with_timm_logits(start_server, tmp_path, model_name):
    reference = make_reference(model_name, seed=3)
    weights = tmp_path / f"{model_name}.safetensors"
    save_state_dict(reference, weights)
    server = start_server(f"--model={model_name}", f"--weights={weights}")
    assert "RANDOM" not in server.log()

    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = reference(images).numpy()
    # The logits depend on the input (by far more than the tolerance), so matching them checks
    # how the server reads the tensor, not only the model's biases.
    assert np.abs(expected[0] - expected[1]).max() > 1e-2
    client = grpcclient.InferenceServerClient(url=server.grpc_target)
    inp = grpcclient.InferInput("input", list(images.shape), "FP32")
    inp.set_data_from_numpy(images.numpy())
    logits = client.infer(model_name, [inp]).as_numpy("logits")
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    assert (logits.argmax(1) == expected.argmax(1)).all()

    # Classify on a real photo-like JPEG, decoded and preprocessed by the server (OpenCV), gives
    # timm's top-1 class (timm preprocesses with PIL), and probabilities much closer to timm's
    # than those of the same photo with R and B swapped: the server's decode, colour order,
    # resize, crop and normalisation are checked, not only the model.
    image = DATA_DIR / "sunset_320x240.jpg"
    timm_probs = _timm_probabilities(reference, image)
    swapped_probs = _timm_probabilities(reference, image, swap_channels=True)
    result = subprocess.run([str(binary("vitserve-client")), "classify", "--server",
                             server.grpc_target, "--model", model_name, "--top-k", "5", "--json",
                             str(image)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    classes = json.loads(result.stdout.strip().splitlines()[0])["classes"]
    indices = [c["index"] for c in classes]
    served = np.array([c["score"] for c in classes])
    served_error = np.abs(served - timm_probs[indices]).max()
    swap_effect = np.abs(swapped_probs[indices] - timm_probs[indices]).max()
    top2 = np.sort(timm_probs)[-2:]
    print(f"{model_name}: served vs timm {served_error:.3g}, R/B swap moves {swap_effect:.3g}, "
          f"timm top-2 {top2}")
    assert top2[1] - top2[0] > served_error, "precondition: timm's top-1 must be unambiguous"
    assert indices[0] == int(timm_probs.argmax()), (classes, top2)
    assert served_error < swap_effect / 4, (served_error, swap_effect)
