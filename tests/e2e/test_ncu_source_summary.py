"""bench/ncu_source_summary.py, which reads Nsight Compute's per-instruction source page: the
totals, the shares by opcode and by address range, and the instructions with the most stall
samples, from a small hand-made CSV whose answers are worked out below."""
import subprocess
import sys

from conftest import ROOT

SUMMARY = ROOT / "bench/ncu_source_summary.py"
HEADER = ('"Address","Source","Warp Stall Sampling (All Samples)",'
          '"Warp Stall Sampling (Not-issued Samples)","# Samples","Instructions Executed"')


def _csv(tmp_path, rows):
    # ncu prints the kernel's name on a line of its own before the header.
    lines = ['"Kernel Name","void Kernel(int)",', HEADER]
    lines += [f'"{a}","{text}","{samples}","0","{samples}","{executed}"'
              for a, text, samples, executed in rows]
    path = tmp_path / "source.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(*args):
    result = subprocess.run([sys.executable, str(SUMMARY), *map(str, args)], capture_output=True,
                            text=True, timeout=60)
    return result.returncode, result.stdout, result.stderr


# Offsets 0x0, 0x10, 0x20, 0x30 from the kernel's start (0x7f0000001000).
ROWS = [("0x7f0000001000", "LDC R1, c[0x0][0x28]", 10, 100),
        ("0x7f0000001010", "HADD2.F32 R10, -RZ, R0.H0_H0", 30, 300),
        ("0x7f0000001020", "@!P0 HADD2.F32 R11, -RZ, R0.H1_H1", 20, 300),
        ("0x7f0000001030", "FFMA R12, R13, R10, RZ", 40, 300)]


def test_totals_opcodes_ranges_and_the_most_stalled_instructions(tmp_path):
    code, out, err = _run(_csv(tmp_path, ROWS), "--ranges", "0:20:first two,20:40:last two",
                          "--top", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "4 SASS instructions, 1,000 warp instructions executed, 100 stall samples"
    shares = {line.split()[0]: line.split()[1:] for line in lines if line[:1].isupper()}
    # HADD2 (predicated or not): 600 of 1,000 executions, 50 of 100 samples.
    assert shares["HADD2"] == ["60.0%", "50.0%"]
    assert shares["FFMA"] == ["30.0%", "40.0%"]
    assert shares["LDC"] == ["10.0%", "10.0%"]
    assert "first two                       40.0%    40.0%" in out
    assert "last two                        60.0%    60.0%" in out
    most = lines[-2:]
    assert most[0].split()[:3] == ["30", "300", "40"] and most[0].endswith("FFMA R12, R13, R10, RZ")
    assert most[1].split()[:3] == ["10", "300", "30"]


def test_a_file_that_is_not_a_source_page_is_refused(tmp_path):
    path = tmp_path / "details.txt"
    path.write_text("Section: GPU Speed Of Light Throughput\n")
    code, out, err = _run(path)
    assert code == 2 and out == ""
    assert "no 'Address' header row" in err


def test_a_range_that_ends_before_it_starts_is_refused(tmp_path):
    code, _, err = _run(_csv(tmp_path, ROWS), "--ranges", "30:10:backwards")
    assert code == 2
    assert "'30:10:backwards' ends before it starts" in err
