#!/usr/bin/env python3
"""Emulates the Vim scan's kSplitStates algorithm (models/vim/selective_scan_cuda.cu:
AdvanceGroupSplit inside the chunked kernel's staging and passes) thread by thread in numpy,
and compares it with a plain scan. It checks the algorithm as the kernel writes it (each
thread's own steps of a group, the shuffle sources, the zero-padded partial groups and
staging, both passes with the workspace), not the CUDA source itself, which the CUDA cases of
vitserve_vim_test check on a GPU. One channel's threads ("lanes") are emulated one after the
other; a shuffle is a read of the source lane's array.

    .venv/bin/python tools/vim_split_scan_emulation.py   # the worst error; exit 1 on a failure
"""
import sys

import numpy as np

CHUNK = 64  # kChunk: steps of B and C staged in shared memory at a time
GROUP = 8  # kGroup: steps whose loads are issued together


def softplus(v):
    return np.where(v <= 20, np.log1p(np.exp(np.minimum(v, 20))), v)


def silu(v):
    return v / (1 + np.exp(-v))


def reference(u, delta, a, b, c, d, z, bias, reverse, avg):
    """The plain recurrence, one step at a time, all channels at once."""
    length, channels = u.shape
    out = np.zeros_like(u)
    h = np.zeros((channels, a.shape[1]))
    for t in range(length - 1, -1, -1) if reverse else range(length):
        dt = softplus(delta[t] + bias)
        h = np.exp(dt[:, None] * a) * h + (dt * u[t])[:, None] * b[t][None, :]
        y = ((h * c[t][None, :]).sum(1) + d * u[t]) * silu(z[t])
        out[t] = y if avg is None else 0.5 * (avg[t] + y)
    return out


def token(step, length, reverse):
    return length - 1 - step if reverse else step


def stage(b, c, sub, steps, length, reverse, with_c):
    """A sub-chunk's B and C rows in 'shared memory': NaN stands for stale bits, and the
    padded rows past `steps` are zero, as the kernel stages them."""
    smem_b = np.full((CHUNK, b.shape[1]), np.nan)
    smem_c = np.full((CHUNK, b.shape[1]), np.nan)
    for s in range(CHUNK):
        if s < steps:
            t = token(sub + s, length, reverse)
            smem_b[s] = b[t]
            if with_c:
                smem_c[s] = c[t]
        else:
            smem_b[s] = 0
            if with_c:
                smem_c[s] = 0
    return smem_b, smem_c


