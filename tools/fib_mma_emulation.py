#!/usr/bin/env python3
"""Emulates Fibottention's tensor-core rows kernel (models/fibottention/fibottention_tiled_cuda.cu:
MmaRowsKernel and AddDiagonalBlocks) lane by lane in numpy and compares it with dense masked
attention. It checks the algorithm as the kernel writes it, not the CUDA source (the CUDA cases
of vitserve_fibottention_test do that on a GPU): the tile's key segments and their chunks, each
warp's walk over the shifts two at a time, the ldmatrix row each lane addresses (KeyLoadRow,
ValueLoadRow, clamped into the chunk), the m16n8k16 fragments, the diagonal's holder lane with
its keep flags, the rescale shuffles, P's registers and the final normalisation with Σ_t v.
Shared memory past a chunk's rows holds NaN, standing for stale bits, so a lane that reads
there, or a weight that is not exactly 0 where a row keeps no key, shows in the output.

ldmatrix and mma.sync follow the PTX ISA's fragment layouts (lane = 4g + c):
  ldmatrix .x4: lanes 8m..8m+7 address matrix m's 8 rows; lane 4g + c gets row g's elements
    2c, 2c+1 of each matrix (with .trans: rows 2c, 2c+1 of column g).
  mma m16n8k16: A reg 0 = row g, cols 2c..2c+1; reg 1 = row g+8; reg 2 = row g, cols 2c+8..;
    reg 3 = row g+8, cols 2c+8..; B reg 0 = rows 2c..2c+1 of col g, reg 1 = rows 2c+8..;
    C = rows g (c0, c1) and g+8 (c2, c3), cols 2c, 2c+1.

    .venv/bin/python tools/fib_mma_emulation.py   # the worst errors; exit 1 on a failure
"""
import math
import sys

import numpy as np

DIM = 64
ROW_VECTORS = DIM // 8  # 16-byte vectors per key row
RESCALE_SLACK = 8.0


def head_offsets(patches, heads, wmin=5, modified=False):
    """FibottentionHeadOffsets (models/fibottention/fibottention.cc), unshuffled."""
    def fib(a, b, w):
        seq = [a, b]
        while seq[-1] <= w:
            seq.append(seq[-1] + seq[-2])
        return seq[:-1]
    wmax = patches // 3
    phi = (1 + 5 ** 0.5) / 2
    out = []
    for i in range(1, heads + 1):
        fi = math.floor(i * phi)
        a, b = math.floor(fi * phi), math.floor(fi * phi ** 2)
        w = wmin if heads == 1 else wmin + int((wmax - wmin) / (heads - 1) * (i - 1))
        out.append(fib(a - (b - a), b - a, w) if modified else fib(a, b, w))
    return out


def signed_shifts(offsets):
    return sorted(set(offsets) | {-o for o in offsets})


def dense_reference(q, k, v, shifts, prefix, official, scale):
    """The official mask (patch t keeps patch t + s; the class token keeps and is kept by all),
    logits x mask (official: masked logits are 0) or -inf where masked."""
    tokens = q.shape[0]
    mask = np.zeros((tokens, tokens), bool)
    for t in range(prefix, tokens):
        for s in shifts:
            if prefix <= t + s < tokens:
                mask[t, t + s] = True
    if prefix:
        mask[0, :] = True
        mask[:, 0] = True
    logits = (q @ k.T) * scale
    logits = np.where(mask, logits, 0.0 if official else -np.inf)
    logits -= logits.max(1, keepdims=True)
    weights = np.exp(logits)
    return (weights / weights.sum(1, keepdims=True)) @ v


def merge_key_ranges(shifts, t0, t_end, prefix, tokens):
    """MergeKeyRanges: the union of [t0 + s, t_end + s) ∩ [prefix, tokens) as segments."""
    segments = []
    for s in shifts:
        lo, hi = max(t0 + s, prefix), min(t_end + s, tokens)
        if lo >= hi:
            continue
        if segments and lo <= segments[-1][1]:
            segments[-1][1] = max(segments[-1][1], hi)
        else:
            segments.append([lo, hi])
    return segments


