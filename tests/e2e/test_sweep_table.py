"""bench/sweep_table.py, the table bench/serve_sweep.sh prints: served rows against the model
alone and timm, and the KServe rounds' medians (perf_analyzer against our client), from small
results files whose answers are worked out in each test."""
import subprocess
import sys

from conftest import ROOT

TABLE = ROOT / "bench/sweep_table.py"


def _run(tmp_path, rows):
    path = tmp_path / "results.tsv"
    path.write_text("".join(f"{m}\t{k}\t{v}\n" for m, k, v in rows))
    result = subprocess.run([sys.executable, str(TABLE), str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _line(out, start):
    matches = [line.strip() for line in out.splitlines() if line.strip().startswith(start)]
    assert len(matches) == 1, (start, out)
    return matches[0]


def test_served_rows_against_the_model_alone_and_timm(tmp_path):
    out = _run(tmp_path, [("m", "model_graph_b128", 8000),
                          ("m", "timm_eager_b256", 4000), ("m", "raw_c64", 6000),
                          ("m", "raw_c64_p50_ms", 3.25)])
    assert "m: model alone (graph) 8000 img/s, timm eager b256 4000 img/s" in out
    # 6000 / 8000 = 75.0%, 6000 / 4000 = 1.50.
    assert _line(out, "raw_c64").split() == ["raw_c64", "6000", "3.25", "75.0%", "1.50"]


def test_a_failed_anchor_leaves_the_ratios_empty_instead_of_failing(tmp_path):
    out = _run(tmp_path, [("m", "model_graph_b128", "nan"), ("m", "raw_c64", 6000)])
    assert "m: model alone (graph) None img/s" in out
    assert _line(out, "raw_c64").split() == ["raw_c64", "6000", "nan", "nan%", "nan"]


def _round_rows(prefix_pa, prefix_ours, pa, ours):
    return ([("m", f"{prefix_pa}{i}", v) for i, v in enumerate(pa, 1)]
            + [("m", f"{prefix_ours}{i}", v) for i, v in enumerate(ours, 1)])


def test_agreement_is_the_ratio_of_the_medians_of_the_rounds(tmp_path):
    out = _run(tmp_path, _round_rows("perf_analyzer_async_fp32_c64_r", "kserve_fp32_c64_pa_conns_r",
                                     [900, 1000, 800], [1000, 1100, 950]))
    # perf_analyzer median 900 (800-1000), ours median 1000 (950-1100): 0.900.
    assert _line(out, "KServe agreement (fp32") == (
        "KServe agreement (fp32, concurrency 64, 3 rounds): perf_analyzer --async median 900 "
        "(range 800-1,000), vitserve-client median 1,000 (range 950-1,100): "
        "perf_analyzer / ours = 0.900")


def test_failed_rows_are_left_out_of_the_medians_and_counted(tmp_path):
    rows = _round_rows("perf_analyzer_async_uint8_c256_shm_r", "kserve_uint8_c256_shm_r",
                       [900, "nan", 1000, "nan"], [1000, 1000, 1000, 1000])
    out = _run(tmp_path, rows)
    # Medians of 900 and 1000 (the two that ran): 950 / 1000.
    assert _line(out, "KServe agreement, shared memory (uint8") == (
        "KServe agreement, shared memory (uint8, concurrency 256, 2 rounds): perf_analyzer "
        "--async median 950 (range 900-1,000, 2 rows failed), vitserve-client median 1,000 "
        "(range 1,000-1,000): perf_analyzer / ours = 0.950")


def test_no_ratio_when_every_row_of_one_tool_failed(tmp_path):
    out = _run(tmp_path, _round_rows("perf_analyzer_async_fp32_c64_r", "kserve_fp32_c64_pa_conns_r",
                                     ["nan", "nan"], [1000, 1200]))
    assert _line(out, "KServe agreement (fp32") == (
        "KServe agreement (fp32, concurrency 64): no ratio, every row of one tool failed "
        "(perf_analyzer 0 of 2, vitserve-client 2 of 2)")


def test_extra_perf_analyzer_rows_against_our_client_of_the_same_placement(tmp_path):
    rows = _round_rows("perf_analyzer_async_fp32_c64_shm_r", "kserve_fp32_c64_shm_r",
                       [880, 900], [1000, 1000])
    rows += [("m", "perf_analyzer_async_fp32_c64_shm_localhost_r1", 500),
             ("m", "perf_analyzer_async_fp32_c64_shm_localhost_r2", 700),
             ("m", "perf_analyzer_sync_fp32_c64_shm_r1", "nan"),
             ("m", "perf_analyzer_sync_fp32_c64_shm_r2", "nan"),
             ("m", "perf_analyzer_async_fp32_c64_shm_t16_r1", 950)]
    out = _run(tmp_path, rows)
    assert _line(out, "perf_analyzer --async at localhost:8001") == (
        "perf_analyzer --async at localhost:8001 (fp32, concurrency 64, shared memory): "
        "median 600 (range 500-700): / ours = 0.600")
    assert _line(out, "perf_analyzer synchronous") == (
        "perf_analyzer synchronous (fp32, concurrency 64, shared memory): "
        "no value, every row failed (2)")
    assert _line(out, "perf_analyzer --max-threads 16") == (
        "perf_analyzer --max-threads 16 (fp32, concurrency 64, shared memory): "
        "median 950 (range 950-950): / ours = 0.950")
    # The shared-memory rounds' extra rows are not compared with the rows in the requests.
    assert "KServe agreement (fp32" not in out


def test_two_processes_at_32_compare_with_our_client_at_64(tmp_path):
    rows = _round_rows("perf_analyzer_async_fp32_c64_r", "kserve_fp32_c64_pa_conns_r",
                       [600], [1000])
    rows += [("m", "perf_analyzer_async_fp32_2x32_r1", 850)]
    out = _run(tmp_path, rows)
    assert _line(out, "two perf_analyzer processes") == (
        "two perf_analyzer processes at 32 each (fp32): median 850 (range 850-850): "
        "/ ours = 0.850")


def test_usage(tmp_path):
    result = subprocess.run([sys.executable, str(TABLE)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "Usage: sweep_table.py RESULTS_TSV" in result.stderr
