#!/usr/bin/env python3
"""Write a randomly initialised timm checkpoint as .safetensors, for tests and parity runs.

Every BatchNorm gets random running statistics and affine parameters: timm's fresh (0, 1)
statistics and SHViT's gamma=0 residual initialisation would hide folding and wiring bugs.
With --input-out/--logits-out it also writes a random input ("input") and timm's eval-mode
logits ("logits") for it, so a machine without timm (e.g. the GPU box) can check
vitserve-run-model against them.

Example:
  make_random_checkpoint.py --model shvit_s1 --out s1.safetensors \\
      --input-out s1_in.safetensors --logits-out s1_ref.safetensors --batch 4
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import torch


def randomise_batchnorms(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Random running stats, weight and bias for every BatchNorm of `model`, in place.

    Each BatchNorm's gain (weight / sqrt(running_var + eps)) is drawn from [1, 1.5], so the
    signal survives depth and the logits depend on the input. With gains below 1 (as this tool
    drew them before 2026-12-01) SHViT's many conv+BN layers shrank the input's contribution
    until the logits of two different images agreed to 1e-7: a parity check at 1e-4 could then
    not see a bug anywhere before the head."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                gain = torch.rand(n, generator=generator) * 0.5 + 1.0
                module.weight.copy_(gain * (module.running_var + module.eps).sqrt())
                module.bias.copy_(torch.randn(n, generator=generator) * 0.2)


def make_model(name: str, seed: int) -> torch.nn.Module:
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    randomise_batchnorms(model, torch.Generator().manual_seed(seed + 1))
    return model.eval()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="timm model name, e.g. shvit_s1")
    parser.add_argument("--out", required=True, help="output .safetensors checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input-out", help="also write a random input batch here")
    parser.add_argument("--logits-out", help="also write timm's logits for that input here")
    parser.add_argument("--batch", type=int, default=2, help="batch size of the input")
    args = parser.parse_args(argv)
    if args.logits_out and not args.input_out:
        parser.error("--logits-out needs --input-out")

    from safetensors.torch import save_file

    model = make_model(args.model, args.seed)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, args.out)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {args.model}, {params} parameters, seed {args.seed}")
    if args.input_out:
        size = model.pretrained_cfg["input_size"][-1]
        images = torch.randn(args.batch, 3, size, size,
                             generator=torch.Generator().manual_seed(args.seed + 2))
        save_file({"input": images}, args.input_out)
        print(f"wrote {args.input_out}: input {list(images.shape)}")
        if args.logits_out:
            with torch.no_grad():
                logits = model(images).float().contiguous()
            save_file({"logits": logits}, args.logits_out)
            print(f"wrote {args.logits_out}: logits {list(logits.shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