def ldmatrix(row_of_lane, trans):
    """row_of_lane[lane]: the 8 values of the 16-byte row that lane addresses. Returns r[lane][m]
    as a pair of values."""
    r = [[None] * 4 for _ in range(32)]
    for m in range(4):
        rows = [row_of_lane[8 * m + i] for i in range(8)]
        for lane in range(32):
            g, c = lane >> 2, lane & 3
            r[lane][m] = ((rows[2 * c][g], rows[2 * c + 1][g]) if trans
                          else (rows[g][2 * c], rows[g][2 * c + 1]))
    return r


def mma(acc, a_regs, b_regs):
    """acc[lane][4] += A (16 x 16) B (16 x 8), from the lanes' fragments."""
    a = np.zeros((16, 16))
    b = np.zeros((16, 8))
    for lane in range(32):
        g, c = lane >> 2, lane & 3
        a0, a1, a2, a3 = a_regs[lane]
        a[g, 2 * c:2 * c + 2] = a0
        a[g + 8, 2 * c:2 * c + 2] = a1
        a[g, 2 * c + 8:2 * c + 10] = a2
        a[g + 8, 2 * c + 8:2 * c + 10] = a3
        b0, b1 = b_regs[lane]
        b[2 * c:2 * c + 2, g] = b0
        b[2 * c + 8:2 * c + 10, g] = b1
    d = a @ b
    for lane in range(32):
        g, c = lane >> 2, lane & 3
        acc[lane][0] += d[g, 2 * c]
        acc[lane][1] += d[g, 2 * c + 1]
        acc[lane][2] += d[g + 8, 2 * c]
        acc[lane][3] += d[g + 8, 2 * c + 1]


def key_load_row(lane):
    return (lane & 7) + 8 * (lane >> 4)


def value_load_row(lane):
    return lane & 15


def round_p(x, half):
    return float(np.float16(x)) if half else x


