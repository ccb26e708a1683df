"""timm's eager fp16 throughput at batch 256 (channels-last input, random weights): the anchor
that bench/serve_sweep.sh and bench/gpu_pending.sh's modelab step compare our numbers with.
Prints one "timm<TAB>model<TAB>img/s" line per model, then a "#" line with every window.

Each model runs 10 batches of warm-up, then WINDOWS (5) windows of 20 batches, each timed with
CUDA events; the line gives the fastest window, the stricter anchor for our ratios. Eager timm
is bound by the CPU's kernel launches for small models (shvit_s1 launches hundreds of small
kernels per batch), and for shvit_s1 the fastest window still differs between processes on one
box: 16-33k img/s in 11 processes of run W (docs/performance.md), against 2-4% between the
windows of most processes. deit_tiny and vit_base, bound by the GPU, read within 5%.

On the GPU box: python3 bench/timm_anchor.py MODEL [MODEL...]"""
import sys

import timm
import torch

WARMUP_BATCHES = 10
WINDOWS = 5
BATCHES_PER_WINDOW = 20
BATCH = 256


def window_rates(model, x):
    """Images/s of each timed window."""
    rates = []
    with torch.inference_mode():
        for _ in range(WARMUP_BATCHES):
            model(x)
        torch.cuda.synchronize()
        for _ in range(WINDOWS):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(BATCHES_PER_WINDOW):
                model(x)
            end.record()
            torch.cuda.synchronize()
            rates.append(BATCH * BATCHES_PER_WINDOW / (start.elapsed_time(end) / 1000))
    return rates


def main(names):
    torch.backends.cudnn.benchmark = True
    for name in names:
        model = timm.create_model(name, pretrained=False).cuda().half().eval()
        model = model.to(memory_format=torch.channels_last)
        size = model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
        x = torch.randn(BATCH, 3, size, size, device="cuda", dtype=torch.half)
        x = x.to(memory_format=torch.channels_last)
        rates = window_rates(model, x)
        print(f"timm\t{name}\t{max(rates):.0f}", flush=True)
        print(f"# timm {name} windows: {' '.join(f'{r:.0f}' for r in rates)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
