#!/usr/bin/env python3
"""Compare vitserve-run-model's logits with timm's for the same random checkpoint.

For each model: build it in timm with seeded random weights and randomised BatchNorms
(make_random_checkpoint.py), run timm on CPU in fp32 as the reference, run the C++ binary on the
requested device/precision, and print the max |difference| relative to the reference's scale.
Meant for machines where the pytest suite is not set up (e.g. the GPU box). Exit status 1 if a
model fails to run or exceeds --tolerance (relative to max |reference logit|).

Example:
  check_parity.py --binary build/bin/vitserve-run-model --device cuda --precision bf16 \\
      --tolerance 5e-2 shvit_s1 vit_tiny_patch16_224
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_random_checkpoint import make_model  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="timm/vitserve model names")
    parser.add_argument("--binary", default="build/bin/vitserve-run-model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="max |diff| / max |reference| allowed (default: %(default)s)")
    parser.add_argument("--no-fuse", action="store_true")
    args = parser.parse_args(argv)

    from safetensors.torch import load_file, save_file

    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        for name in args.models:
            model = make_model(name, seed=0)
            size = model.pretrained_cfg["input_size"][-1]
            images = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                reference = model(images).float()
            weights, inputs, outputs = (tmp_path / f"{name}_{k}.safetensors" for k in ("w", "in", "out"))
            save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(weights))
            save_file({"input": images}, str(inputs))
            command = [args.binary, "--model", name, "--weights", str(weights), "--input", str(inputs),
                       "--output", str(outputs), "--device", args.device, "--precision", args.precision]
            if args.no_fuse:
                command.append("--no-fuse")
            start = time.monotonic()
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            seconds = time.monotonic() - start
            if result.returncode != 0:
                print(f"{name}: FAILED to run: {result.stderr.strip()}")
                failed = True
                continue
            logits = load_file(str(outputs))["logits"]
            scale = reference.abs().max().item()
            diff = (logits - reference).abs().max().item()
            ok = diff <= args.tolerance * scale
            failed |= not ok
            print(f"{name}: {args.device} {args.precision} max|diff| {diff:.3g} "
                  f"(relative {diff / scale:.3g}, max|ref| {scale:.3g}, "
                  f"top-1 agree {(logits.argmax(1) == reference.argmax(1)).float().mean():.2f}, "
                  f"process {seconds:.1f}s) {'ok' if ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