class Warp:
    """One warp's 16 rows: A fragments of q, C fragments of the output, and on each lane its
    softmax state of rows g and g + 8 (only the holder's is reached by keys)."""

    def __init__(self, q, row0, tokens, official, half):
        self.half = half
        self.qa = []
        for s in range(4):
            regs = []
            for lane in range(32):
                g, c = lane >> 2, lane & 3
                def pair(row, word):
                    return tuple(q[row, 2 * word:2 * word + 2]) if row < tokens else (0.0, 0.0)
                regs.append((pair(row0 + g, s * 8 + c), pair(row0 + g + 8, s * 8 + c),
                             pair(row0 + g, s * 8 + 4 + c), pair(row0 + g + 8, s * 8 + 4 + c)))
            self.qa.append(regs)
        self.acc = [[[0.0] * 4 for _ in range(32)] for _ in range(8)]
        self.m = [[0.0 if official else -math.inf] * 2 for _ in range(32)]
        self.mw = [[1.0 if official else 0.0] * 2 for _ in range(32)]
        self.l = [[0.0] * 2 for _ in range(32)]

    def add_diagonal_blocks(self, blocks, scale):
        """blocks: list of (key_rows, value_rows, keep) with key_rows[lane] / value_rows[lane]
        the lane's addressed staged row (8 vectors of 8 values) and keep[lane] = [row g, g+8]."""
        scores = []
        for key_rows, _, _ in blocks:
            tile = [[[0.0] * 4 for _ in range(32)] for _ in range(2)]
            for s in range(4):
                r = ldmatrix([key_rows[lane][2 * s + ((lane >> 3) & 1)] for lane in range(32)],
                             trans=False)
                mma(tile[0], self.qa[s], [(r[l][0], r[l][1]) for l in range(32)])
                mma(tile[1], self.qa[s], [(r[l][2], r[l][3]) for l in range(32)])
            per_lane = []
            for lane in range(32):
                g = lane >> 2
                per_lane.append(((tile[0][lane][1] if g & 1 else tile[0][lane][0]) * scale,
                                 (tile[1][lane][3] if g & 1 else tile[1][lane][2]) * scale))
            scores.append(per_lane)
        # Raise the max where a kept score passes it by more than the slack (any lane: shuffle).
        block_max = [[-math.inf, -math.inf] for _ in range(32)]
        raise_any = False
        for lane in range(32):
            for h in range(2):
                for b, (_, _, keep) in enumerate(blocks):
                    if keep[lane][h]:
                        block_max[lane][h] = max(block_max[lane][h], scores[b][lane][h])
                raise_any |= block_max[lane][h] > self.m[lane][h] + RESCALE_SLACK
        if raise_any:
            for h in range(2):
                correction = [1.0] * 32
                for lane in range(32):
                    if block_max[lane][h] > self.m[lane][h] + RESCALE_SLACK:
                        m = self.m[lane][h]
                        correction[lane] = 0.0 if m == -math.inf else math.exp(
                            m - block_max[lane][h])
                        self.l[lane][h] *= correction[lane]
                        self.mw[lane][h] *= correction[lane]
                        self.m[lane][h] = block_max[lane][h]
                for lane in range(32):
                    g = lane >> 2
                    holder = (lane & ~3) | (g >> 1)
                    for n in range(8):
                        self.acc[n][lane][2 * h] *= correction[holder]
                        self.acc[n][lane][2 * h + 1] *= correction[holder]
        pa = []
        for b, (_, _, keep) in enumerate(blocks):
            regs = []
            for lane in range(32):
                g = lane >> 2
                weight = [0.0, 0.0]
                for h in range(2):
                    if keep[lane][h]:
                        weight[h] = round_p(math.exp(scores[b][lane][h] - self.m[lane][h]) -
                                            self.mw[lane][h], self.half)
                        self.l[lane][h] += weight[h]
                regs.append(((0.0, weight[0]) if g & 1 else (weight[0], 0.0), (0.0, 0.0),
                             (0.0, 0.0), (0.0, weight[1]) if g & 1 else (weight[1], 0.0)))
            pa.append(regs)
        for b, (_, value_rows, _) in enumerate(blocks):
            for j in range(0, 8, 2):
                r = ldmatrix([value_rows[lane][j + (lane >> 4)] for lane in range(32)],
                             trans=True)
                mma(self.acc[j], pa[b], [(r[l][0], r[l][1]) for l in range(32)])
                mma(self.acc[j + 1], pa[b], [(r[l][2], r[l][3]) for l in range(32)])

    def finish(self, out, row0, tokens, official, colsum):
        for lane in range(32):
            g, c = lane >> 2, lane & 3
            holder = (lane & ~3) | (g >> 1)
            for h in range(2):
                row = row0 + g + 8 * h
                if row >= tokens:
                    continue
                l, mw = self.l[holder][h], self.mw[holder][h]
                denominator = l + tokens * mw if official else l
                for n in range(8):
                    for e in range(2):
                        channel = n * 8 + 2 * c + e
                        value = self.acc[n][lane][2 * h + e]
                        if official:
                            value += mw * colsum[channel]
                        out[row, channel] = value / denominator if denominator else math.nan


