#!/usr/bin/env python3
"""Where one kernel's instructions and stalls go, from Nsight Compute's source page.

Input: the CSV that `ncu -i REPORT --page source --csv --print-source sass` prints for a report
collected with `--section SourceCounters` (one row per SASS instruction: its address, text,
executions and warp stall samples). Prints the totals, the share of instructions and of stall
samples by opcode (HADD2.F32 and FFMA are "HADD2" and "FFMA"), the instructions with the most
stall samples, and with --ranges the shares of address ranges (offsets from the kernel's first
instruction, as cuobjdump -sass numbers them), so that a kernel's parts can be compared:

  bench/ncu_source_summary.py rows_sass.csv --ranges 0:1050:prologue,1050:2170:merge

bench/gpu_pending.sh fibmma runs it when NCU_SOURCE=1 (docs/performance.md, run O).
"""
import argparse
import collections
import csv
import re
import sys

EXECUTED = "Instructions Executed"
SAMPLES = "Warp Stall Sampling (All Samples)"


def read_instructions(path):
    """[(offset, executions, stall samples, SASS text)] of the first kernel in the CSV."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header_at = next((i for i, row in enumerate(rows) if row and row[0] == "Address"), None)
    if header_at is None:
        raise ValueError(f"{path}: no 'Address' header row (not an ncu --page source --csv file)")
    header = rows[header_at]
    for column in ("Address", "Source", EXECUTED, SAMPLES):
        if column not in header:
            raise ValueError(
                f"{path}: no '{column}' column (collect with --section SourceCounters)")
    address, source = header.index("Address"), header.index("Source")
    executed, samples = header.index(EXECUTED), header.index(SAMPLES)
    instructions = []
    for row in rows[header_at + 1:]:
        if len(row) != len(header) or not row[address].startswith("0x"):
            break  # The next kernel's name row, or the end.
        instructions.append((int(row[address], 16), int(row[executed] or 0),
                             int(row[samples] or 0), row[source].strip()))
    if not instructions:
        raise ValueError(f"{path}: no instruction rows")
    first = instructions[0][0]
    return [(a - first, e, s, text) for a, e, s, text in instructions]


def opcode(text):
    """The opcode without its predicate and modifiers: '@!P0 HADD2.F32 R1, ...' -> 'HADD2'."""
    text = re.sub(r"^@!?U?P\w+\s+", "", text)
    return text.split()[0].split(".")[0] if text else "?"


def parse_ranges(spec):
    """'0:1050:prologue,1050:2170:merge' (hexadecimal offsets) -> [(0, 0x1050, 'prologue'), ...]."""
    ranges = []
    for part in spec.split(","):
        fields = part.split(":", 2)
        if len(fields) != 3:
            raise ValueError(f"--ranges: '{part}' is not START:END:NAME")
        start, end = int(fields[0], 16), int(fields[1], 16)
        if end <= start:
            raise ValueError(f"--ranges: '{part}' ends before it starts")
        ranges.append((start, end, fields[2]))
    return ranges


def share(part, whole):
    return f"{part / whole:6.1%}" if whole else "   n/a"


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="ncu --page source --csv --print-source sass output")
    parser.add_argument("--top", type=int, default=15, help="instructions listed by stall samples")
    parser.add_argument("--opcodes", type=int, default=12, help="opcodes listed")
    parser.add_argument("--ranges", help="START:END:NAME,... hexadecimal offsets, END excluded")
    args = parser.parse_args(argv)
    try:
        instructions = read_instructions(args.csv)
        ranges = parse_ranges(args.ranges) if args.ranges else []
    except (OSError, ValueError) as error:
        print(f"ncu_source_summary: {error}", file=sys.stderr)
        return 2
    executed = sum(e for _, e, _, _ in instructions)
    samples = sum(s for _, _, s, _ in instructions)
    print(f"{len(instructions)} SASS instructions, {executed:,} warp instructions executed, "
          f"{samples:,} stall samples")

    by_opcode = collections.defaultdict(lambda: [0, 0])
    for _, e, s, text in instructions:
        totals = by_opcode[opcode(text)]
        totals[0] += e
        totals[1] += s
    print(f"\n{'opcode':10s} {'executed':>8s} {'samples':>8s}")
    for name, (e, s) in sorted(by_opcode.items(), key=lambda kv: -kv[1][0])[:args.opcodes]:
        print(f"{name:10s} {share(e, executed):>8s} {share(s, samples):>8s}")

    if ranges:
        print(f"\n{'range':28s} {'executed':>8s} {'samples':>8s}")
        for start, end, name in ranges:
            e = sum(x for a, x, _, _ in instructions if start <= a < end)
            s = sum(x for a, _, x, _ in instructions if start <= a < end)
            print(f"{name[:28]:28s} {share(e, executed):>8s} {share(s, samples):>8s}")

    print(f"\n{'offset':>6s} {'executed':>11s} {'samples':>8s}  instruction (most stall samples)")
    for a, e, s, text in sorted(instructions, key=lambda i: -i[2])[:args.top]:
        print(f"{a:6x} {e:11,} {s:8,}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
