"""timm's eager fp16 throughput at batch 256 (channels-last input, random weights): the anchor
that bench/serve_sweep.sh and bench/gpu_pending.sh's modelab step compare our numbers with.
Prints one "timm<TAB>model<TAB>img/s" line per model (20 batches after 5 of warm-up, timed with
CUDA events). On the GPU box: python3 bench/timm_anchor.py MODEL [MODEL...]"""
import sys

import timm
import torch

torch.backends.cudnn.benchmark = True
for name in sys.argv[1:]:
    model = timm.create_model(name, pretrained=False).cuda().half().eval()
    model = model.to(memory_format=torch.channels_last)
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    x = torch.randn(256, 3, size, size, device="cuda", dtype=torch.half)
    x = x.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(5):
            model(x)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        n = 20
        for _ in range(n):
            model(x)
        end.record()
        torch.cuda.synchronize()
    print(f"timm\t{name}\t{256 * n / (start.elapsed_time(end) / 1000):.0f}", flush=True)
