#!/usr/bin/env python3
"""Parity of vitserve's C++ models with timm on a GPU: fp32 (TF32 off) max |diff| and fp16
top-1 agreement, on random inputs with random weights whose BatchNorm statistics and affine
parameters are randomised (default statistics hide folding bugs).

    python3 bench/parity_gpu.py --build-dir build-gpu [--models shvit_s1 ...] [--batch 16]
"""
import argparse
import pathlib
import subprocess
import sys
import tempfile

import timm
import torch
from safetensors.torch import load_file, save_file

MODELS = ["vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224",
          "deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224",
          "deit_tiny_distilled_patch16_224", "deit_small_distilled_patch16_224",
          "deit_base_distilled_patch16_224", "shvit_s1", "shvit_s2", "shvit_s3", "shvit_s4"]


def randomised_timm_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.5)
                module.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model.eval()


def run_ours(exe, name, weights, inputs, device, precision, workdir):
    out = workdir / f"out_{precision}.safetensors"
    cmd = [str(exe), "--model", name, "--weights", str(weights), "--input", str(inputs),
           "--output", str(out), "--device", device, "--precision", precision]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return load_file(str(out))["logits"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--build-dir", default="build")
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    exe = pathlib.Path(args.build_dir) / "bin" / "vitserve-run-model"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"{'model':34s} {'params':>10s} {'fp32 max|d|':>12s} {'fp16 top1 agree':>16s}")
    failures = 0
    for name in args.models:
        model = randomised_timm_model(name)
        size = model.pretrained_cfg["input_size"][-1]
        with tempfile.TemporaryDirectory() as tmp:
            tmp = pathlib.Path(tmp)
            weights = tmp / "w.safetensors"
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
            x = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(2))
            inputs = tmp / "in.safetensors"
            save_file({"input": x}, str(inputs))
            with torch.no_grad():
                ref = model.to(args.device)(x.to(args.device)).float().cpu()
            try:
                ours32 = run_ours(exe, name, weights, inputs, args.device, "fp32", tmp)
                ours16 = run_ours(exe, name, weights, inputs, args.device, "fp16", tmp)
            except subprocess.CalledProcessError as e:
                print(f"{name:34s} FAILED: {e.stderr.strip()[-300:]}")
                failures += 1
                continue
        diff = (ours32 - ref).abs().max().item()
        agree = (ours16.argmax(1) == ref.argmax(1)).float().mean().item()
        params = sum(p.numel() for p in model.parameters())
        ok = diff <= 1e-3
        failures += not ok
        print(f"{name:34s} {params/1e6:9.2f}M {diff:12.2e} {agree*100:15.1f}% {'' if ok else 'FAIL'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