def rows_kernel(q, k, v, shifts, prefix, official, scale, warps, half):
    """The patch rows as MmaRowsKernel computes them (the class row comes from DenseRowKernel
    and is not compared), and how many segments took more than one chunk."""
    tokens = q.shape[0]
    tile_rows = 16 * warps
    chunk_rows = tile_rows + 128  # kChunkRows
    out = np.full((tokens, DIM), np.nan)
    split_segments = 0
    colsum = v.sum(0)
    as_vectors = lambda x: x.reshape(x.shape[0], ROW_VECTORS, 8)
    k_vectors, v_vectors = as_vectors(k), as_vectors(v)
    for t0 in range(prefix, tokens, tile_rows):
        t_end = min(t0 + tile_rows, tokens)
        segments = merge_key_ranges(shifts, t0, t_end, prefix, tokens)
        split_segments += sum(1 for lo, hi in segments if hi - lo > chunk_rows)
        chunks = [(c0, min(c0 + chunk_rows, hi)) for lo, hi in segments
                  for c0 in range(lo, hi, chunk_rows)]
        for warp_index in range(warps):
            row0 = t0 + 16 * warp_index
            warp = Warp(q, row0, tokens, official, half)
            if prefix:  # The class block: every lane addresses key 0's rows.
                keep = [[(lane & 3) == ((lane >> 2) >> 1) and row0 + (lane >> 2) + 8 * h < tokens
                         for h in range(2)] for lane in range(32)]
                warp.add_diagonal_blocks(
                    [([k_vectors[0]] * 32, [v_vectors[0]] * 32, keep)], scale)
            for c0, c1 in chunks:
                staged_k = np.full((chunk_rows, ROW_VECTORS, 8), np.nan)
                staged_v = np.full((chunk_rows, ROW_VECTORS, 8), np.nan)
                staged_k[:c1 - c0] = k_vectors[c0:c1]
                staged_v[:c1 - c0] = v_vectors[c0:c1]

                def block_at(first):
                    def staged_row(key):
                        return min(max(key, c0), c1 - 1) - c0
                    key_rows = [staged_k[staged_row(first + key_load_row(l))] for l in range(32)]
                    value_rows = [staged_v[staged_row(first + value_load_row(l))]
                                  for l in range(32)]
                    keep = []
                    for lane in range(32):
                        g, c = lane >> 2, lane & 3
                        holder = c == (g >> 1)
                        keep.append([holder and row0 + g + 8 * h < tokens and
                                     c0 <= first + g + 8 * h < c1 for h in range(2)])
                    return key_rows, value_rows, keep

                firsts = []
                for s in shifts:
                    first = row0 + s
                    if first >= c1:
                        break
                    if first + 16 > c0:
                        firsts.append(first)
                for i in range(0, len(firsts), 2):
                    warp.add_diagonal_blocks([block_at(f) for f in firsts[i:i + 2]], scale)
            warp.finish(out, row0, tokens, official, colsum)
    return out, split_segments


def main():
    rng = np.random.default_rng(7)
    # (patches, class token, signed shifts, q gain, warps per block): Fibottention's heads (the
    # first few of each layer's offsets, plain and modified, i.e. with a zero shift), small and
    # large logits (48: the official semantics rescale), and 40 shifts 5 apart, whose merged
    # key ranges are longer than a chunk (so a block's 16 keys can straddle two chunks).
    cases = []
    for patches, heads, class_token, modified, gain, warps in [
            (196, 3, True, False, 4.0, 4), (9, 2, True, False, 4.0, 4),
            (49, 2, False, False, 4.0, 8), (100, 2, True, True, 4.0, 4),
            (300, 2, False, True, 4.0, 8), (196, 2, True, False, 12.0, 4),
            (196, 2, True, False, 48.0, 8), (784, 1, True, False, 4.0, 4)]:
        for offsets in head_offsets(patches, max(heads, 2), modified=modified)[:heads]:
            cases.append((patches, class_token, signed_shifts(offsets), gain, warps))
    cases.append((300, True, signed_shifts(range(5, 101, 5)), 4.0, 4))
    failures = split_segments = 0
    for patches, class_token, shifts, gain, warps in cases:
        prefix = 1 if class_token else 0
        tokens = patches + prefix
        q = rng.standard_normal((tokens, DIM)) * gain / 8
        k, v = rng.standard_normal((tokens, DIM)), rng.standard_normal((tokens, DIM))
        for official in (True, False):
            for half in (False, True):
                want = dense_reference(q, k, v, shifts, prefix, official, 0.125)
                got, splits = rows_kernel(q, k, v, shifts, prefix, official, 0.125, warps, half)
                split_segments += splits
                error = np.abs(got[prefix:] - want[prefix:]).max() / np.abs(want).max()
                bound = 1e-2 if half else 1e-12
                ok = bool(error <= bound)  # NaN fails.
                failures += not ok
                print(f"{'ok  ' if ok else 'FAIL'} patches {patches} class {int(class_token)} "
                      f"shifts {len(shifts)} (largest {max(shifts)}) gain {gain} warps {warps} "
                      f"{'official' if official else 'neginf'} P {'fp16' if half else 'exact'}: "
                      f"error {error:.2e}")
    print(f"failures: {failures} of {4 * len(cases)}; segments longer than a chunk: "
          f"{split_segments}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
