"""Parity of the C++ model zoo with timm: same checkpoint, same input, same logits.

For each model, timm builds it with seeded random weights (every BatchNorm randomised, since
timm's gamma=0 initialisation would hide bugs), the state dict is saved as safetensors, and
`vitserve-run-model` must reproduce timm's eval-mode logits within 1e-4 (fp32, CPU), both with
BatchNorm folded (the serving path) and unfolded.

Every model runs on every test run (a skipped test is not a passed one; scripts/test.sh fails
on any non-CUDA skip).
The binary comes from $VITSERVE_BUILD_DIR/bin (default: build/bin).
"""
from __future__ import annotations

import pytest
import torch

from model_helpers import (
    MODEL_INPUT_SIZES,
    load_logits,
    make_reference,
    run_model,
    run_model_binary,
    save_input,
    save_state_dict,
)


TOLERANCE = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _binary_present():
    if not run_model_binary().exists():
        pytest.fail(f"{run_model_binary()} not built (set VITSERVE_BUILD_DIR)")


def _models():
    for name in MODEL_INPUT_SIZES:
        yield pytest.param(name, id=name)


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("name", list(_models()))
def test_logits_match_timm(name, fuse, tmp_path):
    size = MODEL_INPUT_SIZES[name]
    reference = make_reference(name)
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(images)

    weights, inputs, outputs = (tmp_path / f for f in ("w.safetensors", "in.safetensors",
                                                       "out.safetensors"))
    save_state_dict(reference, weights)
    save_input(images, inputs)
    args = ["--model", name, "--weights", str(weights), "--input", str(inputs),
            "--output", str(outputs)]
    if not fuse:
        args.append("--no-fuse")
    result = run_model(*args)
    assert result.returncode == 0, result.stderr

    logits = load_logits(outputs)
    assert logits.shape == expected.shape
    assert logits.dtype == torch.float32
    # The comparison must be meaningful: logits of a randomised model are far from zero, and
    # the two images' logits differ by far more than the tolerance (a reference whose output
    # does not depend on its input would let any bug before the head pass).
    assert expected.abs().max() > 1e-2
    assert (expected[0] - expected[1]).abs().max() > 100 * TOLERANCE, f"{name}: input-blind"
    diff = (logits - expected).abs().max().item()
    assert diff <= TOLERANCE, f"{name}: max |logits - timm| = {diff:.3g}"


def test_wrong_weights_fail_and_name_the_tensor(tmp_path):
    weights, inputs = tmp_path / "w.safetensors", tmp_path / "in.safetensors"
    save_state_dict(make_reference("shvit_s1"), weights)
    save_input(torch.randn(1, 3, 224, 224), inputs)
    result = run_model("--model", "vit_tiny_patch16_224", "--weights", str(weights),
                       "--input", str(inputs), "--output", str(tmp_path / "out.safetensors"))
    assert result.returncode != 0
    assert "blocks.0.attn.qkv.weight" in result.stderr  # missing
    assert "stages.0.blocks.0.conv.m.c.weight" in result.stderr  # unexpected
    assert "another architecture" in result.stderr
    assert not (tmp_path / "out.safetensors").exists()


def test_one_mis_shaped_tensor_is_named(tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in make_reference("deit_tiny_patch16_224").state_dict().items()}
    state["blocks.3.mlp.fc1.weight"] = torch.zeros(10, 192)
    weights, inputs = tmp_path / "w.safetensors", tmp_path / "in.safetensors"
    save_file(state, str(weights))
    save_input(torch.randn(1, 3, 224, 224), inputs)
    result = run_model("--model", "deit_tiny_patch16_224", "--weights", str(weights),
                       "--input", str(inputs), "--output", str(tmp_path / "out.safetensors"))
    assert result.returncode == 1
    assert "blocks.3.mlp.fc1.weight: checkpoint [10,192] vs model [768,192]" in result.stderr


def test_bad_flags_exit_1_with_message(tmp_path):
    result = run_model("--model", "shvit_s1")
    assert result.returncode == 1
    assert "--input is required" in result.stderr
    result = run_model("--model", "no_such_model", "--input", "x", "--output", "y")
    assert result.returncode == 1


def test_list_prints_every_model_with_timm_parameter_counts():
    import timm

    result = run_model("--list")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert set(rows) >= set(MODEL_INPUT_SIZES)  # Other families list their own models too.
    for name in MODEL_INPUT_SIZES:
        row = rows[name]
        assert int(row[3]) == MODEL_INPUT_SIZES[name]
        expected = sum(p.numel() for p in timm.create_model(name).parameters())
        assert int(row[4]) == expected, name
