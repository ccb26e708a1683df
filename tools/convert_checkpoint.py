#!/usr/bin/env python3
"""Convert a PyTorch checkpoint (.pth/.pt) to the .safetensors layout vitserve loads.

vitserve loads weights strictly by timm's state-dict names. This tool:
  * finds the state dict: the file itself, or the dict under --key, `model` or `state_dict`
    (in that order; official SHViT, DeiT and Vim releases use `model`);
  * strips a leading `module.` (DataParallel/DDP) from every name (see --strip-prefix);
  * with --arch shvit_*, reshapes 1x1 conv weights stored 2-D ([out, in], as some released SHViT
    .pth files do) to the 4-D [out, in, 1, 1] the architecture expects;
  * optionally casts floating-point tensors (--dtype), leaving integer buffers such as BatchNorm's
    num_batches_tracked alone (vitserve ignores them);
  * with --arch and timm installed, reports how the result compares with timm's state dict.

Examples:
  convert_checkpoint.py shvit_s1.pth shvit_s1.safetensors --arch shvit_s1
  convert_checkpoint.py deit_tiny.pth deit_tiny.safetensors --dtype fp16
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional, Tuple

import torch

DTYPES = {"keep": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
STATE_DICT_KEYS = ("model", "state_dict")


def find_state_dict(checkpoint, key: Optional[str]) -> Tuple[Dict[str, torch.Tensor], str]:
    """Returns (state dict, where it was found)."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f"checkpoint is a {type(checkpoint).__name__}, not a dict of tensors")
    if key is not None:
        if key not in checkpoint:
            raise ValueError(f"no key {key!r} in the checkpoint; top-level keys: {sorted(checkpoint)}")
        return checkpoint[key], f"key {key!r}"
    for candidate in STATE_DICT_KEYS:
        if isinstance(checkpoint.get(candidate), dict):
            return checkpoint[candidate], f"key {candidate!r}"
    return checkpoint, "top level"


def strip_prefix(state: Dict[str, torch.Tensor], prefix: str) -> Tuple[Dict[str, torch.Tensor], int]:
    if not prefix:
        return dict(state), 0
    out, stripped = {}, 0
    for name, value in state.items():
        if name.startswith(prefix):
            name, stripped = name[len(prefix):], stripped + 1
        if name in out:
            raise ValueError(f"two tensors map to {name!r} after stripping {prefix!r}")
        out[name] = value
    return out, stripped


def _timm_shapes(arch: str) -> Optional[Dict[str, torch.Size]]:
    try:
        import timm
    except ImportError:
        return None
    model = timm.create_model(arch, pretrained=False)
    return {k: v.shape for k, v in model.state_dict().items()}


def _is_shvit_pointwise_conv(name: str) -> bool:
    # Conv2dNorm convs are `<...>.c.weight`; SqueezeExcite's are `se.fc1/fc2.weight`.
    return name.endswith(".c.weight") or name.endswith(".se.fc1.weight") or name.endswith(
        ".se.fc2.weight")


def reshape_pointwise(state: Dict[str, torch.Tensor], arch: str,
                      target: Optional[Dict[str, torch.Size]]) -> List[str]:
    """Makes 2-D 1x1 conv weights 4-D in place; returns the names changed."""
    if not arch.startswith("shvit"):
        return []
    changed = []
    for name, value in state.items():
        if value.dim() != 2:
            continue
        wanted = target.get(name) if target is not None else None
        if wanted is not None:
            needs = len(wanted) == 4 and tuple(wanted) == (*value.shape, 1, 1)
        else:  # No timm to ask: SHViT's conv names are unambiguous.
            needs = _is_shvit_pointwise_conv(name)
        if needs:
            state[name] = value.reshape(*value.shape, 1, 1)
            changed.append(name)
    return changed


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="PyTorch checkpoint (.pth/.pt)")
    parser.add_argument("output", help="output .safetensors file")
    parser.add_argument("--arch", help="target architecture (timm name, e.g. shvit_s1)")
    parser.add_argument("--key", help="take the state dict from this top-level key")
    parser.add_argument("--strip-prefix", default="module.",
                        help="prefix removed from tensor names (default: %(default)s; '' keeps names)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="keep",
                        help="cast floating-point tensors (default: keep)")
    parser.add_argument("--unsafe-pickle", action="store_true",
                        help="allow arbitrary pickled objects (only for files you trust); needed by "
                             "checkpoints that also store training arguments")
    args = parser.parse_args(argv)

    try:
        checkpoint = torch.load(args.input, map_location="cpu", weights_only=not args.unsafe_pickle)
    except Exception as error:  # torch raises several types; report and stop.
        hint = "" if args.unsafe_pickle else " (if the file is trusted, retry with --unsafe-pickle)"
        print(f"error: cannot load {args.input}: {error}{hint}", file=sys.stderr)
        return 1

    try:
        state, origin = find_state_dict(checkpoint, args.key)
        state, stripped = strip_prefix(state, args.strip_prefix)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    skipped = sorted(name for name, value in state.items() if not isinstance(value, torch.Tensor))
    state = {name: value for name, value in state.items() if isinstance(value, torch.Tensor)}
    if not state:
        print("error: no tensors found in the checkpoint", file=sys.stderr)
        return 1

    target = _timm_shapes(args.arch) if args.arch else None
    reshaped = reshape_pointwise(state, args.arch, target) if args.arch else []

    cast = DTYPES[args.dtype]
    casted = 0
    out = {}
    for name, value in state.items():
        value = value.detach()
        if cast is not None and value.is_floating_point() and value.dtype != cast:
            value, casted = value.to(cast), casted + 1
        # clone(): safetensors refuses tensors that share storage (tied or sliced weights).
        out[name] = value.contiguous().clone()

    from safetensors.torch import save_file
    save_file(out, args.output, metadata={"format": "pt", "source": args.input})

    print(f"read {len(state)} tensors from {args.input} ({origin})")
    if stripped:
        print(f"stripped prefix {args.strip_prefix!r} from {stripped} names")
    if skipped:
        print(f"skipped {len(skipped)} non-tensor entries: {', '.join(skipped)}")
    if reshaped:
        print(f"reshaped {len(reshaped)} 2-D 1x1 conv weights to 4-D")
    if casted:
        print(f"cast {casted} tensors to {args.dtype}")
    if target is not None:
        wanted = {k for k in target if not k.endswith("num_batches_tracked")}
        have = {k for k in out if not k.endswith("num_batches_tracked")}
        missing, unexpected = sorted(wanted - have), sorted(have - wanted)
        wrong = sorted(k for k in wanted & have if tuple(out[k].shape) != tuple(target[k]))
        if missing or unexpected or wrong:
            print(f"warning: differs from timm's {args.arch}: {len(missing)} missing, "
                  f"{len(unexpected)} unexpected, {len(wrong)} mis-shaped "
                  f"(first: {(missing + unexpected + wrong)[:5]})", file=sys.stderr)
        else:
            print(f"matches timm's {args.arch} state dict ({len(wanted)} tensors)")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
