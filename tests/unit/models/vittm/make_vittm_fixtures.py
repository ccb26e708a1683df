"""Writes the ViTTM parity fixtures in testdata/ from the official code (pjjajal/EfficientTTMs).

Usage: python make_vittm_fixtures.py <path to a checkout's models/ parent> <out dir>
The official vittm.py passes timm.VisionTransformer's arguments positionally (written for
timm 1.0.9); with a newer timm, rewrite that one super().__init__ call to keywords first.
Each fixture is a tiny ViTTM (64 px, D = 32, 2 layers, 2 heads) with random weights, both
classifier heads randomised (the official init zeroes them): <name>.safetensors holds the
state_dict (shared tensors cloned), <name>_io.safetensors the input and both heads' logits.
"""
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, sys.argv[1])
from models.vittm.factory import vittm_factory  # noqa: E402

CONFIGS = {
    # name: (memory_ps, process_ps, rw_head_type, fusion_type)
    "vittm_lin_residual": (16, 32, "lin", "residual"),
    "vittm_tl_add_erase": (8, 16, "tl", "add_erase"),
    "vittm_ca_erase": (16, 32, "ca", "erase"),
}

for name, (memory_ps, process_ps, rw, fusion) in CONFIGS.items():
    torch.manual_seed(0)
    model = vittm_factory("tiny", pretrained=False, img_size=(64, 64), embed_dim=32, depth=2,
                          num_heads=2, memory_ps=memory_ps, process_ps=process_ps,
                          latent_size_scale=4, rw_head_type=rw, fusion_type=fusion,
                          num_classes=10)
    with torch.no_grad():
        for p in (model.head.weight, model.process_head.weight):
            p.normal_(0, 0.2)
        for n, p in model.named_parameters():  # Non-trivial norms and biases too.
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        memory, process = model(x)
    save_file({k: v.clone().contiguous() for k, v in model.state_dict().items()},
              f"{sys.argv[2]}/{name}.safetensors")
    save_file({"input": x, "memory_logits": memory, "process_logits": process},
              f"{sys.argv[2]}/{name}_io.safetensors")
    print(name, len(model.state_dict()), memory.shape, process.shape)
