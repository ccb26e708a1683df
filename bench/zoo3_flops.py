#!/usr/bin/env python3
"""Analytical multiply-accumulates (MACs; FLOPs = 2 × MACs) of the zoo3 models at 224 px.

Counts every matrix product (linears, patch-embedding convolutions, attention's QKᵀ and AV,
linear attention's KᵀV and Q(KᵀV), TokenLearner's weighted sums); LayerNorm, softmax, GELU and
additions are left out, as fvcore/timm-style counters do. Cross-check: --check compares with
torch.utils.flop_counter on timm's ViT and (when --vittm-ref points at the official
EfficientTTMs checkout) on the official ViTTM code.

  python bench/zoo3_flops.py [--check] [--vittm-ref DIR]
"""
import argparse


def vit_block(n, d, mlp=4):
    return n * 3 * d * d + 2 * n * n * d + n * d * d + 2 * n * d * mlp * d


def patch_embed(img, ps, d):
    return (img // ps) ** 2 * 3 * ps * ps * d


def vit(d, heads, depth=12, img=224, ps=16, classes=1000):
    n = (img // ps) ** 2 + 1
    return patch_embed(img, ps, d) + depth * vit_block(n, d) + d * classes


def linear_attention(n_in, m_query, d, latent, heads):
    # q on the queries, k and v on the inputs, KᵀV per head, Q(KᵀV) and the normaliser.
    return (m_query * d * latent + n_in * d * latent + n_in * d * d
            + n_in * latent * d // heads + m_query * latent * d // heads + m_query * latent)


def vittm(d, heads, memory_ps, process_ps, depth=12, img=224, scale=4, classes=1000):
    m = (img // memory_ps) ** 2
    p = (img // process_ps) ** 2
    latent = d // scale
    per_layer = (vit_block(p, d) + linear_attention(m, p, d, latent, heads)
                 + linear_attention(p, m, d, latent, heads))
    return (patch_embed(img, memory_ps, d) + patch_embed(img, process_ps, d) + depth * per_layer
            + 2 * d * classes)


def vit_tokenlearner(d, heads, tokens=16, loc=9, depth=12, img=224, ps=16, bottleneck=64,
                     classes=1000):
    n = (img // ps) ** 2
    tl = n * d * bottleneck + n * bottleneck * tokens + tokens * n * d
    return (patch_embed(img, ps, d) + loc * vit_block(n, d) + tl
            + (depth - loc) * vit_block(tokens, d) + d * classes)


def table():
    rows = [
        ("vit_small_patch16_224", vit(384, 6)),
        ("vit_base_patch16_224", vit(768, 12)),
        ("vittm_small (16/32)", vittm(384, 6, 16, 32)),
        ("vittm_base (16/32)", vittm(768, 12, 16, 32)),
        ("vittm_base_28 (28/28)", vittm(768, 12, 28, 28)),
        ("vit_small_tokenlearner", vit_tokenlearner(384, 6)),
        ("vit_base_tokenlearner", vit_tokenlearner(768, 12)),
    ]
    base = vit(768, 12)
    print(f"{'model':26s} {'GMACs':>8s} {'GFLOPs':>8s} {'vs ViT-B':>9s}")
    for name, macs in rows:
        print(f"{name:26s} {macs / 1e9:8.2f} {2 * macs / 1e9:8.2f} {base / macs:8.2f}x")
    return rows


def check(vittm_ref):
    import sys

    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def counted(model, img=224):
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.randn(1, 3, img, img))
        return counter.get_total_flops() / 2

    for name, macs in (("vit_base_patch16_224", vit(768, 12)),
                       ("vit_small_patch16_224", vit(384, 6))):
        print(f"check {name}: analytical {macs / 1e9:.3f} GMACs, flop_counter "
              f"{counted(timm.create_model(name)) / 1e9:.3f}")
    if vittm_ref:
        sys.path.insert(0, vittm_ref)
        from models.vittm.factory import vittm_factory
        for size, d, h, ps in (("base", 768, 12, (16, 32)), ("base", 768, 12, (28, 28))):
            model = vittm_factory(size, pretrained=False, memory_ps=ps[0], process_ps=ps[1],
                                  latent_size_scale=4, rw_head_type="lin",
                                  fusion_type="residual", num_classes=1000)
            print(f"check vittm_{size} {ps}: analytical {vittm(d, h, *ps) / 1e9:.3f} GMACs, "
                  f"flop_counter {counted(model) / 1e9:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--vittm-ref", default="")
    args = parser.parse_args()
    table()
    if args.check:
        check(args.vittm_ref)
