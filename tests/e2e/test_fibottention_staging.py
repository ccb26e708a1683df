"""vitserve-bench-fibottention --staging (bench/zoo3_fibottention_bench.cc): the key rows the
tiled CUDA kernel stages per patch row, by rows per block, counted from the pattern on the CPU.
The expected numbers are worked out by hand below from the official construction, not taken from
the binary's output."""
import re
import subprocess

from conftest import binary


def staging(*args):
    result = subprocess.run([str(binary("vitserve-bench-fibottention")), "--device", "cpu",
                             "--staging", *args], capture_output=True, text=True, timeout=120)
    return result


def parse(line):
    match = re.match(r"T=(\d+)\s+patch keys per patch row ([\d.]+); staged key rows per patch "
                     r"row, by rows per block: (.*)$", line)
    assert match, line
    tiles = dict((int(t), float(v)) for t, v in re.findall(r"(\d+): ([\d.]+)", match.group(3)))
    return int(match.group(1)), float(match.group(2)), tiles


def test_one_head_by_hand():
    # One head: w = w_min = 5, offsets get_fibonacci(1, 2, 5) = [1, 2, 3, 5], so shifts ±1, ±2,
    # ±3, ±5 over 200 patches (T = 201, class token first). A patch row keeps 200 - |s| pairs
    # per shift: 2 · (199 + 198 + 197 + 195) / 200 = 7.89 keys. Tiles of 64 rows stage the tile
    # widened by 5 on each side, clipped: [1, 70), [60, 134), [124, 198), [188, 201) = 69 + 74
    # + 74 + 13 = 230 rows (1.15 per patch row); of 128: [1, 134), [124, 201) = 133 + 77 = 210
    # (1.05); 256 and 512 rows hold the whole sequence once (1.00).
    result = staging("--heads", "1", "--tokens", "201")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("T=")]
    assert len(lines) == 1, result.stdout
    tokens, keys, tiles = parse(lines[0])
    assert tokens == 201
    assert keys == 7.89
    assert tiles == {64: 1.15, 128: 1.05, 256: 1.0, 512: 1.0}


def test_larger_tiles_stage_fewer_rows_and_no_timing():
    # ViT-B's 12 heads at 785 tokens: the counts fall with the tile and never below one row per
    # patch row (here the smallest shifts are shorter than a tile, so every position is staged);
    # nothing is timed.
    result = staging("--tokens", "785,3137")
    assert result.returncode == 0, result.stderr
    assert " ms " not in result.stdout
    lines = [line for line in result.stdout.splitlines() if line.startswith("T=")]
    assert [parse(line)[0] for line in lines] == [785, 3137]
    for line in lines:
        _, keys, tiles = parse(line)
        values = [tiles[t] for t in (64, 128, 256, 512)]
        assert values == sorted(values, reverse=True) and values[-1] >= 1.0
        assert values[0] <= keys  # A staged row is used at least once by some row of its tile.


def test_bad_token_count_is_refused():
    result = staging("--tokens", "1")
    assert result.returncode == 2
    assert "bad token count" in result.stderr
