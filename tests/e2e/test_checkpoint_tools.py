"""tools/convert_checkpoint.py and tools/make_random_checkpoint.py produce files that
vitserve-run-model loads and that reproduce timm's logits."""
from __future__ import annotations

import pytest
import safetensors.torch as safetensors_torch
import timm  # noqa: F401  (the reference models; a missing package fails, never skips)
import torch

from model_helpers import (
    load_logits,
    make_reference,
    run_model,
    run_model_binary,
    run_python_tool,
    save_input,
)

TOLERANCE = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _binary_present():
    if not run_model_binary().exists():
        pytest.fail(f"{run_model_binary()} not built (set VITSERVE_BUILD_DIR)")


@pytest.fixture(scope="module")
def shvit_s1():
    """(timm model, input, timm logits) for shvit_s1 with randomised BatchNorms."""
    model = make_reference("shvit_s1")
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = model(images)
    return model, images, logits


def _released_layout(model: torch.nn.Module):
    """The state dict as some released SHViT .pth files store it: 1x1 conv weights 2-D."""
    state = {}
    for name, value in model.state_dict().items():
        if value.dim() == 4 and value.shape[2:] == (1, 1):
            value = value.flatten(1)
        state[name] = value.clone()
    return state


def _run(weights, images, tmp_path, name="shvit_s1"):
    inputs, outputs = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    save_input(images, inputs)
    result = run_model("--model", name, "--weights", str(weights), "--input", str(inputs),
                       "--output", str(outputs))
    return result, (load_logits(outputs) if result.returncode == 0 else None)


def test_model_key_and_module_prefix(shvit_s1, tmp_path):
    model, images, expected = shvit_s1
    state = {f"module.{k}": v for k, v in _released_layout(model).items()}
    pth = tmp_path / "shvit_s1.pth"
    torch.save({"model": state, "epoch": 299, "max_accuracy": 72.8}, pth)
    converted = tmp_path / "shvit_s1.safetensors"

    result = run_python_tool("convert_checkpoint.py", str(pth), str(converted),
                             "--arch", "shvit_s1")
    assert result.returncode == 0, result.stderr
    assert "key 'model'" in result.stdout
    assert "stripped prefix 'module.'" in result.stdout
    assert "reshaped" in result.stdout
    assert "matches timm's shvit_s1" in result.stdout

    run, logits = _run(converted, images, tmp_path)
    assert run.returncode == 0, run.stderr
    assert (logits - expected).abs().max().item() <= TOLERANCE


def test_state_dict_key_plain_names(shvit_s1, tmp_path):
    model, images, expected = shvit_s1
    pth = tmp_path / "plain.pth"
    torch.save({"state_dict": model.state_dict()}, pth)
    converted = tmp_path / "plain.safetensors"
    result = run_python_tool("convert_checkpoint.py", str(pth), str(converted))
    assert result.returncode == 0, result.stderr
    assert "key 'state_dict'" in result.stdout
    run, logits = _run(converted, images, tmp_path)
    assert run.returncode == 0, run.stderr
    assert (logits - expected).abs().max().item() <= TOLERANCE


def test_without_arch_2d_weights_are_named_on_load(shvit_s1, tmp_path):
    model, images, _ = shvit_s1
    pth = tmp_path / "released.pth"
    torch.save(_released_layout(model), pth)
    converted = tmp_path / "released.safetensors"
    assert run_python_tool("convert_checkpoint.py", str(pth), str(converted)).returncode == 0
    run, _ = _run(converted, images, tmp_path)
    assert run.returncode == 1
    assert "head.l.weight" not in run.stderr  # Linear weights are 2-D by nature.
    assert "stages.0.blocks.0.ffn.m.pw1.c.weight: checkpoint [256,128] vs model [256,128,1,1]" \
        in run.stderr


def test_fp16_conversion_loads(shvit_s1, tmp_path):
    model, images, expected = shvit_s1
    pth = tmp_path / "half.pth"
    torch.save({"model": model.state_dict()}, pth)
    converted = tmp_path / "half.safetensors"
    result = run_python_tool("convert_checkpoint.py", str(pth), str(converted), "--dtype", "fp16")
    assert result.returncode == 0, result.stderr
    with safetensors_torch.safe_open(str(converted), "pt") as f:
        assert f.get_tensor("head.l.weight").dtype == torch.float16
        assert f.get_tensor("head.bn.num_batches_tracked").dtype == torch.int64
    run, logits = _run(converted, images, tmp_path)
    assert run.returncode == 0, run.stderr
    # fp16 weights, fp32 compute: close to timm, but not bit-close.
    assert (logits - expected).abs().max().item() <= 5e-2 * expected.abs().max().item()


def test_rejects_non_dict_and_missing_key(tmp_path):
    pth = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), pth)
    result = run_python_tool("convert_checkpoint.py", str(pth), str(tmp_path / "x.safetensors"))
    assert result.returncode == 1
    assert "not a dict" in result.stderr
    torch.save({"model": {"w": torch.zeros(1)}}, pth)
    result = run_python_tool("convert_checkpoint.py", str(pth), str(tmp_path / "x.safetensors"),
                             "--key", "ema")
    assert result.returncode == 1
    assert "'ema'" in result.stderr


def test_make_random_checkpoint_reference_logits(tmp_path):
    weights, inputs, reference = (tmp_path / f for f in ("w.safetensors", "in.safetensors",
                                                         "ref.safetensors"))
    result = run_python_tool("make_random_checkpoint.py", "--model", "deit_tiny_patch16_224",
                             "--out", str(weights), "--input-out", str(inputs),
                             "--logits-out", str(reference), "--seed", "5")
    assert result.returncode == 0, result.stderr
    outputs = tmp_path / "out.safetensors"
    run = run_model("--model", "deit_tiny_patch16_224", "--weights", str(weights), "--input",
                    str(inputs), "--output", str(outputs))
    assert run.returncode == 0, run.stderr
    diff = (load_logits(outputs) - load_logits(reference)).abs().max().item()
    assert diff <= TOLERANCE