def split_kernel(u, delta, a, b, c, d, z, bias, reverse, avg, chunks, lanes):
    """The kernel's passes for every channel, each channel's states over `lanes` threads."""
    length, channels = u.shape
    states = a.shape[1]
    per_lane = states // lanes
    own = GROUP // lanes  # Steps of a group each lane loads and prepares.
    out = np.full_like(u, np.nan)
    chunk_len = (length + chunks - 1) // chunks
    workspace = np.zeros((chunks, states + 1, channels))
    for kpass in [0] if chunks <= 1 else [1, 2]:
        for chunk in range(chunks):
            begin, end = chunk * chunk_len, min(length, (chunk + 1) * chunk_len)
            for ch in range(channels):
                lane_states = [slice(l * per_lane, (l + 1) * per_lane) for l in range(lanes)]
                a_lane = [a[ch, sl] for sl in lane_states]
                h = [np.zeros(per_lane) for _ in range(lanes)]
                if kpass == 2:  # Fold the earlier chunks' end states in.
                    for j in range(chunk):
                        for l, sl in enumerate(lane_states):
                            h[l] = (np.exp(workspace[j, states, ch] * a_lane[l]) * h[l] +
                                    workspace[j, sl, ch])
                sum_dt = [0.0] * lanes
                for sub in range(begin, end, CHUNK):
                    steps = min(CHUNK, end - sub)
                    smem_b, smem_c = stage(b, c, sub, steps, length, reverse, kpass != 1)
                    for s0 in range(0, steps, GROUP):
                        # Each lane's own steps k = i * lanes + lane: loads (0 when padded),
                        # softplus, Δ·u and the gate.
                        u_o, dt_o, gate_o, avg_o = (np.zeros((lanes, own)) for _ in range(4))
                        for l in range(lanes):
                            for i in range(own):
                                s = s0 + i * lanes + l
                                if s < steps:
                                    t = token(sub + s, length, reverse)
                                    u_o[l, i], dt_o[l, i] = u[t, ch], delta[t, ch]
                                    if kpass != 1:
                                        gate_o[l, i] = z[t, ch]
                                        avg_o[l, i] = 0 if avg is None else avg[t, ch]
                        dt_o = softplus(dt_o + bias[ch])
                        for l in range(lanes):
                            for i in range(own):
                                if s0 + i * lanes + l >= steps:
                                    dt_o[l, i] = 0
                        dtu_o = dt_o * u_o
                        gate_o = silu(gate_o)
                        # Every lane advances its states through the whole group; Δ and Δ·u
                        # come by shuffle from lane k % lanes, entry k // lanes.
                        y_part = np.zeros((lanes, GROUP))
                        for k in range(GROUP):
                            dt, dtu = dt_o[k % lanes, k // lanes], dtu_o[k % lanes, k // lanes]
                            for l, sl in enumerate(lane_states):
                                h[l] = np.exp(dt * a_lane[l]) * h[l] + dtu * smem_b[s0 + k, sl]
                                if kpass == 1:
                                    sum_dt[l] += dt
                                else:
                                    y_part[l, k] = (smem_c[s0 + k, sl] * h[l]).sum()
                        if kpass == 1:
                            continue
                        y_sum = y_part.sum(0)  # The xor shuffles: every lane has the sum.
                        scale = 1.0 if avg is None else 0.5
                        for l in range(lanes):
                            for i in range(own):
                                s = s0 + i * lanes + l
                                if s >= steps:
                                    break
                                y = y_sum[i * lanes + l] + d[ch] * u_o[l, i]
                                out[token(sub + s, length, reverse), ch] = (
                                    scale * (avg_o[l, i] + y * gate_o[l, i]))
                if kpass == 1:
                    for l, sl in enumerate(lane_states):
                        workspace[chunk, sl, ch] = h[l]
                    workspace[chunk, states, ch] = sum_dt[0]
    return out


def main():
    rng = np.random.default_rng(0)
    worst = 0.0
    failed = False
    for length in [1, 7, 63, 64, 65, 77, 150]:
        for reverse in [False, True]:
            for lanes, states in [(4, 16), (2, 8), (1, 4)]:
                for chunks in [1, 3, 7]:
                    for averaged in [False, True]:
                        channels = 3
                        u = rng.standard_normal((length, channels))
                        delta = rng.standard_normal((length, channels)) * 0.5 - 1
                        a = (-np.arange(1, states + 1)[None, :] *
                             (1 + 0.1 * rng.random((channels, 1))))
                        b = rng.standard_normal((length, states))
                        c = rng.standard_normal((length, states))
                        d = rng.standard_normal(channels)
                        z = rng.standard_normal((length, channels))
                        bias = rng.random(channels) - 4
                        avg = rng.standard_normal((length, channels)) if averaged else None
                        got = split_kernel(u, delta, a, b, c, d, z, bias, reverse, avg,
                                           min(chunks, length), lanes)
                        want = reference(u, delta, a, b, c, d, z, bias, reverse, avg)
                        err = np.abs(got - want).max() / np.abs(want).max()
                        if not err < 1e-10:  # NaN fails too.
                            failed = True
                            print(f"FAIL length {length} reverse {reverse} lanes {lanes} "
                                  f"chunks {chunks} averaged {averaged}: {err}")
                        worst = max(worst, err if np.isfinite(err) else np.inf)
    print("worst relative error", worst)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
