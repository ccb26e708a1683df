"""Helpers for the model-zoo e2e tests: timm reference models, checkpoints, and running
vitserve-run-model.

Kept free of pytest fixtures so tools and ad-hoc scripts can import it too.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO_ROOT / "tools"
if str(TOOLS_DIR) not in sys.path:
    sys.path.insert(0, str(TOOLS_DIR))

# One definition of "randomised BatchNorms", shared with the tool the GPU box uses.
from make_random_checkpoint import randomise_batchnorms  # noqa: E402

# Every zoo model with its input size (timm's pretrained_cfg).
MODEL_INPUT_SIZES = {
    "vit_tiny_patch16_224": 224,
    "vit_small_patch16_224": 224,
    "vit_base_patch16_224": 224,
    "deit_tiny_patch16_224": 224,
    "deit_small_patch16_224": 224,
    "deit_base_patch16_224": 224,
    "deit_tiny_distilled_patch16_224": 224,
    "deit_small_distilled_patch16_224": 224,
    "deit_base_distilled_patch16_224": 224,
    "shvit_s1": 224,
    "shvit_s2": 224,
    "shvit_s3": 224,
    "shvit_s4": 256,
}


def build_dir() -> Path:
    path = Path(os.environ.get("VITSERVE_BUILD_DIR", "build"))
    return path if path.is_absolute() else REPO_ROOT / path


def run_model_binary() -> Path:
    return build_dir() / "bin" / "vitserve-run-model"


def make_reference(name: str, seed: int = 0) -> torch.nn.Module:
    """timm model `name` with seeded random weights and randomised BatchNorms, in eval mode."""
    from make_random_checkpoint import make_model  # Needs timm; imported only when used.

    return make_model(name, seed)


def save_state_dict(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))


def save_input(tensor: torch.Tensor, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"input": tensor.contiguous()}, str(path))


def load_logits(path: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(path))["logits"]


def run_model(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs vitserve-run-model with `args`; never raises on a non-zero exit."""
    return subprocess.run(
        [str(run_model_binary()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def tool(name: str) -> Path:
    return TOOLS_DIR / name


def run_python_tool(name: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs tools/<name> with this interpreter; never raises on a non-zero exit."""
    return subprocess.run([sys.executable, str(tool(name)), *args], capture_output=True,
                          text=True, timeout=timeout, check=False)
